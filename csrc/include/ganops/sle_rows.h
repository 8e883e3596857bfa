// SPDX-License-Identifier: BSD-3-Clause
// Vectorised float32 row loops for the SLE CPU kernels (csrc/cpu/sle_rows.cpp), built for AVX2 and a baseline
// target and chosen at load time (GCC target_clones). The arithmetic is ganops/sle.h's, element by element.
#pragma once
#include <cstdint>

namespace ganops {
namespace sle {
// y[i] = x[i] * s
void row_forward_f32(const float* x, float s, float* y, int64_t n);
// y[i] = x[i] * s[i]   (channels-last rows: one gate per channel)
void row_forward_cl_f32(const float* x, const float* s, float* y, int64_t n);
// gx[i] = gy[i] * s; returns sum_i gy[i] * x[i] (double accumulation, 16 partial sums)
double row_backward_f32(const float* gy, const float* x, float s, float* gx, int64_t n);
// gx[i] = gy[i] * s[i]; acc[i] += gy[i] * x[i]  (acc in double)
void row_backward_cl_f32(const float* gy, const float* x, const float* s, float* gx, double* acc, int64_t n);
}  // namespace sle
}  // namespace ganops
