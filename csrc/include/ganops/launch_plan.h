// SPDX-License-Identifier: BSD-3-Clause
// Launch plans of the CUDA kernels (host-only, ATen-free): grid sizes within the CUDA limits and the work split of
// the reductions. Shared by the .cu launchers, their .cpp glue (workspace sizes) and ganops::_cuda_launch_plan
// (csrc/launch_plan.cpp), which exposes them to the CPU tests.
//
// CUDA limits: grid.x <= 2^31 - 1, grid.y and grid.z <= 65535, and a launch with 0 blocks fails ("invalid
// configuration argument"). Every kernel therefore walks its work with a grid-stride loop over "virtual blocks"
// folded into grid.x (or over samples on grid.y), so any size works with a capped grid, and every launcher returns
// before launching when there is nothing to do. A plan depends on the shape only (not on the GPU), so a given input
// gives bit-identical results on any device.
#pragma once
#include <cstdint>

namespace ganops {
namespace plan {

constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1
constexpr int64_t kMaxGridYZ = 65535;

inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// grid.x for `work` virtual blocks (at least 1: callers return early on empty work).
inline int64_t grid_x(int64_t work, int64_t cap = kMaxGridX) { return clamp64(work, 1, cap); }
// grid.y / grid.z for `work` rows walked by a grid-stride loop over blockIdx.y.
inline int64_t grid_yz(int64_t work) { return clamp64(work, 1, kMaxGridYZ); }

// ---------------------------------------------------------------------------------------------------------------
// SLE backward: gx = gy * s elementwise and gg[n, c] = grad_gate(sum_hw gy * x, s). A "row" is one (n, c) (NCHW)
// or one (n, channel tile) (NHWC); each row's pixels are split into `chunks` chunks of `chunk` pixels so that the
// grid has about kSleTargetBlocks blocks even when N * C is small (8 x 16 x 512^2 channels_last: 8 rows, 1024
// blocks instead of 8). Pass 1 writes gx and one partial sum per (n, c, chunk) into the workspace; pass 2 sums a
// row's partials in chunk order (deterministic, no atomics). With one chunk, pass 1 writes gg itself.
constexpr int64_t kSleTargetBlocks = 1024;  // ~8 blocks per SM on a 132-SM H200
constexpr int64_t kSleMinChunk = 8192;      // elements per block at the least (a chunk x its channel tile)
constexpr int kSleThreads = 256;

struct SleBwd {
  int64_t rows;       // N * C (NCHW) or N * tiles (NHWC)
  int64_t tiles;      // channel tiles per sample (NHWC); 1 for NCHW
  int64_t chunks;     // pixel chunks per row
  int64_t chunk;      // pixels per chunk (the last one may be shorter)
  int64_t items;      // virtual blocks = rows * chunks
  int64_t grid;       // grid.x of pass 1
  int tx, ty;         // block shape of pass 1 (NHWC: tx channels x ty pixel lanes)
  int64_t workspace;  // partial sums (accumulation type) pass 1 writes; 0 when chunks == 1
};

inline SleBwd sle_backward(int64_t N, int64_t C, int64_t HW, bool channels_last) {
  SleBwd p{};
  int64_t per_px = 1;  // elements of a row per pixel
  if (channels_last) {
    int ct = 1;
    while (ct < 32 && ct < C) ct <<= 1;  // channel tile: next power of two of C, at most 32 (one warp's width)
    p.tx = ct;
    p.ty = kSleThreads / ct;
    p.tiles = cdiv(C, ct);
    p.rows = N * p.tiles;
    per_px = ct;
  } else {
    p.tiles = 1;
    p.rows = N * C;
  }
  const int64_t max_chunks = HW * per_px / kSleMinChunk;  // so that a chunk holds >= kSleMinChunk elements
  p.chunks = clamp64(p.rows > 0 ? cdiv(kSleTargetBlocks, p.rows) : 1, 1, max_chunks > 1 ? max_chunks : 1);
  p.chunk = HW > 0 ? cdiv(HW, p.chunks) : 0;
  p.chunks = p.chunk > 0 ? cdiv(HW, p.chunk) : 1;
  if (!channels_last) {
    p.tx = p.chunk >= 2048 ? kSleThreads : (p.chunk >= 256 ? 128 : 64);
    p.ty = 1;
  }
  p.items = p.rows * p.chunks;
  p.grid = grid_x(p.items);
  p.workspace = p.chunks > 1 ? N * C * p.chunks : 0;
  return p;
}

// grid.x of SLE backward pass 2 (one thread per (n, c) at 256 threads per block).
inline int64_t sle_finalize_grid(int64_t NC) { return grid_x(cdiv(NC, kSleThreads)); }

// ---------------------------------------------------------------------------------------------------------------
// Gradient-penalty forward: pass 1 has grid (partials per sample, samples on grid.y walked by a grid-stride loop);
// pass 2 one block per sample (grid-stride over grid.x) writes the per-sample penalties; pass 3 (one block) reduces
// them in a fixed order. Workspace: N * partials (pass 1) + N (pass 2), in the accumulation type.
constexpr int kPenaltyThreads = 256;

inline int64_t penalty_partials(int64_t C, int64_t S, int norm_over) {
  if (norm_over == 0) return clamp64(cdiv(C * S, kPenaltyThreads * 4), 1, 1024);
  return clamp64(cdiv(S, kPenaltyThreads), 1, kMaxGridX);
}

inline int64_t penalty_workspace(int64_t N, int64_t C, int64_t S, int norm_over) {
  return N * (penalty_partials(C, S, norm_over) + 1);
}

// ---------------------------------------------------------------------------------------------------------------
// DiffAugment: the (blocks per sample) x N grid folded into grid.x.
inline int64_t diffaug_grid(int64_t per_sample, int64_t N) { return grid_x(per_sample * N); }

}  // namespace plan
}  // namespace ganops
