// The fly network's Euler integration, its adjoint and the synapse-strength gradient on the CPU (built by
// raywave.native with the system compiler, called through ctypes from raywave/fly/kernel.py).
//
// The synapses are given as *runs*: a run (tar, src, len, group) is `len` edges of one (type pair, du, dv) group
// whose targets tar .. tar+len-1 and sources src .. src+len-1 are consecutive neurons (a type's neurons are
// numbered column by column, so a group's edges fall into runs along the lattice's rows). All edges of a group
// share one weight, so the synaptic sum of a run is one contiguous multiply-add of len x B values, with no
// per-edge index or weight read. K models share the runs; model k's neurons are rows k*N ... k*N + N - 1 and its
// weights gw[k*G ...].
//
// Determinism: every output element is computed by one thread in a fixed order (a block of target neurons, its
// runs in the table's order; a group's runs in order for the gradient), so results are bit for bit the same at
// any thread count and in any run.

#include <algorithm>
#include <cstdint>
#include <vector>

#include <omp.h>

typedef int32_t i32;
typedef int64_t i64;

// The decoder's input map: a (B, steps, P, K*O) array, channels last. Output type c's neuron at column i,
// nodes[c*cols + i] of each model, is at map position pos[i], channel k*O + c for model k; the n_off positions
// off (off the lattice) are zero.
struct MapLayout {
  const i32* nodes;
  const i32* pos;
  const i32* off;
  i64 n_off, O, cols, P;
};

namespace {

// The synaptic sums of model k for the block of output neurons n0 .. n1-1, runs r0 .. r1-1 of the block:
// out[(to[r] - n0)*B + i] = sum over runs of w_k[grp[r]] * in_k[from[r]*B + i] for i < len[r]*B, where
// w_k = gw + k*G and in_k = in + k*N*B (the forward product W relu(V) with to = targets and from = sources; the
// adjoint's W^T with the two swapped). One contiguous multiply-add per run, in the table's order. BC: B as a
// compile-time constant (0: B_rt at run time).
// With DOTS (the adjoint), also every run's term of the weight gradient: the dot product of the run's len x B
// values of `in` (m at the targets) with relu_blk (ReLU(V) of the block's neurons, in the block's rows) at its
// sources, added to run_acc[r] in double.
template <typename T, int BC, bool DOTS>
inline void block_products(T* __restrict out, const T* in, const T* gw, i64 k, i64 N, i64 B_rt, i64 G, const i32* to,
                           const i32* from, const i32* len, const i32* grp, i64 r0, i64 r1, i64 n0, i64 n1,
                           const T* __restrict relu_blk, double* __restrict run_acc) {
  const i64 B = BC ? BC : B_rt;
  std::fill(out, out + (n1 - n0) * B, T(0));
  const T* w = gw + k * G;
  const T* in_k = in + k * N * B;
  for (i64 r = r0; r < r1; ++r) {
    const T wr = w[grp[r]];
    T* __restrict dst = out + (to[r] - n0) * B;
    const T* __restrict src = in_k + (i64)from[r] * B;
    const i64 L = (i64)len[r] * B;
    if (DOTS) {
      const T* __restrict q = relu_blk + (to[r] - n0) * B;
      T d = 0;
#pragma omp simd reduction(+ : d)
      for (i64 i = 0; i < L; ++i) {
        dst[i] += wr * src[i];
        d += src[i] * q[i];
      }
      run_acc[r] += d;
    } else {
#pragma omp simd
      for (i64 i = 0; i < L; ++i) dst[i] += wr * src[i];
    }
  }
}

// block_products with B = 4 (the training batch: whole vectors per run) compiled apart from other batch sizes.
template <typename T, bool DOTS>
inline void products(T* out, const T* in, const T* gw, i64 k, i64 N, i64 B, i64 G, const i32* to, const i32* from,
                     const i32* len, const i32* grp, i64 r0, i64 r1, i64 n0, i64 n1, const T* relu_blk = nullptr,
                     double* run_acc = nullptr) {
  if (B == 4)
    block_products<T, 4, DOTS>(out, in, gw, k, N, B, G, to, from, len, grp, r0, r1, n0, n1, relu_blk, run_acc);
  else
    block_products<T, 0, DOTS>(out, in, gw, k, N, B, G, to, from, len, grp, r0, r1, n0, n1, relu_blk, run_acc);
}

// V[s+1] = V[s] + a * ((bias - V[s] + x[s]) + W relu(V[s])) for s < steps. states: (steps+1, K*N, B) with
// states[0] = V[0]; drive (steps, K*N, B) = the bracket, for the adjoint (null: not kept). Every array is laid
// out step by step, so a step reads and writes contiguous memory.
// Runs sorted by target block (blk_ptr: first run of each block of `bs` target neurons). x: (steps, K, C, B),
// in_col[n]: the column whose luminance neuron n receives, or -1.
// grid (unless null): the decoder's input map (`MapLayout`), the ReLU of the output neurons' voltages after each
// step, written after the step while its values are in cache, position by position (each position's channels
// together: written in the integration's neuron order, every value would go to a cache line of its own).
template <typename T>
void forward(i64 K, i64 N, i64 B, i64 steps, i64 G, i64 C, const i32* r_tar, const i32* r_src, const i32* r_len,
             const i32* r_grp, const i64* blk_ptr, i64 n_blk, i64 bs, const T* gw, const T* a, const T* bias,
             const T* x, const i32* in_col, T* states, T* drive, T* rbuf, const MapLayout* map, T* grid,
             int threads) {
  const i64 NB = K * N * B;
  T* r_even = rbuf;
  T* r_odd = rbuf + NB;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> y(bs * B);
#pragma omp for schedule(static)
    for (i64 i = 0; i < NB; ++i) r_even[i] = states[i] > 0 ? states[i] : T(0);
    const i64 KO = grid ? K * map->O : 0;
    if (grid) {
#pragma omp for schedule(static)
      for (i64 f = 0; f < B * steps; ++f)
        for (i64 j = 0; j < map->n_off; ++j) std::fill_n(grid + (f * map->P + map->off[j]) * KO, KO, T(0));
    }
    // model after model (the models are independent): one model's state of a step (~0.7 MB at batch 4) and its
    // tables stay in the caches, where all K models' (K x that) would not
    for (i64 k = 0; k < K; ++k)
      for (i64 s = 0; s < steps; ++s) {
        const T* rc = (s % 2 == 0) ? r_even : r_odd;
        T* rn = (s % 2 == 0) ? r_odd : r_even;
        const T* v = states + s * NB;
        T* vn = states + (s + 1) * NB;
        T* d = drive ? drive + s * NB : nullptr;
        const T* xs = x + s * K * C * B;
#pragma omp for schedule(dynamic, 1)
        for (i64 blk = 0; blk < n_blk; ++blk) {
          const i64 n0 = blk * bs, n1 = std::min(N, n0 + bs);
          T* __restrict yy = y.data();
          products<T, false>(yy, rc, gw, k, N, B, G, r_tar, r_src, r_len, r_grp, blk_ptr[blk], blk_ptr[blk + 1], n0,
                             n1);
          for (i64 n = n0; n < n1; ++n) {
            const i64 row = k * N + n;
            const T an = a[row], bn = bias[row];
            const i32 c = in_col[n];
            for (i64 b = 0; b < B; ++b) {
              const i64 at = row * B + b;
              T dd = bn - v[at];
              if (c >= 0) dd += xs[(k * C + c) * B + b];
              dd += yy[(n - n0) * B + b];
              if (d) d[at] = dd;
              const T vv = v[at] + an * dd;
              vn[at] = vv;
              const T rr = vv > 0 ? vv : T(0);
              rn[at] = rr;
            }
          }
        }
        if (grid) {  // (nowait: the next step reads rn, the one after it writes it, past the next barrier)
          const i64 O = map->O, cols = map->cols;
#pragma omp for schedule(static) nowait
          for (i64 i = 0; i < cols; ++i)
            for (i64 b = 0; b < B; ++b) {
              T* out = grid + ((b * steps + s) * map->P + map->pos[i]) * KO + k * O;
              for (i64 c = 0; c < O; ++c) out[c] = rn[(k * N + map->nodes[c * cols + i]) * B + b];
            }
        }
      }
  }
}

// The discrete adjoint of `forward`, backwards over the steps: lam = dL/dV[s+1] (+ g_out[s]), m = a * lam,
// dL/dV[s] = relu'(V[s]) * (W^T m) + (1 - a) * lam. Writes lam_out = dL/dV[0], grad_a[row] = sum over steps and
// batch of lam * drive, grad_b[row] = sum of m; mu (steps, K*N, B), m of every step, unless null (then mbuf, K*N*B,
// holds the current step's); and, unless grad_gw is null, the gradient of every model's group weights: for group
// g of model k, the sum over its edges (tar, src), steps and batch of m[s, k*N + tar] * relu(V[s, k*N + src]).
// Product runs sorted by *source* block. The weight gradient is formed inside the transposed product, which reads
// the same m: every run's dot product per step is added to its own double sum, in step order, by whichever thread
// has its block at that step (steps are separated by barriers), and the groups' sums are then added up over their
// runs in table order: the result does not depend on the thread count.
// lbuf: 2*K*N*B scratch. g_out (the gradient of the states; null: none) and g_grid (of the decoder's input map,
// laid out as `forward` writes it, through the map's ReLU; null: none) are both added to dL/dV[s+1].
template <typename T>
void backward(i64 K, i64 N, i64 B, i64 steps, i64 G, const i32* r_tar, const i32* r_src, const i32* r_len,
              const i32* r_grp, const i64* blk_ptr, i64 n_blk, i64 bs, const T* gw, const T* a, const T* states,
              const T* drive,
              const T* g_out, T* mu, T* mbuf, T* lam_out, T* grad_a, T* grad_b, T* grad_gw, T* lbuf,
              const MapLayout* map, const T* g_grid, int threads) {
  const i64 KN = K * N, NB = KN * B, R = blk_ptr[n_blk];
  std::vector<double> run_acc(grad_gw ? K * R : 0, 0.0);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> z(bs * B), rv(bs * B);
    T* lam = lbuf;
    T* nxt = lbuf + NB;
    for (i64 k = 0; k < K; ++k) {  // model after model, as in `forward`
#pragma omp for schedule(static)
      for (i64 row = k * N; row < (k + 1) * N; ++row) {
        grad_a[row] = 0;
        grad_b[row] = 0;
        for (i64 b = 0; b < B; ++b) lam[row * B + b] = 0;
      }
      for (i64 s = steps - 1; s >= 0; --s) {
        const T* gs = g_out ? g_out + s * NB : nullptr;
        const T* ds = drive + s * NB;
        const T* vn = states + (s + 1) * NB;
        T* ms = mu ? mu + s * NB : mbuf;
        if (g_grid) {  // the map's gradient, through its ReLU (a loop of its own: the next one stays simple)
          const i64 O = map->O, cols = map->cols, KO = K * O;
#pragma omp for schedule(static)
          for (i64 i = 0; i < cols; ++i)
            for (i64 c = 0; c < O; ++c) {
              const i64 at = (k * N + map->nodes[c * cols + i]) * B;
              const T* g = g_grid + (s * map->P + map->pos[i]) * KO + k * O + c;
              for (i64 b = 0; b < B; ++b)
                if (vn[at + b] > 0) lam[at + b] += g[b * steps * map->P * KO];
            }
        }
#pragma omp for schedule(static)
        for (i64 row = k * N; row < (k + 1) * N; ++row) {
          const T ar = a[row];
          T ga = grad_a[row], gb = grad_b[row];
          for (i64 b = 0; b < B; ++b) {
            const i64 at = row * B + b;
            const T l = gs ? lam[at] + gs[at] : lam[at];
            lam[at] = l;
            const T m = ar * l;
            ms[at] = m;
            ga += l * ds[at];
            gb += m;
          }
          grad_a[row] = ga;
          grad_b[row] = gb;
        }
        const T* vs = states + s * NB;
#pragma omp for schedule(dynamic, 1)
        for (i64 blk = 0; blk < n_blk; ++blk) {
          const i64 n0 = blk * bs, n1 = std::min(N, n0 + bs);
          T* __restrict zz = z.data();
          if (grad_gw) {
            const T* vb = vs + (k * N + n0) * B;
            for (i64 i = 0; i < (n1 - n0) * B; ++i) rv[i] = vb[i] > 0 ? vb[i] : T(0);
            products<T, true>(zz, ms, gw, k, N, B, G, r_src, r_tar, r_len, r_grp, blk_ptr[blk], blk_ptr[blk + 1],
                              n0, n1, rv.data(), run_acc.data() + k * R);  // W^T, and the weight-gradient terms
          } else {
            products<T, false>(zz, ms, gw, k, N, B, G, r_src, r_tar, r_len, r_grp, blk_ptr[blk], blk_ptr[blk + 1],
                               n0, n1);  // W^T
          }
          for (i64 n = n0; n < n1; ++n) {
            const i64 row = k * N + n;
            const T keep = 1 - a[row];
            for (i64 b = 0; b < B; ++b) {
              const i64 at = row * B + b;
              nxt[at] = (vs[at] > 0 ? zz[(n - n0) * B + b] : T(0)) + keep * lam[at];
            }
          }
        }
        std::swap(lam, nxt);  // every thread, after the loop's barrier
      }
#pragma omp for schedule(static)
      for (i64 i = k * N * B; i < (k + 1) * N * B; ++i) lam_out[i] = lam[i];
    }
    if (grad_gw) {
#pragma omp for schedule(static)
      for (i64 k = 0; k < K; ++k) {  // each group's sum over its runs, in table order
        std::vector<double> sum(G, 0.0);
        for (i64 r = 0; r < R; ++r) sum[r_grp[r]] += run_acc[k * R + r];
        for (i64 g = 0; g < G; ++g) grad_gw[k * G + g] = (T)sum[g];
      }
    }
  }
}

}  // namespace

extern "C" {

#define FLY_FORWARD(NAME, T)                                                                                      \
  void NAME(i64 K, i64 N, i64 B, i64 steps, i64 G, i64 C, const i32* r_tar, const i32* r_src, const i32* r_len, \
            const i32* r_grp, const i64* blk_ptr, i64 n_blk, i64 bs, const T* gw, const T* a, const T* bias,      \
            const T* x, const i32* in_col, T* states, T* drive, T* rbuf, const MapLayout* map, T* grid,          \
            int threads) {                                                                                       \
    forward<T>(K, N, B, steps, G, C, r_tar, r_src, r_len, r_grp, blk_ptr, n_blk, bs, gw, a, bias, x, in_col,     \
               states, drive, rbuf, map, grid, threads);                                                        \
  }
FLY_FORWARD(fly_forward_f32, float)
FLY_FORWARD(fly_forward_f64, double)

#define FLY_BACKWARD(NAME, T)                                                                                     \
  void NAME(i64 K, i64 N, i64 B, i64 steps, i64 G, const i32* r_tar, const i32* r_src, const i32* r_len,        \
            const i32* r_grp, const i64* blk_ptr, i64 n_blk, i64 bs, const T* gw, const T* a, const T* states,   \
            const T* drive,                                                                                      \
            const T* g_out, T* mu, T* mbuf, T* lam_out, T* grad_a, T* grad_b, T* grad_gw, T* lbuf,               \
            const MapLayout* map, const T* g_grid, int threads) {                                                \
    backward<T>(K, N, B, steps, G, r_tar, r_src, r_len, r_grp, blk_ptr, n_blk, bs,                               \
                gw, a, states, drive, g_out, mu, mbuf, lam_out, grad_a, grad_b, grad_gw, lbuf, map, g_grid,         \
                threads);                                                                                        \
  }
FLY_BACKWARD(fly_backward_f32, float)
FLY_BACKWARD(fly_backward_f64, double)

}  // extern "C"
