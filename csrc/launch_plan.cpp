// SPDX-License-Identifier: BSD-3-Clause
// ganops::_cuda_launch_plan: the CUDA launch plans of ganops/launch_plan.h, callable from Python so the CPU tests
// can check grid limits and work splits without a GPU (private; not part of the public API).
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "ganops/launch_plan.h"

namespace ganops {
namespace {

// kernel "sle_backward", sizes (N, C, HW, channels_last) ->
//   (rows, tiles, chunks, chunk, items, grid, tx, ty, workspace, finalize grid);
// kernel "penalty", sizes (N, C, S, norm_over) -> (partials per sample, grid.y of pass 1, grid.x of pass 2,
//   workspace); kernel "diffaug", sizes (blocks per sample, N) -> (grid.x).
std::vector<int64_t> cuda_launch_plan(const std::string& kernel, std::vector<int64_t> sizes) {
  if (kernel == "sle_backward") {
    TORCH_CHECK(sizes.size() == 4, "_cuda_launch_plan: sle_backward takes (N, C, HW, channels_last), got ",
                sizes.size(), " sizes");
    const plan::SleBwd p = plan::sle_backward(sizes[0], sizes[1], sizes[2], sizes[3] != 0);
    return {p.rows, p.tiles, p.chunks, p.chunk, p.items, p.grid, p.tx, p.ty, p.workspace,
            plan::sle_finalize_grid(sizes[0] * sizes[1])};
  }
  if (kernel == "penalty") {
    TORCH_CHECK(sizes.size() == 4, "_cuda_launch_plan: penalty takes (N, C, S, norm_over), got ", sizes.size(),
                " sizes");
    const int norm_over = static_cast<int>(sizes[3]);
    return {plan::penalty_partials(sizes[1], sizes[2], norm_over), plan::grid_yz(sizes[0]), plan::grid_x(sizes[0]),
            plan::penalty_workspace(sizes[0], sizes[1], sizes[2], norm_over)};
  }
  if (kernel == "diffaug") {
    TORCH_CHECK(sizes.size() == 2, "_cuda_launch_plan: diffaug takes (blocks per sample, N), got ", sizes.size(),
                " sizes");
    return {plan::diffaug_grid(sizes[0], sizes[1])};
  }
  TORCH_CHECK(false, "_cuda_launch_plan: unknown kernel '", kernel, "' (sle_backward, penalty, diffaug)");
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_FRAGMENT(ganops, m) {
  m.def("_cuda_launch_plan(str kernel, int[] sizes) -> int[]", &ganops::cuda_launch_plan);
}
