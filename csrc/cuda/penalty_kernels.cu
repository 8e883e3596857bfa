// SPDX-License-Identifier: BSD-3-Clause
// Gradient-penalty CUDA kernels (ATen-free: indexing and launch only; math in ganops/penalty.h).
#include "ganops/cuda_common.cuh"
#include "ganops/launch_plan.h"
#include "ganops/penalty.h"

namespace ganops {
namespace cuda {
namespace {

constexpr int kThreads = plan::kPenaltyThreads;

// x_hat = real + alpha[n] * (fake - real); the sample n owns elements [n K, (n + 1) K) in both dense layouts.
// a_step = 0 broadcasts a single alpha over the batch.
template <typename T>
__global__ void interp_kernel(const T* __restrict__ real, const T* __restrict__ fake, const T* __restrict__ alpha,
                              T* __restrict__ out, int64_t total, int64_t K, int64_t a_step) {
  using acc_t = typename Acc<T>::type;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const acc_t a = load<acc_t>(alpha + (i / K) * a_step);
    out[i] = cast<T>(penalty::lerp<acc_t>(load<acc_t>(real + i), load<acc_t>(fake + i), a));
  }
}

// Pass 1, norm_over = sample: block (b, n) sums g^2 over a grid-stride slice of sample n -> part[n, b]; samples
// on grid.y, walked by a grid-stride loop (grid.y <= 65535).
template <typename T>
__global__ void sumsq_kernel(const T* __restrict__ g, typename Acc<T>::type* __restrict__ part, int64_t N, int64_t K) {
  using acc_t = typename Acc<T>::type;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const T* gs = g + n * K;
    acc_t s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < K; i += (int64_t)gridDim.x * blockDim.x) {
      const acc_t v = load<acc_t>(gs + i);
      s += v * v;
    }
    s = block_sum<acc_t>(s);
    if (threadIdx.x == 0) part[n * gridDim.x + blockIdx.x] = s;
    __syncthreads();  // block_sum's shared scratch is reused by the next sample
  }
}

// Pass 1, norm_over = channel: one thread per pixel p of sample n: norm over C, then the block's sum of
// (norm - t)^2 -> part[n, b]; samples on grid.y as above.
template <typename T>
__global__ void channel_norm_kernel(const T* __restrict__ g, typename Acc<T>::type* __restrict__ part,
                                    typename Acc<T>::type* __restrict__ norm, int64_t N, int64_t C, int64_t S,
                                    bool channels_last, typename Acc<T>::type target) {
  using acc_t = typename Acc<T>::type;
  const int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    acc_t v = 0;
    if (p < S) {
      const T* gs = g + n * C * S;
      const int64_t base = channels_last ? p * C : p, step = channels_last ? 1 : S;
      acc_t ss = 0;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t x = load<acc_t>(gs + base + c * step);
        ss += x * x;
      }
      norm[n * S + p] = std::sqrt(ss);
      v = penalty::group_penalty<acc_t>(ss, target);
    }
    v = block_sum<acc_t>(v);
    if (threadIdx.x == 0) part[n * gridDim.x + blockIdx.x] = v;
    __syncthreads();
  }
}

// Pass 2: one block per sample (grid-stride over grid.x): the sample's total from its partials, its norm
// (norm_over 0), its penalty -> per[n] (and out[n] for reduction none).
template <typename T>
__global__ void sample_kernel(const typename Acc<T>::type* __restrict__ part, typename Acc<T>::type* __restrict__ norm,
                              typename Acc<T>::type* __restrict__ per, T* __restrict__ out, int64_t N, int64_t nb,
                              int norm_over, int reduction, typename Acc<T>::type target,
                              typename Acc<T>::type scale, int64_t G) {
  using acc_t = typename Acc<T>::type;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    acc_t s = 0;
    for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) s += part[n * nb + b];
    s = block_sum<acc_t>(s);
    if (threadIdx.x == 0) {
      if (norm_over == penalty::kSample) {
        norm[n] = std::sqrt(s);
        s = penalty::group_penalty<acc_t>(s, target);
      }
      const acc_t v = scale * s / static_cast<acc_t>(G);
      per[n] = v;
      if (reduction == penalty::kNone) out[n] = cast<T>(v);
    }
    __syncthreads();
  }
}

// Pass 3 (reduction mean/sum), one block: the batch total in a fixed order (deterministic).
template <typename T>
__global__ void reduce_kernel(const typename Acc<T>::type* __restrict__ per, T* __restrict__ out, int64_t N,
                              int reduction) {
  using acc_t = typename Acc<T>::type;
  acc_t t = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) t += per[n];
  t = block_sum<acc_t>(t);
  if (threadIdx.x == 0) out[0] = cast<T>(reduction == penalty::kMean ? t / static_cast<acc_t>(N) : t);
}

// gx = k[n] * (1 - t / norm[group]) * g, elementwise.
template <typename T>
__global__ void penalty_bwd_kernel(const T* __restrict__ go, const T* __restrict__ g,
                                   const typename Acc<T>::type* __restrict__ norm, T* __restrict__ gx, int64_t N,
                                   int64_t C, int64_t S, int norm_over, int reduction, bool channels_last,
                                   typename Acc<T>::type target, typename Acc<T>::type scale, int64_t G) {
  using acc_t = typename Acc<T>::type;
  const int64_t K = C * S, total = N * K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / K;
    int64_t grp = n;
    if (norm_over == penalty::kChannel) grp = channels_last ? i / C : n * S + (i % S);
    const acc_t go_n = penalty::upstream<acc_t>(load<acc_t>(go + (reduction == penalty::kNone ? n : 0)), N, reduction);
    const acc_t k = penalty::sample_coef<acc_t>(go_n, scale, G) * penalty::grad_factor<acc_t>(norm[grp], target);
    gx[i] = cast<T>(k * load<acc_t>(g + i));
  }
}

}  // namespace

cudaError_t gp_interpolate_launch(int dtype, const void* real, const void* fake, const void* alpha, void* out,
                                  int64_t total, int64_t K, int64_t a_step, cudaStream_t stream) {
  if (total == 0) return cudaSuccess;
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    interp_kernel<scalar_t><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(real), static_cast<const scalar_t*>(fake), static_cast<const scalar_t*>(alpha),
        static_cast<scalar_t*>(out), total, K, a_step);
  });
  return cudaGetLastError();
}

// ws: plan::penalty_workspace(N, C, S, norm_over) accumulators: N * nb partials, then N per-sample penalties.
cudaError_t gp_norm_penalty_launch(int dtype, const void* g, void* ws, void* norm, void* out, int64_t N, int64_t C,
                                   int64_t S, int norm_over, int reduction, bool channels_last, double target,
                                   double scale, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;  // the op requires N > 0; nothing to launch otherwise
  const int64_t nb = plan::penalty_partials(C, S, norm_over);
  const int64_t G = norm_over == penalty::kSample ? 1 : S;  // S == 0: 0 / 0 = NaN, as torch's mean of nothing
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    using acc_t = typename Acc<scalar_t>::type;
    acc_t* pp = static_cast<acc_t*>(ws);
    acc_t* per = pp + N * nb;
    acc_t* np = static_cast<acc_t*>(norm);
    scalar_t* op = static_cast<scalar_t*>(out);
    const dim3 grid(static_cast<unsigned int>(nb), static_cast<unsigned int>(plan::grid_yz(N)));
    if (norm_over == penalty::kSample) {
      sumsq_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(static_cast<const scalar_t*>(g), pp, N, C * S);
    } else {
      channel_norm_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(static_cast<const scalar_t*>(g), pp, np, N, C, S,
                                                                   channels_last, static_cast<acc_t>(target));
    }
    sample_kernel<scalar_t><<<static_cast<unsigned int>(plan::grid_x(N)), kThreads, 0, stream>>>(
        pp, np, per, op, N, nb, norm_over, reduction, static_cast<acc_t>(target), static_cast<acc_t>(scale), G);
    if (reduction != penalty::kNone) reduce_kernel<scalar_t><<<1, kThreads, 0, stream>>>(per, op, N, reduction);
  });
  return cudaGetLastError();
}

cudaError_t gp_norm_penalty_backward_launch(int dtype, const void* go, const void* g, const void* norm, void* gx,
                                            int64_t N, int64_t C, int64_t S, int norm_over, int reduction,
                                            bool channels_last, double target, double scale, cudaStream_t stream) {
  const int64_t total = N * C * S;
  if (total == 0) return cudaSuccess;
  const int64_t G = norm_over == penalty::kSample ? 1 : (S > 0 ? S : 1);
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    using acc_t = typename Acc<scalar_t>::type;
    penalty_bwd_kernel<scalar_t><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
        static_cast<const scalar_t*>(go), static_cast<const scalar_t*>(g), static_cast<const acc_t*>(norm),
        static_cast<scalar_t*>(gx), N, C, S, norm_over, reduction, channels_last, static_cast<acc_t>(target),
        static_cast<acc_t>(scale), G);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ganops
