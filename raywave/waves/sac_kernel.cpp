// The SAC lattice step of backend_torch.make_step, hand-written: many Euler-Maruyama steps per call, OpenMP over
// rows, the whole state of a lattice kept in cache between steps. Built by raywave.native (system compiler,
// -O3 -march=native -fopenmp) and called through ctypes on torch tensors' memory by backend_native.py.
//
// Same formulas in the same order as the torch step (tests/test_waves_native.py compares them), and the same
// counter-based noise (raywave/waves/noise.py: lowbias32 hashes of (seed, step, cell), Box-Muller).
// float64 calls glibc's libm for every transcendental function: its vector variants (libmvec, AVX2: 4 cells per
// call, at most 4 ulp as glibc documents them) when built with RW_LIBMVEC, else the scalar exp/log/cos. float32
// uses the inline, vectorisable exp/log/cos below (Cephes-style, a few ulp of float32).
// The hA field lives in two zero-padded (H+2)x(W+2) buffers (read old, write new, swap), so the neighbour sum has
// no branches; periodic lattices fill the halo after each step.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#define RW_INLINE static inline __attribute__((always_inline))

#ifdef RW_LIBMVEC
// Declare the SIMD variants of exp, log and cos (glibc's <math.h> does so only under -ffast-math), so that the
// float64 loop vectorises with calls into libmvec; link with -lmvec.
extern "C" {
#pragma omp declare simd notinbranch
double exp(double) noexcept;
#pragma omp declare simd notinbranch
double log(double) noexcept;
#pragma omp declare simd notinbranch
double cos(double) noexcept;
}
#endif

namespace {

// ---- the lowbias32 hash and Box-Muller noise (raywave/waves/noise.py) ----
RW_INLINE uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
constexpr uint32_t STREAM2 = 0x68BC21EBu;

RW_INLINE float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
RW_INLINE uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// ---- float32: inline transcendental functions the compiler vectorises ----
RW_INLINE float exp_f(float x) {
  x = x < -87.0f ? -87.0f : x;  // (not fmin/fmax: their NaN rules keep the loop scalar)
  x = x > 88.0f ? 88.0f : x;
  const float big = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
  float t = x * 1.44269504088896341f + big;
  float n = t - big;
  float r = x - n * 0.693359375f;  // ln 2 split in two (Cephes)
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t e = static_cast<int32_t>(float_to_bits(t) - float_to_bits(big)) + 127;
  return p * bits_to_float(static_cast<uint32_t>(e) << 23);
}

RW_INLINE float log_f(float x) {  // x > 0, normal (here: the noise uniforms in [2^-25, 1))
  uint32_t i = float_to_bits(x);
  float e = static_cast<float>(static_cast<int32_t>((i >> 23) & 0xFFu) - 126);
  float m = bits_to_float((i & 0x7FFFFFu) | 0x3F000000u);  // mantissa in [0.5, 1)
  bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  return m + y + e * 0.693359375f;
}

RW_INLINE float cos_2pi_f(float u) {  // cos(2 pi u) for u in [0, 1)
  float s = std::fabs(u - 0.5f);          // cos(2 pi u) = -cos(2 pi s), s in [0, 0.5]
  bool upper = s > 0.25f;                 // cos(2 pi s) = -cos(2 pi (0.5 - s))
  float y = 6.28318530717958648f * (upper ? 0.5f - s : s);  // y in [0, pi/2]
  float y2 = y * y;
  float c = 2.08767569878680990e-9f;      // Taylor to y^12: error < 7e-9 on [0, pi/2]
  c = c * y2 - 2.75573192239858907e-7f;
  c = c * y2 + 2.48015873015873016e-5f;
  c = c * y2 - 1.38888888888888889e-3f;
  c = c * y2 + 4.16666666666666667e-2f;
  c = c * y2 - 0.5f;
  c = c * y2 + 1.0f;
  return upper ? c : -c;
}

struct FastF32 {
  RW_INLINE float exp(float x) { return exp_f(x); }
  RW_INLINE float normal(uint32_t a, uint32_t b) {
    float u1 = (static_cast<float>(a & 0xFFFFFFu) + 0.5f) * 5.9604644775390625e-8f;
    float u2 = (static_cast<float>(b & 0xFFFFFFu) + 0.5f) * 5.9604644775390625e-8f;
    return std::sqrt(-2.0f * log_f(u1)) * cos_2pi_f(u2);
  }
};

struct LibmF64 {
  RW_INLINE double exp(double x) { return std::exp(x); }
  RW_INLINE double normal(uint32_t a, uint32_t b) {
    double u1 = (static_cast<double>(a & 0xFFFFFFu) + 0.5) * 5.9604644775390625e-8;
    double u2 = (static_cast<double>(b & 0xFFFFFFu) + 0.5) * 5.9604644775390625e-8;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// Order of CONSTANTS in backend_torch.py.
enum {
  V1, K_M, V3, K_E, GC, VC, GA, VA, GL, VL, GK, VK, GSAHP, IEXT, DT_CM, NOISE_AMP, DT_TAUN, DT_TAUC, ALPHAC, C0,
  DELTAC, DT_TAUS, ALPHAS, DT_TAUR, ALPHAR, DT, INV_TAUA, BETAA, KAPPAA, V0, GAMMAA, N_CONSTS
};

template <typename T>
struct Lattice {
  T *V, *n, *C, *S, *R, *A;
  const uint32_t* cells;  // hash32(cell index), as noise.cell_keys
  int H, W;
};

// One row of one step: reads hA of rows r-1, r, r+1 from `hold` (padded), writes row r of `hnew`. Not inlined into
// the OpenMP region, so that the compiler sees plain restrict pointers and vectorises the loops over columns.
// The step is split into four short loops (noise; the two sigmoids; the K+ gate; the updates) through row
// buffers in L1, same arithmetic as one loop: measured on the 2-core EPYC, float64 (libmvec calls, whose register
// spills a long body multiplies) ran ~1/3 faster, float32 ~5%.
template <typename T, typename M, int NB>
__attribute__((noinline)) void row_step(T* __restrict V, T* __restrict n, T* __restrict C, T* __restrict S,
                                        T* __restrict R, T* __restrict A, const uint32_t* __restrict cells,
                                        const T* __restrict k, const T* __restrict up, T* __restrict out, int W,
                                        uint32_t key, T* __restrict buf) {
  const T* mid = up + (W + 2);
  const T* dn = mid + (W + 2);
  T* __restrict z = buf;
  T* __restrict m_inf = buf + W;
  T* __restrict sig_a = buf + 2 * W;
  T* __restrict n_new = buf + 3 * W;
  M math;
  const T one = 1, half = T(0.5);
  // constants as locals: loop-invariant loads the vectoriser can hoist
  const T k_v1 = k[V1], k_k_m = k[K_M], k_v3 = k[V3], k_k_e = k[K_E], k_gc = k[GC], k_vc = k[VC], k_ga = k[GA],
      k_va = k[VA], k_gl = k[GL], k_vl = k[VL], k_gk = k[GK], k_vk = k[VK], k_gsahp = k[GSAHP], k_iext = k[IEXT],
      k_dt_cm = k[DT_CM], k_noise_amp = k[NOISE_AMP], k_dt_taun = k[DT_TAUN], k_dt_tauc = k[DT_TAUC],
      k_alphac = k[ALPHAC], k_c0 = k[C0], k_deltac = k[DELTAC], k_dt_taus = k[DT_TAUS], k_alphas = k[ALPHAS],
      k_dt_taur = k[DT_TAUR], k_alphar = k[ALPHAR], k_dt = k[DT], k_inv_taua = k[INV_TAUA], k_betaa = k[BETAA],
      k_kappaa = k[KAPPAA], k_v0 = k[V0], k_gammaa = k[GAMMAA];
#pragma omp simd
  for (int c = 0; c < W; ++c) {  // with sigma = 0, noise_amp = 0 and the noise adds exactly 0 (|z| < 6)
    uint32_t ha = hash32(cells[c] ^ key);
    uint32_t hb = hash32(ha ^ STREAM2);
    z[c] = k_noise_amp * math.normal(ha, hb);
  }
#pragma omp simd
  for (int c = 0; c < W; ++c) {
    const T v = V[c];
    m_inf[c] = one / (one + math.exp(-((v - k_v1) * k_k_m)));
    sig_a[c] = one / (one + math.exp(-(k_kappaa * (v - k_v0))));
  }
#pragma omp simd
  for (int c = 0; c < W; ++c) {  // the K+ gate n (exponential Euler), from the old V and n
    T e = math.exp((V[c] - k_v3) * k_k_e);
    T e4 = (e * e) * (e * e);
    T n_inf = e4 / (one + e4);
    T lam = half * (e + one / e);
    T nn = n[c];
    n_new[c] = n_inf + (nn - n_inf) * math.exp(-k_dt_taun * lam);
  }
#pragma omp simd
  for (int c = 0; c < W; ++c) {
    T nsum = up[c] + dn[c] + mid[c - 1] + mid[c + 1];
    if (NB == 8) nsum += up[c - 1] + up[c + 1] + dn[c - 1] + dn[c + 1];
    const T v = V[c], nn = n[c], ca = C[c], s = S[c], rr = R[c], a = A[c];
    T i_ca = -k_gc * m_inf[c] * (v - k_vc);
    T r2 = rr * rr;
    T i_ach = -k_ga * nsum * (v - k_va);
    T current = -k_gl * (v - k_vl) + i_ca - k_gk * nn * (v - k_vk) - k_gsahp * (r2 * r2) * (v - k_vk) +
                k_iext + i_ach;
    T v_new = v + k_dt_cm * current;
    v_new = v_new + z[c];  // noise
    T c2 = ca * ca;
    V[c] = v_new;
    n[c] = n_new[c];
    C[c] = ca + k_dt_tauc * (-k_alphac * ca + k_c0 + k_deltac * i_ca);
    S[c] = s + k_dt_taus * (k_alphas * (c2 * c2) * (one - s) - s);
    R[c] = rr + k_dt_taur * (k_alphar * s * (one - rr) - rr);
    T a_new = a + k_dt * (-a * k_inv_taua + k_betaa * sig_a[c]);
    A[c] = a_new;
    T a2 = a_new * a_new;
    out[c] = a2 / (k_gammaa + a2);
  }
}

template <typename T>
void fill_halo(T* h, int H, int W, bool periodic) {  // zero-flux: the border stays 0
  if (!periodic) return;
  const int P = W + 2;
  for (int r = 1; r <= H; ++r) {
    h[r * P] = h[r * P + W];
    h[r * P + W + 1] = h[r * P + 1];
  }
  std::memcpy(h, h + H * P, sizeof(T) * P);
  std::memcpy(h + (H + 1) * P, h + P, sizeof(T) * P);
}

template <typename T, typename M, int NB>
void run(Lattice<T> L, T* hA, const T* k, bool periodic, uint32_t seed_key, int64_t step0, int64_t nsteps,
         int threads) {
  const int H = L.H, W = L.W, P = W + 2;
  std::vector<T> buf_a(size_t(H + 2) * P, T(0)), buf_b(size_t(H + 2) * P, T(0));
  for (int r = 0; r < H; ++r) std::memcpy(&buf_a[(r + 1) * P + 1], hA + size_t(r) * W, sizeof(T) * W);
  fill_halo(buf_a.data(), H, W, periodic);
  T* bufs[2] = {buf_a.data(), buf_b.data()};
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<T> rowbuf(size_t(4) * W);  // this thread's row buffers (row_step)
    for (int64_t i = 0; i < nsteps; ++i) {
      const uint32_t key = hash32(hash32(static_cast<uint32_t>(step0 + i)) ^ seed_key);
      const T* hold = bufs[i & 1];
      T* hnew = bufs[(i + 1) & 1];
#pragma omp for schedule(static)
      for (int r = 0; r < H; ++r) {
        const size_t o = size_t(r) * W;
        row_step<T, M, NB>(L.V + o, L.n + o, L.C + o, L.S + o, L.R + o, L.A + o, L.cells + o, k,
                           hold + size_t(r) * P + 1, hnew + size_t(r + 1) * P + 1, W, key, rowbuf.data());
      }  // (the implicit barrier: every row of this step is done before the next step reads hA)
      if (periodic) {
#pragma omp single
        fill_halo(hnew, H, W, true);
      }
    }
  }
  const T* last = bufs[nsteps & 1];
  for (int r = 0; r < H; ++r) std::memcpy(hA + size_t(r) * W, &last[(r + 1) * P + 1], sizeof(T) * W);
}

template <typename T, typename M>
int dispatch(T* V, T* n, T* C, T* S, T* R, T* A, T* hA, const uint32_t* cells, const T* k, int H, int W,
             int neighbours, int periodic, uint32_t seed_key, int64_t step0, int64_t nsteps, int threads) {
  if (H < 1 || W < 1 || nsteps < 0 || (neighbours != 4 && neighbours != 8)) return 1;
  if (periodic && (H < 2 || W < 2)) return 2;  // a neighbour would be the cell itself: the torch path handles it
  Lattice<T> L{V, n, C, S, R, A, cells, H, W};
  const bool p = periodic != 0;
  if (neighbours == 4) run<T, M, 4>(L, hA, k, p, seed_key, step0, nsteps, threads);
  else run<T, M, 8>(L, hA, k, p, seed_key, step0, nsteps, threads);
  return 0;
}

template <typename T, int N>
double fma_chains(int64_t iters, T a) {
  T acc[N];
  for (int j = 0; j < N; ++j) acc[j] = a * T(j + 1);
  const T b = T(1) - a;
  for (int64_t i = 0; i < iters; ++i) {
#pragma omp simd
    for (int j = 0; j < N; ++j) acc[j] = acc[j] * a + b;
  }
  T s = 0;
  for (int j = 0; j < N; ++j) s += acc[j];
  return (s == s ? 2.0 : 0.0) * N * double(iters);
}

}  // namespace

extern "C" {

int rw_sac_consts() { return N_CONSTS; }

int rw_sac_run_f32(float* V, float* n, float* C, float* S, float* R, float* A, float* hA, const uint32_t* cells,
                   const float* k, int H, int W, int neighbours, int periodic, uint32_t seed_key,
                   int64_t step0, int64_t nsteps, int threads) {
  return dispatch<float, FastF32>(V, n, C, S, R, A, hA, cells, k, H, W, neighbours, periodic, seed_key, step0,
                                  nsteps, threads);
}

int rw_sac_run_f64(double* V, double* n, double* C, double* S, double* R, double* A, double* hA,
                   const uint32_t* cells, const double* k, int H, int W, int neighbours, int periodic,
                   uint32_t seed_key, int64_t step0, int64_t nsteps, int threads) {
  return dispatch<double, LibmF64>(V, n, C, S, R, A, hA, cells, k, H, W, neighbours, periodic, seed_key,
                                   step0, nsteps, threads);
}

// Peak fused multiply-add rate of this machine: `threads` threads, each 10 independent chains of 8-wide float
// (or 4-wide double) FMAs for `iters` rounds; `a` (close to 1) comes from the caller so that nothing folds at
// compile time. Returns the floating-point operations done (2 per lane per FMA); the caller times the call.
// Used by `raywave bench waves` to measure the clock behind its arithmetic limit.
double rw_peak_flops(int64_t iters, int threads, int use_double, double a) {
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  total += use_double ? fma_chains<double, 40>(iters, a) : fma_chains<float, 80>(iters, float(a));
  return total;
}

}  // extern "C"
