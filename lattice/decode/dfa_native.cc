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
#include <memory>
#include <unordered_map>
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

// A 64-bit hash of n bytes (automaton.intern's key: equal bytes, equal hashes;
// a hit is compared byte for byte there, so a collision only loses sharing). Each
// 8-byte word, mixed with its position, is multiplied independently and summed
// (no dependency chain between words), then the sum is mixed: several bytes a
// cycle (Python's hash of a bytes object, SipHash, was ~1.4 GB/s: ~0.35 ms for a
// 2,000-state table).
uint64_t lattice_hash_bytes(const uint8_t* p, int64_t n) {
  constexpr uint64_t kMul = 0x9fb21c651e98df25ULL, kPos = 0x9e3779b97f4a7c15ULL;
  uint64_t acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * k, 8);
      acc[k] += (w ^ (static_cast<uint64_t>(i + 8 * k) * kPos)) * kMul;
    }
  }
  uint64_t out = static_cast<uint64_t>(n) * kPos;
  for (; i < n; ++i) out = (out ^ p[i]) * 0x100000001b3ULL;
  for (int k = 0; k < 4; ++k) {
    out = (out ^ acc[k]) * kMul;
    out ^= out >> 29;
  }
  return out;
}

// dist[s] = fewest edges from s to an accepting state, -1 if none (breadth-first
// search backwards from every accepting state at once). Returns 0.
int64_t lattice_dfa_distances(const int32_t* delta, int64_t S, int64_t K,
                              const uint8_t* accepting, int64_t* dist) {
  // Reversed edges in CSR form: for target t, the sources with an edge into t.
  // Both passes over the table are branch-free (a schema's DFA has ~4 edges in
  // ~60 classes a state, placed irregularly: a branch per cell mispredicted at
  // most edges): a reject (-1) in column k counts into, and writes through, a
  // junk slot of its own column (one slot for all rejects made every cell wait
  // for the previous one's store).
  std::vector<int64_t> count(S + K, 0);  // count[t]: edges into t; [S + k]: junk
  for (int64_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * K;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t t = row[k];
      ++count[t >= 0 ? t : S + k];
    }
  }
  std::vector<int64_t> start(S + 1, 0);
  for (int64_t s = 0; s < S; ++s) start[s + 1] = start[s] + count[s];
  const int64_t E = start[S];
  std::vector<int64_t> fill(S + K, E);  // next slot for t; [S + k]: the dummy (E)
  for (int64_t s = 0; s < S; ++s) fill[s] = start[s];
  std::vector<int32_t> src(E + 1);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t* row = delta + s * K;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t t = row[k];
      int64_t& f = fill[t >= 0 ? t : S + k];
      src[f] = static_cast<int32_t>(s);
      f += t >= 0;
    }
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
  // Epsilon closures restricted to core states, computed on demand: state s's is
  // cl_pool[cl_start[s] .. cl_start[s] + cl_len[s]) (one pool, not a vector per
  // state: a call reaches hundreds of NFA states, each closure was an allocation).
  std::vector<int64_t> cl_start(n, -1);
  std::vector<int32_t> cl_len(n, 0);
  std::vector<int32_t> cl_pool;
  std::vector<int64_t> stamp(n, -1);
  int64_t round = 0;
  std::vector<int32_t> todo;
  auto get_closure = [&](int32_t s) {
    if (cl_start[s] < 0) {
      ++round;
      todo.clear();
      todo.push_back(s);
      stamp[s] = round;
      const int64_t start = static_cast<int64_t>(cl_pool.size());
      while (!todo.empty()) {
        const int32_t u = todo.back();
        todo.pop_back();
        if (core_ok[u]) cl_pool.push_back(u);
        for (int64_t i = eps_off[u]; i < eps_off[u + 1]; ++i) {
          const int32_t t = eps_tgt[i];
          if (stamp[t] != round) {
            stamp[t] = round;
            todo.push_back(t);
          }
        }
      }
      cl_start[s] = start;
      cl_len[s] = static_cast<int32_t>(static_cast<int64_t>(cl_pool.size()) - start);
    }
    return cl_start[s];
  };
  std::vector<int64_t> in_core(n, -1);
  int64_t core_round = 0;
  auto core_of = [&](const std::vector<int32_t>& states, std::vector<int32_t>& out) {
    ++core_round;
    out.clear();
    for (int32_t s : states) {
      const int64_t at = get_closure(s);  // (Before reading the pool: it may grow.)
      for (int64_t i = at; i < at + cl_len[s]; ++i) {
        const int32_t t = cl_pool[i];
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
  constexpr int32_t kUnknownSet = -2, kEmptySet = -3;
  std::vector<int32_t> one_id(n, kUnknownSet);  // per NFA state t: the id of core_of({t})
  std::vector<int32_t> first_t(n_cls), n_t(n_cls, 0), single_t(1);
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
            first_t[c] = t;  // (step[c] is filled only from a second target on)
            n_t[c] = 1;
            reg_first[c] = region[s];
            reg_multi[c] = 0;
          } else {
            if (region[s] != reg_first[c]) reg_multi[c] = 1;
            if (n_t[c]++ == 1) {
              step[c].clear();
              step[c].push_back(first_t[c]);
            }
            step[c].push_back(t);
          }
        }
      }
    }
    std::sort(touched.begin(), touched.end());
    for (int32_t c : touched) {
      touched_flag[c] = 0;
      // One NFA target (most moves of an embedded DFA's state): its set's id is
      // remembered (kEmptySet: no core state), not recomputed per class.
      const int32_t one = n_t[c] == 1 ? first_t[c] : -1;
      int32_t id = one >= 0 ? one_id[one] : kUnknownSet;
      if (id == kEmptySet) continue;
      if (id == kUnknownSet) {
        if (one >= 0) single_t[0] = one;
        core_of(one >= 0 ? single_t : step[c], targets);
        if (targets.empty()) {
          if (one >= 0) one_id[one] = kEmptySet;
          continue;
        }
        id = id_of(targets);
        if (id < 0) {
          *status = 1;
          delete res;
          return nullptr;
        }
        if (one >= 0) one_id[one] = id;
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

// ---------------------------------------------------------------------------------
// A regex AST compiled in one call (lattice_compose_run): the Thompson NFA of
// automaton._Nfa.build, the subset construction (lattice_subset_run) and `finish`.
// automaton.to_dfa runs once per nesting level of a JSON schema (every object or
// array value is made its own minimal DFA, `Compiler.minimal`); in Python each of
// those calls paid a fixed ~0.1 ms of NFA building and array marshalling before the
// native steps. Here Python only writes the AST as a flat program (prefix order):
//   kNone                          a byte set with no byte (a state, no edge)
//   kByte b                        one byte
//   kSet i                         a byte set: masks[i] (256 bits, little-endian)
//   kCat k <k nodes>               concatenation
//   kAlt k <k nodes>               alternation
//   kRep lo hi <node>              repetition (hi -1: unbounded); no counted loops
//   kDfa d esc                     an embedded DFA (dfa d of the call), esc 1: JSON-escaped
//   kChain k <sep> {req <node>}*k  a member chain (regex_ast.chain)
// States are made in automaton._Nfa's order (the same NFA, so the same caps hit),
// with two deviations: an embedded DFA whose start state has incoming edges gets a
// fresh NFA state for it (an epsilon move from the entry), so a back edge to its
// start cannot re-enter what precedes the DFA (_Nfa merges the two states); and a
// separated list `X (s X)*` (an array's items) builds X once, not twice
// (ComposeNfa::separated_list): the same minimal DFA from fewer NFA states and
// (the two copies' subsets made one) fewer subset states, so a cap that _Nfa's
// construction hits may not be hit here.
// ---------------------------------------------------------------------------------

namespace {

enum ComposeOp : int32_t { kNone = 0, kByte = 1, kSet = 2, kCat = 3, kAlt = 4, kRep = 5,
                           kDfa = 6, kChain = 7 };

// The bytes JSON must escape inside a string (controls, '"', '\\').
bool json_escaped(int b) { return b < 0x20 || b == 0x22 || b == 0x5C; }

// The second byte of a two-byte JSON escape of b, or 0 when b is written \u00XX.
int short_escape(int b) {
  switch (b) {
    case 0x22: return '"';
    case 0x5C: return '\\';
    case 0x08: return 'b';
    case 0x0C: return 'f';
    case 0x0A: return 'n';
    case 0x0D: return 'r';
    case 0x09: return 't';
    default: return 0;
  }
}

struct ComposeAbort {
  int64_t status;
};

// One DFA of the program: its tables (the caller's) and what its embedding needs.
struct Embedded {
  const int32_t* delta = nullptr;
  int64_t S = 0, C = 0;
  const int32_t* bc = nullptr;
  const uint8_t* acc = nullptr;
  bool prepared = false, esc_prepared = false;
  bool start_entered = false;            // an edge leads back into state 0
  std::vector<int64_t> accepting;        // accepting states
  std::vector<int32_t> e_src, e_cls, e_tgt;  // edges (state, class, target)
  bool used_plain = false, used_esc = false;
  // JSON-escaped form: classes holding a byte that needs no escape; escape edges in
  // local ids (DFA state s is s; escape states S+1, S+2, ...), labelled by byte.
  std::vector<uint8_t> plain_ok;
  int64_t n_esc = 0;
  std::vector<int32_t> x_src, x_byte, x_tgt;
  int64_t mask_base = 0, esc_mask_base = 0;  // mask ids of class 0

  void prepare() {
    if (prepared) return;
    prepared = true;
    for (int64_t s = 0; s < S; ++s) {
      if (acc[s]) accepting.push_back(s);
      for (int64_t c = 0; c < C; ++c) {
        const int32_t t = delta[s * C + c];
        if (t < 0) continue;
        if (t == 0) start_entered = true;
        e_src.push_back(static_cast<int32_t>(s));
        e_cls.push_back(static_cast<int32_t>(c));
        e_tgt.push_back(t);
      }
    }
  }

  // automaton._escape_edges: per source state with a move on an escaped byte, one
  // state after the backslash; for \u00XX one state after each of u, 0, 0 and one
  // per high digit; fresh states numbered in that order (rows ascending).
  void prepare_escapes() {
    if (esc_prepared) return;
    esc_prepared = true;
    plain_ok.assign(C, 0);
    for (int b = 0; b < 256; ++b)
      if (!json_escaped(b)) plain_ok[bc[b]] = 1;
    std::vector<int32_t> esc_bytes;
    for (int b = 0; b < 256; ++b)
      if (json_escaped(b)) esc_bytes.push_back(b);
    const size_t B = esc_bytes.size();
    std::vector<int64_t> rows;
    for (int64_t s = 0; s < S; ++s)
      for (int32_t b : esc_bytes)
        if (delta[s * C + bc[b]] >= 0) { rows.push_back(s); break; }
    if (rows.empty()) return;
    const int64_t R = static_cast<int64_t>(rows.size());
    int64_t next = S + 1;
    auto T = [&](int64_t r, size_t j) { return delta[rows[r] * C + bc[esc_bytes[j]]]; };
    auto add = [&](int64_t src, int byte, int64_t tgt) {
      x_src.push_back(static_cast<int32_t>(src));
      x_byte.push_back(byte);
      x_tgt.push_back(static_cast<int32_t>(tgt));
    };
    std::vector<int64_t> back(R), u1(R, -1), u2(R, -1), u3(R, -1);
    for (int64_t r = 0; r < R; ++r) back[r] = next++;
    for (int64_t r = 0; r < R; ++r) add(rows[r], '\\', back[r]);
    for (size_t j = 0; j < B; ++j) {
      const int e = short_escape(esc_bytes[j]);
      if (!e) continue;
      for (int64_t r = 0; r < R; ++r)
        if (T(r, j) >= 0) add(back[r], e, T(r, j));
    }
    std::vector<uint8_t> need_u(R, 0);
    for (int64_t r = 0; r < R; ++r)
      for (size_t j = 0; j < B; ++j)
        if (!short_escape(esc_bytes[j]) && T(r, j) >= 0) need_u[r] = 1;
    for (auto* u : {&u1, &u2, &u3})
      for (int64_t r = 0; r < R; ++r)
        if (need_u[r]) (*u)[r] = next++;
    for (int64_t r = 0; r < R; ++r)
      if (need_u[r]) add(back[r], 'u', u1[r]);
    for (int64_t r = 0; r < R; ++r)
      if (need_u[r]) add(u1[r], '0', u2[r]);
    for (int64_t r = 0; r < R; ++r)
      if (need_u[r]) add(u2[r], '0', u3[r]);
    for (int h = 0; h < 2; ++h) {
      std::vector<int64_t> u4(R, -1);
      for (int64_t r = 0; r < R; ++r)
        for (size_t j = 0; j < B; ++j)
          if (!short_escape(esc_bytes[j]) && esc_bytes[j] >> 4 == h && T(r, j) >= 0) {
            u4[r] = 0;
            break;
          }
      for (int64_t r = 0; r < R; ++r)
        if (u4[r] == 0) u4[r] = next++;
      for (int64_t r = 0; r < R; ++r)
        if (u4[r] >= 0) add(u3[r], '0' + h, u4[r]);
      for (size_t j = 0; j < B; ++j) {
        const int b = esc_bytes[j];
        if (short_escape(b) || b >> 4 != h) continue;
        const int low = b & 15;
        const int digit = low < 10 ? '0' + low : 'a' + low - 10;
        for (int64_t r = 0; r < R; ++r)
          if (T(r, j) >= 0) add(u4[r], digit, T(r, j));
      }
    }
    n_esc = next - (S + 1);
  }
};

// automaton._Nfa.build over the program. Mask ids: [0, M) the program's byte sets,
// M + b the single byte b, then per DFA its classes (mask_base + c) and their
// escape-free parts (esc_mask_base + c).
struct ComposeNfa {
  const int32_t* ops;
  int64_t n_ops, M;
  std::vector<Embedded>& dfas;
  int64_t cap;
  int64_t n = 0;
  std::vector<int32_t> eps_src, eps_dst, e_src, e_mask, e_dst;
  uint8_t used_byte[256] = {0};
  int depth = 0;

  ComposeNfa(const int32_t* o, int64_t k, int64_t m, std::vector<Embedded>& d, int64_t c)
      : ops(o), n_ops(k), M(m), dfas(d), cap(c) {}

  int32_t at(int64_t pc) const {
    if (pc < 0 || pc >= n_ops) throw ComposeAbort{5};
    return ops[pc];
  }
  int32_t states(int64_t k) {
    if (n + k > cap) throw ComposeAbort{3};
    const int64_t first = n;
    n += k;
    return static_cast<int32_t>(first);
  }
  void eps(int32_t a, int32_t b) { eps_src.push_back(a); eps_dst.push_back(b); }
  void edge(int32_t a, int64_t mask, int32_t b) {
    e_src.push_back(a);
    e_mask.push_back(static_cast<int32_t>(mask));
    e_dst.push_back(b);
  }

  // The program position after the node at pc.
  int64_t skip(int64_t pc) {
    const int32_t op = at(pc);
    switch (op) {
      case kNone: return pc + 1;
      case kByte: case kSet: return pc + 2;
      case kDfa: return pc + 3;
      case kCat: case kAlt: {
        const int32_t k = at(pc + 1);
        pc += 2;
        for (int32_t i = 0; i < k; ++i) pc = skip(pc);
        return pc;
      }
      case kRep: return skip(pc + 3);
      case kChain: {
        const int32_t k = at(pc + 1);
        pc = skip(pc + 2);
        for (int32_t i = 0; i < k; ++i) pc = skip(pc + 1);
        return pc;
      }
      default: throw ComposeAbort{5};
    }
  }

  // For a concatenation's parts (starts part[0..k], part[k] its end) and part i:
  // when part i is `kRep 0 -1` of a concatenation `s X1 .. Xj` whose X1 .. Xj are
  // (op for op) the j parts before it (a separated list, `X (s X)*`: an array's
  // items), j; else 0. Thompson's construction copies X twice; both copies' DFA
  // states are equivalent (the same rest follows each), so the subset construction
  // made each twice and minimisation merged them (an array of a large item: twice
  // the work). Built once (ComposeNfa::build), the minimal DFA is the same (the
  // language is), with fewer NFA and subset states on the way.
  int32_t separated_list(const std::vector<int64_t>& part, int32_t i) {
    const int64_t r = part[i];
    if (at(r) != kRep || at(r + 1) != 0 || at(r + 2) != -1 || at(r + 3) != kCat) return 0;
    const int32_t k2 = at(r + 4);
    const int32_t j = k2 - 1;
    if (j < 1 || j > i) return 0;
    std::vector<int64_t> body(k2 + 1);
    int64_t q = r + 5;
    for (int32_t t = 0; t < k2; ++t) {
      body[t] = q;
      q = skip(q);
    }
    body[k2] = q;
    for (int32_t t = 0; t < j; ++t) {
      const int64_t a0 = part[i - j + t], a1 = part[i - j + t + 1];
      const int64_t b0 = body[1 + t], b1 = body[2 + t];
      if (a1 - a0 != b1 - b0 || !std::equal(ops + a0, ops + a1, ops + b0)) return 0;
    }
    return j;
  }

  // Adds the node at pc from `start`; returns its end state and moves pc past it.
  int32_t build(int64_t& pc, int32_t start) {
    if (++depth > 20000) throw ComposeAbort{5};
    const int32_t op = at(pc);
    int32_t out = start;
    switch (op) {
      case kNone:
        out = states(1);
        pc += 1;
        break;
      case kByte: {
        const int32_t b = at(pc + 1);
        if (b < 0 || b > 255) throw ComposeAbort{5};
        out = states(1);
        used_byte[b] = 1;
        edge(start, M + b, out);
        pc += 2;
        break;
      }
      case kSet: {
        const int32_t i = at(pc + 1);
        if (i < 0 || i >= M) throw ComposeAbort{5};
        out = states(1);
        edge(start, i, out);
        pc += 2;
        break;
      }
      case kCat: {
        const int32_t k = at(pc + 1);
        pc += 2;
        // Parts' starts, and where a separated list `X (s X)*` begins (list[p] = j:
        // parts p .. p+j-1 are X, part p+j the repetition; see separated_list).
        std::vector<int64_t> part(k + 1);
        bool any_rep = false;
        for (int32_t i = 0; i < k; ++i) {
          part[i] = pc;
          any_rep |= at(pc) == kRep;
          pc = skip(pc);
        }
        part[k] = pc;
        std::vector<int32_t> list;
        if (any_rep) {
          list.assign(k, 0);
          for (int32_t i = k - 1; i >= 1; --i) {
            const int32_t j = separated_list(part, i);
            if (j) list[i - j] = j;
          }
        }
        for (int32_t i = 0; i < k;) {
          int64_t p = part[i];
          const int32_t j = any_rep ? list[i] : 0;
          if (!j) {
            out = build(p, out);
            ++i;
            continue;
          }
          // X once, entered from before it and after each separator s (a fresh
          // entry state); the list's end is the loop state, as kRep's.
          const int32_t entry = states(1);
          eps(out, entry);
          int32_t x = entry;
          for (int32_t t = 0; t < j; ++t) {
            p = part[i + t];
            x = build(p, x);
          }
          const int32_t loop = states(1);
          eps(x, loop);
          int64_t sep = part[i + j] + 5;  // kRep 0 -1 kCat k2 <s> ...
          eps(build(sep, loop), entry);
          out = loop;
          i += j + 1;
        }
        break;
      }
      case kAlt: {
        const int32_t k = at(pc + 1);
        out = states(1);
        pc += 2;
        for (int32_t i = 0; i < k; ++i) {
          const int32_t s = states(1);
          eps(start, s);
          eps(build(pc, s), out);
        }
        break;
      }
      case kRep: {
        const int32_t lo = at(pc + 1), hi = at(pc + 2);
        const int64_t body = pc + 3;
        if (lo < 0 || (hi >= 0 && hi < lo)) throw ComposeAbort{5};
        int64_t after = -1;  // the position past the body, once built (else skipped)
        auto copy = [&](int32_t from) {
          int64_t p = body;
          const int32_t end = build(p, from);
          after = p;
          return end;
        };
        int32_t s = start;
        for (int32_t i = 0; i < lo; ++i) s = copy(s);
        if (hi < 0) {  // body*: a loop through a fresh state.
          const int32_t loop = states(1);
          eps(s, loop);
          eps(copy(loop), loop);
          out = loop;
        } else {
          const int32_t end = states(1);
          for (int32_t i = 0; i < hi - lo; ++i) {
            eps(s, end);
            s = copy(s);
          }
          eps(s, end);
          out = end;
        }
        pc = after >= 0 ? after : skip(body);
        break;
      }
      case kChain: {  // automaton._Nfa._chain
        const int32_t k = at(pc + 1);
        const int64_t sep = pc + 2;
        pc = skip(sep);
        int32_t first = start, rest = states(1);
        for (int32_t i = 0; i < k; ++i) {
          const bool required = at(pc) != 0;
          ++pc;
          const int32_t nf = states(1), nr = states(1), entry = states(1);
          eps(first, entry);
          int64_t p = sep;
          eps(build(p, rest), entry);
          eps(build(pc, entry), nr);
          if (!required) {
            eps(first, nf);
            eps(rest, nr);
          }
          first = nf;
          rest = nr;
        }
        out = states(1);
        eps(first, out);
        eps(rest, out);
        break;
      }
      case kDfa:
        out = embed(at(pc + 1), at(pc + 2) != 0, start);
        pc += 3;
        break;
      default: throw ComposeAbort{5};
    }
    --depth;
    return out;
  }

  // automaton._Nfa._embed_bulk: local state 0 is `start` (or a fresh state when
  // state 0 is re-entered), s >= 1 a fresh state, S the exit, then escape states.
  int32_t embed(int32_t d, bool esc, int32_t start) {
    if (d < 0 || d >= static_cast<int32_t>(dfas.size())) throw ComposeAbort{5};
    Embedded& g = dfas[d];
    g.prepare();
    if (esc) {
      g.prepare_escapes();
      g.used_esc = true;
    } else {
      g.used_plain = true;
    }
    const int64_t S = g.S;
    int32_t entry = start;
    if (g.start_entered) {
      entry = states(1);
      eps(start, entry);
    }
    const int32_t first = states(S + (esc ? g.n_esc : 0));
    const int32_t end = first + static_cast<int32_t>(S) - 1;
    auto local = [&](int64_t s) -> int32_t {
      return s == 0 ? entry : static_cast<int32_t>(first + s - 1);
    };
    for (int64_t s : g.accepting) eps(local(s), end);
    const int64_t base = esc ? g.esc_mask_base : g.mask_base;
    for (size_t e = 0; e < g.e_src.size(); ++e) {
      const int32_t c = g.e_cls[e];
      if (esc && !g.plain_ok[c]) continue;
      edge(local(g.e_src[e]), base + c, local(g.e_tgt[e]));
    }
    if (esc) {
      for (size_t e = 0; e < g.x_src.size(); ++e) {
        used_byte[g.x_byte[e]] = 1;
        edge(local(g.x_src[e]), M + g.x_byte[e], local(g.x_tgt[e]));
      }
    }
    return end;
  }
};

// The result of lattice_compose_run, kept until Python copies it out.
struct Composed {
  int64_t S = 0, C = 0;
  std::vector<int32_t> delta;
  std::vector<uint8_t> acc;
  int32_t bc[256];
};

// Refines the byte partition cls (n classes, numbered by smallest byte) by p (values
// in [0, k)): bytes stay together only where p agrees.
void refine_bytes(int32_t* cls, int32_t& n, const int32_t* p, int64_t k) {
  std::vector<int32_t> id(static_cast<size_t>(n) * k, -1);
  int32_t m = 0;
  for (int b = 0; b < 256; ++b) {
    int32_t& x = id[static_cast<size_t>(cls[b]) * k + p[b]];
    if (x < 0) x = m++;
    cls[b] = x;
  }
  n = m;
}

Composed* compose_run(const int32_t* ops, int64_t n_ops, const uint8_t* masks, int64_t M,
                      const int64_t* dfa_info, int64_t D, int64_t max_states,
                      int64_t nfa_cap, double max_seconds, int64_t* status) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Embedded> dfas(D);
  for (int64_t d = 0; d < D; ++d) {
    const int64_t* f = dfa_info + 5 * d;
    dfas[d].delta = reinterpret_cast<const int32_t*>(f[0]);
    dfas[d].S = f[1];
    dfas[d].C = f[2];
    dfas[d].bc = reinterpret_cast<const int32_t*>(f[3]);
    dfas[d].acc = reinterpret_cast<const uint8_t*>(f[4]);
    if (dfas[d].S < 1 || dfas[d].C < 1) throw ComposeAbort{5};
  }
  // Mask ids of the DFAs' classes (see ComposeNfa).
  int64_t n_masks = M + 256;
  for (auto& g : dfas) {
    g.mask_base = n_masks;
    g.esc_mask_base = n_masks + g.C;
    n_masks += 2 * g.C;
  }
  ComposeNfa nfa(ops, n_ops, M, dfas, nfa_cap);
  const int32_t start = nfa.states(1);
  int64_t pc = 0;
  const int32_t final_state = nfa.build(pc, start);
  if (pc != n_ops) throw ComposeAbort{5};
  const int64_t n = nfa.n;
  // Byte classes: the program's sets, its single bytes, every DFA's classes (and,
  // where one is JSON-escaped, the escaped bytes).
  int32_t cls[256] = {0};
  int32_t n_cls = 1;
  {
    int32_t p[256];
    for (int b = 0; b < 256; ++b) p[b] = nfa.used_byte[b] ? b + 1 : 0;
    refine_bytes(cls, n_cls, p, 257);
    for (int64_t i = 0; i < M; ++i) {
      for (int b = 0; b < 256; ++b) p[b] = masks[i * 32 + b / 8] >> (b % 8) & 1;
      refine_bytes(cls, n_cls, p, 2);
    }
    bool any_esc = false;
    for (auto& g : dfas) {
      if (g.used_plain || g.used_esc) refine_bytes(cls, n_cls, g.bc, g.C);
      any_esc |= g.used_esc;
    }
    if (any_esc) {
      for (int b = 0; b < 256; ++b) p[b] = json_escaped(b) ? 1 : 0;
      refine_bytes(cls, n_cls, p, 2);
    }
  }
  std::vector<int32_t> rep(n_cls, -1);  // the smallest byte of each class
  for (int b = 255; b >= 0; --b) rep[cls[b]] = b;
  // Per mask id its classes (CSR).
  std::vector<int64_t> mask_off(n_masks + 1, 0);
  std::vector<int32_t> mask_cls;
  mask_cls.reserve(M * 8 + 256 + n_cls * 2 * D);
  for (int64_t i = 0; i < M; ++i) {
    for (int32_t c = 0; c < n_cls; ++c)
      if (masks[i * 32 + rep[c] / 8] >> (rep[c] % 8) & 1) mask_cls.push_back(c);
    mask_off[i + 1] = static_cast<int64_t>(mask_cls.size());
  }
  for (int b = 0; b < 256; ++b) {
    if (nfa.used_byte[b]) mask_cls.push_back(cls[b]);
    mask_off[M + b + 1] = static_cast<int64_t>(mask_cls.size());
  }
  for (auto& g : dfas) {
    for (int pass = 0; pass < 2; ++pass) {
      const bool used = pass == 0 ? g.used_plain : g.used_esc;
      const int64_t base = pass == 0 ? g.mask_base : g.esc_mask_base;
      if (used) {  // Classes grouped by the DFA's class (classes ascending in each).
        std::vector<int64_t> count(g.C + 1, 0);
        for (int32_t c = 0; c < n_cls; ++c)
          if (pass == 0 || !json_escaped(rep[c])) ++count[g.bc[rep[c]] + 1];
        const int64_t at = static_cast<int64_t>(mask_cls.size());
        for (int64_t c = 0; c < g.C; ++c) count[c + 1] += count[c];
        mask_cls.resize(at + count[g.C]);
        std::vector<int64_t> fill(count.begin(), count.end() - 1);
        for (int32_t c = 0; c < n_cls; ++c)
          if (pass == 0 || !json_escaped(rep[c])) mask_cls[at + fill[g.bc[rep[c]]]++] = c;
        for (int64_t c = 0; c < g.C; ++c) mask_off[base + c + 1] = at + count[c + 1];
      } else {
        const int64_t at = static_cast<int64_t>(mask_cls.size());
        for (int64_t c = 0; c < g.C; ++c) mask_off[base + c + 1] = at;
      }
    }
  }
  // Edges and epsilon moves in CSR by source (insertion order kept).
  auto csr = [n](const std::vector<int32_t>& src, std::vector<int64_t>& off,
                 std::vector<int32_t>& order) {
    off.assign(n + 1, 0);
    for (int32_t s : src) ++off[s + 1];
    for (int64_t s = 0; s < n; ++s) off[s + 1] += off[s];
    std::vector<int64_t> fill(off.begin(), off.end() - 1);
    order.resize(src.size());
    for (size_t i = 0; i < src.size(); ++i) order[fill[src[i]]++] = static_cast<int32_t>(i);
  };
  std::vector<int64_t> edge_off, eps_off;
  std::vector<int32_t> order;
  csr(nfa.e_src, edge_off, order);
  std::vector<int32_t> edge_mask(order.size()), edge_tgt(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    edge_mask[i] = nfa.e_mask[order[i]];
    edge_tgt[i] = nfa.e_dst[order[i]];
  }
  csr(nfa.eps_src, eps_off, order);
  std::vector<int32_t> eps_tgt(order.size());
  for (size_t i = 0; i < order.size(); ++i) eps_tgt[i] = nfa.eps_dst[order[i]];
  std::vector<uint8_t> core_ok(n, 0);
  for (int64_t s = 0; s < n; ++s) core_ok[s] = edge_off[s + 1] > edge_off[s];
  core_ok[final_state] = 1;
  std::vector<int32_t> region(n, -1);
  const double spent = std::chrono::duration<double>(
      std::chrono::steady_clock::now() - t0).count();
  Subset* sub = static_cast<Subset*>(lattice_subset_run(
      n, eps_off.data(), eps_tgt.data(), edge_off.data(), edge_mask.data(), edge_tgt.data(),
      mask_off.data(), mask_cls.data(), n_cls, core_ok.data(), region.data(), final_state,
      max_states, max_seconds - spent, status));
  if (!sub) throw ComposeAbort{*status};
  const int64_t S = sub->dfa.S;
  std::unique_ptr<int32_t[]> out(new int32_t[static_cast<size_t>(S) * n_cls]);
  std::unique_ptr<uint8_t[]> out_acc(new uint8_t[S]);
  Composed* res = new Composed();
  int64_t C2 = 0;
  const int64_t got = finish_sparse(sub->dfa, sub->accepting.data(), cls, out.get(),
                                    out_acc.get(), res->bc, &C2);
  delete sub;
  if (got < 0) {
    delete res;
    throw ComposeAbort{4};
  }
  res->S = got;
  res->C = C2;
  res->delta.assign(out.get(), out.get() + got * C2);
  res->acc.assign(out_acc.get(), out_acc.get() + got);
  return res;
}

}  // namespace

extern "C" {

// A regex AST (the program above: ops[n_ops]; masks[M][32]; per DFA d,
// dfa_info[5d..5d+4] = delta int32[S][C] address, S, C, byte_class int32[256]
// address, accepting uint8[S] address) as its minimal DFA in canonical form
// (lattice_dfa_finish's). Returns a handle (lattice_compose_size / _take), or null
// with *status: 1 past max_states DFA states, 2 past max_seconds, 3 past nfa_cap
// NFA states, 4 nothing matches, 5 a malformed program.
void* lattice_compose_run(const int32_t* ops, int64_t n_ops, const uint8_t* masks, int64_t M,
                          const int64_t* dfa_info, int64_t D, int64_t max_states,
                          int64_t nfa_cap, double max_seconds, int64_t* status) {
  *status = 0;
  try {
    return compose_run(ops, n_ops, masks, M, dfa_info, D, max_states, nfa_cap, max_seconds,
                       status);
  } catch (const ComposeAbort& e) {
    *status = e.status;
  } catch (...) {  // (std::bad_alloc)
    *status = 5;
  }
  return nullptr;
}

// which 0: states; 1: classes.
int64_t lattice_compose_size(void* h, int64_t which) {
  const Composed* r = static_cast<Composed*>(h);
  return which == 0 ? r->S : r->C;
}

// Copies the result (delta int32[S][C], accepting uint8[S], byte_class int32[256])
// and frees the handle.
void lattice_compose_take(void* h, int32_t* delta, uint8_t* accepting, int32_t* byte_class) {
  Composed* r = static_cast<Composed*>(h);
  std::memcpy(delta, r->delta.data(), r->delta.size() * sizeof(int32_t));
  std::memcpy(accepting, r->acc.data(), r->acc.size());
  std::memcpy(byte_class, r->bc, sizeof(r->bc));
  delete r;
}

}  // extern "C"

// ---------------------------------------------------------------------------------
// Product of two DFAs (dfa_ops._product, then dfa_ops._trim): the pairs of states
// reachable from (0, 0), breadth-first, each pair's row over the classes of the
// byte pairs (numbered by the rank of a.bc * (max b.bc + 1) + b.bc), then the pairs
// that cannot accept dropped. mode 0: intersection (both accept; a pair where b
// rejects is dropped), 1: difference (a accepts, b does not; b may have rejected:
// the pair lives on as (x, -1)).
// ---------------------------------------------------------------------------------

namespace {

Composed* product_run(const int32_t* da, int64_t Sa, int64_t Ca, const int32_t* bca,
                      const uint8_t* acca, const int32_t* db, int64_t Sb, int64_t Cb,
                      const int32_t* bcb, const uint8_t* accb, int64_t mode,
                      int64_t max_states, int64_t* status) {
  int64_t nb = 0;
  for (int b = 0; b < 256; ++b) nb = std::max<int64_t>(nb, bcb[b] + 1);
  int64_t key[256];
  for (int b = 0; b < 256; ++b) key[b] = static_cast<int64_t>(bca[b]) * nb + bcb[b];
  std::vector<int64_t> keys(key, key + 256);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  const int64_t C = static_cast<int64_t>(keys.size());
  Composed* res = new Composed();
  std::vector<int32_t> rep(C, -1);
  for (int b = 0; b < 256; ++b) {
    const int32_t c = static_cast<int32_t>(
        std::lower_bound(keys.begin(), keys.end(), key[b]) - keys.begin());
    res->bc[b] = c;
    if (rep[c] < 0) rep[c] = b;
  }
  std::vector<int32_t> ca(C), cb(C);
  for (int64_t c = 0; c < C; ++c) {
    ca[c] = bca[rep[c]];
    cb[c] = bcb[rep[c]];
  }
  // Pair ids: dense table when small, else a hash map; y = -1 (b rejected) as 0.
  const int64_t W = Sb + 1;
  const bool dense = Sa * W <= (int64_t{1} << 18);
  std::vector<int32_t> dense_id(dense ? Sa * W : 0, -1);
  std::unordered_map<int64_t, int32_t> sparse_id;
  std::vector<int32_t> ox, oy;  // the pairs in order
  std::vector<int32_t> delta;
  auto id_of = [&](int32_t x, int32_t y) -> int32_t {
    const int64_t k = static_cast<int64_t>(x) * W + (y + 1);
    int32_t* slot;
    if (dense) {
      slot = &dense_id[k];
    } else {
      auto it = sparse_id.find(k);
      if (it != sparse_id.end()) return it->second;
      slot = &sparse_id[k];
      *slot = -1;
    }
    if (*slot < 0) {
      *slot = static_cast<int32_t>(ox.size());
      ox.push_back(x);
      oy.push_back(y);
      if (static_cast<int64_t>(ox.size()) > max_states) throw ComposeAbort{1};
    }
    return *slot;
  };
  try {
    id_of(0, 0);
    for (size_t i = 0; i < ox.size(); ++i) {
      const int32_t sa = ox[i], sb = oy[i];
      for (int64_t c = 0; c < C; ++c) {
        const int32_t x = da[sa * Ca + ca[c]];
        const int32_t y = sb >= 0 ? db[sb * Cb + cb[c]] : -1;
        delta.push_back(x < 0 || (y < 0 && mode == 0) ? -1 : id_of(x, y));
      }
    }
  } catch (const ComposeAbort& e) {
    delete res;
    *status = e.status;
    return nullptr;
  }
  const int64_t S = static_cast<int64_t>(ox.size());
  std::vector<uint8_t> acc(S);
  for (int64_t i = 0; i < S; ++i) {
    const bool in_a = acca[ox[i]] != 0, in_b = oy[i] >= 0 && accb[oy[i]] != 0;
    acc[i] = mode == 0 ? (in_a && in_b) : (in_a && !in_b);
  }
  // Trim: the pairs that reach acceptance (backwards from the accepting ones).
  std::vector<int64_t> in_off(S + 1, 0);
  for (int32_t t : delta)
    if (t >= 0) ++in_off[t + 1];
  for (int64_t s = 0; s < S; ++s) in_off[s + 1] += in_off[s];
  std::vector<int32_t> in_src(in_off[S]);
  {
    std::vector<int64_t> fill(in_off.begin(), in_off.end() - 1);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) {
        const int32_t t = delta[s * C + c];
        if (t >= 0) in_src[fill[t]++] = static_cast<int32_t>(s);
      }
  }
  std::vector<uint8_t> live(S, 0);
  std::vector<int32_t> queue;
  for (int64_t s = 0; s < S; ++s)
    if (acc[s]) { live[s] = 1; queue.push_back(static_cast<int32_t>(s)); }
  for (size_t q = 0; q < queue.size(); ++q)
    for (int64_t i = in_off[queue[q]]; i < in_off[queue[q] + 1]; ++i)
      if (!live[in_src[i]]) { live[in_src[i]] = 1; queue.push_back(in_src[i]); }
  if (!live[0]) {
    delete res;
    *status = 4;
    return nullptr;
  }
  std::vector<int32_t> new_id(S, -1);
  int64_t L = 0;
  for (int64_t s = 0; s < S; ++s)
    if (live[s]) new_id[s] = static_cast<int32_t>(L++);
  res->S = L;
  res->C = C;
  res->delta.resize(L * C);
  res->acc.resize(L);
  for (int64_t s = 0; s < S; ++s) {
    if (!live[s]) continue;
    const int64_t r = new_id[s];
    for (int64_t c = 0; c < C; ++c) {
      const int32_t t = delta[s * C + c];
      res->delta[r * C + c] = t >= 0 && live[t] ? new_id[t] : -1;
    }
    res->acc[r] = acc[s];
  }
  return res;
}

}  // namespace

extern "C" {

// The product of DFAs a (delta da[Sa][Ca], byte classes bca[256], accepting
// acca[Sa]) and b (likewise): mode 0 intersection, 1 difference (see product_run).
// Returns a handle (lattice_compose_size / _take), or null with *status 1 past
// max_states pairs, 4 no pair reaches acceptance.
void* lattice_dfa_product(const int32_t* da, int64_t Sa, int64_t Ca, const int32_t* bca,
                          const uint8_t* acca, const int32_t* db, int64_t Sb, int64_t Cb,
                          const int32_t* bcb, const uint8_t* accb, int64_t mode,
                          int64_t max_states, int64_t* status) {
  *status = 0;
  try {
    return product_run(da, Sa, Ca, bca, acca, db, Sb, Cb, bcb, accb, mode, max_states,
                       status);
  } catch (...) {  // (std::bad_alloc)
    *status = 5;
  }
  return nullptr;
}

}  // extern "C"
