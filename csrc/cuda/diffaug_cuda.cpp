// SPDX-License-Identifier: BSD-3-Clause
// DiffAugment CUDA glue: checks, allocation, device guard and current stream; kernels in diffaug_kernels.cu.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ganops/cpu_utils.h"
#include "ganops/diffaug_checks.h"

namespace ganops {
namespace cuda {
int diffaug_partial_blocks(int64_t C, int64_t H, int64_t W);
cudaError_t diffaug_apply_launch(int dtype, const void* x, void* y, const void* color, const int64_t* spatial,
                                 double* partial, int64_t N, int64_t C, int64_t H, int64_t W, int64_t cut_h,
                                 int64_t cut_w, bool cutout_first, int mode, bool channels_last, cudaStream_t stream);
}  // namespace cuda

namespace {

at::Tensor diffaug_apply_cuda(const at::Tensor& x_in, const at::Tensor& color_in, const at::Tensor& spatial_in,
                              int64_t cut_h, int64_t cut_w, bool cutout_first, int64_t mode) {
  check_diffaug_inputs(x_in, color_in, spatial_in, cut_h, cut_w, mode, "diffaug_apply");
  TORCH_CHECK(x_in.is_cuda(), "diffaug_apply (cuda): x must be a CUDA tensor");
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  at::Tensor out = dense_output_like(x_in);
  const bool cl = is_channels_last(out);
  const at::Tensor x = as_layout(x_in, cl);
  const at::Tensor color = color_in.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat).contiguous();
  const at::Tensor spatial = spatial_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor partial = at::empty({std::max<int64_t>(1, N * cuda::diffaug_partial_blocks(C, H, W))},
                                 x.options().dtype(at::kDouble));
  C10_CUDA_CHECK(cuda::diffaug_apply_launch(dtype_code(x.scalar_type()), x.const_data_ptr(), out.mutable_data_ptr(),
                                            color.const_data_ptr(), spatial.const_data_ptr<int64_t>(),
                                            partial.mutable_data_ptr<double>(), N, C, H, W, cut_h, cut_w,
                                            cutout_first, static_cast<int>(mode), cl,
                                            c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_IMPL(ganops, CUDA, m) { m.impl("diffaug_apply", &ganops::diffaug_apply_cuda); }
