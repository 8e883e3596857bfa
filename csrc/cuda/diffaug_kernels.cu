// SPDX-License-Identifier: BSD-3-Clause
// DiffAugment CUDA kernels (ATen-free: indexing and launch only; math in ganops/diffaug.h).
//   diffaug_sum_kernel:  (PB x N) blocks: per-sample partial sums of the color input (only where contrast != 1).
//   diffaug_main_kernel: (pixel blocks x N) blocks: one thread per output pixel, all channels; one read, one write.
//   Both fold the sample index into grid.x (grid-stride over virtual blocks), so any batch size launches.
#include "ganops/cuda_common.cuh"
#include "ganops/diffaug.h"
#include "ganops/launch_plan.h"

namespace ganops {
namespace cuda {
namespace {

struct Shape {
  int64_t C, H, W, cut_h, cut_w;
  bool cl, cutout_first;
  int mode;
};

// Rows of contiguous elements: NCHW row (c, i) holds W values, NHWC row i holds W*C. Block b of sample n sums rows
// b, b + PB, ...; the valid columns of an adjoint row form at most two contiguous spans of its source row.
template <typename T>
__device__ __forceinline__ void diffaug_sum_block(const T* __restrict__ x, const void* color_v,
                                                  const int64_t* __restrict__ sp, double* __restrict__ partial,
                                                  const Shape& s, int64_t n, int64_t blk, int64_t PB) {
  using acc_t = typename Acc<T>::type;
  const acc_t* color = static_cast<const acc_t*>(color_v);
  const diffaug::Color<acc_t> col = diffaug::make_color<acc_t>(color + 3 * n, s.mode);
  acc_t acc = 0;
  if (col.k1 != acc_t(0)) {
    const diffaug::Geo g = diffaug::make_geo(sp + 4 * n, s.cut_h, s.cut_w, s.cutout_first, s.mode);
    const int64_t HW = s.H * s.W, rows = s.cl ? s.H : s.C * s.H, len = s.cl ? s.C : 1;  // len: elements per pixel
    const T* xs = x + n * s.C * HW;
    for (int64_t r = blk; r < rows; r += PB) {
      const int64_t c = s.cl ? 0 : r / s.H, i = s.cl ? r : r % s.H;
      diffaug::Spans sp2{0, s.W, 0, 0};
      int64_t si = i, sy = 0;
      if (s.mode == diffaug::kAdjoint) {
        sp2 = diffaug::row_spans(g, i, s.H, s.W);
        si = i + g.sx, sy = g.sy;
      }
      const T* row = xs + c * HW + si * s.W * len;
      for (int64_t e = (sp2.lo0 + sy) * len + threadIdx.x; e < (sp2.hi0 + sy) * len; e += blockDim.x)
        acc += load<acc_t>(row + e);
      for (int64_t e = (sp2.lo1 + sy) * len + threadIdx.x; e < (sp2.hi1 + sy) * len; e += blockDim.x)
        acc += load<acc_t>(row + e);
    }
  }
  acc = block_sum<acc_t>(acc);
  if (threadIdx.x == 0) partial[n * PB + blk] = static_cast<double>(acc);
}

// Virtual block vb = (sample n, block b of PB), folded into grid.x and walked by a grid-stride loop (N may exceed
// grid.y's 65535).
template <typename T>
__global__ void diffaug_sum_kernel(const T* __restrict__ x, const void* color_v, const int64_t* __restrict__ sp,
                                   double* __restrict__ partial, Shape s, int64_t N, int64_t PB) {
  for (int64_t vb = blockIdx.x; vb < N * PB; vb += gridDim.x) {
    diffaug_sum_block<T>(x, color_v, sp, partial, s, vb / PB, vb % PB, PB);
    __syncthreads();  // block_sum's shared scratch is reused by the next virtual block
  }
}

template <typename T>
__device__ __forceinline__ void diffaug_main_block(const T* __restrict__ x, T* __restrict__ y, const void* color_v,
                                                   const int64_t* __restrict__ sp, const double* __restrict__ partial,
                                                   int PB, const Shape& s, int64_t n, int64_t blk, double& sum_sh) {
  using acc_t = typename Acc<T>::type;
  const int64_t HW = s.H * s.W;
  const acc_t* color = static_cast<const acc_t*>(color_v);
  const diffaug::Color<acc_t> col = diffaug::make_color<acc_t>(color + 3 * n, s.mode);
  if (threadIdx.x == 0) {
    double t = 0;
    if (col.k1 != acc_t(0))
      for (int b = 0; b < PB; ++b) t += partial[n * PB + b];
    sum_sh = t;
  }
  __syncthreads();
  const acc_t c0 = diffaug::offset<acc_t>(col, sum_sh, s.C * HW);
  const int64_t p = blk * (int64_t)blockDim.x + threadIdx.x;
  if (p >= HW) return;
  const int64_t i = p / s.W, j = p % s.W;
  const diffaug::Geo g = diffaug::make_geo(sp + 4 * n, s.cut_h, s.cut_w, s.cutout_first, s.mode);
  const int64_t cs = s.cl ? 1 : HW;                  // channel stride
  T* out = y + n * s.C * HW + (s.cl ? p * s.C : p);
  if (!diffaug::valid(g, i, j, s.H, s.W)) {
    const T f = cast<T>(diffaug::fill<acc_t>(c0, s.mode));
    for (int64_t c = 0; c < s.C; ++c) out[c * cs] = f;
    return;
  }
  const int64_t q = (i + g.sx) * s.W + (j + g.sy);
  const T* in = x + n * s.C * HW + (s.cl ? q * s.C : q);
  acc_t mp = 0;
  if (col.bm != acc_t(0)) {
    for (int64_t c = 0; c < s.C; ++c) mp += load<acc_t>(in + c * cs);
    mp /= static_cast<acc_t>(s.C);
  }
  for (int64_t c = 0; c < s.C; ++c) out[c * cs] = cast<T>(diffaug::apply<acc_t>(col, load<acc_t>(in + c * cs), mp, c0));
}

// Virtual block vb = (sample n, pixel block b of PXB), folded into grid.x as in diffaug_sum_kernel.
template <typename T>
__global__ void diffaug_main_kernel(const T* __restrict__ x, T* __restrict__ y, const void* color_v,
                                    const int64_t* __restrict__ sp, const double* __restrict__ partial, int PB,
                                    Shape s, int64_t N, int64_t PXB) {
  __shared__ double sum_sh;
  for (int64_t vb = blockIdx.x; vb < N * PXB; vb += gridDim.x) {
    diffaug_main_block<T>(x, y, color_v, sp, partial, PB, s, vb / PXB, vb % PXB, sum_sh);
    __syncthreads();  // sum_sh is rewritten by the next virtual block
  }
}

}  // namespace

// color: (N, 3) in the accumulation type (double for float64, else float); spatial: (N, 4) int64;
// partial: N * PB doubles of scratch (PB = diffaug_partial_blocks(...)).
int diffaug_partial_blocks(int64_t C, int64_t H, int64_t W) {
  int64_t pb = (C * H * W + 256 * 16 - 1) / (256 * 16);
  if (pb > C * H) pb = C * H;  // at most one block per row (NHWC has H rows of W*C: fewer blocks, longer rows)
  return static_cast<int>(pb < 1 ? 1 : (pb > 64 ? 64 : pb));
}

cudaError_t diffaug_apply_launch(int dtype, const void* x, void* y, const void* color, const int64_t* spatial,
                                 double* partial, int64_t N, int64_t C, int64_t H, int64_t W, int64_t cut_h,
                                 int64_t cut_w, bool cutout_first, int mode, bool channels_last,
                                 cudaStream_t stream) {
  if (N * C * H * W == 0) return cudaSuccess;
  const Shape s{C, H, W, cut_h, cut_w, channels_last, cutout_first, mode};
  const int PB = diffaug_partial_blocks(C, H, W);
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    diffaug_sum_kernel<scalar_t><<<static_cast<unsigned int>(plan::diffaug_grid(PB, N)), 256, 0, stream>>>(
        static_cast<const scalar_t*>(x), color, spatial, partial, s, N, PB);
    const int64_t pblocks = (H * W + 255) / 256;
    diffaug_main_kernel<scalar_t><<<static_cast<unsigned int>(plan::diffaug_grid(pblocks, N)), 256, 0, stream>>>(
        static_cast<const scalar_t*>(x), static_cast<scalar_t*>(y), color, spatial, partial, PB, s, N, pblocks);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ganops
