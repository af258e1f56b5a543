// The backward of the decoder's hex-masked convolutions on the CPU: K independent convolutions (one per ensemble
// member) on channels-last axial maps (built by raywave.native, called from raywave/fly/hexconv.py).
//
// The convolution: x (F, H, W, K*CI) -> y (F, H, W, K*CO), zero padding: y[f,u,v,k*CO+o] = bias[k*CO+o] + sum over
// the taps t (du, dv) of the hexagon and ci of x[f, u+du, v+dv, k*CI+ci] * w[k, t, ci, o]. Only the taps of the
// hexagon are stored (19 for radius 2), so no multiply-add is spent on the masked corners of the square kernel, and
// the K models are one call (a library's grouped convolution backward spends about 1.5x per model on these shapes).
// `conv_rows` is that convolution; the input gradient is `conv_rows` over dL/dy with the weights transposed and
// the taps mirrored. The forward itself is left to the library (faster there).
//
// Determinism: every output and input-gradient element is formed by one thread in a fixed order; the weight and
// bias gradients are summed per block of frames (a fixed split, not one per thread) in double and the blocks then
// added in order, so results do not depend on the thread count.

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <vector>

typedef int32_t i32;
typedef int64_t i64;

namespace {

// One convolution pass over rows of a channels-last map (the input gradient's; it would serve a forward too):
// out[f, u, v, k*CO + o] = init(k*CO + o) + sum over taps t and input channels c of
// in[f, u+du[t], v+dv[t], k*CI + c] * w[k, t, c, o] (inputs outside the map count as zero), for o < CO; w holds
// CP = NV * L output channels per (model, tap, input channel), zero beyond CO. VB neighbouring positions are formed
// together (VB x NV independent sums in vector registers, each weight vector loaded once for all of them). init:
// bias (or null: 0).
template <typename T, int NV, int VB>
void conv_rows(i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du, const i32* dv, const T* in,
               const T* w, const T* bias, T* out, int threads) {
  constexpr int L = 32 / sizeof(T), CP = NV * L;
  i64 R = 0;
  for (i64 t = 0; t < NT; ++t) R = std::max<i64>(R, std::max(std::abs(du[t]), std::abs(dv[t])));
  const i64 WB = (W + VB - 1) / VB * VB, WP = WB + 2 * R;  // positions in whole blocks; padded row width
#pragma omp parallel num_threads(threads)
  {
    // the 2R+1 input rows around the output row, model k's channels, zero outside the map (and in the slack after
    // the last whole block), so every block of VB positions takes the same branch-free path
    std::vector<T> pad((2 * R + 1) * WP * CI);
#pragma omp for schedule(static)
    for (i64 row = 0; row < F * H * K; ++row) {
      const i64 f = row / (H * K), u = (row / K) % H, k = row % K;
      std::fill(pad.begin(), pad.end(), T(0));
      for (i64 r = 0; r <= 2 * R; ++r) {
        const i64 uu = u + r - R;
        if (uu < 0 || uu >= H) continue;
        for (i64 v = 0; v < W; ++v)
          std::copy_n(in + ((f * H + uu) * W + v) * K * CI + k * CI, CI, pad.data() + (r * WP + v + R) * CI);
      }
      for (i64 v0 = 0; v0 < WB; v0 += VB) {
        T acc[VB][CP];
        for (int j = 0; j < VB; ++j)
          for (int o = 0; o < CP; ++o) acc[j][o] = (bias && o < CO) ? bias[k * CO + o] : T(0);
        for (i64 t = 0; t < NT; ++t) {
          const i64 uu = u + du[t];
          if (uu < 0 || uu >= H) continue;
          const T* ip = pad.data() + ((du[t] + R) * WP + v0 + dv[t] + R) * CI;
          const T* wp = w + (k * NT + t) * CI * CP;
          for (i64 c = 0; c < CI; ++c)
            for (int j = 0; j < VB; ++j) {
              const T xv = ip[j * CI + c];
#pragma omp simd
              for (int o = 0; o < CP; ++o) acc[j][o] += xv * wp[c * CP + o];
            }
        }
        for (i64 j = 0; j < std::min<i64>(VB, W - v0); ++j) {
          T* op = out + ((f * H + u) * W + v0 + j) * K * CO + k * CO;
          for (i64 o = 0; o < CO; ++o) op[o] = acc[j][o];
        }
      }
    }
  }
}

// Weight and bias gradients: gw[k,t,c,o] = sum over f, u, v of x[f, u+du, v+dv, k*CI+c] * gy[f,u,v,k*CO+o] (w's
// layout: CP = NV * L output channels, zero beyond CO), gb[k*CO+o] = sum of gy. For each row and tap, CB input
// channels at a time are summed over the row's positions in vector registers. Frames are split into `blocks` fixed
// blocks; each block's sums are formed in double by one thread (rows in order) and the blocks added in order.
template <typename T, int NV, int CB>
void grad_weight(i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du, const i32* dv, const T* x,
                 const T* gy, T* gw, T* gb, i64 blocks, int threads) {
  constexpr int L = 32 / sizeof(T), CP = NV * L;
  const i64 NW = K * NT * CI * CP, NB = K * CO;
  std::vector<double> part(blocks * (NW + NB), 0.0);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (i64 blk = 0; blk < blocks * K; ++blk) {
    const i64 bl = blk / K, k = blk % K;
    const i64 f0 = F * bl / blocks, f1 = F * (bl + 1) / blocks;
    double* pw = part.data() + bl * (NW + NB) + k * NT * CI * CP;
    double* pb = part.data() + bl * (NW + NB) + NW + k * CO;
    std::vector<T> g(W * CP);  // the row's output gradient, padded to CP channels
    for (i64 f = f0; f < f1; ++f)
      for (i64 u = 0; u < H; ++u) {
        for (i64 v = 0; v < W; ++v)
          for (int o = 0; o < CP; ++o) g[v * CP + o] = o < CO ? gy[((f * H + u) * W + v) * K * CO + k * CO + o] : T(0);
        for (i64 v = 0; v < W; ++v)
          for (i64 o = 0; o < CO; ++o) pb[o] += g[v * CP + o];
        for (i64 t = 0; t < NT; ++t) {
          const i64 uu = u + du[t];
          if (uu < 0 || uu >= H) continue;
          const i64 v0 = std::max<i64>(0, -dv[t]), v1 = std::min<i64>(W, W - dv[t]);
          const T* xp = x + ((f * H + uu) * W + dv[t]) * K * CI + k * CI;  // x at column v + dv
          for (i64 c0 = 0; c0 < CI; c0 += CB) {
            const i64 nc = std::min<i64>(CB, CI - c0);
            T acc[CB][CP] = {};
            if (nc == CB) {
              for (i64 v = v0; v < v1; ++v)
                for (int c = 0; c < CB; ++c) {
                  const T xv = xp[v * K * CI + c0 + c];
#pragma omp simd
                  for (int o = 0; o < CP; ++o) acc[c][o] += xv * g[v * CP + o];
                }
            } else {
              for (i64 v = v0; v < v1; ++v)
                for (i64 c = 0; c < nc; ++c) {
                  const T xv = xp[v * K * CI + c0 + c];
#pragma omp simd
                  for (int o = 0; o < CP; ++o) acc[c][o] += xv * g[v * CP + o];
                }
            }
            double* dst = pw + (t * CI + c0) * CP;
            for (i64 c = 0; c < nc; ++c)
              for (int o = 0; o < CP; ++o) dst[c * CP + o] += acc[c][o];
          }
        }
      }
  }
  for (i64 k = 0; k < K; ++k)
    for (i64 i = 0; i < NT * CI; ++i)
      for (i64 o = 0; o < CO; ++o) {
        double s = 0;
        for (i64 bl = 0; bl < blocks; ++bl) s += part[bl * (NW + NB) + (k * NT * CI + i) * CP + o];
        gw[(k * NT * CI + i) * CO + o] = (T)s;
      }
  for (i64 i = 0; i < NB; ++i) {
    double s = 0;
    for (i64 bl = 0; bl < blocks; ++bl) s += part[bl * (NW + NB) + NW + i];
    gb[i] = (T)s;
  }
}

// The instantiations, register blocks sized for the decoder's shapes (34 output channels for conv1's input gradient,
// 8 for conv2's; 8 and 3 weight-gradient channels): nv, the vectors of L lanes the weights' output channels are
// padded to, is 1, 2, 5 or 10 (1 or 2 for the weight gradient).
template <typename T>
bool convolve(i64 nv, i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du, const i32* dv,
              const T* in, const T* w, const T* bias, T* out, int threads) {
  if (nv == 1) conv_rows<T, 1, 8>(F, H, W, K, CI, CO, NT, du, dv, in, w, bias, out, threads);
  else if (nv == 2) conv_rows<T, 2, 4>(F, H, W, K, CI, CO, NT, du, dv, in, w, bias, out, threads);
  else if (nv == 5) conv_rows<T, 5, 2>(F, H, W, K, CI, CO, NT, du, dv, in, w, bias, out, threads);
  else if (nv == 10) conv_rows<T, 10, 1>(F, H, W, K, CI, CO, NT, du, dv, in, w, bias, out, threads);
  else return false;
  return true;
}

template <typename T>
bool weight_gradient(i64 nv, i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du, const i32* dv,
                     const T* x, const T* gy, T* gw, T* gb, i64 blocks, int threads) {
  if (nv == 1) grad_weight<T, 1, 8>(F, H, W, K, CI, CO, NT, du, dv, x, gy, gw, gb, blocks, threads);
  else if (nv == 2) grad_weight<T, 2, 4>(F, H, W, K, CI, CO, NT, du, dv, x, gy, gw, gb, blocks, threads);
  else return false;
  return true;
}

}  // namespace

extern "C" {

// Each returns 1, or 0 when nv has no instantiation (raywave/fly/hexconv.py checks the channel counts first).
// The input gradient: hexconv_rows with in = dL/dy, w = the weights transposed ((K, taps, CO, CI padded)), the
// offsets negated, bias null, out = dL/dx.
#define HEXCONV(SUFFIX, T)                                                                                       \
  int hexconv_rows_##SUFFIX(i64 nv, i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du,         \
                            const i32* dv, const T* in, const T* w, const T* bias, T* out, int threads) {        \
    return convolve<T>(nv, F, H, W, K, CI, CO, NT, du, dv, in, w, bias, out, threads);                           \
  }                                                                                                              \
  int hexconv_grad_weight_##SUFFIX(i64 nv, i64 F, i64 H, i64 W, i64 K, i64 CI, i64 CO, i64 NT, const i32* du,    \
                                   const i32* dv, const T* x, const T* gy, T* gw, T* gb, i64 blocks,             \
                                   int threads) {                                                                \
    return weight_gradient<T>(nv, F, H, W, K, CI, CO, NT, du, dv, x, gy, gw, gb, blocks, threads);               \
  }
HEXCONV(f32, float)
HEXCONV(f64, double)

}  // extern "C"
