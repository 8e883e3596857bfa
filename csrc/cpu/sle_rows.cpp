// SPDX-License-Identifier: BSD-3-Clause
// Vectorised float32 row loops for SLE (no ATen: compiles in a second). See ganops/sle_rows.h.
#include "ganops/sle_rows.h"

#include "ganops/cpu_clones.h"
#include "ganops/sle.h"

namespace ganops {
namespace sle {

GANOPS_CLONES void row_forward_f32(const float* __restrict__ x, float s, float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = forward<float>(x[i], s);
}

GANOPS_CLONES void row_forward_cl_f32(const float* __restrict__ x, const float* __restrict__ s,
                                      float* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = forward<float>(x[i], s[i]);
}

// The gate's reduction runs over H*W elements (up to 262144 at FastGAN's shapes): the partial sums are kept in
// double (float partials lose ~1e-4 relative on 16k-element rows, more than torch's cascade sum). The kernel is
// memory-bound, so the wider arithmetic costs no time.
GANOPS_CLONES double row_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, float s,
                                      float* __restrict__ gx, int64_t n) {
  constexpr int K = 16;  // independent partial sums: lets the compiler keep four 4-wide double accumulators
  double acc[K] = {0};
  int64_t i = 0;
  for (; i + K <= n; i += K) {
    for (int k = 0; k < K; ++k) {
      acc[k] += gate_partial<double>(gy[i + k], x[i + k]);
      gx[i + k] = grad_x<float>(gy[i + k], s);
    }
  }
  double tail = 0.0;
  for (; i < n; ++i) {
    tail += gate_partial<double>(gy[i], x[i]);
    gx[i] = grad_x<float>(gy[i], s);
  }
  double total = 0.0;
  for (int k = 0; k < K; ++k) total += acc[k];
  return total + tail;
}

GANOPS_CLONES void row_backward_cl_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                       const float* __restrict__ s, float* __restrict__ gx,
                                       double* __restrict__ acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    acc[i] += gate_partial<double>(gy[i], x[i]);
    gx[i] = grad_x<float>(gy[i], s[i]);
  }
}

}  // namespace sle
}  // namespace ganops
