// SPDX-License-Identifier: BSD-3-Clause
// Input checks (messages name the argument) and the forward's buffers, shared by the CPU kernels and the CUDA glue.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <vector>

#include "ganops/cpu_utils.h"

namespace ganops {

// A weight read as (P, H, R) around its normalised dim (see ganops/spectral_norm.h).
struct LayerShape {
  int64_t P, H, R;
};

inline std::vector<LayerShape> check_sn_inputs(at::TensorList weights, at::TensorList us, at::TensorList vs,
                                               at::IntArrayRef dims, int64_t n_iter, double eps, const char* op) {
  const size_t L = weights.size();
  TORCH_CHECK(L > 0, op, ": weights must not be empty");
  TORCH_CHECK(us.size() == L && vs.size() == L && dims.size() == L, op, ": weights, us, vs and dims must have the ",
              "same length, got ", L, ", ", us.size(), ", ", vs.size(), ", ", dims.size());
  TORCH_CHECK(n_iter >= 0, op, ": n_power_iterations must be >= 0, got ", n_iter);
  TORCH_CHECK(eps > 0, op, ": eps must be > 0, got ", eps);
  const auto& w0 = weights[0];
  check_float(w0, "weights[0]");
  std::vector<LayerShape> shapes;
  for (size_t l = 0; l < L; ++l) {
    const auto& w = weights[l];
    TORCH_CHECK(w.dim() >= 1, op, ": weights[", l, "] must have at least 1 dimension");
    const int64_t d = dims[l];
    TORCH_CHECK(d >= 0 && d < w.dim(), op, ": dims[", l, "] = ", d, " is out of range for weights[", l, "] of shape ",
                w.sizes());
    TORCH_CHECK(w.scalar_type() == w0.scalar_type() && us[l].scalar_type() == w0.scalar_type() &&
                    vs[l].scalar_type() == w0.scalar_type(),
                op, ": weights[", l, "], us[", l, "] and vs[", l, "] must all be ", w0.scalar_type());
    TORCH_CHECK(w.device() == w0.device() && us[l].device() == w0.device() && vs[l].device() == w0.device(), op,
                ": weights[", l, "], us[", l, "] and vs[", l, "] must all be on ", w0.device());
    LayerShape s{1, w.size(d), 1};
    for (int64_t k = 0; k < d; ++k) s.P *= w.size(k);
    for (int64_t k = d + 1; k < w.dim(); ++k) s.R *= w.size(k);
    TORCH_CHECK(us[l].dim() == 1 && us[l].size(0) == s.H, op, ": us[", l, "] must have shape (", s.H, "), got ",
                us[l].sizes());
    TORCH_CHECK(vs[l].dim() == 1 && vs[l].size(0) == s.P * s.R, op, ": vs[", l, "] must have shape (", s.P * s.R,
                "), got ", vs[l].sizes());
    shapes.push_back(s);
  }
  return shapes;
}

inline void check_sn_grads(at::TensorList grads, const at::Tensor& grad_sigmas, at::TensorList weights,
                           const at::Tensor& sigmas, const char* op) {
  const int64_t L = static_cast<int64_t>(weights.size());
  TORCH_CHECK(static_cast<int64_t>(grads.size()) == L, op, ": grads has ", grads.size(), " tensors for ", L,
              " weights");
  for (int64_t l = 0; l < L; ++l) {
    TORCH_CHECK(grads[l].sizes() == weights[l].sizes(), op, ": grads[", l, "] shape ", grads[l].sizes(),
                " does not match weights[", l, "] ", weights[l].sizes());
    TORCH_CHECK(grads[l].scalar_type() == weights[l].scalar_type() && grads[l].device() == weights[l].device(), op,
                ": grads[", l, "] must match weights[", l, "] in dtype and device");
  }
  TORCH_CHECK(sigmas.dim() == 1 && sigmas.size(0) == L, op, ": sigmas must have shape (", L, "), got ",
              sigmas.sizes());
  TORCH_CHECK(grad_sigmas.dim() == 1 && grad_sigmas.size(0) == L, op, ": grad_sigmas must have shape (", L,
              "), got ", grad_sigmas.sizes());
  TORCH_CHECK(sigmas.scalar_type() == weights[0].scalar_type() && grad_sigmas.scalar_type() == sigmas.scalar_type(),
              op, ": sigmas and grad_sigmas must be ", weights[0].scalar_type());
  TORCH_CHECK(sigmas.device() == weights[0].device() && grad_sigmas.device() == weights[0].device(), op,
              ": sigmas and grad_sigmas must be on the weights' device");
}

// A grouped forward's contiguous inputs and fresh outputs, one per layer (prepared outside any parallel region).
struct SnForwardIO {
  std::vector<at::Tensor> ws, ui, vi, outs, un, vn;
};

inline SnForwardIO sn_forward_io(at::TensorList weights, at::TensorList us, at::TensorList vs) {
  SnForwardIO io;
  for (size_t l = 0; l < weights.size(); ++l) {
    io.ws.push_back(weights[l].contiguous());
    io.ui.push_back(us[l].contiguous());
    io.vi.push_back(vs[l].contiguous());
    io.outs.push_back(at::empty(io.ws[l].sizes(), io.ws[l].options()));
    io.un.push_back(at::empty(io.ui[l].sizes(), io.ui[l].options()));
    io.vn.push_back(at::empty(io.vi[l].sizes(), io.vi[l].options()));
  }
  return io;
}

}  // namespace ganops
