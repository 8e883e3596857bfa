// SPDX-License-Identifier: BSD-3-Clause
// SLE CUDA kernels (ATen-free: indexing and launch only; math in ganops/sle.h).
#include "ganops/cuda_common.cuh"
#include "ganops/launch_plan.h"
#include "ganops/sle.h"

namespace ganops {
namespace cuda {
namespace {

// y = x * sigmoid(g[n, c]); grid-stride over all elements of either dense layout.
template <typename T>
__global__ void sle_fwd_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ y, int64_t N,
                               int64_t C, int64_t HW, bool channels_last) {
  using acc_t = typename Acc<T>::type;
  const int64_t total = N * C * HW;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t nc;
    if (channels_last) {
      nc = (i / (HW * C)) * C + (i % C);
    } else {
      nc = i / HW;
    }
    const acc_t s = sle::sigmoid<acc_t>(load<acc_t>(g + nc));
    y[i] = cast<T>(sle::forward<acc_t>(load<acc_t>(x + i), s));
  }
}

// Backward pass 1, NCHW: virtual block `it` = (row nc = n * C + c, pixel chunk k): gx = gy * s over the chunk and
// its partial sum of gy * x -> ws[nc * chunks + k] (or gg[nc] directly when a row is one chunk). See
// ganops/launch_plan.h for the split.
template <typename T>
__global__ void sle_bwd_nchw_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ g,
                                    T* __restrict__ gx, T* __restrict__ gg, typename Acc<T>::type* __restrict__ ws,
                                    int64_t HW, int64_t chunks, int64_t chunk, int64_t items) {
  using acc_t = typename Acc<T>::type;
  for (int64_t it = blockIdx.x; it < items; it += gridDim.x) {
    const int64_t nc = it / chunks, k = it % chunks;
    const int64_t p0 = k * chunk, p1 = p0 + chunk < HW ? p0 + chunk : HW;
    const acc_t s = sle::sigmoid<acc_t>(load<acc_t>(g + nc));
    const T* xr = x + nc * HW;
    const T* gr = gy + nc * HW;
    T* gxr = gx + nc * HW;
    acc_t sum = 0;
    for (int64_t i = p0 + threadIdx.x; i < p1; i += blockDim.x) {
      const acc_t gv = load<acc_t>(gr + i);
      sum += sle::gate_partial<acc_t>(gv, load<acc_t>(xr + i));
      gxr[i] = cast<T>(sle::grad_x<acc_t>(gv, s));
    }
    sum = block_sum<acc_t>(sum);
    if (threadIdx.x == 0) {
      if (chunks == 1) {
        gg[nc] = cast<T>(sle::grad_gate<acc_t>(sum, s));
      } else {
        ws[it] = sum;
      }
    }
    __syncthreads();  // block_sum's shared scratch is reused by the next virtual block
  }
}

// Backward pass 1, NHWC: block (tx channels x ty pixel lanes); virtual block `it` = (n, channel tile, pixel chunk k):
// gx over the chunk and per channel the partial sum of gy * x -> ws[(n * C + c) * chunks + k] (or gg directly).
template <typename T>
__global__ void sle_bwd_nhwc_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ g,
                                    T* __restrict__ gx, T* __restrict__ gg, typename Acc<T>::type* __restrict__ ws,
                                    int64_t C, int64_t HW, int64_t tiles, int64_t chunks, int64_t chunk,
                                    int64_t items) {
  using acc_t = typename Acc<T>::type;
  __shared__ acc_t part[2 * plan::kSleThreads];  // ty rows of (tx + 1): at most 256 + 256
  const int64_t stride = blockDim.x + 1;
  for (int64_t it = blockIdx.x; it < items; it += gridDim.x) {
    const int64_t k = it % chunks, row = it / chunks;
    const int64_t n = row / tiles, c = (row % tiles) * blockDim.x + threadIdx.x;
    const int64_t p0 = k * chunk, p1 = p0 + chunk < HW ? p0 + chunk : HW;
    acc_t sum = 0;
    acc_t s = 0;
    if (c < C) {
      s = sle::sigmoid<acc_t>(load<acc_t>(g + n * C + c));
      for (int64_t p = p0 + threadIdx.y; p < p1; p += blockDim.y) {
        const int64_t off = (n * HW + p) * C + c;
        const acc_t gv = load<acc_t>(gy + off);
        sum += sle::gate_partial<acc_t>(gv, load<acc_t>(x + off));
        gx[off] = cast<T>(sle::grad_x<acc_t>(gv, s));
      }
    }
    part[threadIdx.y * stride + threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
      acc_t t = 0;
      for (int64_t l = 0; l < (int64_t)blockDim.y; ++l) t += part[l * stride + threadIdx.x];
      if (chunks == 1) {
        gg[n * C + c] = cast<T>(sle::grad_gate<acc_t>(t, s));
      } else {
        ws[(n * C + c) * chunks + k] = t;
      }
    }
    __syncthreads();  // part is reused by the next virtual block
  }
}

// Backward pass 2 (chunks > 1): gg[nc] = grad_gate(sum_k ws[nc * chunks + k], s), summed in chunk order.
template <typename T>
__global__ void sle_bwd_finalize_kernel(const typename Acc<T>::type* __restrict__ ws, const T* __restrict__ g,
                                        T* __restrict__ gg, int64_t NC, int64_t chunks) {
  using acc_t = typename Acc<T>::type;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < NC; i += (int64_t)gridDim.x * blockDim.x) {
    acc_t t = 0;
    for (int64_t k = 0; k < chunks; ++k) t += ws[i * chunks + k];
    gg[i] = cast<T>(sle::grad_gate<acc_t>(t, sle::sigmoid<acc_t>(load<acc_t>(g + i))));
  }
}

}  // namespace

cudaError_t sle_forward_launch(int dtype, const void* x, const void* g, void* y, int64_t N, int64_t C, int64_t HW,
                               bool channels_last, cudaStream_t stream) {
  const int64_t total = N * C * HW;
  if (total == 0) return cudaSuccess;
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    sle_fwd_kernel<scalar_t><<<blocks_for(total, 256), 256, 0, stream>>>(
        static_cast<const scalar_t*>(x), static_cast<const scalar_t*>(g), static_cast<scalar_t*>(y), N, C, HW,
        channels_last);
  });
  return cudaGetLastError();
}

// ws: plan::sle_backward(N, C, HW, channels_last).workspace accumulators (float, or double for float64).
cudaError_t sle_backward_launch(int dtype, const void* gy, const void* x, const void* g, void* gx, void* gg, void* ws,
                                int64_t N, int64_t C, int64_t HW, bool channels_last, cudaStream_t stream) {
  if (N * C == 0) return cudaSuccess;  // no gate: nothing to write (gx is empty too)
  const plan::SleBwd p = plan::sle_backward(N, C, HW, channels_last);
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    using acc_t = typename Acc<scalar_t>::type;
    const auto* gyp = static_cast<const scalar_t*>(gy);
    const auto* xp = static_cast<const scalar_t*>(x);
    const auto* gp = static_cast<const scalar_t*>(g);
    auto* gxp = static_cast<scalar_t*>(gx);
    auto* ggp = static_cast<scalar_t*>(gg);
    auto* wsp = static_cast<acc_t*>(ws);
    const unsigned int grid = static_cast<unsigned int>(p.grid);
    if (!channels_last) {
      sle_bwd_nchw_kernel<scalar_t><<<grid, p.tx, 0, stream>>>(gyp, xp, gp, gxp, ggp, wsp, HW, p.chunks, p.chunk,
                                                               p.items);
    } else {
      sle_bwd_nhwc_kernel<scalar_t><<<grid, dim3(p.tx, p.ty), 0, stream>>>(gyp, xp, gp, gxp, ggp, wsp, C, HW,
                                                                           p.tiles, p.chunks, p.chunk, p.items);
    }
    if (p.chunks > 1)
      sle_bwd_finalize_kernel<scalar_t><<<static_cast<unsigned int>(plan::sle_finalize_grid(N * C)),
                                          plan::kSleThreads, 0, stream>>>(wsp, gp, ggp, N * C, p.chunks);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ganops
