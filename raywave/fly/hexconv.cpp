// The decoder's hex-masked convolutions on the CPU, forward and backward: K independent convolutions (one per
// ensemble member) on channels-last axial maps (built by raywave.native, called from raywave/fly/hexconv.py).
//
// The convolution: x (F, H, W, K*CI) -> y (F, H, W, K*CO), zero padding: y[f,u,v,k*CO+o] = bias[k*CO+o] + sum over
// the taps t (du, dv) of the hexagon and ci of x[f, u+du, v+dv, k*CI+ci] * w[k, t, ci, o]. Only the taps of the
// hexagon are stored (19 for radius 2), so no multiply-add is spent on the masked corners of the square kernel, and
// the K models are one call.
//
// Supports: the input is taken as zero outside its support and the output is formed on its support only (zero
// elsewhere). A support is one contiguous segment [lo, hi] of every row (the hex lattice's rows on the axial map
// are), so work is skipped where a tap would read only zeros (the decoder's input map is zero off the lattice) or
// where nobody reads the output (the flow is read on the lattice only). The input gradient is the same convolution
// of dL/dy with the weights transposed, the taps mirrored and the two supports swapped.
//
// Determinism: every output and input-gradient element is formed by one thread in a fixed order; the weight and
// bias gradients are summed per block of frames (a fixed split, not one per thread) in double and the blocks then
// added in order, so results do not depend on the thread count.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

typedef int32_t i32;
typedef int64_t i64;

namespace {

// One AVX register of T (GCC/Clang vector extension; lowered to narrower vectors where AVX is missing), with
// element alignment so loads need not be aligned.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32), aligned(sizeof(T))));
};

struct Shape {
  i64 F, H, W, K, CI, CO, NT;
  const i32* du;  // (NT,) tap offsets along rows
  const i32* dv;  // (NT,) tap offsets along columns
  const i32* in_seg;  // (H, 2) the input's support: [lo, hi] of each row (hi < lo: an empty row)
  const i32* out_seg;  // (H, 2) the output's support
  i64 radius() const {
    i64 r = 0;
    for (i64 t = 0; t < NT; ++t) r = std::max<i64>(r, std::max(std::abs(du[t]), std::abs(dv[t])));
    return r;
  }
};

// Taps t .. t+n-1 at (du, dv), (du, dv+1), ...: the inputs of a run's taps are neighbours in a row, so a run of
// taps is one contiguous stretch of input channels and of weights (the taps are in row-major order).
struct TapRun {
  i64 du, dv, n, t;
};

std::vector<TapRun> tap_runs(const Shape& s) {
  std::vector<TapRun> runs;
  for (i64 t = 0; t < s.NT; ++t) {
    if (!runs.empty() && runs.back().du == s.du[t] && runs.back().dv + runs.back().n == s.dv[t])
      ++runs.back().n;
    else
      runs.push_back({s.du[t], s.dv[t], 1, t});
  }
  return runs;
}

// out[f, u, v, k*CO + o] (on the output's support) = bias + sum over taps and input channels c of
// in[f, u+du, v+dv, k*CI + c] * w[k, o / L, t, c, o % L]: the output channels in chunks of one vector of L lanes
// (the last chunk zero-padded), each chunk's weights contiguous (a chunk of the first decoder layer's input gradient
// is 19 x 8 x 8 floats, which stay in L1 where all 34 channels' would not). VB neighbouring positions are formed
// together (VB sums in vector registers, each weight vector loaded once for all of them). Each frame's input, model
// by model, is first copied into a zero-padded frame, so every block takes the same branch-free path along runs
// of taps; a (block, tap) pair whose inputs lie outside the input's support is skipped (all its terms are zero).
// bias: null for none.
template <typename T, int VB>
void conv(const Shape& s, const T* in, const T* w, const T* bias, T* out, int threads) {
  typedef typename Vec<T>::type V;
  constexpr int L = 32 / sizeof(T);
  const i64 H = s.H, W = s.W, K = s.K, CI = s.CI, CO = s.CO, R = s.radius(), chunks = (CO + L - 1) / L;
  const i64 WP = W + 2 * R + VB;  // the padded row, with slack for a last block that runs past the row
  const std::vector<TapRun> runs = tap_runs(s);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> pad((H + 2 * R) * WP * CI, T(0));  // outside the input's support: always zero
#pragma omp for schedule(static)
    for (i64 fk = 0; fk < s.F * K; ++fk) {
      const i64 f = fk / K, k = fk % K;
      for (i64 u = 0; u < H; ++u)
        for (i64 v = s.in_seg[2 * u]; v <= s.in_seg[2 * u + 1]; ++v)
          std::copy_n(in + ((f * H + u) * W + v) * K * CI + k * CI, CI, pad.data() + ((u + R) * WP + v + R) * CI);
      for (i64 u = 0; u < H; ++u) {
        const i64 lo = s.out_seg[2 * u], hi = s.out_seg[2 * u + 1];
        T* row = out + (f * H + u) * W * K * CO + k * CO;
        for (i64 v = 0; v < W; ++v)
          if (v < lo || v > hi) std::fill_n(row + v * K * CO, CO, T(0));
        for (i64 ch = 0; ch < chunks; ++ch) {
          const i64 o0 = ch * L, no = std::min<i64>(L, CO - o0);
          const T* wc = w + (k * chunks + ch) * s.NT * CI * L;
          V b = {};
          for (i64 o = 0; o < no; ++o) b[o] = bias ? bias[k * CO + o0 + o] : T(0);
          for (i64 v0 = lo; v0 <= hi; v0 += VB) {
            V acc[VB];
            for (int j = 0; j < VB; ++j) acc[j] = b;
            for (const TapRun& run : runs) {
              const i64 uu = u + run.du;
              if (uu < 0 || uu >= H) continue;
              // the run's taps whose VB inputs meet the input's support (the others read only zeros)
              const i64 d0 = std::max(run.dv, s.in_seg[2 * uu] - v0 - VB + 1);
              const i64 d1 = std::min(run.dv + run.n - 1, s.in_seg[2 * uu + 1] - v0);
              if (d0 > d1) continue;
              const T* ip = pad.data() + ((uu + R) * WP + v0 + d0 + R) * CI;
              const V* wp = reinterpret_cast<const V*>(wc + (run.t + d0 - run.dv) * CI * L);
              for (i64 i = 0; i < (d1 - d0 + 1) * CI; ++i) {  // (tap, input channel) pairs, contiguous in both
                const V wv = wp[i];
                for (int j = 0; j < VB; ++j) acc[j] += ip[j * CI + i] * wv;
              }
            }
            const i64 nj = std::min<i64>(VB, hi - v0 + 1);
            if (no == L && nj == VB) {  // a whole block of whole vectors: straight from the registers
              for (int j = 0; j < VB; ++j) __builtin_memcpy(row + (v0 + j) * K * CO + o0, &acc[j], sizeof(V));
            } else {  // (through a buffer: indexed at run time, acc would live in memory, not in registers)
              T sums[VB * L];
              for (int j = 0; j < VB; ++j) __builtin_memcpy(sums + j * L, &acc[j], sizeof(V));
              for (i64 j = 0; j < nj; ++j)
                for (i64 o = 0; o < no; ++o) row[(v0 + j) * K * CO + o0 + o] = sums[j * L + o];
            }
          }
        }
      }
    }
  }
}

// dst[c][n] += sum over v0 <= v <= v1 of x[v * stride + c] * g[v * NV + n] for c < NC (a compile-time count, so the
// NC x NV sums stay in registers).
template <typename T, int NV, int NC>
inline void dots(const T* x, i64 stride, const typename Vec<T>::type* g, i64 v0, i64 v1,
                 typename Vec<T>::type* dst) {
  typedef typename Vec<T>::type V;
  V acc[NC][NV] = {};
  for (i64 v = v0; v <= v1; ++v) {
    const T* xv = x + v * stride;
    for (int c = 0; c < NC; ++c)
      for (int n = 0; n < NV; ++n) acc[c][n] += xv[c] * g[v * NV + n];
  }
  for (int c = 0; c < NC; ++c)
    for (int n = 0; n < NV; ++n) dst[c * NV + n] += acc[c][n];
}

// `dots` for nc <= NC channels (nc known at run time: dispatched to its compile-time count).
template <typename T, int NV, int NC>
inline void channel_dots(i64 nc, const T* x, i64 stride, const typename Vec<T>::type* g, i64 v0, i64 v1,
                         typename Vec<T>::type* dst) {
  if constexpr (NC > 1)
    if (nc < NC) return channel_dots<T, NV, NC - 1>(nc, x, stride, g, v0, v1, dst);
  dots<T, NV, NC>(x, stride, g, v0, v1, dst);
}

// Weight and bias gradients: gw[k,t,c,o] = sum over frames and positions (u, v) of the output's support whose input
// (u+du, v+dv) is in the input's support of x[f, u+du, v+dv, k*CI+c] * gy[f,u,v,k*CO+o] (gw (K, taps, CI, CO); the
// sums are kept with CP = NV * L output channels, zero beyond CO), gb[k*CO+o] = sum of gy over the output's
// support. For each row and tap, CB input channels at a time are summed over the row's positions in vector
// registers, and a frame's rows in T. Frames are split into `blocks` fixed blocks; each block's sums of the frames
// are formed in double by one thread (frames in order) and the blocks added in order.
template <typename T, int NV, int CB>
void grad_weight(const Shape& s, const T* x, const T* gy, T* gw, T* gb, i64 blocks, int threads) {
  typedef typename Vec<T>::type V;
  constexpr int L = 32 / sizeof(T), CP = NV * L;
  const i64 F = s.F, H = s.H, W = s.W, K = s.K, CI = s.CI, CO = s.CO, NT = s.NT;
  const i64 NW = K * NT * CI * CP, NB = K * CO;
  std::vector<double> part(blocks * (NW + NB), 0.0);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (i64 blk = 0; blk < blocks * K; ++blk) {
    const i64 bl = blk / K, k = blk % K;
    double* pw = part.data() + bl * (NW + NB) + k * NT * CI * CP;
    double* pb = part.data() + bl * (NW + NB) + NW + k * CO;
    std::vector<T> row(W * CP);  // the row's output gradient, padded to CP channels
    const V* g = reinterpret_cast<const V*>(row.data());
    std::vector<T> frame(NT * CI * CP, T(0));  // the frame's sums
    V* fsum = reinterpret_cast<V*>(frame.data());
    for (i64 f = F * bl / blocks; f < F * (bl + 1) / blocks; ++f) {
      for (i64 u = 0; u < H; ++u) {
        const i64 lo = s.out_seg[2 * u], hi = s.out_seg[2 * u + 1];
        for (i64 v = lo; v <= hi; ++v)
          for (int o = 0; o < CP; ++o) {
            const T gv = o < CO ? gy[((f * H + u) * W + v) * K * CO + k * CO + o] : T(0);
            row[v * CP + o] = gv;
            if (o < CO) pb[o] += gv;
          }
        for (i64 t = 0; t < NT; ++t) {
          const i64 uu = u + s.du[t], dv = s.dv[t];
          if (uu < 0 || uu >= H) continue;
          const i64 v0 = std::max<i64>(lo, s.in_seg[2 * uu] - dv), v1 = std::min<i64>(hi, s.in_seg[2 * uu + 1] - dv);
          if (v0 > v1) continue;
          const T* xp = x + ((f * H + uu) * W + dv) * K * CI + k * CI;  // x at column v + dv
          for (i64 c0 = 0; c0 < CI; c0 += CB)
            channel_dots<T, NV, CB>(std::min<i64>(CB, CI - c0), xp + c0, K * CI, g, v0, v1,
                                    fsum + (t * CI + c0) * NV);
        }
      }
      for (i64 i = 0; i < NT * CI * CP; ++i) pw[i] += frame[i];
      std::fill(frame.begin(), frame.end(), T(0));
    }
  }
  for (i64 k = 0; k < K; ++k)
    for (i64 i = 0; i < NT * CI; ++i)
      for (i64 o = 0; o < CO; ++o) {
        double sum = 0;
        for (i64 bl = 0; bl < blocks; ++bl) sum += part[bl * (NW + NB) + (k * NT * CI + i) * CP + o];
        gw[(k * NT * CI + i) * CO + o] = (T)sum;
      }
  for (i64 i = 0; i < NB; ++i) {
    double sum = 0;
    for (i64 bl = 0; bl < blocks; ++bl) sum += part[bl * (NW + NB) + NW + i];
    gb[i] = (T)sum;
  }
}

// The decoder's batch norm in training mode over x (N, C) (a channels-last map's positions by channels): per channel
// c, mean[c] and the biased variance var[c] over the N rows (two passes), y = (x - mean) * invstd * gamma + beta with
// invstd = 1 / sqrt(var + eps). Column sums are formed per fixed block of rows in double by one thread and the blocks
// added in order (independent of the thread count).
template <typename T, typename F>
void column_sums(i64 N, i64 C, i64 blocks, int threads, double* out, F term) {
  std::vector<double> part(blocks * C, 0.0);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (i64 bl = 0; bl < blocks; ++bl) {
    double* p = part.data() + bl * C;
    for (i64 n = N * bl / blocks; n < N * (bl + 1) / blocks; ++n)
      for (i64 c = 0; c < C; ++c) p[c] += term(n, c);
  }
  for (i64 c = 0; c < C; ++c) {
    out[c] = 0;
    for (i64 bl = 0; bl < blocks; ++bl) out[c] += part[bl * C + c];
  }
}

template <typename T>
void norm_forward(i64 N, i64 C, const T* x, const T* gamma, const T* beta, double eps, T* y, T* mean_out, T* var_out,
                  T* invstd_out, i64 blocks, int threads) {
  std::vector<double> sum(C), sq(C);
  column_sums<T>(N, C, blocks, threads, sum.data(), [&](i64 n, i64 c) { return (double)x[n * C + c]; });
  std::vector<T> mean(C), scale(C), shift(C);
  for (i64 c = 0; c < C; ++c) mean[c] = (T)(sum[c] / N);
  column_sums<T>(N, C, blocks, threads, sq.data(), [&](i64 n, i64 c) {
    const double d = x[n * C + c] - mean[c];
    return d * d;
  });
  for (i64 c = 0; c < C; ++c) {
    const double var = sq[c] / N, invstd = 1 / std::sqrt(var + eps);
    mean_out[c] = mean[c];
    var_out[c] = (T)var;
    invstd_out[c] = (T)invstd;
    scale[c] = (T)(invstd * gamma[c]);
    shift[c] = beta[c];
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < C; ++c) y[n * C + c] = (x[n * C + c] - mean[c]) * scale[c] + shift[c];
}

// Its backward: with d = x - mean, sg = sum of gy and sgd = sum of gy * d over the rows, gbeta = sg,
// ggamma = sgd * invstd, gx = gamma * invstd * (gy - sg / N - d * invstd^2 * sgd / N).
template <typename T>
void norm_backward(i64 N, i64 C, const T* x, const T* gy, const T* mean, const T* invstd, const T* gamma, T* gx,
                   T* ggamma, T* gbeta, i64 blocks, int threads) {
  std::vector<double> sg(C), sgd(C);
  column_sums<T>(N, C, blocks, threads, sg.data(), [&](i64 n, i64 c) { return (double)gy[n * C + c]; });
  column_sums<T>(N, C, blocks, threads, sgd.data(),
                 [&](i64 n, i64 c) { return (double)gy[n * C + c] * (x[n * C + c] - mean[c]); });
  std::vector<T> a(C), b(C), m(C);
  for (i64 c = 0; c < C; ++c) {
    gbeta[c] = (T)sg[c];
    ggamma[c] = (T)(sgd[c] * invstd[c]);
    a[c] = (T)(gamma[c] * (double)invstd[c]);  // gx = a * (gy - m) - b * d
    m[c] = (T)(sg[c] / N);
    b[c] = (T)(gamma[c] * (double)invstd[c] * invstd[c] * invstd[c] * sgd[c] / N);
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (i64 n = 0; n < N; ++n)
    for (i64 c = 0; c < C; ++c) gx[n * C + c] = a[c] * (gy[n * C + c] - m[c]) - b[c] * (x[n * C + c] - mean[c]);
}

// The weight gradient's instantiations, register blocks sized for 16 vector registers: nv, the vectors of L lanes
// the weights' output channels are padded to, is 1 or 2.
template <typename T>
bool weight_gradient(i64 nv, const Shape& s, const T* x, const T* gy, T* gw, T* gb, i64 blocks, int threads) {
  if (nv == 1) grad_weight<T, 1, 8>(s, x, gy, gw, gb, blocks, threads);
  else if (nv == 2) grad_weight<T, 2, 4>(s, x, gy, gw, gb, blocks, threads);
  else return false;
  return true;
}

}  // namespace

extern "C" {

// hexconv_conv: the forward (w (K, chunks, taps, CI, L)); the input gradient with in = dL/dy, w = the weights
// transposed ((K, chunks of CI, taps, CO, L)), the taps mirrored (negated, and reversed to stay in row-major
// order), the supports swapped, bias null, out = dL/dx. hexconv_grad_weight returns 1, or 0 when nv has no
// instantiation (raywave/fly/hexconv.py checks the channel counts first).
#define HEXCONV(SUFFIX, T)                                                                                       \
  void hexconv_conv_##SUFFIX(i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du, const i32* dv,  \
                            const i32* in_seg, const i32* out_seg, const T* in, const T* w, const T* bias, T* out, \
                            int threads) {                                                                       \
    const Shape s{F, H, W, K, CI, CO, NT, du, dv, in_seg, out_seg};                                              \
    conv<T, 8>(s, in, w, bias, out, threads);                                                                    \
  }                                                                                                              \
  int hexconv_grad_weight_##SUFFIX(i64 nv, i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du,    \
                                   const i32* dv, const i32* in_seg, const i32* out_seg, const T* x, const T* gy, \
                                   T* gw, T* gb, i64 blocks, int threads) {                                      \
    const Shape s{F, H, W, K, CI, CO, NT, du, dv, in_seg, out_seg};                                              \
    return weight_gradient<T>(nv, s, x, gy, gw, gb, blocks, threads);                                            \
  }
HEXCONV(f32, float)
HEXCONV(f64, double)

#define NORM(SUFFIX, T)                                                                                          \
  void norm_forward_##SUFFIX(i64 N, i64 C, const T* x, const T* gamma, const T* beta, double eps, T* y, T* mean,  \
                             T* var, T* invstd, i64 blocks, int threads) {                                       \
    norm_forward<T>(N, C, x, gamma, beta, eps, y, mean, var, invstd, blocks, threads);                           \
  }                                                                                                              \
  void norm_backward_##SUFFIX(i64 N, i64 C, const T* x, const T* gy, const T* mean, const T* invstd,             \
                              const T* gamma, T* gx, T* ggamma, T* gbeta, i64 blocks, int threads) {             \
    norm_backward<T>(N, C, x, gy, mean, invstd, gamma, gx, ggamma, gbeta, blocks, threads);                      \
  }
NORM(f32, float)
NORM(f64, double)

}  // extern "C"
