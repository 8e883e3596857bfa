// SPDX-License-Identifier: BSD-3-Clause
// Spectral-norm CUDA glue: checks, allocation, the layer/tile table (one host-to-device copy), device guard and
// current stream; kernels in spectral_norm_kernels.cu.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "ganops/cpu_utils.h"
#include "ganops/spectral_norm.h"
#include "ganops/spectral_norm_checks.h"

namespace ganops {
namespace cuda {
cudaError_t spectral_norm_forward_launch(int dtype, const void* meta, int64_t L, int64_t n_col, int64_t n_row,
                                         int64_t n_elem, void* scratch, void* sigmas, int64_t n_iter, double eps,
                                         cudaStream_t stream);
cudaError_t spectral_norm_backward_launch(int dtype, const void* meta, int64_t L, int64_t n_elem, void* partial,
                                          const void* sigmas, const void* g_sigmas, cudaStream_t stream);
}  // namespace cuda

namespace {

void add_tiles(std::vector<sn::Tile>& tiles, int64_t layer, int64_t n, int64_t per) {
  for (int64_t s = 0; s < n; s += per) tiles.push_back({layer, s});
}

// Pack [layers][tiles...] into pinned host memory and copy it to the device on the current stream.
at::Tensor upload(const std::vector<sn::Layer>& layers, const std::vector<std::vector<sn::Tile>>& tiles,
                  const at::Device& device) {
  size_t bytes = layers.size() * sizeof(sn::Layer);
  for (const auto& t : tiles) bytes += t.size() * sizeof(sn::Tile);
  at::Tensor host = at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  uint8_t* p = host.mutable_data_ptr<uint8_t>();
  std::memcpy(p, layers.data(), layers.size() * sizeof(sn::Layer));
  p += layers.size() * sizeof(sn::Layer);
  for (const auto& t : tiles) {
    if (!t.empty()) std::memcpy(p, t.data(), t.size() * sizeof(sn::Tile));
    p += t.size() * sizeof(sn::Tile);
  }
  return host.to(device, /*non_blocking=*/true);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>
spectral_norm_forward_cuda(at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims,
                           int64_t n_power_iterations, double eps) {
  const auto shapes = check_sn_inputs(weights, us, vs, dims, n_power_iterations, eps, "spectral_norm_forward");
  TORCH_CHECK(weights[0].is_cuda(), "spectral_norm_forward (cuda): weights must be CUDA tensors");
  const c10::cuda::OptionalCUDAGuard guard(weights[0].device());
  const int64_t L = static_cast<int64_t>(weights.size());
  auto [ws, ui, vi, outs, un, vn] = sn_forward_io(weights, us, vs);
  std::vector<sn::Layer> layers;
  std::vector<std::vector<sn::Tile>> tiles(3);
  int64_t t_total = 0, s_total = 0;
  for (int64_t l = 0; l < L; ++l) {
    const auto& sh = shapes[l];
    const int64_t C = sh.P * sh.R, N = C * sh.H;
    sn::Layer m{ws[l].const_data_ptr(), outs[l].mutable_data_ptr(), ui[l].const_data_ptr(), vi[l].const_data_ptr(),
                un[l].mutable_data_ptr(), vn[l].mutable_data_ptr(), nullptr, sh.P, sh.H, sh.R, t_total, s_total,
                static_cast<int64_t>(tiles[2].size()), 0};
    add_tiles(tiles[0], l, C, sn::kColTile);
    add_tiles(tiles[1], l, sh.H, sn::kRowTile);
    add_tiles(tiles[2], l, N, sn::kElemTile);
    m.ntiles = static_cast<int64_t>(tiles[2].size()) - m.tile0;
    layers.push_back(m);
    t_total += C;
    s_total += sh.H;
  }
  const auto acc = weights[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor scratch = at::empty({t_total + s_total}, weights[0].options().dtype(acc));
  at::Tensor sigmas = at::empty({L}, weights[0].options());
  at::Tensor meta = upload(layers, tiles, weights[0].device());
  C10_CUDA_CHECK(cuda::spectral_norm_forward_launch(
      dtype_code(weights[0].scalar_type()), meta.const_data_ptr(), L, static_cast<int64_t>(tiles[0].size()),
      static_cast<int64_t>(tiles[1].size()), static_cast<int64_t>(tiles[2].size()), scratch.mutable_data_ptr(),
      sigmas.mutable_data_ptr(), n_power_iterations, eps, c10::cuda::getCurrentCUDAStream().stream()));
  return {outs, sigmas, un, vn};
}

std::vector<at::Tensor> spectral_norm_backward_cuda(at::TensorList grads, const at::Tensor& grad_sigmas,
                                                    at::TensorList weights, at::TensorList us, at::TensorList vs,
                                                    at::IntArrayRef dims, const at::Tensor& sigmas) {
  const auto shapes = check_sn_inputs(weights, us, vs, dims, 0, 1.0, "spectral_norm_backward");
  check_sn_grads(grads, grad_sigmas, weights, sigmas, "spectral_norm_backward");
  TORCH_CHECK(weights[0].is_cuda(), "spectral_norm_backward (cuda): weights must be CUDA tensors");
  const c10::cuda::OptionalCUDAGuard guard(weights[0].device());
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> keep, gws;
  std::vector<sn::Layer> layers;
  std::vector<std::vector<sn::Tile>> tiles(1);
  for (int64_t l = 0; l < L; ++l) {
    const auto& sh = shapes[l];
    const at::Tensor w = weights[l].contiguous(), g = grads[l].contiguous();
    const at::Tensor u = us[l].contiguous(), v = vs[l].contiguous();
    keep.insert(keep.end(), {w, g, u, v});
    gws.push_back(at::empty(w.sizes(), w.options()));
    sn::Layer m{w.const_data_ptr(), gws[l].mutable_data_ptr(), u.const_data_ptr(), v.const_data_ptr(), nullptr,
                nullptr, g.const_data_ptr(), sh.P, sh.H, sh.R, 0, 0, static_cast<int64_t>(tiles[0].size()), 0};
    add_tiles(tiles[0], l, sh.P * sh.H * sh.R, sn::kElemTile);
    m.ntiles = static_cast<int64_t>(tiles[0].size()) - m.tile0;
    layers.push_back(m);
  }
  const auto acc = weights[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t n_elem = static_cast<int64_t>(tiles[0].size());
  at::Tensor partial = at::empty({std::max<int64_t>(n_elem, 1)}, weights[0].options().dtype(acc));
  const at::Tensor sg = sigmas.contiguous(), gsg = grad_sigmas.contiguous();
  at::Tensor meta = upload(layers, tiles, weights[0].device());
  C10_CUDA_CHECK(cuda::spectral_norm_backward_launch(dtype_code(weights[0].scalar_type()), meta.const_data_ptr(), L,
                                                     n_elem, partial.mutable_data_ptr(), sg.const_data_ptr(),
                                                     gsg.const_data_ptr(), c10::cuda::getCurrentCUDAStream().stream()));
  return gws;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_IMPL(ganops, CUDA, m) {
  m.impl("spectral_norm_forward", &ganops::spectral_norm_forward_cuda);
  m.impl("spectral_norm_backward", &ganops::spectral_norm_backward_cuda);
}
