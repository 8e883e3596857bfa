// SPDX-License-Identifier: BSD-3-Clause
// SLE CUDA glue: checks, allocation, device guard and current stream; kernels in sle_kernels.cu.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ganops/cpu_utils.h"
#include "ganops/launch_plan.h"
#include "ganops/sle_checks.h"

namespace ganops {
namespace cuda {
cudaError_t sle_forward_launch(int dtype, const void* x, const void* g, void* y, int64_t N, int64_t C, int64_t HW,
                               bool channels_last, cudaStream_t stream);
cudaError_t sle_backward_launch(int dtype, const void* gy, const void* x, const void* g, void* gx, void* gg, void* ws,
                                int64_t N, int64_t C, int64_t HW, bool channels_last, cudaStream_t stream);
}  // namespace cuda

namespace {

at::Tensor sle_forward_cuda(const at::Tensor& x_in, const at::Tensor& gate_in) {
  check_sle_inputs(x_in, gate_in, "sle_forward");
  TORCH_CHECK(x_in.is_cuda(), "sle_forward (cuda): x must be a CUDA tensor");
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  at::Tensor out = dense_output_like(x_in);
  const bool cl = is_channels_last(out);
  const at::Tensor x = as_layout(x_in, cl);
  const at::Tensor gate = gate_in.contiguous();
  C10_CUDA_CHECK(cuda::sle_forward_launch(dtype_code(x.scalar_type()), x.const_data_ptr(), gate.const_data_ptr(),
                                          out.mutable_data_ptr(), x.size(0), x.size(1), x.size(2) * x.size(3), cl,
                                          c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> sle_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                     const at::Tensor& gate_in) {
  check_sle_inputs(x_in, gate_in, "sle_backward");
  check_sle_grad(grad_in, x_in, "sle_backward");
  TORCH_CHECK(x_in.is_cuda(), "sle_backward (cuda): x must be a CUDA tensor");
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  at::Tensor gx = dense_output_like(x_in);
  SleBackwardOperands op = sle_backward_operands(gx, grad_in, x_in, gate_in);
  const at::Tensor& x = op.x;
  const bool cl = op.channels_last;
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  // Partial gate sums of the split reduction (see ganops/launch_plan.h), in the accumulation type.
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor ws = at::empty({plan::sle_backward(N, C, HW, cl).workspace}, x.options().dtype(acc));
  C10_CUDA_CHECK(cuda::sle_backward_launch(dtype_code(x.scalar_type()), op.gy.const_data_ptr(), x.const_data_ptr(),
                                           op.gate.const_data_ptr(), gx.mutable_data_ptr(), op.gg.mutable_data_ptr(),
                                           ws.data_ptr(), N, C, HW, cl, c10::cuda::getCurrentCUDAStream().stream()));
  return {gx, std::move(op.gg)};
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_IMPL(ganops, CUDA, m) {
  m.impl("sle_forward", &ganops::sle_forward_cuda);
  m.impl("sle_backward", &ganops::sle_backward_cuda);
}
