// SPDX-License-Identifier: BSD-3-Clause
// Input checks and shape helpers for the gradient-penalty ops, shared by the CPU kernels and the CUDA glue.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <vector>

#include "ganops/cpu_utils.h"

namespace ganops {

inline void check_interpolate_inputs(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& alpha) {
  TORCH_CHECK(real.dim() >= 1 && real.size(0) > 0, "gp_interpolate: real must have a non-empty batch dim, got ",
              real.sizes());
  TORCH_CHECK(fake.sizes() == real.sizes(), "gp_interpolate: fake shape ", fake.sizes(), " does not match real ",
              real.sizes());
  TORCH_CHECK(fake.scalar_type() == real.scalar_type(), "gp_interpolate: fake dtype ", fake.scalar_type(),
              " does not match real ", real.scalar_type());
  TORCH_CHECK(alpha.dim() == 1 && (alpha.size(0) == real.size(0) || alpha.size(0) == 1),
              "gp_interpolate: alpha must be (N,) with N = ", real.size(0), " or (1,), got ", alpha.sizes());
  TORCH_CHECK(alpha.scalar_type() == real.scalar_type(), "gp_interpolate: alpha dtype ", alpha.scalar_type(),
              " does not match real ", real.scalar_type());
  TORCH_CHECK(fake.device() == real.device() && alpha.device() == real.device(),
              "gp_interpolate: real, fake and alpha must be on one device");
  check_float(real, "real");
}

inline void check_penalty_inputs(const at::Tensor& grad, int64_t norm_over, int64_t reduction, const char* op) {
  TORCH_CHECK(grad.dim() >= 2 && grad.size(0) > 0, op, ": grad must be (N, C, ...) with N > 0, got ", grad.sizes());
  TORCH_CHECK(norm_over == 0 || norm_over == 1, op, ": norm_over must be 0 (sample) or 1 (channel), got ", norm_over);
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ",
              reduction);
  check_float(grad, "grad");
}

// Dtype of the saved norms: float32 for 16-bit gradients, else the gradient's dtype.
inline c10::ScalarType norm_dtype(c10::ScalarType t) {
  return (t == c10::ScalarType::Half || t == c10::ScalarType::BFloat16) ? c10::ScalarType::Float : t;
}

// Shape of the saved norms: (N,) for norm_over 0, (N, *S) for norm_over 1.
inline std::vector<int64_t> norm_shape(const at::Tensor& grad, int64_t norm_over) {
  std::vector<int64_t> s{grad.size(0)};
  if (norm_over == 1)
    for (int64_t d = 2; d < grad.dim(); ++d) s.push_back(grad.size(d));
  return s;
}

inline void check_penalty_backward(const at::Tensor& go, const at::Tensor& grad, const at::Tensor& norm,
                                   int64_t norm_over, int64_t reduction) {
  check_penalty_inputs(grad, norm_over, reduction, "gp_norm_penalty_backward");
  const int64_t want = reduction == 0 ? grad.size(0) : 1;
  TORCH_CHECK(go.numel() == want, "gp_norm_penalty_backward: grad_out must have ", want, " element(s), got ",
              go.sizes());
  TORCH_CHECK(go.scalar_type() == grad.scalar_type(), "gp_norm_penalty_backward: grad_out dtype ", go.scalar_type(),
              " does not match grad ", grad.scalar_type());
  TORCH_CHECK(norm.sizes() == at::IntArrayRef(norm_shape(grad, norm_over)), "gp_norm_penalty_backward: norm shape ",
              norm.sizes(), " does not match grad ", grad.sizes(), " for norm_over ", norm_over);
  TORCH_CHECK(norm.scalar_type() == norm_dtype(grad.scalar_type()), "gp_norm_penalty_backward: norm dtype ",
              norm.scalar_type(), " must be ", norm_dtype(grad.scalar_type()));
  TORCH_CHECK(go.device() == grad.device() && norm.device() == grad.device(),
              "gp_norm_penalty_backward: grad_out, grad and norm must be on one device");
}

// Elements per (sample, channel): the product of the dims after C (also when C == 0, where numel / (N C) fails:
// the channel norm then has S groups of zero channels, each of norm 0).
inline int64_t group_size(const at::Tensor& grad) {
  int64_t s = 1;
  for (int64_t d = 2; d < grad.dim(); ++d) s *= grad.size(d);
  return s;
}

// Dense layout used for computing: channels_last for a 4-D channels_last tensor, else contiguous.
inline bool use_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace ganops
