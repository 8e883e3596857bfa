// SPDX-License-Identifier: BSD-3-Clause
// Vectorised float32 row loops for the gradient penalty (no ATen: compiles in a second). See ganops/penalty_rows.h.
#include "ganops/penalty_rows.h"

#include <cmath>
#include <cstring>

#include "ganops/cpu_clones.h"
#include "ganops/penalty.h"

namespace ganops {
namespace penalty {
namespace {

// out[i] = sqrt(x[i]), 4 lanes at a time where SSE is there: without -fno-math-errno (the build's flags are shared)
// GCC keeps std::sqrt scalar because of its errno branch; the inputs are sums of squares, never negative.
inline void sqrt_row(const float* __restrict__ x, float* __restrict__ out, int64_t n) {
  int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  typedef float v4sf __attribute__((vector_size(16)));
  for (; i + 4 <= n; i += 4) {
    v4sf v;
    std::memcpy(&v, x + i, sizeof(v));
    v = __builtin_ia32_sqrtps(v);
    std::memcpy(out + i, &v, sizeof(v));
  }
#endif
  for (; i < n; ++i) out[i] = std::sqrt(x[i]);
}

}  // namespace

GANOPS_CLONES void lerp_f32(const float* __restrict__ r, const float* __restrict__ f, float a, float* __restrict__ o,
                            int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = lerp<float>(r[i], f[i], a);
}

GANOPS_CLONES float sumsq_f32(const float* __restrict__ x, int64_t n) {
  constexpr int K = 16;  // independent partial sums: lets the compiler keep two 8-wide accumulators
  float acc[K] = {0};
  int64_t i = 0;
  for (; i + K <= n; i += K)
    for (int k = 0; k < K; ++k) acc[k] += x[i + k] * x[i + k];
  float s = 0.f;
  for (; i < n; ++i) s += x[i] * x[i];
  for (int k = 0; k < K; ++k) s += acc[k];
  return s;
}

GANOPS_CLONES void accum_sq_f32(const float* __restrict__ x, float* __restrict__ ss, int64_t n) {
  for (int64_t i = 0; i < n; ++i) ss[i] += x[i] * x[i];
}

GANOPS_CLONES float norms_and_penalty_f32(const float* __restrict__ ss, float* __restrict__ norm, float t, int64_t n) {
  sqrt_row(ss, norm, n);
  constexpr int K = 16;
  float acc[K] = {0};
  int64_t i = 0;
  if (t == 0.f) {  // group_penalty(ss, 0) = ss
    for (; i + K <= n; i += K)
      for (int k = 0; k < K; ++k) acc[k] += ss[i + k];
    for (; i < n; ++i) acc[0] += ss[i];
  } else {  // (norm - t)^2
    for (; i + K <= n; i += K)
      for (int k = 0; k < K; ++k) {
        const float d = norm[i + k] - t;
        acc[k] += d * d;
      }
    for (; i < n; ++i) {
      const float d = norm[i] - t;
      acc[0] += d * d;
    }
  }
  float s = 0.f;
  for (int k = 0; k < K; ++k) s += acc[k];
  return s;
}

GANOPS_CLONES void scale_f32(const float* __restrict__ x, float c, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = c * x[i];
}

GANOPS_CLONES void mul_f32(const float* __restrict__ x, const float* __restrict__ c, float* __restrict__ y,
                           int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = c[i] * x[i];
}

}  // namespace penalty
}  // namespace ganops
