// SPDX-License-Identifier: BSD-3-Clause
// Spectral-norm CUDA kernels (ATen-free: indexing and launch only; math in ganops/spectral_norm.h).
// Every kernel serves all layers of a group at once through a device table of sn::Layer and sn::Tile records,
// so a forward costs 4 * n_power_iterations + 2 launches (+ the table copy) and a backward 2, for any layer count.
#include "ganops/cuda_common.cuh"
#include "ganops/spectral_norm.h"

namespace ganops {
namespace cuda {
namespace {

using sn::Layer;
using sn::Tile;

// Block-wide sum returned to every thread (blockDim.x a multiple of 32).
template <typename acc_t>
__device__ __forceinline__ acc_t block_allsum(acc_t v) {
  __shared__ acc_t total;
  __syncthreads();  // earlier users of block_sum's shared memory are done
  v = block_sum<acc_t>(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

// t = W^T u for one tile of kColTile columns: one thread per column j = p*R + r, sweeping the H rows.
template <typename T>
__global__ void sn_colsum_kernel(const Layer* __restrict__ layers, const Tile* __restrict__ tiles,
                                 typename Acc<T>::type* __restrict__ scratch, bool from_input) {
  using acc_t = typename Acc<T>::type;
  const Tile tile = tiles[blockIdx.x];
  const Layer L = layers[tile.layer];
  const int64_t j = tile.start + threadIdx.x;
  if (j >= L.P * L.R) return;
  const int64_t p = j / L.R, r = j % L.R;
  const T* w = static_cast<const T*>(L.w);
  const T* u = static_cast<const T*>(from_input ? L.u_in : L.u_out);
  acc_t acc = 0;
  for (int64_t i = 0; i < L.H; ++i) acc += load<acc_t>(w + sn::offset(p, i, r, L.H, L.R)) * load<acc_t>(u + i);
  scratch[L.t_off + j] = acc;
}

// v = t / max(||t||, eps): one block per layer.
template <typename T>
__global__ void sn_normv_kernel(const Layer* __restrict__ layers, const typename Acc<T>::type* __restrict__ scratch,
                                typename Acc<T>::type eps) {
  using acc_t = typename Acc<T>::type;
  const Layer L = layers[blockIdx.x];
  const int64_t C = L.P * L.R;
  const acc_t* t = scratch + L.t_off;
  acc_t ss = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) ss += t[j] * t[j];
  const acc_t d = sn::denom<acc_t>(block_allsum<acc_t>(ss), eps);
  T* v = static_cast<T*>(L.v_out);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) v[j] = cast<T>(t[j] / d);
}

// s = W v for one tile of kRowTile rows: one warp per row.
template <typename T>
__global__ void sn_rowdot_kernel(const Layer* __restrict__ layers, const Tile* __restrict__ tiles,
                                 typename Acc<T>::type* __restrict__ scratch, bool from_input) {
  using acc_t = typename Acc<T>::type;
  const Tile tile = tiles[blockIdx.x];
  const Layer L = layers[tile.layer];
  const int64_t i = tile.start + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (i >= L.H) return;
  const T* w = static_cast<const T*>(L.w);
  const T* v = static_cast<const T*>(from_input ? L.v_in : L.v_out);
  acc_t acc = 0;
  for (int64_t p = 0; p < L.P; ++p) {
    const T* row = w + sn::offset(p, i, 0, L.H, L.R);
    const T* vp = v + p * L.R;
    for (int64_t r = lane; r < L.R; r += 32) acc += load<acc_t>(row + r) * load<acc_t>(vp + r);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
  if (lane == 0) scratch[L.s_off + i] = acc;
}

// u = s / max(||s||, eps) (when update) and sigma = u . s: one block per layer. Without update (evaluation),
// u and v are copied through and sigma uses the given u.
template <typename T>
__global__ void sn_normu_kernel(const Layer* __restrict__ layers, const typename Acc<T>::type* __restrict__ scratch,
                                T* __restrict__ sigmas, typename Acc<T>::type eps, bool update) {
  using acc_t = typename Acc<T>::type;
  const Layer L = layers[blockIdx.x];
  const acc_t* s = scratch + L.s_off;
  T* u_out = static_cast<T*>(L.u_out);
  const T* u_in = static_cast<const T*>(L.u_in);
  acc_t d = 1;
  if (update) {
    acc_t ss = 0;
    for (int64_t i = threadIdx.x; i < L.H; i += blockDim.x) ss += s[i] * s[i];
    d = sn::denom<acc_t>(block_allsum<acc_t>(ss), eps);
  } else {
    const T* v_in = static_cast<const T*>(L.v_in);
    T* v_out = static_cast<T*>(L.v_out);
    for (int64_t j = threadIdx.x; j < L.P * L.R; j += blockDim.x) v_out[j] = v_in[j];
  }
  acc_t dot = 0;
  for (int64_t i = threadIdx.x; i < L.H; i += blockDim.x) {
    const T ui = update ? cast<T>(s[i] / d) : u_in[i];
    u_out[i] = ui;
    dot += load<acc_t>(&ui) * s[i];
  }
  dot = block_allsum<acc_t>(dot);
  if (threadIdx.x == 0) sigmas[blockIdx.x] = cast<T>(dot);
}

// out = W / sigma over one tile of elements.
template <typename T>
__global__ void sn_scale_kernel(const Layer* __restrict__ layers, const Tile* __restrict__ tiles,
                                const T* __restrict__ sigmas) {
  using acc_t = typename Acc<T>::type;
  const Tile tile = tiles[blockIdx.x];
  const Layer L = layers[tile.layer];
  const int64_t N = L.P * L.H * L.R;
  const int64_t end = tile.start + sn::kElemTile < N ? tile.start + sn::kElemTile : N;
  const acc_t sg = load<acc_t>(sigmas + tile.layer);
  const T* w = static_cast<const T*>(L.w);
  T* out = static_cast<T*>(L.out);
  for (int64_t k = tile.start + threadIdx.x; k < end; k += blockDim.x) out[k] = cast<T>(load<acc_t>(w + k) / sg);
}

// Partial <g, W> of one element tile (deterministic: no atomics; the next kernel sums a layer's partials).
template <typename T>
__global__ void sn_gdot_kernel(const Layer* __restrict__ layers, const Tile* __restrict__ tiles,
                               typename Acc<T>::type* __restrict__ partial) {
  using acc_t = typename Acc<T>::type;
  const Tile tile = tiles[blockIdx.x];
  const Layer L = layers[tile.layer];
  const int64_t N = L.P * L.H * L.R;
  const int64_t end = tile.start + sn::kElemTile < N ? tile.start + sn::kElemTile : N;
  const T* w = static_cast<const T*>(L.w);
  const T* g = static_cast<const T*>(L.g);
  acc_t acc = 0;
  for (int64_t k = tile.start + threadIdx.x; k < end; k += blockDim.x) acc += load<acc_t>(g + k) * load<acc_t>(w + k);
  acc = block_sum<acc_t>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// gW = g / sigma + coef * u_i * v_j over one element tile; coef from the layer's summed partials.
template <typename T>
__global__ void sn_gradw_kernel(const Layer* __restrict__ layers, const Tile* __restrict__ tiles,
                                const typename Acc<T>::type* __restrict__ partial, const T* __restrict__ sigmas,
                                const T* __restrict__ g_sigmas) {
  using acc_t = typename Acc<T>::type;
  const Tile tile = tiles[blockIdx.x];
  const Layer L = layers[tile.layer];
  acc_t acc = 0;
  for (int64_t k = threadIdx.x; k < L.ntiles; k += blockDim.x) acc += partial[L.tile0 + k];
  const acc_t dot = block_allsum<acc_t>(acc);
  const acc_t sg = load<acc_t>(sigmas + tile.layer);
  const acc_t coef = sn::grad_coef<acc_t>(load<acc_t>(g_sigmas + tile.layer), dot, sg);
  const int64_t N = L.P * L.H * L.R;
  const int64_t end = tile.start + sn::kElemTile < N ? tile.start + sn::kElemTile : N;
  const T* g = static_cast<const T*>(L.g);
  const T* u = static_cast<const T*>(L.u_in);
  const T* v = static_cast<const T*>(L.v_in);
  T* gw = static_cast<T*>(L.out);
  for (int64_t k = tile.start + threadIdx.x; k < end; k += blockDim.x) {
    const int64_t r = k % L.R, pi = k / L.R;
    const int64_t i = pi % L.H, p = pi / L.H;
    gw[k] = cast<T>(sn::grad_weight<acc_t>(load<acc_t>(g + k), sg, coef, load<acc_t>(u + i),
                                           load<acc_t>(v + p * L.R + r)));
  }
}

}  // namespace

// meta: device copy of [Layer x L][col Tile x n_col][row Tile x n_row][elem Tile x n_elem].
cudaError_t spectral_norm_forward_launch(int dtype, const void* meta, int64_t L, int64_t n_col, int64_t n_row,
                                         int64_t n_elem, void* scratch, void* sigmas, int64_t n_iter, double eps,
                                         cudaStream_t stream) {
  const Layer* layers = static_cast<const Layer*>(meta);
  const Tile* col = reinterpret_cast<const Tile*>(layers + L);
  const Tile* row = col + n_col;
  const Tile* elem = row + n_row;
  // A launch with 0 blocks is an error: no layers, or only empty ones (no column/row tiles), launch nothing.
  if (L == 0) return cudaSuccess;
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    using acc_t = typename Acc<scalar_t>::type;
    acc_t* s = static_cast<acc_t*>(scratch);
    scalar_t* sg = static_cast<scalar_t*>(sigmas);
    for (int64_t it = 0; it < n_iter; ++it) {
      if (n_col > 0)
        sn_colsum_kernel<scalar_t><<<static_cast<unsigned int>(n_col), sn::kColTile, 0, stream>>>(layers, col, s,
                                                                                                 it == 0);
      sn_normv_kernel<scalar_t><<<static_cast<unsigned int>(L), 256, 0, stream>>>(layers, s, static_cast<acc_t>(eps));
      if (n_row > 0)
        sn_rowdot_kernel<scalar_t><<<static_cast<unsigned int>(n_row), sn::kRowTile * 32, 0, stream>>>(layers, row, s,
                                                                                                      false);
      sn_normu_kernel<scalar_t><<<static_cast<unsigned int>(L), 256, 0, stream>>>(layers, s, sg, static_cast<acc_t>(eps), true);
    }
    if (n_iter == 0) {
      if (n_row > 0)
        sn_rowdot_kernel<scalar_t><<<static_cast<unsigned int>(n_row), sn::kRowTile * 32, 0, stream>>>(layers, row, s,
                                                                                                      true);
      sn_normu_kernel<scalar_t><<<static_cast<unsigned int>(L), 256, 0, stream>>>(layers, s, sg, static_cast<acc_t>(eps), false);
    }
    if (n_elem > 0) sn_scale_kernel<scalar_t><<<static_cast<unsigned int>(n_elem), 256, 0, stream>>>(layers, elem, sg);
  });
  return cudaGetLastError();
}

// meta as above with n_col = n_row = 0; partial: n_elem accumulators.
cudaError_t spectral_norm_backward_launch(int dtype, const void* meta, int64_t L, int64_t n_elem, void* partial,
                                          const void* sigmas, const void* g_sigmas, cudaStream_t stream) {
  const Layer* layers = static_cast<const Layer*>(meta);
  const Tile* elem = reinterpret_cast<const Tile*>(layers + L);
  if (n_elem == 0) return cudaSuccess;
  GANOPS_CUDA_DISPATCH(dtype, [&] {
    using acc_t = typename Acc<scalar_t>::type;
    acc_t* part = static_cast<acc_t*>(partial);
    sn_gdot_kernel<scalar_t><<<static_cast<unsigned int>(n_elem), 256, 0, stream>>>(layers, elem, part);
    sn_gradw_kernel<scalar_t><<<static_cast<unsigned int>(n_elem), 256, 0, stream>>>(
        layers, elem, part, static_cast<const scalar_t*>(sigmas), static_cast<const scalar_t*>(g_sigmas));
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ganops
