// SPDX-License-Identifier: BSD-3-Clause
// Spectral norm (torch's legacy semantics): math shared by cpu/spectral_norm.cpp and cuda/spectral_norm_kernels.cu.
//
// A weight W is read as a contiguous (P, H, R) block: H = size(dim), P = prod(size[:dim]), R = prod(size[dim+1:]).
// Its matrix view (h, w) = (H, P*R) has row i and column j = p*R + r at offset (p*H + i)*R + r.
//
//   per iteration  v = normalize(W^T u), u = normalize(W v),   normalize(x) = x / max(||x||, eps)
//   sigma          = u . (W v)          (W v of the last iteration; computed afresh when there is none)
//   forward        out = W / sigma
//   backward       gW  = g / sigma + (g_sigma - <g, W> / sigma^2) * u_i * v_j
#pragma once
#include "ganops/common.h"

namespace ganops {
namespace sn {

GANOPS_HD int64_t offset(int64_t p, int64_t i, int64_t r, int64_t H, int64_t R) { return (p * H + i) * R + r; }

// The denominator of normalize(): max(||x||, eps) from the sum of squares.
template <typename acc_t>
GANOPS_HD acc_t denom(acc_t sumsq, acc_t eps) {
  const acc_t n = std::sqrt(sumsq);
  return n > eps ? n : eps;
}

// Coefficient of the rank-one term of the weight gradient.
template <typename acc_t>
GANOPS_HD acc_t grad_coef(acc_t g_sigma, acc_t dot_gw, acc_t sigma) {
  return g_sigma - dot_gw / (sigma * sigma);
}

template <typename acc_t>
GANOPS_HD acc_t grad_weight(acc_t g, acc_t sigma, acc_t coef, acc_t ui, acc_t vj) {
  return g / sigma + coef * ui * vj;
}

// One layer of a grouped call, as passed to the CUDA kernels (pointers and sizes; all int64 for one table).
struct Layer {
  const void* w;      // weight (P, H, R) contiguous
  void* out;          // forward: W / sigma;   backward: grad W
  const void* u_in;   // (H,)
  const void* v_in;   // (P*R,)
  void* u_out;        // forward: new u (H,)
  void* v_out;        // forward: new v (P*R,)
  const void* g;      // backward: grad of out
  int64_t P, H, R;
  int64_t t_off;      // offset of this layer's (P*R) column scratch
  int64_t s_off;      // offset of this layer's (H) row scratch
  int64_t tile0;      // first element tile of this layer
  int64_t ntiles;     // element tiles of this layer
};

// Work tiles: (layer, first item); tiles never straddle two layers.
struct Tile {
  int64_t layer;
  int64_t start;
};

constexpr int kElemTile = 8192;  // elements per tile of the element-wise / reduction kernels
constexpr int kColTile = 256;    // columns per tile of the W^T u kernel (one thread per column)
constexpr int kRowTile = 8;      // rows per tile of the W v kernel (one warp per row)

}  // namespace sn
}  // namespace ganops
