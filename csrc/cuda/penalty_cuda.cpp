// SPDX-License-Identifier: BSD-3-Clause
// Gradient-penalty CUDA glue: checks, allocation, device guard and current stream; kernels in penalty_kernels.cu.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ganops/cpu_utils.h"
#include "ganops/launch_plan.h"
#include "ganops/penalty_checks.h"

namespace ganops {
namespace cuda {
cudaError_t gp_interpolate_launch(int dtype, const void* real, const void* fake, const void* alpha, void* out,
                                  int64_t total, int64_t K, int64_t a_step, cudaStream_t stream);
cudaError_t gp_norm_penalty_launch(int dtype, const void* g, void* ws, void* norm, void* out, int64_t N, int64_t C,
                                   int64_t S, int norm_over, int reduction, bool channels_last, double target,
                                   double scale, cudaStream_t stream);
cudaError_t gp_norm_penalty_backward_launch(int dtype, const void* go, const void* g, const void* norm, void* gx,
                                            int64_t N, int64_t C, int64_t S, int norm_over, int reduction,
                                            bool channels_last, double target, double scale, cudaStream_t stream);
}  // namespace cuda

namespace {

at::Tensor gp_interpolate_cuda(const at::Tensor& real_in, const at::Tensor& fake_in, const at::Tensor& alpha_in) {
  check_interpolate_inputs(real_in, fake_in, alpha_in);
  TORCH_CHECK(real_in.is_cuda(), "gp_interpolate (cuda): real must be a CUDA tensor");
  const c10::cuda::OptionalCUDAGuard guard(real_in.device());
  at::Tensor out = dense_output_like(real_in);
  const bool cl = is_channels_last(out);
  const at::Tensor real = as_layout(real_in, cl), fake = as_layout(fake_in, cl), alpha = alpha_in.contiguous();
  const int64_t total = real.numel();
  C10_CUDA_CHECK(cuda::gp_interpolate_launch(dtype_code(real.scalar_type()), real.const_data_ptr(),
                                             fake.const_data_ptr(), alpha.const_data_ptr(), out.mutable_data_ptr(),
                                             total, total / real.size(0), alpha.numel() == 1 ? 0 : 1,
                                             c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> gp_norm_penalty_cuda(const at::Tensor& grad_in, double target, double scale,
                                                        int64_t norm_over, int64_t reduction) {
  check_penalty_inputs(grad_in, norm_over, reduction, "gp_norm_penalty");
  TORCH_CHECK(grad_in.is_cuda(), "gp_norm_penalty (cuda): grad must be a CUDA tensor");
  const c10::cuda::OptionalCUDAGuard guard(grad_in.device());
  const bool cl = use_channels_last(grad_in);
  const at::Tensor g = as_layout(grad_in, cl);
  const int64_t N = g.size(0), C = g.size(1), S = group_size(g);
  const auto acc = g.options().dtype(norm_dtype(g.scalar_type()));
  at::Tensor out = reduction == 0 ? at::empty({N}, g.options()) : at::empty({}, g.options());
  at::Tensor norm = at::empty(norm_shape(g, norm_over), acc);
  at::Tensor ws = at::empty({plan::penalty_workspace(N, C, S, static_cast<int>(norm_over))}, acc);
  C10_CUDA_CHECK(cuda::gp_norm_penalty_launch(dtype_code(g.scalar_type()), g.const_data_ptr(), ws.mutable_data_ptr(),
                                              norm.mutable_data_ptr(), out.mutable_data_ptr(), N, C, S,
                                              static_cast<int>(norm_over), static_cast<int>(reduction), cl, target,
                                              scale, c10::cuda::getCurrentCUDAStream().stream()));
  return {out, norm};
}

at::Tensor gp_norm_penalty_backward_cuda(const at::Tensor& go_in, const at::Tensor& grad_in, const at::Tensor& norm_in,
                                         double target, double scale, int64_t norm_over, int64_t reduction) {
  check_penalty_backward(go_in, grad_in, norm_in, norm_over, reduction);
  TORCH_CHECK(grad_in.is_cuda(), "gp_norm_penalty_backward (cuda): grad must be a CUDA tensor");
  const c10::cuda::OptionalCUDAGuard guard(grad_in.device());
  at::Tensor gx = dense_output_like(grad_in);
  const bool cl = is_channels_last(gx);
  const at::Tensor g = as_layout(grad_in, cl), norm = norm_in.contiguous(), go = go_in.contiguous();
  const int64_t N = g.size(0), C = g.size(1), S = group_size(g);
  C10_CUDA_CHECK(cuda::gp_norm_penalty_backward_launch(
      dtype_code(g.scalar_type()), go.const_data_ptr(), g.const_data_ptr(), norm.const_data_ptr(),
      gx.mutable_data_ptr(), N, C, S, static_cast<int>(norm_over), static_cast<int>(reduction), cl, target, scale,
      c10::cuda::getCurrentCUDAStream().stream()));
  return gx;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_IMPL(ganops, CUDA, m) {
  m.impl("gp_interpolate", &ganops::gp_interpolate_cuda);
  m.impl("gp_norm_penalty", &ganops::gp_norm_penalty_cuda);
  m.impl("gp_norm_penalty_backward", &ganops::gp_norm_penalty_backward_cuda);
}
