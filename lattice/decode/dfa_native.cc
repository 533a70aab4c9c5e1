// Native core of lattice.decode.automaton's DFA post-processing (loaded with ctypes
// by lattice/decode/dfa_native.py; every function has a numpy fallback there).
//
// A DFA is a row-major int32 table delta[S][K]: delta[s][k] is the target of state
// s's k-th edge (a byte class), -1 = reject. Functions return their result in
// caller-allocated numpy buffers and never allocate Python objects, so the GIL is
// irrelevant to them (ctypes releases it).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

int64_t partition_core(int64_t S, const std::vector<int32_t>& T, const std::vector<int32_t>& L,
                       const std::vector<int32_t>& H, const int64_t* block0, int64_t* block);

// A DFA with its edges per state in CSR form: state s's edges are
// cls[off[s]..off[s+1]) -> tgt[...] (classes ascending); the absent ones reject.
// Most states of a schema's DFA have a few edges of tens of classes, so the steps
// below cost O(edges), not O(states x classes).
struct Sparse {
  int64_t S = 0, C = 0;
  std::vector<int64_t> off{0};
  std::vector<int32_t> cls, tgt;
};

Sparse to_sparse(const int32_t* delta, int64_t S, int64_t C) {
  Sparse g;
  g.S = S;
  g.C = C;
  g.off.reserve(S + 1);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * C;
    for (int64_t c = 0; c < C; ++c)
      if (row[c] >= 0) {
        g.cls.push_back(static_cast<int32_t>(c));
        g.tgt.push_back(row[c]);
      }
    g.off.push_back(static_cast<int64_t>(g.cls.size()));
  }
  return g;
}

// The subset construction's result, kept until Python copies it out.
struct Subset {
  Sparse dfa;                      // edges (classes ascending per state)
  std::vector<int8_t> internal;    // per edge: 0 / 1 / 2 (see lattice_subset_run)
  std::vector<uint8_t> accepting;  // n
  std::vector<int64_t> mem_off;    // n + 1
  std::vector<int32_t> mem;        // members of each subset, ascending
};

// The canonical form of a DFA g (start state `start`, acceptance acc[S]): the
// states reachable from the start in breadth-first order (targets in the order of
// the bytes that reach them: classes by smallest byte, independent of class
// numbering), classes every kept state treats alike merged and numbered by their
// smallest byte. Writes out_delta ([n][C'], within S x C), out_acc [n], out_bc
// [256], *out_C = C'; returns n.
int64_t canonical(const Sparse& g, int64_t start, const uint8_t* acc,
                  const int32_t* byte_class, int32_t* out_delta, uint8_t* out_acc,
                  int32_t* out_bc, int64_t* out_C) {
  const int64_t S = g.S, C = g.C;
  std::vector<int32_t> rank(C, -1);  // a class's place in smallest-byte order
  {
    int32_t r = 0;
    for (int b = 0; b < 256; ++b)
      if (rank[byte_class[b]] < 0) rank[byte_class[b]] = r++;
    for (int64_t c = 0; c < C; ++c)  // (classes no byte has, if any: last)
      if (rank[c] < 0) rank[c] = r++;
  }
  std::vector<int64_t> order(S), new_id(S, -1);
  std::vector<std::pair<int32_t, int32_t>> row;  // (rank, target)
  int64_t n = 0;
  order[n++] = start;
  new_id[start] = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t s = order[k];
    row.clear();
    for (int64_t e = g.off[s]; e < g.off[s + 1]; ++e) row.emplace_back(rank[g.cls[e]], g.tgt[e]);
    std::sort(row.begin(), row.end());
    for (const auto& rt : row) {
      const int32_t t = rt.second;
      if (new_id[t] < 0) {
        new_id[t] = n;
        order[n++] = t;
      }
    }
  }
  // Per class its column over the kept states, as (state, target) pairs in state
  // order (CSR by class); equal columns merged, found by a hash and checked exactly.
  std::vector<int64_t> col_off(C + 1, 0);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t e = g.off[order[k]]; e < g.off[order[k] + 1]; ++e) ++col_off[g.cls[e] + 1];
  for (int64_t c = 0; c < C; ++c) col_off[c + 1] += col_off[c];
  std::vector<int64_t> fill(col_off.begin(), col_off.end() - 1);
  std::vector<int64_t> col(2 * col_off[C]);
  std::vector<uint64_t> col_hash(C, 1469598103934665603ULL);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t e = g.off[order[k]]; e < g.off[order[k] + 1]; ++e) {
      const int32_t c = g.cls[e];
      const int64_t t = new_id[g.tgt[e]];
      const int64_t i = fill[c]++;
      col[2 * i] = k;
      col[2 * i + 1] = t;
      col_hash[c] = (col_hash[c] ^ static_cast<uint64_t>(k * 1000003 + t + 2)) * 1099511628211ULL;
    }
  auto same_col = [&](int64_t a, int64_t b) {
    return col_hash[a] == col_hash[b] &&
           col_off[a + 1] - col_off[a] == col_off[b + 1] - col_off[b] &&
           std::equal(col.begin() + 2 * col_off[a], col.begin() + 2 * col_off[a + 1],
                      col.begin() + 2 * col_off[b]);
  };
  std::vector<int64_t> cls_new(C, -1), kept;  // kept[j]: a class of new class j
  for (int64_t b = 0; b < 256; ++b) {
    const int64_t c = byte_class[b];
    if (cls_new[c] < 0) {
      for (size_t j = 0; j < kept.size(); ++j)
        if (same_col(kept[j], c)) { cls_new[c] = static_cast<int64_t>(j); break; }
      if (cls_new[c] < 0) {
        cls_new[c] = static_cast<int64_t>(kept.size());
        kept.push_back(c);
      }
    }
    out_bc[b] = static_cast<int32_t>(cls_new[c]);
  }
  const int64_t C2 = static_cast<int64_t>(kept.size());
  std::fill(out_delta, out_delta + n * C2, -1);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t s = order[k];
    for (int64_t e = g.off[s]; e < g.off[s + 1]; ++e) {
      const int64_t j = cls_new[g.cls[e]];
      if (j >= 0) out_delta[k * C2 + j] = static_cast<int32_t>(new_id[g.tgt[e]]);
    }
    out_acc[k] = acc[s];
  }
  *out_C = C2;
  return n;
}

// Trim, minimise and canonical form of a DFA without counted loops (see
// lattice_dfa_finish), on its sparse edges.
int64_t finish_sparse(const Sparse& g, const uint8_t* accepting, const int32_t* byte_class,
                      int32_t* out_delta, uint8_t* out_acc, int32_t* out_bc,
                      int64_t* out_C) {
  const int64_t S = g.S;
  if (S == 0) return -1;
  const int64_t E = static_cast<int64_t>(g.cls.size());
  // Fewest edges to acceptance, backwards from the accepting states.
  std::vector<int64_t> in_off(S + 1, 0);
  for (int64_t e = 0; e < E; ++e) ++in_off[g.tgt[e] + 1];
  for (int64_t s = 0; s < S; ++s) in_off[s + 1] += in_off[s];
  std::vector<int32_t> in_src(E);
  {
    std::vector<int64_t> f(in_off.begin(), in_off.end() - 1);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t e = g.off[s]; e < g.off[s + 1]; ++e) in_src[f[g.tgt[e]]++] = static_cast<int32_t>(s);
  }
  std::vector<uint8_t> live(S, 0);
  std::vector<int32_t> queue;
  queue.reserve(S);
  for (int64_t s = 0; s < S; ++s)
    if (accepting[s]) { live[s] = 1; queue.push_back(static_cast<int32_t>(s)); }
  for (size_t q = 0; q < queue.size(); ++q) {
    const int32_t t = queue[q];
    for (int64_t i = in_off[t]; i < in_off[t + 1]; ++i)
      if (!live[in_src[i]]) { live[in_src[i]] = 1; queue.push_back(in_src[i]); }
  }
  if (!live[0]) return -1;
  // Live states renumbered in order; transitions between them (label 2c).
  std::vector<int32_t> live_id(S, -1);
  int64_t L = 0;
  for (int64_t s = 0; s < S; ++s)
    if (live[s]) live_id[s] = static_cast<int32_t>(L++);
  std::vector<int32_t> T, Lab, H;
  T.reserve(E); Lab.reserve(E); H.reserve(E);
  std::vector<int64_t> block0(L);
  for (int64_t s = 0; s < S; ++s) {
    if (!live[s]) continue;
    block0[live_id[s]] = accepting[s] ? 1 : 0;
    for (int64_t e = g.off[s]; e < g.off[s + 1]; ++e)
      if (live[g.tgt[e]]) {
        T.push_back(live_id[s]);
        Lab.push_back(2 * g.cls[e]);
        H.push_back(live_id[g.tgt[e]]);
      }
  }
  std::vector<int64_t> block(L);
  const int64_t nb = partition_core(L, T, Lab, H, block0.data(), block.data());
  // Quotient: each block's first state stands for it (T is grouped by tail, in
  // state order, classes ascending).
  std::vector<int64_t> rep(nb, -1);
  for (int64_t i = 0; i < L; ++i)
    if (rep[block[i]] < 0) rep[block[i]] = i;
  std::vector<int64_t> t_off(L + 1, 0);
  for (size_t e = 0; e < T.size(); ++e) ++t_off[T[e] + 1];
  for (int64_t i = 0; i < L; ++i) t_off[i + 1] += t_off[i];
  Sparse q;
  q.S = nb;
  q.C = g.C;
  q.off.reserve(nb + 1);
  std::vector<uint8_t> q_acc(nb);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t r = rep[b];
    for (int64_t e = t_off[r]; e < t_off[r + 1]; ++e) {
      q.cls.push_back(Lab[e] / 2);
      q.tgt.push_back(static_cast<int32_t>(block[H[e]]));
    }
    q.off.push_back(static_cast<int64_t>(q.cls.size()));
    q_acc[b] = block0[r] ? 1 : 0;
  }
  return canonical(q, block[0], q_acc.data(), byte_class, out_delta, out_acc, out_bc, out_C);
}

}  // namespace

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
// visited in edge order (k ascending): a canonical numbering of a connected DFA.
// Writes order[0..n); returns n.
int64_t lattice_dfa_bfs_order(const int32_t* delta, int64_t S, int64_t K,
                              int64_t* order) {
  if (S == 0) return 0;
  std::vector<uint8_t> seen(S, 0);
  int64_t n = 0;
  order[n++] = 0;
  seen[0] = 1;
  for (int64_t q = 0; q < n; ++q) {
    const int32_t* row = delta + order[q] * K;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t t = row[k];
      if (t >= 0 && !seen[t]) {
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
  for (int32_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * K;
    for (int32_t k = 0; k < K; ++k) {
      if (row[k] < 0) continue;
      T.push_back(static_cast<int32_t>(s));
      L.push_back(static_cast<int32_t>(2 * k + (internal && internal[s * K + k] ? 1 : 0)));
      H.push_back(row[k]);
    }
  }
  return partition_core(S, T, L, H, block0, block);
}

}  // extern "C"

namespace {

// lattice_dfa_partition on transition arrays (tail T, label L, head H) of n states.
int64_t partition_core(int64_t S, const std::vector<int32_t>& T, const std::vector<int32_t>& L,
                       const std::vector<int32_t>& H, const int64_t* block0, int64_t* block) {
  using I = int32_t;  // (S and the edge count fit: Limits.max_states)
  if (S == 0) return 0;
  const I m = static_cast<I>(T.size());
  const I n = S;
  const I work = std::max(n, m) + 1;
  std::vector<I> M(work, 0), W(work, 0);
  I w = 0;
  // A refinable partition of n elements (states or transitions).
  struct Partition {
    I z = 0;
    std::vector<I> E, Loc, Set, F, P;
    void init(I n) {
      E.resize(n); Loc.resize(n); Set.assign(n, 0); F.assign(n + 1, 0); P.assign(n + 1, 0);
      for (I i = 0; i < n; ++i) E[i] = Loc[i] = i;
      z = n ? 1 : 0;
      if (z) { F[0] = 0; P[0] = n; }
    }
  } B, C;
  auto mark = [&](Partition& X, I e) {
    const I s = X.Set[e], i = X.Loc[e], j = X.F[s] + M[s];
    X.E[i] = X.E[j]; X.Loc[X.E[i]] = i;
    X.E[j] = e; X.Loc[e] = j;
    if (!M[s]++) W[w++] = s;
  };
  auto split = [&](Partition& X) {
    while (w) {
      const I s = W[--w], j = X.F[s] + M[s];
      if (j == X.P[s]) { M[s] = 0; continue; }
      const I z = X.z;
      if (M[s] <= X.P[s] - j) { X.F[z] = X.F[s]; X.P[z] = X.F[s] = j; }
      else { X.P[z] = X.P[s]; X.F[z] = X.P[s] = j; }
      for (I i = X.F[z]; i < X.P[z]; ++i) X.Set[X.E[i]] = z;
      M[s] = M[z] = 0;
      ++X.z;
    }
  };
  // States: the initial partition is block0's (states sorted by block0 id).
  B.init(n);
  {
    I n0 = 0;
    for (I s = 0; s < n; ++s) n0 = std::max<I>(n0, static_cast<I>(block0[s] + 1));
    std::vector<I> count(n0 + 1, 0);
    for (I s = 0; s < n; ++s) ++count[block0[s] + 1];
    for (I b = 0; b < n0; ++b) count[b + 1] += count[b];
    std::vector<I> fill(count.begin(), count.end() - 1);
    for (I s = 0; s < n; ++s) {
      const I i = fill[block0[s]]++;
      B.E[i] = s; B.Loc[s] = i;
    }
    B.z = 0;
    std::vector<I> id(n0, -1);
    for (I b = 0; b < n0; ++b) {
      if (count[b + 1] == count[b]) continue;
      id[b] = B.z;
      B.F[B.z] = count[b]; B.P[B.z] = count[b + 1];
      ++B.z;
    }
    for (I s = 0; s < n; ++s) B.Set[s] = id[block0[s]];
  }
  // Transitions: one set (cord) per label.
  C.init(m);
  if (m) {
    I n_lab = 0;
    for (I t = 0; t < m; ++t) n_lab = std::max<I>(n_lab, L[t] + 1);
    std::vector<I> count(n_lab + 1, 0);
    for (I t = 0; t < m; ++t) ++count[L[t] + 1];
    for (I a = 0; a < n_lab; ++a) count[a + 1] += count[a];
    std::vector<I> fill(count.begin(), count.end() - 1);
    for (I t = 0; t < m; ++t) {
      const I i = fill[L[t]]++;
      C.E[i] = t; C.Loc[t] = i;
    }
    C.z = 0;
    std::vector<I> id(n_lab, -1);
    for (I a = 0; a < n_lab; ++a) {
      if (count[a + 1] == count[a]) continue;
      id[a] = C.z;
      C.F[C.z] = count[a]; C.P[C.z] = count[a + 1];
      ++C.z;
    }
    for (I t = 0; t < m; ++t) C.Set[t] = id[L[t]];
  }
  // Incoming transitions of each state (CSR by head).
  std::vector<I> inF(n + 1, 0), inA(m);
  for (I t = 0; t < m; ++t) ++inF[H[t] + 1];
  for (I q = 0; q < n; ++q) inF[q + 1] += inF[q];
  {
    std::vector<I> fill(inF.begin(), inF.end() - 1);
    for (I t = 0; t < m; ++t) inA[fill[H[t]]++] = t;
  }
  // Split blocks by cords and cords by blocks (every block but the first once).
  I b = 1, c = 0;
  while (c < C.z) {
    for (I i = C.F[c]; i < C.P[c]; ++i) mark(B, T[C.E[i]]);
    split(B);
    ++c;
    while (b < B.z) {
      for (I i = B.F[b]; i < B.P[b]; ++i) {
        const I q = B.E[i];
        for (I j = inF[q]; j < inF[q + 1]; ++j) mark(C, inA[j]);
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

}  // namespace

extern "C" {

// The subset construction of a Thompson NFA over byte classes (automaton._to_dfa's
// loop). NFA: n states; epsilon edges in CSR (eps_off[n+1], eps_tgt); byte edges in
// CSR by source (edge_off[n+1], edge_mask = a mask id, edge_tgt); each mask id's
// classes in CSR (mask_off, mask_cls); core_ok[s]: s is kept in subsets (it has
// byte edges or is `final`); region[s]: counted-loop id or -1. A DFA state is the
// set of core NFA states (ascending), the start's is the closure of state 0.
// internal[d][c], where some member of d is in a loop: 1 if every mover on c is in
// one loop, 2 if movers are in several regions (a loop and outside, or two loops),
// else 0. Returns a handle (lattice_subset_*), or null with *status 1 past
// max_states DFA states, 2 past max_seconds.
void* lattice_subset_run(int64_t n, const int64_t* eps_off, const int32_t* eps_tgt,
                         const int64_t* edge_off, const int32_t* edge_mask,
                         const int32_t* edge_tgt, const int64_t* mask_off,
                         const int32_t* mask_cls, int64_t n_cls, const uint8_t* core_ok,
                         const int32_t* region, int64_t final_state, int64_t max_states,
                         double max_seconds, int64_t* status) {
  const auto t0 = std::chrono::steady_clock::now();
  *status = 0;
  // Epsilon closures restricted to core states, computed on demand.
  std::vector<std::vector<int32_t>> closure(n);
  std::vector<uint8_t> closed(n, 0);
  std::vector<int64_t> stamp(n, -1);
  int64_t round = 0;
  std::vector<int32_t> todo;
  auto get_closure = [&](int32_t s) -> const std::vector<int32_t>& {
    if (!closed[s]) {
      ++round;
      todo.clear();
      todo.push_back(s);
      stamp[s] = round;
      std::vector<int32_t>& out = closure[s];
      while (!todo.empty()) {
        const int32_t u = todo.back();
        todo.pop_back();
        if (core_ok[u]) out.push_back(u);
        for (int64_t i = eps_off[u]; i < eps_off[u + 1]; ++i) {
          const int32_t t = eps_tgt[i];
          if (stamp[t] != round) {
            stamp[t] = round;
            todo.push_back(t);
          }
        }
      }
      closed[s] = 1;
    }
    return closure[s];
  };
  std::vector<int64_t> in_core(n, -1);
  int64_t core_round = 0;
  auto core_of = [&](const std::vector<int32_t>& states, std::vector<int32_t>& out) {
    ++core_round;
    out.clear();
    for (int32_t s : states) {
      for (int32_t t : get_closure(s)) {
        if (in_core[t] != core_round) {
          in_core[t] = core_round;
          out.push_back(t);
        }
      }
    }
    std::sort(out.begin(), out.end());
  };
  Subset* res = new Subset();
  res->dfa.C = n_cls;
  // DFA states' member sets in one pool (res->mem, offsets res->mem_off); sets of
  // one NFA state found through `single`, larger ones through an open-addressing
  // table of set hashes.
  std::vector<int32_t>& pool = res->mem;
  std::vector<int64_t>& off = res->mem_off;
  off.assign(1, 0);
  std::vector<int32_t> single(n, -1);
  std::vector<int32_t> table(1024, -1);
  std::vector<uint64_t> set_hash;
  int64_t n_multi = 0;
  auto hash_of = [](const int32_t* p, size_t len) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    for (size_t i = 0; i < len; ++i) {
      h ^= static_cast<uint64_t>(p[i]) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    }
    return h;
  };
  auto insert_slot = [&](std::vector<int32_t>& tab, uint64_t h, int32_t id) {
    size_t slot = h & (tab.size() - 1);
    while (tab[slot] >= 0) slot = (slot + 1) & (tab.size() - 1);
    tab[slot] = id;
  };
  // The id of the set `targets`, made (appended to pool) when new; -1 past the cap.
  auto id_of = [&](const std::vector<int32_t>& targets) -> int32_t {
    const int32_t S_now = static_cast<int32_t>(off.size() - 1);
    if (targets.size() == 1) {
      int32_t& got = single[targets[0]];
      if (got >= 0) return got;
      if (S_now + 1 > max_states) return -1;
      got = S_now;
      pool.push_back(targets[0]);
      off.push_back(static_cast<int64_t>(pool.size()));
      set_hash.push_back(0);
      return got;
    }
    const uint64_t h = hash_of(targets.data(), targets.size());
    size_t slot = h & (table.size() - 1);
    while (table[slot] >= 0) {
      const int32_t d = table[slot];
      if (set_hash[d] == h && off[d + 1] - off[d] == static_cast<int64_t>(targets.size()) &&
          std::equal(targets.begin(), targets.end(), pool.begin() + off[d]))
        return d;
      slot = (slot + 1) & (table.size() - 1);
    }
    if (S_now + 1 > max_states) return -1;
    pool.insert(pool.end(), targets.begin(), targets.end());
    off.push_back(static_cast<int64_t>(pool.size()));
    set_hash.push_back(h);
    table[slot] = S_now;
    if (2 * ++n_multi > static_cast<int64_t>(table.size())) {  // Grow and rehash.
      std::vector<int32_t> bigger(table.size() * 2, -1);
      for (int32_t d : table)
        if (d >= 0) insert_slot(bigger, set_hash[d], d);
      table.swap(bigger);
    }
    return S_now;
  };
  std::vector<int32_t> first;
  core_of(std::vector<int32_t>{0}, first);
  if (first.size() == 1) {
    id_of(first);
  } else {  // (Empty or larger: through the table.)
    const uint64_t h = hash_of(first.data(), first.size());
    pool.insert(pool.end(), first.begin(), first.end());
    off.push_back(static_cast<int64_t>(pool.size()));
    set_hash.push_back(h);
    insert_slot(table, h, 0);
    ++n_multi;
  }
  // Per class: the targets, and the regions of the movers.
  std::vector<std::vector<int32_t>> step(n_cls);
  std::vector<int32_t> reg_first(n_cls);
  std::vector<uint8_t> reg_multi(n_cls), touched_flag(n_cls, 0);
  std::vector<int32_t> touched, targets;
  for (size_t d = 0; d + 1 < off.size(); ++d) {
    bool regs = false;
    for (int64_t i = off[d]; i < off[d + 1]; ++i) regs |= region[pool[i]] >= 0;
    touched.clear();
    for (int64_t i = off[d]; i < off[d + 1]; ++i) {
      const int32_t s = pool[i];
      for (int64_t e = edge_off[s]; e < edge_off[s + 1]; ++e) {
        const int32_t m = edge_mask[e], t = edge_tgt[e];
        for (int64_t k = mask_off[m]; k < mask_off[m + 1]; ++k) {
          const int32_t c = mask_cls[k];
          if (!touched_flag[c]) {
            touched_flag[c] = 1;
            touched.push_back(c);
            step[c].clear();
            reg_first[c] = region[s];
            reg_multi[c] = 0;
          } else if (region[s] != reg_first[c]) {
            reg_multi[c] = 1;
          }
          step[c].push_back(t);
        }
      }
    }
    std::sort(touched.begin(), touched.end());
    for (int32_t c : touched) {
      touched_flag[c] = 0;
      core_of(step[c], targets);
      if (targets.empty()) continue;
      const int32_t id = id_of(targets);
      if (id < 0) {
        *status = 1;
        delete res;
        return nullptr;
      }
      res->dfa.cls.push_back(c);
      res->dfa.tgt.push_back(id);
      res->internal.push_back(regs ? (reg_multi[c] ? 2 : (reg_first[c] >= 0 ? 1 : 0)) : 0);
    }
    res->dfa.off.push_back(static_cast<int64_t>(res->dfa.cls.size()));
    if ((d + 1) % 256 == 0) {
      const double dt = std::chrono::duration<double>(
          std::chrono::steady_clock::now() - t0).count();
      if (dt > max_seconds) {
        *status = 2;
        delete res;
        return nullptr;
      }
    }
  }
  const size_t S = off.size() - 1;
  res->dfa.S = static_cast<int64_t>(S);
  res->accepting.resize(S);
  for (size_t d = 0; d < S; ++d)
    res->accepting[d] = std::binary_search(pool.begin() + off[d], pool.begin() + off[d + 1],
                                           static_cast<int32_t>(final_state));
  return res;
}

// Token tables of a DFA for a vocabulary of one-byte tokens (constraints.py's
// _byte_tables): for state s < S and token v with class c = cls_V[v] (c == C: not
// a text token), t = delta[s][c]; need = dist[t] (inf when t < 0 or dist[t] < 0),
// next = t where need < inf, else -1. Rows S..S_pad-1 are -1 / inf. Tables are
// row-major int32[S_pad][V]. Returns 0.
int64_t lattice_dfa_token_tables(const int32_t* delta, int64_t S, int64_t C,
                                 const int64_t* dist, const int64_t* cls_V, int64_t V,
                                 int64_t S_pad, int32_t inf, int32_t* next_SxV,
                                 int32_t* need_SxV) {
  std::vector<int32_t> nx(C + 1), nd(C + 1);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * C;
    for (int64_t c = 0; c < C; ++c) {
      const int32_t t = row[c];
      const int64_t d = t >= 0 ? dist[t] : -1;
      const bool ok = d >= 0 && d < inf;
      nd[c] = ok ? static_cast<int32_t>(d) : inf;
      nx[c] = ok ? t : -1;
    }
    nx[C] = -1;
    nd[C] = inf;
    int32_t* out_next = next_SxV + s * V;
    int32_t* out_need = need_SxV + s * V;
    for (int64_t v = 0; v < V; ++v) {
      const int64_t c = cls_V[v];
      out_next[v] = nx[c];
      out_need[v] = nd[c];
    }
  }
  std::fill(next_SxV + S * V, next_SxV + S_pad * V, -1);
  std::fill(need_SxV + S * V, need_SxV + S_pad * V, inf);
  return 0;
}

// A DFA without counted loops made canonical in one call (automaton's _prune,
// _minimise, _renumber and _canonical_classes): states that cannot reach
// acceptance dropped, the minimal quotient, states in breadth-first order from the
// start (targets by their smallest byte), classes every state treats alike merged and
// numbered by their smallest byte. Writes out_delta (row-major [S'][C'], within
// S x C), out_acc [S'], out_bc [256] and *out_C = C'; returns S', or -1 when the
// start cannot reach acceptance.
int64_t lattice_dfa_finish(const int32_t* delta, int64_t S, int64_t C,
                           const uint8_t* accepting, const int32_t* byte_class,
                           int32_t* out_delta, uint8_t* out_acc, int32_t* out_bc,
                           int64_t* out_C) {
  return finish_sparse(to_sparse(delta, S, C), accepting, byte_class, out_delta, out_acc,
                       out_bc, out_C);
}

// Counted loops unrolled (automaton._unroll), then the canonical form (`canonical`:
// automaton's _renumber and _canonical_classes), in one call. delta[S][C] is the
// minimised DFA with loop tags tag[S] (-1 outside loops, 2r a loop r's hub, 2r+1
// inside one of its characters) and internal[S][C] (1: the edge stays in its loop);
// loop r repeats lo[r]..hi[r] times (hi -1: unbounded). The unrolled DFA, of
// n_unrolled states (the caller counts them: states outside loops, then per loop
// with a hub (copies = (hi < 0 ? lo : hi) + 1) x (1 + its character states)), is
// built in `work` (int32[n_unrolled][C]) and `work_acc` (uint8[n_unrolled]): copy i
// of a loop holds i characters written; leaving it needs i >= lo, another character
// i < hi. Writes out_* as `canonical`; returns n, or -1 when n_unrolled is not
// that count.
int64_t lattice_dfa_unroll(const int32_t* delta, int64_t S, int64_t C, const uint8_t* accepting,
                           const int64_t* tag, const uint8_t* internal, int64_t R,
                           const int64_t* lo, const int64_t* hi, int64_t n_unrolled,
                           const int32_t* byte_class, int32_t* work, uint8_t* work_acc,
                           int32_t* out_delta, uint8_t* out_acc, int32_t* out_bc,
                           int64_t* out_C) {
  std::vector<int64_t> new_id(S, -1), local(S, -1);
  int64_t n = 0;
  for (int64_t s = 0; s < S; ++s)
    if (tag[s] < 0) new_id[s] = n++;
  std::vector<int64_t> hub(R, -1);
  std::vector<std::vector<int64_t>> mids(R);
  for (int64_t s = 0; s < S; ++s) {
    if (tag[s] < 0) continue;
    const int64_t r = tag[s] / 2;
    if (tag[s] % 2 == 0) {
      if (hub[r] < 0) hub[r] = s;
    } else {
      mids[r].push_back(s);
    }
  }
  // Loop blocks after the states outside loops, in loop order.
  std::vector<int64_t> first(R, -1);
  for (int64_t r = 0; r < R; ++r) {
    if (hub[r] < 0) continue;
    const int64_t h = hub[r], k = 1 + static_cast<int64_t>(mids[r].size());
    const int64_t copies = (hi[r] < 0 ? lo[r] : hi[r]) + 1;
    first[r] = n;
    local[h] = 0;
    for (size_t j = 0; j < mids[r].size(); ++j) local[mids[r][j]] = static_cast<int64_t>(j) + 1;
    new_id[h] = n;  // Entries from outside land in copy 0's hub.
    n += copies * k;
  }
  if (n != n_unrolled) return -1;
  // States outside loops: targets renumbered (into a loop only through its hub).
  for (int64_t s = 0; s < S; ++s) {
    if (tag[s] >= 0) continue;
    int32_t* row = work + new_id[s] * C;
    for (int64_t c = 0; c < C; ++c) {
      const int32_t t = delta[s * C + c];
      // (Into a loop's character state, new_id is -1: rejected, as the numpy path.)
      row[c] = t >= 0 ? static_cast<int32_t>(new_id[t]) : -1;
    }
    work_acc[new_id[s]] = accepting[s];
  }
  for (int64_t r = 0; r < R; ++r) {
    if (hub[r] < 0) continue;
    const int64_t h = hub[r], k = 1 + static_cast<int64_t>(mids[r].size());
    const int64_t copies = (hi[r] < 0 ? lo[r] : hi[r]) + 1;
    for (int64_t i = 0; i < copies; ++i) {
      const int64_t nxt = hi[r] < 0 ? std::min(i + 1, copies - 1) : i + 1;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t m = j == 0 ? h : mids[r][j - 1];
        const bool from_hub = j == 0;
        const int64_t row_id = first[r] + i * k + j;
        int32_t* row = work + row_id * C;
        for (int64_t c = 0; c < C; ++c) {
          const int32_t t = delta[m * C + c];
          int64_t out = -1;
          if (t >= 0) {
            const bool inner = internal[m * C + c] != 0;
            if (inner) {
              const bool is_hub = t == h;
              const bool is_mid = !is_hub && local[t] > 0 && tag[t] == 2 * r + 1;
              if (is_hub || is_mid) {
                // A new character only below hi.
                const bool blocked = hi[r] >= 0 && (from_hub || is_hub) && i >= hi[r];
                if (!blocked)
                  out = is_hub ? first[r] + nxt * k : first[r] + i * k + local[t];
              }
            } else if (from_hub && i >= lo[r]) {  // Leaving only at or above lo.
              out = new_id[t];
            }
          }
          row[c] = static_cast<int32_t>(out);
        }
        work_acc[row_id] = from_hub && accepting[h] && i >= lo[r] ? 1 : 0;
      }
    }
  }
  return canonical(to_sparse(work, n, C), tag[0] >= 0 ? new_id[0] : 0, work_acc, byte_class,
                   out_delta, out_acc, out_bc, out_C);
}

// Byte classes of M byte masks (masks[m*32 .. m*32+31]: 256 bits, little-endian):
// bytes every mask treats alike share a class, classes numbered in order of their
// smallest byte. Writes byte_class[256], per mask its classes ascending in CSR
// (mask_off[M+1], mask_cls[<= M*256]); returns the number of classes.
int64_t lattice_byte_classes(const uint8_t* masks, int64_t M, int32_t* byte_class,
                             int64_t* mask_off, int32_t* mask_cls) {
  const int64_t words = (M + 63) / 64;
  std::vector<uint64_t> sig(256 * words, 0);
  for (int64_t m = 0; m < M; ++m)
    for (int b = 0; b < 256; ++b)
      if (masks[m * 32 + b / 8] >> (b % 8) & 1) sig[b * words + m / 64] |= 1ULL << (m % 64);
  int32_t n = 0;
  std::vector<int32_t> rep;  // a byte of each class
  for (int b = 0; b < 256; ++b) {
    int32_t c = -1;
    for (int32_t k = 0; k < n && c < 0; ++k)
      if (std::equal(sig.begin() + b * words, sig.begin() + (b + 1) * words,
                     sig.begin() + rep[k] * words))
        c = k;
    if (c < 0) {
      c = n++;
      rep.push_back(b);
    }
    byte_class[b] = c;
  }
  int64_t k = 0;
  mask_off[0] = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int32_t c = 0; c < n; ++c)
      if (sig[rep[c] * words + m / 64] >> (m % 64) & 1) mask_cls[k++] = c;
    mask_off[m + 1] = k;
  }
  return n;
}

// which 0: DFA states; 1: total subset members.
int64_t lattice_subset_size(void* h, int64_t which) {
  const Subset* r = static_cast<Subset*>(h);
  return which == 0 ? static_cast<int64_t>(r->accepting.size())
                    : static_cast<int64_t>(r->mem.size());
}

// lattice_dfa_finish of the subset construction's result (without counted loops),
// then frees the handle: out buffers as lattice_dfa_finish's, S x C of the handle.
int64_t lattice_subset_finish(void* h, const int32_t* byte_class, int32_t* out_delta,
                              uint8_t* out_acc, int32_t* out_bc, int64_t* out_C) {
  Subset* r = static_cast<Subset*>(h);
  const int64_t n = finish_sparse(r->dfa, r->accepting.data(), byte_class, out_delta, out_acc,
                                  out_bc, out_C);
  delete r;
  return n;
}

// Copies the result into caller buffers (any may be null) and frees the handle.
void lattice_subset_take(void* h, int32_t* delta, int8_t* internal, uint8_t* accepting,
                         int64_t* mem_off, int32_t* mem) {
  Subset* r = static_cast<Subset*>(h);
  const Sparse& g = r->dfa;
  if (delta) std::fill(delta, delta + g.S * g.C, -1);
  if (internal) std::fill(internal, internal + g.S * g.C, 0);
  for (int64_t s = 0; s < g.S; ++s)
    for (int64_t e = g.off[s]; e < g.off[s + 1]; ++e) {
      if (delta) delta[s * g.C + g.cls[e]] = g.tgt[e];
      if (internal) internal[s * g.C + g.cls[e]] = r->internal[e];
    }
  if (accepting) std::memcpy(accepting, r->accepting.data(), r->accepting.size());
  if (mem_off) std::memcpy(mem_off, r->mem_off.data(), r->mem_off.size() * sizeof(int64_t));
  if (mem) std::memcpy(mem, r->mem.data(), r->mem.size() * sizeof(int32_t));
  delete r;
}

}  // extern "C"
