// SPDX-License-Identifier: BSD-3-Clause
// DiffAugment segment "[color] then [translation, cutout]" as one affine map per sample, shared by
// cpu/diffaug.cpp and cuda/diffaug_kernels.cu (acc_t is float, or double for float64).
//
// Color with brightness b, saturation s, contrast k (identity: b = 0, s = 1, k = 1). With mp the per-pixel mean
// over channels and mean the per-sample mean over C*H*W of the input x:
//   x1 = x + b;  x2 = (x1 - mp(x1)) s + mp(x1);  y = (x2 - mean(x2)) k + mean(x2)
//   mp(x1) = mp + b and mean(x2) = mean + b (the saturation term has zero channel mean), so
//   y = a x + bm mp + c0,   a = k s,  bm = k (1 - s),  c0 = (1 - k) mean + b.
// The linear part (a I + bm P_channels + (1 - k) P_all) is symmetric: it is its own adjoint.
//
// Spatial part: out[i, j] = valid(i, j) * in[i + sx, j + sy], zero outside the image, zero where cut out.
//   forward  (sx, sy) = ( tx,  ty); the cut test uses output coords, or source coords if cutout came first.
//   adjoint  (sx, sy) = (-tx, -ty); the roles of output and source coords swap.
// Modes: 0 forward y = S(C(x)) (with b), 1 linear forward (b = 0), 2 adjoint y = C_lin(S^T(x)).
// In mode 0/1 invalid pixels are 0 and `mean` is over x; in mode 2 invalid pixels hold c0 and `mean` is over
// the gathered S^T(x). Either way the mean comes from a per-sample sum: one light pass before the main one.
#pragma once
#include "ganops/common.h"

namespace ganops {
namespace diffaug {

enum Mode : int { kForward = 0, kLinear = 1, kAdjoint = 2 };

// Per-sample geometry. Cut rectangle rows [r0, r1) x cols [k0, k1) (empty when cut_h or cut_w is 0).
struct Geo {
  int64_t sx, sy, r0, r1, k0, k1;
  bool cut_at_src;
};

// sp: (tx, ty, ox, oy) of one sample.
GANOPS_HD Geo make_geo(const int64_t* sp, int64_t cut_h, int64_t cut_w, bool cutout_first, int mode) {
  Geo g;
  const bool adj = mode == kAdjoint;
  g.sx = adj ? -sp[0] : sp[0];
  g.sy = adj ? -sp[1] : sp[1];
  g.r0 = sp[2] - cut_h / 2;
  g.r1 = g.r0 + cut_h;
  g.k0 = sp[3] - cut_w / 2;
  g.k1 = g.k0 + cut_w;
  g.cut_at_src = adj ? !cutout_first : cutout_first;
  return g;
}

// Is output row i's source row inside the image, and is the row (partly) cut?
GANOPS_HD bool row_in(const Geo& g, int64_t i, int64_t H) { return i + g.sx >= 0 && i + g.sx < H; }

GANOPS_HD bool valid(const Geo& g, int64_t i, int64_t j, int64_t H, int64_t W) {
  const int64_t si = i + g.sx, sj = j + g.sy;
  if (si < 0 || si >= H || sj < 0 || sj >= W) return false;
  const int64_t ci = g.cut_at_src ? si : i, cj = g.cut_at_src ? sj : j;
  return !(ci >= g.r0 && ci < g.r1 && cj >= g.k0 && cj < g.k1);
}

// The valid output columns of output row i: [lo0, hi0) and [lo1, hi1) (either may be empty).
struct Spans {
  int64_t lo0, hi0, lo1, hi1;
};

GANOPS_HD Spans row_spans(const Geo& g, int64_t i, int64_t H, int64_t W) {
  Spans s{0, 0, 0, 0};
  if (!row_in(g, i, H)) return s;
  const int64_t lo = g.sy < 0 ? -g.sy : 0;
  const int64_t hi = g.sy > 0 ? W - g.sy : W;
  if (lo >= hi) return s;
  const int64_t ci = g.cut_at_src ? i + g.sx : i;
  if (!(ci >= g.r0 && ci < g.r1) || g.k0 >= g.k1) {
    s.lo0 = lo, s.hi0 = hi;
    return s;
  }
  const int64_t kl = g.cut_at_src ? g.k0 - g.sy : g.k0, kh = g.cut_at_src ? g.k1 - g.sy : g.k1;
  s.lo0 = lo;
  s.hi0 = kl < hi ? (kl > lo ? kl : lo) : hi;
  s.lo1 = kh > lo ? (kh < hi ? kh : hi) : lo;
  s.hi1 = hi;
  if (s.lo1 < s.hi0) s.lo1 = s.hi0;  // empty cut span: keep the two spans disjoint
  return s;
}

template <typename acc_t>
struct Color {
  acc_t a, bm, k1, shift;  // k1 != 0: the sample needs the per-sample mean
};

// cp: (b, s, k) of one sample.
template <typename acc_t>
GANOPS_HD Color<acc_t> make_color(const acc_t* cp, int mode) {
  Color<acc_t> c;
  const acc_t b = cp[0], s = cp[1], k = cp[2];
  c.a = k * s;
  c.bm = k * (acc_t(1) - s);
  c.k1 = acc_t(1) - k;
  c.shift = mode == kForward ? b : acc_t(0);
  return c;
}

// c0 from the per-sample sum of the color input over C*H*W elements.
template <typename acc_t>
GANOPS_HD acc_t offset(const Color<acc_t>& c, double sum, int64_t chw) {
  return c.k1 * static_cast<acc_t>(sum / static_cast<double>(chw)) + c.shift;
}

template <typename acc_t>
GANOPS_HD acc_t apply(const Color<acc_t>& c, acc_t v, acc_t mp, acc_t c0) {
  return c.a * v + c.bm * mp + c0;
}

// The value of an invalid output pixel.
template <typename acc_t>
GANOPS_HD acc_t fill(acc_t c0, int mode) {
  return mode == kAdjoint ? c0 : acc_t(0);
}

}  // namespace diffaug
}  // namespace ganops
