// SPDX-License-Identifier: BSD-3-Clause
// ATen-free helpers for the CUDA kernels: dtype conversion to the accumulation type and launch sizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ganops/common.h"

namespace ganops {
namespace cuda {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename acc_t, typename T> __device__ __forceinline__ acc_t load(const T* p) { return static_cast<acc_t>(*p); }
template <> __device__ __forceinline__ float load<float, __half>(const __half* p) { return __half2float(*p); }
template <> __device__ __forceinline__ float load<float, __nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }

template <typename T, typename acc_t> __device__ __forceinline__ T cast(acc_t v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half cast<__half, float>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 cast<__nv_bfloat16, float>(float v) { return __float2bfloat16(v); }

inline unsigned int blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned int>(b);
}

// Block-wide sum for blockDim.x a multiple of 32 (<= 1024); result valid in thread 0.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int nw = (blockDim.x + 31) >> 5;
  v = (threadIdx.x < nw) ? warp_sums[lane] : acc_t(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Dispatch a dtype code to a C++ type (float, double, __half, __nv_bfloat16).
#define GANOPS_CUDA_DISPATCH(code, ...)                         \
  switch (code) {                                               \
    case ganops::kF32: { using scalar_t = float; __VA_ARGS__(); break; }          \
    case ganops::kF64: { using scalar_t = double; __VA_ARGS__(); break; }         \
    case ganops::kF16: { using scalar_t = __half; __VA_ARGS__(); break; }         \
    case ganops::kBF16: { using scalar_t = __nv_bfloat16; __VA_ARGS__(); break; } \
    default: return cudaErrorInvalidValue;                      \
  }

}  // namespace cuda
}  // namespace ganops
