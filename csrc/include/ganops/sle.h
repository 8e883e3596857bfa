// SPDX-License-Identifier: BSD-3-Clause
// Skip-layer excitation: y = x * sigmoid(g[n, c]), the gate broadcast over H x W.
// Per-element math shared by cpu/sle.cpp and cuda/sle_kernels.cu (acc_t is float, or double for float64).
//
//   forward   y[n,c,h,w]  = x * s,          s = sigmoid(g[n,c])
//   backward  gx[n,c,h,w] = gy * s
//             gg[n,c]     = (sum_hw gy * x) * s * (1 - s)
#pragma once
#include "ganops/common.h"

namespace ganops {
namespace sle {

template <typename acc_t>
GANOPS_HD acc_t sigmoid(acc_t g) {
  return acc_t(1) / (acc_t(1) + std::exp(-g));
}

template <typename acc_t>
GANOPS_HD acc_t forward(acc_t x, acc_t s) {
  return x * s;
}

template <typename acc_t>
GANOPS_HD acc_t grad_x(acc_t gy, acc_t s) {
  return gy * s;
}

// Contribution of one element to the gate's reduction.
template <typename acc_t>
GANOPS_HD acc_t gate_partial(acc_t gy, acc_t x) {
  return gy * x;
}

// Gate gradient from the reduced sum over H x W.
template <typename acc_t>
GANOPS_HD acc_t grad_gate(acc_t sum, acc_t s) {
  return sum * s * (acc_t(1) - s);
}

}  // namespace sle
}  // namespace ganops
