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
            T sums[VB * L];  // (through a buffer: indexed at run time, acc would live in memory, not registers)
            for (int j = 0; j < VB; ++j) __builtin_memcpy(sums + j * L, &acc[j], sizeof(V));
            for (i64 j = 0; j < std::min<i64>(VB, hi - v0 + 1); ++j)
              std::copy_n(sums + j * L, no, row + (v0 + j) * K * CO + o0);
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
// (u+du, v+dv) is in the input's support of x[f, u+du, v+dv, k*CI+c] * gy[f,u,v,k*CO+o] (w's layout: CP = NV * L
// output channels, zero beyond CO), gb[k*CO+o] = sum of gy over the output's support. For each row and tap, CB
// input channels at a time are summed over the row's positions in vector registers, and a frame's rows in T. Frames
// are split into `blocks` fixed blocks; each block's sums of the frames are formed in double by one thread (frames in
// order) and the blocks added in order.
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
// order), the supports swapped, bias null, out = dL/dx. Returns 1. hexconv_grad_weight returns 1, or 0 when nv has
// no instantiation (raywave/fly/hexconv.py checks the channel counts first).
#define HEXCONV(SUFFIX, T)                                                                                       \
  int hexconv_conv_##SUFFIX(i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du, const i32* dv,  \
                            const i32* in_seg, const i32* out_seg, const T* in, const T* w, const T* bias, T* out, \
                            int threads) {                                                                       \
    const Shape s{F, H, W, K, CI, CO, NT, du, dv, in_seg, out_seg};                                              \
    conv<T, 8>(s, in, w, bias, out, threads);                                                                    \
    return 1;                                                                                                    \
  }                                                                                                              \
  int hexconv_grad_weight_##SUFFIX(i64 nv, i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du,    \
                                   const i32* dv, const i32* in_seg, const i32* out_seg, const T* x, const T* gy, \
                                   T* gw, T* gb, i64 blocks, int threads) {                                      \
    const Shape s{F, H, W, K, CI, CO, NT, du, dv, in_seg, out_seg};                                              \
    return weight_gradient<T>(nv, s, x, gy, gw, gb, blocks, threads);                                            \
  }
HEXCONV(f32, float)
HEXCONV(f64, double)

}  // extern "C"
