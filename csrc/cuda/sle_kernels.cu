// SPDX-License-Identifier: BSD-3-Clause
// SLE CUDA kernels (ATen-free: indexing and launch only; math in ganops/sle.h).
#include "ganops/cuda_common.cuh"
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

// NCHW backward: one block per (n, c) row: gx = gy * s and the row sum of gy * x.
template <typename T>
__global__ void sle_bwd_nchw_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ g,
                                    T* __restrict__ gx, T* __restrict__ gg, int64_t HW) {
  using acc_t = typename Acc<T>::type;
  const int64_t nc = blockIdx.x;
  const acc_t s = sle::sigmoid<acc_t>(load<acc_t>(g + nc));
  const T* xr = x + nc * HW;
  const T* gr = gy + nc * HW;
  T* gxr = gx + nc * HW;
  acc_t sum = 0;
  for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
    const acc_t gv = load<acc_t>(gr + i);
    sum += sle::gate_partial<acc_t>(gv, load<acc_t>(xr + i));
    gxr[i] = cast<T>(sle::grad_x<acc_t>(gv, s));
  }
  sum = block_sum<acc_t>(sum);
  if (threadIdx.x == 0) gg[nc] = cast<T>(sle::grad_gate<acc_t>(sum, s));
}

// NHWC backward: block (32 channels x 8 pixel lanes) per (n, channel tile); pixels strided by 8.
template <typename T>
__global__ void sle_bwd_nhwc_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ g,
                                    T* __restrict__ gx, T* __restrict__ gg, int64_t C, int64_t HW) {
  using acc_t = typename Acc<T>::type;
  __shared__ acc_t part[8][33];
  const int64_t n = blockIdx.y;
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  acc_t sum = 0;
  acc_t s = 0;
  if (c < C) {
    s = sle::sigmoid<acc_t>(load<acc_t>(g + n * C + c));
    for (int64_t p = threadIdx.y; p < HW; p += 8) {
      const int64_t off = (n * HW + p) * C + c;
      const acc_t gv = load<acc_t>(gy + off);
      sum += sle::gate_partial<acc_t>(gv, load<acc_t>(x + off));
      gx[off] = cast<T>(sle::grad_x<acc_t>(gv, s));
    }
  }
  part[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    acc_t t = 0;
    for (int k = 0; k < 8; ++k) t += part[k][threadIdx.x];
    gg[n * C + c] = cast<T>(sle::grad_gate<acc_t>(t, s));
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

cudaError_t sle_backward_launch(int dtype, const void* gy, const void* x, const void* g, void* gx, void* gg,
                                int64_t N, int64_t C, int64_t HW, bool channels_last, cudaStream_t stream) {
  if (N * C == 0) return cudaSuccess;
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    if (!channels_last) {
      const int threads = HW >= 1024 ? 512 : (HW >= 256 ? 256 : 64);
      sle_bwd_nchw_kernel<scalar_t><<<static_cast<unsigned int>(N * C), threads, 0, stream>>>(
          static_cast<const scalar_t*>(gy), static_cast<const scalar_t*>(x), static_cast<const scalar_t*>(g),
          static_cast<scalar_t*>(gx), static_cast<scalar_t*>(gg), HW);
    } else {
      dim3 grid(static_cast<unsigned int>((C + 31) / 32), static_cast<unsigned int>(N));
      sle_bwd_nhwc_kernel<scalar_t><<<grid, dim3(32, 8), 0, stream>>>(
          static_cast<const scalar_t*>(gy), static_cast<const scalar_t*>(x), static_cast<const scalar_t*>(g),
          static_cast<scalar_t*>(gx), static_cast<scalar_t*>(gg), C, HW);
    }
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ganops
