// Native core of lattice.decode.automaton's DFA post-processing (loaded with ctypes
// by lattice/decode/dfa_native.py; every function has a numpy fallback there).
//
// A DFA is a row-major int32 table delta[S][K]: delta[s][k] is the target of state
// s's k-th edge (a byte class), -1 = reject. Functions return their result in
// caller-allocated numpy buffers and never allocate Python objects, so the GIL is
// irrelevant to them (ctypes releases it).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" {

// dist[s] = fewest edges from s to an accepting state, -1 if none (breadth-first
// search backwards from every accepting state at once). Returns 0.
int64_t lattice_dfa_distances(const int32_t* delta, int64_t S, int64_t K,
                              const uint8_t* accepting, int64_t* dist) {
  // Reversed edges in CSR form: for target t, the sources with an edge into t.
  std::vector<int64_t> start(S + 1, 0);
  const int64_t n = S * K;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = delta[i];
    if (t >= 0) ++start[t + 1];
  }
  for (int64_t s = 0; s < S; ++s) start[s + 1] += start[s];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  std::vector<int32_t> src(start[S]);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * K;
    for (int64_t k = 0; k < K; ++k)
      if (row[k] >= 0) src[fill[row[k]]++] = static_cast<int32_t>(s);
  }
  std::vector<int64_t> queue;
  queue.reserve(S);
  for (int64_t s = 0; s < S; ++s) {
    dist[s] = accepting[s] ? 0 : -1;
    if (accepting[s]) queue.push_back(s);
  }
  for (size_t q = 0; q < queue.size(); ++q) {
    const int64_t t = queue[q];
    for (int64_t i = start[t]; i < start[t + 1]; ++i) {
      const int32_t s = src[i];
      if (dist[s] < 0) {
        dist[s] = dist[t] + 1;
        queue.push_back(s);
      }
    }
  }
  return 0;
}

// The states reachable from state 0 in breadth-first order, each state's targets
// visited in ascending id order (scipy.sparse.csgraph.breadth_first_order on the
// CSR graph of the table gives the same order). Writes order[0..n); returns n.
int64_t lattice_dfa_bfs_order(const int32_t* delta, int64_t S, int64_t K,
                              int64_t* order) {
  if (S == 0) return 0;
  std::vector<uint8_t> seen(S, 0);
  std::vector<int32_t> targets;
  targets.reserve(K);
  int64_t n = 0;
  order[n++] = 0;
  seen[0] = 1;
  for (int64_t q = 0; q < n; ++q) {
    const int32_t* row = delta + order[q] * K;
    targets.clear();
    for (int64_t k = 0; k < K; ++k)
      if (row[k] >= 0 && !seen[row[k]]) targets.push_back(row[k]);
    std::sort(targets.begin(), targets.end());
    for (int32_t t : targets) {
      if (!seen[t]) {
        seen[t] = 1;
        order[n++] = t;
      }
    }
  }
  return n;
}

// The coarsest partition refining block0 (int64[S], ids 0..n0-1) in which states
// of one block agree, on every edge k, on the successor's block (or both reject)
// and on internal[s][k] (may be null: all 0; read only where the edge exists).
// Valmari's partial-DFA minimisation (A. Valmari, "Fast brief practical DFA
// minimization", Inf. Process. Lett. 112(6), 2012: Hopcroft's "process the smaller
// half" on a refinable partition of the states and one of the transitions),
// O(m log n) for m edges: an edge (s, k) carries the label 2k + internal[s][k].
// Writes block ids in order of each block's first state; returns their number.
int64_t lattice_dfa_partition(const int32_t* delta, int64_t S, int64_t K,
                              const uint8_t* internal, const int64_t* block0,
                              int64_t* block) {
  if (S == 0) return 0;
  // Transitions: tail T, label L, head H.
  std::vector<int32_t> T, L, H;
  T.reserve(S * 2);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * K;
    for (int64_t k = 0; k < K; ++k) {
      if (row[k] < 0) continue;
      T.push_back(static_cast<int32_t>(s));
      L.push_back(static_cast<int32_t>(2 * k + (internal && internal[s * K + k] ? 1 : 0)));
      H.push_back(row[k]);
    }
  }
  const int64_t m = static_cast<int64_t>(T.size());
  const int64_t n = S;
  const int64_t work = std::max(n, m) + 1;
  std::vector<int64_t> M(work, 0), W(work, 0);
  int64_t w = 0;
  // A refinable partition of n elements (states or transitions).
  struct Partition {
    int64_t z = 0;
    std::vector<int64_t> E, Loc, Set, F, P;
    void init(int64_t n) {
      E.resize(n); Loc.resize(n); Set.assign(n, 0); F.assign(n + 1, 0); P.assign(n + 1, 0);
      for (int64_t i = 0; i < n; ++i) E[i] = Loc[i] = i;
      z = n ? 1 : 0;
      if (z) { F[0] = 0; P[0] = n; }
    }
  } B, C;
  auto mark = [&](Partition& X, int64_t e) {
    const int64_t s = X.Set[e], i = X.Loc[e], j = X.F[s] + M[s];
    X.E[i] = X.E[j]; X.Loc[X.E[i]] = i;
    X.E[j] = e; X.Loc[e] = j;
    if (!M[s]++) W[w++] = s;
  };
  auto split = [&](Partition& X) {
    while (w) {
      const int64_t s = W[--w], j = X.F[s] + M[s];
      if (j == X.P[s]) { M[s] = 0; continue; }
      const int64_t z = X.z;
      if (M[s] <= X.P[s] - j) { X.F[z] = X.F[s]; X.P[z] = X.F[s] = j; }
      else { X.P[z] = X.P[s]; X.F[z] = X.P[s] = j; }
      for (int64_t i = X.F[z]; i < X.P[z]; ++i) X.Set[X.E[i]] = z;
      M[s] = M[z] = 0;
      ++X.z;
    }
  };
  // States: the initial partition is block0's (states sorted by block0 id).
  B.init(n);
  {
    int64_t n0 = 0;
    for (int64_t s = 0; s < n; ++s) n0 = std::max(n0, block0[s] + 1);
    std::vector<int64_t> count(n0 + 1, 0);
    for (int64_t s = 0; s < n; ++s) ++count[block0[s] + 1];
    for (int64_t b = 0; b < n0; ++b) count[b + 1] += count[b];
    std::vector<int64_t> fill(count.begin(), count.end() - 1);
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = fill[block0[s]]++;
      B.E[i] = s; B.Loc[s] = i;
    }
    B.z = 0;
    std::vector<int64_t> id(n0, -1);
    for (int64_t b = 0; b < n0; ++b) {
      if (count[b + 1] == count[b]) continue;
      id[b] = B.z;
      B.F[B.z] = count[b]; B.P[B.z] = count[b + 1];
      ++B.z;
    }
    for (int64_t s = 0; s < n; ++s) B.Set[s] = id[block0[s]];
  }
  // Transitions: one set (cord) per label.
  C.init(m);
  if (m) {
    int64_t n_lab = 0;
    for (int64_t t = 0; t < m; ++t) n_lab = std::max<int64_t>(n_lab, L[t] + 1);
    std::vector<int64_t> count(n_lab + 1, 0);
    for (int64_t t = 0; t < m; ++t) ++count[L[t] + 1];
    for (int64_t a = 0; a < n_lab; ++a) count[a + 1] += count[a];
    std::vector<int64_t> fill(count.begin(), count.end() - 1);
    for (int64_t t = 0; t < m; ++t) {
      const int64_t i = fill[L[t]]++;
      C.E[i] = t; C.Loc[t] = i;
    }
    C.z = 0;
    std::vector<int64_t> id(n_lab, -1);
    for (int64_t a = 0; a < n_lab; ++a) {
      if (count[a + 1] == count[a]) continue;
      id[a] = C.z;
      C.F[C.z] = count[a]; C.P[C.z] = count[a + 1];
      ++C.z;
    }
    for (int64_t t = 0; t < m; ++t) C.Set[t] = id[L[t]];
  }
  // Incoming transitions of each state (CSR by head).
  std::vector<int64_t> inF(n + 1, 0), inA(m);
  for (int64_t t = 0; t < m; ++t) ++inF[H[t] + 1];
  for (int64_t q = 0; q < n; ++q) inF[q + 1] += inF[q];
  {
    std::vector<int64_t> fill(inF.begin(), inF.end() - 1);
    for (int64_t t = 0; t < m; ++t) inA[fill[H[t]]++] = t;
  }
  // Split blocks by cords and cords by blocks (every block but the first once).
  int64_t b = 1, c = 0;
  while (c < C.z) {
    for (int64_t i = C.F[c]; i < C.P[c]; ++i) mark(B, T[C.E[i]]);
    split(B);
    ++c;
    while (b < B.z) {
      for (int64_t i = B.F[b]; i < B.P[b]; ++i) {
        const int64_t q = B.E[i];
        for (int64_t j = inF[q]; j < inF[q + 1]; ++j) mark(C, inA[j]);
      }
      split(C);
      ++b;
    }
  }
  // Ids in order of first state.
  std::vector<int64_t> id(B.z, -1);
  int64_t n_blocks = 0;
  for (int64_t s = 0; s < n; ++s) {
    int64_t& x = id[B.Set[s]];
    if (x < 0) x = n_blocks++;
    block[s] = x;
  }
  return n_blocks;
}

}  // extern "C"
