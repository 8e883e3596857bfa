// SPDX-License-Identifier: BSD-3-Clause
// Vectorised float32 row loops for the gradient-penalty CPU kernels (csrc/cpu/penalty_rows.cpp), built for AVX2 and
// a baseline target and chosen at load time (GCC target_clones). The arithmetic is ganops/penalty.h's.
#pragma once
#include <cstdint>

namespace ganops {
namespace penalty {
// o[i] = r[i] + a * (f[i] - r[i])
void lerp_f32(const float* r, const float* f, float a, float* o, int64_t n);
// sum_i x[i]^2 (float accumulation, 16 partial sums)
float sumsq_f32(const float* x, int64_t n);
// ss[i] += x[i]^2
void accum_sq_f32(const float* x, float* ss, int64_t n);
// norm[i] = sqrt(ss[i]); returns sum_i group_penalty(ss[i], t) (float accumulation, 16 partial sums)
float norms_and_penalty_f32(const float* ss, float* norm, float t, int64_t n);
// y[i] = c * x[i]
void scale_f32(const float* x, float c, float* y, int64_t n);
// y[i] = c[i] * x[i]
void mul_f32(const float* x, const float* c, float* y, int64_t n);
}  // namespace penalty
}  // namespace ganops
