// SPDX-License-Identifier: BSD-3-Clause
// Input checks and the backward's operand layout for SLE, shared by the CPU kernels and the CUDA glue; messages
// name the argument.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <utility>

#include "ganops/cpu_utils.h"

namespace ganops {

inline void check_sle_inputs(const at::Tensor& x, const at::Tensor& gate, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(gate.dim() == 2, op, ": gate must be 2-D (N, C), got ", gate.dim(), "-D");
  TORCH_CHECK(gate.size(0) == x.size(0) && gate.size(1) == x.size(1), op, ": gate shape ", gate.sizes(),
              " does not match x's (N, C) = (", x.size(0), ", ", x.size(1), ")");
  TORCH_CHECK(x.scalar_type() == gate.scalar_type(), op, ": x and gate must have the same dtype, got ",
              x.scalar_type(), " and ", gate.scalar_type());
  TORCH_CHECK(x.device() == gate.device(), op, ": x and gate must be on the same device, got ", x.device(),
              " and ", gate.device());
  check_float(x, "x");
}

inline void check_sle_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad_out shape ", grad.sizes(), " does not match x ", x.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), op, ": grad_out dtype ", grad.scalar_type(),
              " does not match x ", x.scalar_type());
  TORCH_CHECK(grad.device() == x.device(), op, ": grad_out must be on x's device");
}

// The backward's operands as both backends' kernels read them, given gx (allocated by the caller: the CPU's
// allocator or dense_output_like): x and grad_out dense in gx's layout (NCHW or NHWC, see is_channels_last), gate
// contiguous, and gg, the gate's gradient, (N, C) uninitialised.
struct SleBackwardOperands {
  bool channels_last;
  at::Tensor x, gy, gate, gg;
};

inline SleBackwardOperands sle_backward_operands(const at::Tensor& gx, const at::Tensor& grad, const at::Tensor& x,
                                                 const at::Tensor& gate) {
  const bool cl = is_channels_last(gx);
  at::Tensor xl = as_layout(x, cl);
  at::Tensor gy = as_layout(grad, cl);
  at::Tensor g = gate.contiguous();
  at::Tensor gg = at::empty(g.sizes(), g.options());
  return {cl, std::move(xl), std::move(gy), std::move(g), std::move(gg)};
}

}  // namespace ganops
