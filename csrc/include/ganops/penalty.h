// SPDX-License-Identifier: BSD-3-Clause
// Gradient penalty building blocks. Per-element math shared by cpu/penalty.cpp and cuda/penalty_kernels.cu
// (acc_t is float, or double for float64 inputs).
//
//   interpolate  x_hat[n, ...] = real + alpha[n] * (fake - real)
//   penalty      ss[grp]   = sum_{i in grp} g_i^2          grp = a whole sample (norm_over 0) or the C channels
//                norm[grp] = sqrt(ss)                      of one pixel (norm_over 1); G groups per sample
//                p[n]      = scale / G * sum_grp (norm - t)^2        ((norm - t)^2 = ss when t == 0)
//                out       = p (reduction 0), mean_n p (1) or sum_n p (2)
//   backward     gx_i      = k[n] * (1 - t / norm[grp]) * g_i        k[n] = go_n * 2 * scale / G
//                with go_n = go[n] (0), go / N (1), go (2); the factor is 0 where norm == 0 and t != 0
//                (the subgradient torch's norm uses) and 1 when t == 0.
#pragma once
#include "ganops/common.h"

namespace ganops {
namespace penalty {

enum NormOver : int { kSample = 0, kChannel = 1 };
enum Reduction : int { kNone = 0, kMean = 1, kSum = 2 };

template <typename acc_t>
GANOPS_HD acc_t lerp(acc_t real, acc_t fake, acc_t alpha) {
  return real + alpha * (fake - real);
}

// (||g|| - t)^2 of one group from its sum of squares.
template <typename acc_t>
GANOPS_HD acc_t group_penalty(acc_t ss, acc_t target) {
  if (target == acc_t(0)) return ss;
  const acc_t d = std::sqrt(ss) - target;
  return d * d;
}

// Multiplier of g in the backward for one group: (1 - t / norm), see the header comment.
template <typename acc_t>
GANOPS_HD acc_t grad_factor(acc_t norm, acc_t target) {
  if (target == acc_t(0)) return acc_t(1);
  return norm > acc_t(0) ? acc_t(1) - target / norm : acc_t(0);
}

// Upstream gradient of sample n's penalty, times 2 * scale / G.
template <typename acc_t>
GANOPS_HD acc_t sample_coef(const acc_t go_n, acc_t scale, int64_t groups) {
  return go_n * acc_t(2) * scale / static_cast<acc_t>(groups);
}

template <typename acc_t>
GANOPS_HD acc_t upstream(acc_t go_value, int64_t N, int reduction) {
  return reduction == kMean ? go_value / static_cast<acc_t>(N) : go_value;
}

}  // namespace penalty
}  // namespace ganops
