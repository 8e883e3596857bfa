// SPDX-License-Identifier: BSD-3-Clause
// DiffAugment: schema (TORCH_LIBRARY_FRAGMENT), input checks and the C++ CPU kernels; math in ganops/diffaug.h.
//
// diffaug_apply(x, color (N, 3) [b, s, k], spatial (N, 4) int64 [tx, ty, ox, oy], cut_h, cut_w, cutout_first,
//               mode) -> y, in x's memory format (contiguous or channels_last).
// Per sample: pass 1 (only when its contrast k != 1) sums the color input row by row; pass 2 writes each output
// row once from its source row (re-read from cache for the channel mean).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <vector>

#include "ganops/cpu_utils.h"
#include "ganops/diffaug.h"
#include "ganops/diffaug_checks.h"

namespace ganops {
namespace {

using diffaug::Spans;

template <typename scalar_t, typename acc_t, bool CL>
struct Kernel {
  const scalar_t* x;
  scalar_t* y;
  const acc_t* color;
  const int64_t* sp;
  int64_t N, C, H, W, cut_h, cut_w;
  bool cutout_first;
  int mode;

  int64_t sC() const { return CL ? 1 : H * W; }
  int64_t sH() const { return CL ? W * C : W; }
  int64_t sW() const { return CL ? C : 1; }

  // Sum of len contiguous elements with 16 independent accumulators (vectorises without reassociation flags).
  static acc_t sum_range(const scalar_t* __restrict__ p, int64_t len) {
    acc_t part[16] = {};
    int64_t j = 0;
    for (; j + 16 <= len; j += 16)
      for (int l = 0; l < 16; ++l) part[l] += static_cast<acc_t>(p[j + l]);
    acc_t acc = 0;
    for (; j < len; ++j) acc += static_cast<acc_t>(p[j]);
    for (int l = 0; l < 16; ++l) acc += part[l];
    return acc;
  }

  // Sum of the color input over output row i of sample n: x's row i (modes 0/1), or the gathered row (mode 2).
  // The valid columns of a row form at most two spans, contiguous in the source row (NHWC: C values per column).
  double row_sum(int64_t n, int64_t i) const {
    const diffaug::Geo g = diffaug::make_geo(sp + 4 * n, cut_h, cut_w, cutout_first, mode);
    Spans s{0, W, 0, 0};
    int64_t si = i, sy = 0;
    if (mode == diffaug::kAdjoint) {
      s = diffaug::row_spans(g, i, H, W);
      si = i + g.sx, sy = g.sy;
    }
    const scalar_t* base = x + n * C * H * W + si * sH();
    const int64_t len = CL ? C : 1;
    double acc = 0;
    for (int64_t c = 0; c < (CL ? 1 : C); ++c) {
      const scalar_t* r = base + c * sC();
      if (s.hi0 > s.lo0) acc += sum_range(r + (s.lo0 + sy) * len, (s.hi0 - s.lo0) * len);
      if (s.hi1 > s.lo1) acc += sum_range(r + (s.lo1 + sy) * len, (s.hi1 - s.lo1) * len);
    }
    return acc;
  }

  void row(int64_t n, int64_t i, double sum, std::vector<acc_t>& mp) const {
    const diffaug::Geo g = diffaug::make_geo(sp + 4 * n, cut_h, cut_w, cutout_first, mode);
    const diffaug::Color<acc_t> col = diffaug::make_color<acc_t>(color + 3 * n, mode);
    const acc_t c0 = diffaug::offset<acc_t>(col, sum, C * H * W);
    const scalar_t fz = static_cast<scalar_t>(diffaug::fill<acc_t>(c0, mode));
    const Spans s = diffaug::row_spans(g, i, H, W);
    const int64_t sy = g.sy;
    const scalar_t* src = x + n * C * H * W + (i + g.sx) * sH() + sy * sW();  // src[j * sW()] = source of j
    scalar_t* dst = y + n * C * H * W + i * sH();
    const acc_t a = col.a, bm = col.bm;
    const bool sat = bm != acc_t(0);
    const int64_t spans[2][2] = {{s.lo0, s.hi0}, {s.lo1, s.hi1}};
    const int64_t gaps[3][2] = {{0, s.lo0}, {s.hi0, s.lo1}, {s.hi1, W}};
    if (!CL) {
      if (sat) {
        const acc_t inv = acc_t(1) / static_cast<acc_t>(C);
        for (auto& sp2 : spans) {
          for (int64_t j = sp2[0]; j < sp2[1]; ++j) mp[j] = 0;
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* __restrict__ r = src + c * sC();
            for (int64_t j = sp2[0]; j < sp2[1]; ++j) mp[j] += static_cast<acc_t>(r[j]);
          }
          for (int64_t j = sp2[0]; j < sp2[1]; ++j) mp[j] *= inv;
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* __restrict__ r = src + c * sC();
        scalar_t* __restrict__ o = dst + c * sC();
        for (auto& gp : gaps)
          for (int64_t j = gp[0]; j < gp[1]; ++j) o[j] = fz;
        const acc_t* __restrict__ m = mp.data();
        for (auto& sp2 : spans) {
          if (sat) {
            for (int64_t j = sp2[0]; j < sp2[1]; ++j)
              o[j] = static_cast<scalar_t>(diffaug::apply<acc_t>(col, static_cast<acc_t>(r[j]), m[j], c0));
          } else {
            for (int64_t j = sp2[0]; j < sp2[1]; ++j) o[j] = static_cast<scalar_t>(a * static_cast<acc_t>(r[j]) + c0);
          }
        }
      }
    } else {
      for (auto& gp : gaps)
        for (int64_t j = gp[0]; j < gp[1]; ++j)
          for (int64_t c = 0; c < C; ++c) dst[j * C + c] = fz;
      const acc_t inv = acc_t(1) / static_cast<acc_t>(C);
      for (auto& sp2 : spans) {
        for (int64_t j = sp2[0]; j < sp2[1]; ++j) {
          const scalar_t* p = src + j * C;
          scalar_t* o = dst + j * C;
          acc_t m = 0;
          if (sat) {
            for (int64_t c = 0; c < C; ++c) m += static_cast<acc_t>(p[c]);
            m *= inv;
          }
          for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(a * static_cast<acc_t>(p[c]) + bm * m + c0);
        }
      }
    }
  }

  // Sample by sample: the sum pass and the main pass of one sample run back to back, so the main pass re-reads
  // the sample from cache when it fits (3 x 256 x 256 fp32 = 768 KiB) instead of from memory.
  void run() const {
    if (N * C * H * W == 0) return;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C * W, 1));
    std::vector<double> rows(H);
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0;
      if (diffaug::make_color<acc_t>(color + 3 * n, mode).k1 != acc_t(0)) {
        at::parallel_for(0, H, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) rows[i] = row_sum(n, i);
        });
        for (int64_t i = 0; i < H; ++i) sum += rows[i];  // fixed order: deterministic
      }
      at::parallel_for(0, H, grain, [&](int64_t b, int64_t e) {
        std::vector<acc_t> mp(CL ? 0 : W);
        for (int64_t i = b; i < e; ++i) row(n, i, sum, mp);
      });
    }
  }
};

at::Tensor diffaug_apply_cpu(const at::Tensor& x_in, const at::Tensor& color_in, const at::Tensor& spatial_in,
                             int64_t cut_h, int64_t cut_w, bool cutout_first, int64_t mode) {
  check_diffaug_inputs(x_in, color_in, spatial_in, cut_h, cut_w, mode, "diffaug_apply");
  TORCH_CHECK(x_in.device().is_cpu(), "diffaug_apply (cpu): x must be a CPU tensor");
  at::Tensor out = dense_output_like(x_in);
  const bool cl = is_channels_last(out);
  const at::Tensor x = as_layout(x_in, cl);
  const at::Tensor spatial = spatial_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "diffaug_apply_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const at::Tensor color = color_in.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const acc_t* cp = color.const_data_ptr<acc_t>();
    const int64_t* spp = spatial.const_data_ptr<int64_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    const int md = static_cast<int>(mode);
    if (cl) {
      Kernel<scalar_t, acc_t, true>{xp, yp, cp, spp, N, C, H, W, cut_h, cut_w, cutout_first, md}.run();
    } else {
      Kernel<scalar_t, acc_t, false>{xp, yp, cp, spp, N, C, H, W, cut_h, cut_w, cutout_first, md}.run();
    }
  });
  return out;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_FRAGMENT(ganops, m) {
  m.def("diffaug_apply(Tensor x, Tensor color, Tensor spatial, int cut_h, int cut_w, bool cutout_first, int mode)"
        " -> Tensor");
}

TORCH_LIBRARY_IMPL(ganops, CPU, m) { m.impl("diffaug_apply", &ganops::diffaug_apply_cpu); }
