// SPDX-License-Identifier: BSD-3-Clause
// Vectorised float32 row loops for SLE (no ATen: compiles in a second). See ganops/sle_rows.h.
#include "ganops/sle_rows.h"

#include "ganops/sle.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GANOPS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GANOPS_CLONES
#endif

namespace ganops {
namespace sle {

GANOPS_CLONES void row_forward_f32(const float* __restrict__ x, float s, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = forward<float>(x[i], s);
}

GANOPS_CLONES void row_forward_cl_f32(const float* __restrict__ x, const float* __restrict__ s,
                                      float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = forward<float>(x[i], s[i]);
}

GANOPS_CLONES float row_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, float s,
                                     float* __restrict__ gx, int64_t n) {
  constexpr int K = 16;  // independent partial sums: lets the compiler keep two 8-wide accumulators
  float acc[K] = {0};
  int64_t i = 0;
  for (; i + K <= n; i += K) {
    for (int k = 0; k < K; ++k) {
      acc[k] += gate_partial<float>(gy[i + k], x[i + k]);
      gx[i + k] = grad_x<float>(gy[i + k], s);
    }
  }
  float tail = 0.f;
  for (; i < n; ++i) {
    tail += gate_partial<float>(gy[i], x[i]);
    gx[i] = grad_x<float>(gy[i], s);
  }
  float total = 0.f;
  for (int k = 0; k < K; ++k) total += acc[k];
  return total + tail;
}

GANOPS_CLONES void row_backward_cl_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                       const float* __restrict__ s, float* __restrict__ gx,
                                       float* __restrict__ acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    acc[i] += gate_partial<float>(gy[i], x[i]);
    gx[i] = grad_x<float>(gy[i], s[i]);
  }
}

}  // namespace sle
}  // namespace ganops
