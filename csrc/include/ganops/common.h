// SPDX-License-Identifier: BSD-3-Clause
// Macros shared by the CPU (.cpp) and CUDA (.cu) translation units. No ATen here: .cu files stay ATen-free.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GANOPS_HD __host__ __device__ __forceinline__
#else
#define GANOPS_HD inline
#endif

namespace ganops {
// dtype codes used across the ATen-free CUDA launch boundary.
enum DType : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };
}  // namespace ganops
