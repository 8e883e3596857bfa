// SPDX-License-Identifier: BSD-3-Clause
// Input checks for diffaug_apply shared by the CPU kernels and the CUDA glue; messages name the argument.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "ganops/cpu_utils.h"

namespace ganops {

inline void check_diffaug_inputs(const at::Tensor& x, const at::Tensor& color, const at::Tensor& spatial,
                                 int64_t cut_h, int64_t cut_w, int64_t mode, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got ", x.dim(), "-D");
  check_float(x, "x");
  const int64_t N = x.size(0);
  TORCH_CHECK(color.dim() == 2 && color.size(0) == N && color.size(1) == 3, op,
              ": color must be (N, 3) = (", N, ", 3) [brightness, saturation, contrast], got ", color.sizes());
  TORCH_CHECK(at::isFloatingType(color.scalar_type()), op, ": color must be floating-point, got ",
              color.scalar_type());
  TORCH_CHECK(spatial.dim() == 2 && spatial.size(0) == N && spatial.size(1) == 4, op,
              ": spatial must be (N, 4) = (", N, ", 4) [tx, ty, ox, oy], got ", spatial.sizes());
  TORCH_CHECK(spatial.scalar_type() == at::kLong, op, ": spatial must be int64, got ", spatial.scalar_type());
  TORCH_CHECK(color.device() == x.device() && spatial.device() == x.device(), op,
              ": color and spatial must be on x's device ", x.device());
  TORCH_CHECK(cut_h >= 0 && cut_w >= 0, op, ": cut_h and cut_w must be >= 0, got ", cut_h, ", ", cut_w);
  TORCH_CHECK(mode >= 0 && mode <= 2, op, ": mode must be 0 (forward), 1 (linear) or 2 (adjoint), got ", mode);
}

}  // namespace ganops
