// The decoder's softplus and dropout as one pass on the CPU (built by raywave.native, called from
// raywave/fly/hexconv.py).
//
// softplus(z) = z above the threshold 20, else log1p(exp(z)) (torch's definition, beta 1); forward
// y = softplus(z) * keep (keep: the inverted-dropout multipliers, or null for none), backward
// gz = gy * keep * softplus'(z) with softplus'(z) = 1 above the threshold, else e / (e + 1), e = exp(z).
// Every element is formed on its own (no sums), so results do not depend on the thread count.
//
// With glibc, exp and log1p are declared SIMD-callable so that the loops call the vector math library's (libmvec,
// what -ffast-math would enable, without giving up NaN and infinity semantics: a diverged model must stay NaN).

#include <cmath>
#include <cstdint>

typedef int64_t i64;

#ifdef __GLIBC__
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
float log1pf(float) noexcept;
#pragma omp declare simd notinbranch
double exp(double) noexcept;
#pragma omp declare simd notinbranch
double log1p(double) noexcept;
}
#endif

namespace {

constexpr double THRESHOLD = 20;

inline float exp_(float x) { return expf(x); }
inline double exp_(double x) { return exp(x); }
inline float log1p_(float x) { return log1pf(x); }
inline double log1p_(double x) { return log1p(x); }

template <typename T>
void forward(i64 n, const T* z, const T* keep, T* y, int threads) {
  if (keep) {
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (i64 i = 0; i < n; ++i) y[i] = (z[i] > T(THRESHOLD) ? z[i] : log1p_(exp_(z[i]))) * keep[i];
  } else {
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (i64 i = 0; i < n; ++i) y[i] = z[i] > T(THRESHOLD) ? z[i] : log1p_(exp_(z[i]));
  }
}

template <typename T>
void backward(i64 n, const T* z, const T* keep, const T* gy, T* gz, int threads) {
  if (keep) {
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (i64 i = 0; i < n; ++i) {
      const T e = exp_(z[i]);
      gz[i] = gy[i] * keep[i] * (z[i] > T(THRESHOLD) ? T(1) : e / (e + T(1)));
    }
  } else {
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (i64 i = 0; i < n; ++i) {
      const T e = exp_(z[i]);
      gz[i] = gy[i] * (z[i] > T(THRESHOLD) ? T(1) : e / (e + T(1)));
    }
  }
}

}  // namespace

extern "C" {

#define ACTIVATION(SUFFIX, T)                                                                           \
  void softplus_keep_forward_##SUFFIX(i64 n, const T* z, const T* keep, T* y, int threads) {           \
    forward<T>(n, z, keep, y, threads);                                                                 \
  }                                                                                                     \
  void softplus_keep_backward_##SUFFIX(i64 n, const T* z, const T* keep, const T* gy, T* gz,           \
                                       int threads) {                                                   \
    backward<T>(n, z, keep, gy, gz, threads);                                                           \
  }
ACTIVATION(f32, float)
ACTIVATION(f64, double)

}  // extern "C"
