// SPDX-License-Identifier: BSD-3-Clause
// Gradient penalty: schemas (TORCH_LIBRARY_FRAGMENT) and the C++ CPU kernels; math in ganops/penalty.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ganops/cpu_utils.h"
#include "ganops/penalty.h"
#include "ganops/penalty_checks.h"
#include "ganops/penalty_rows.h"

namespace ganops {
namespace {

// Elements per thread below which a loop stays on one thread: the penalty's tensors are small (ConSinGAN: 3 x 188 x
// 250), and an OpenMP fork/join costs more than the work there, especially on a loaded machine.
constexpr int64_t kGrain = 262144;

using penalty::group_penalty;
using penalty::grad_factor;

// float32 rows go through the vectorised loops in penalty_rows.cpp; other dtypes use the generic loops below.
template <typename T, typename A>
bool fast_lerp(const T*, const T*, A, T*, int64_t) { return false; }
inline bool fast_lerp(const float* r, const float* f, float a, float* o, int64_t n) {
  penalty::lerp_f32(r, f, a, o, n);
  return true;
}
template <typename T, typename A>
bool fast_sumsq(const T*, int64_t, A&) { return false; }
inline bool fast_sumsq(const float* x, int64_t n, float& out) {
  out = penalty::sumsq_f32(x, n);
  return true;
}
template <typename T, typename A>
bool fast_accum_sq(const T*, A*, int64_t) { return false; }
inline bool fast_accum_sq(const float* x, float* ss, int64_t n) {
  penalty::accum_sq_f32(x, ss, n);
  return true;
}
template <typename A>
bool fast_norms(const A*, A*, A, int64_t, double&) { return false; }
inline bool fast_norms(const float* ss, float* norm, float t, int64_t n, double& acc) {
  acc = static_cast<double>(penalty::norms_and_penalty_f32(ss, norm, t, n));
  return true;
}
template <typename T, typename A>
bool fast_scale(const T*, A, T*, int64_t) { return false; }
inline bool fast_scale(const float* x, float c, float* y, int64_t n) {
  penalty::scale_f32(x, c, y, n);
  return true;
}
template <typename T, typename A>
bool fast_mul(const T*, const A*, T*, int64_t) { return false; }
inline bool fast_mul(const float* x, const float* c, float* y, int64_t n) {
  penalty::mul_f32(x, c, y, n);
  return true;
}

// Sum of squares of n elements with 8 independent accumulators (vectorisable without -ffast-math).
template <typename T, typename acc_t>
acc_t sumsq(const T* p, int64_t n) {
  acc_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      const acc_t v = static_cast<acc_t>(p[i + k]);
      a[k] += v * v;
    }
  for (; i < n; ++i) {
    const acc_t v = static_cast<acc_t>(p[i]);
    a[0] += v * v;
  }
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

at::Tensor gp_interpolate_cpu(const at::Tensor& real_in, const at::Tensor& fake_in, const at::Tensor& alpha_in) {
  check_interpolate_inputs(real_in, fake_in, alpha_in);
  TORCH_CHECK(real_in.device().is_cpu(), "gp_interpolate (cpu): real must be a CPU tensor");
  at::Tensor out = dense_output_like(real_in);
  const bool cl = is_channels_last(out);
  const at::Tensor real = as_layout(real_in, cl), fake = as_layout(fake_in, cl), alpha = alpha_in.contiguous();
  const int64_t N = real.size(0), total = real.numel(), K = N ? total / N : 0, a_step = alpha.numel() == 1 ? 0 : 1;
  if (total == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "gp_interpolate_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* rp = real.const_data_ptr<scalar_t>();
    const scalar_t* fp = fake.const_data_ptr<scalar_t>();
    const scalar_t* ap = alpha.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, total, kGrain, [&](int64_t b, int64_t e) {
      while (b < e) {  // walk sample by sample: alpha is constant within each
        const int64_t n = b / K, stop = std::min(e, (n + 1) * K);
        const acc_t a = static_cast<acc_t>(ap[n * a_step]);
        if (!fast_lerp(rp + b, fp + b, a, op + b, stop - b))
          for (int64_t i = b; i < stop; ++i)
            op[i] = static_cast<scalar_t>(penalty::lerp<acc_t>(static_cast<acc_t>(rp[i]), static_cast<acc_t>(fp[i]), a));
        b = stop;
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gp_norm_penalty_cpu(const at::Tensor& grad_in, double target, double scale,
                                                       int64_t norm_over, int64_t reduction) {
  check_penalty_inputs(grad_in, norm_over, reduction, "gp_norm_penalty");
  TORCH_CHECK(grad_in.device().is_cpu(), "gp_norm_penalty (cpu): grad must be a CPU tensor");
  const bool cl = use_channels_last(grad_in);
  const at::Tensor g = as_layout(grad_in, cl);
  const int64_t N = g.size(0), C = g.size(1), S = group_size(g), K = C * S;
  at::Tensor out = reduction == 0 ? at::empty({N}, g.options()) : at::empty({}, g.options());
  at::Tensor norm = at::empty(norm_shape(g, norm_over), g.options().dtype(norm_dtype(g.scalar_type())));
  // Mean over the S pixel groups: S == 0 (an empty image) gives 0 / 0 = NaN, as torch's mean of nothing.
  const int64_t G = norm_over == 0 ? 1 : S;
  // Partial sums per (sample, block) in double: sums of squares (norm_over 0) or of (norm - t)^2 (norm_over 1).
  const int64_t BLK = norm_over == 0 ? 16384 : 1024;
  const int64_t len = norm_over == 0 ? K : S;
  const int64_t nb = std::max<int64_t>(1, (len + BLK - 1) / BLK);
  std::vector<double> part(N * nb, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "gp_norm_penalty_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    acc_t* np = norm.mutable_data_ptr<acc_t>();
    const acc_t t = static_cast<acc_t>(target);
    const int64_t grain = std::max<int64_t>(1, kGrain / (norm_over == 0 ? BLK : BLK * std::max<int64_t>(C, 1)));
    at::parallel_for(0, N * nb, grain, [&](int64_t b, int64_t e) {
      std::vector<acc_t> ss(norm_over == 0 ? 0 : BLK);
      for (int64_t j = b; j < e; ++j) {
        const int64_t n = j / nb, p0 = (j % nb) * BLK, p1 = std::min(len, p0 + BLK);
        const scalar_t* gs = gp + n * K;
        if (norm_over == 0) {
          acc_t s = 0;
          if (!fast_sumsq(gs + p0, p1 - p0, s)) s = sumsq<scalar_t, acc_t>(gs + p0, p1 - p0);
          part[j] = static_cast<double>(s);
          continue;
        }
        std::fill(ss.begin(), ss.end(), acc_t(0));
        if (!cl) {  // (N, C, S): rows of S pixels per channel
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* row = gs + c * S;
            if (fast_accum_sq(row + p0, ss.data(), p1 - p0)) continue;
            for (int64_t p = p0; p < p1; ++p) {
              const acc_t v = static_cast<acc_t>(row[p]);
              ss[p - p0] += v * v;
            }
          }
        } else {  // (N, S, C): C contiguous channels per pixel
          for (int64_t p = p0; p < p1; ++p) ss[p - p0] = sumsq<scalar_t, acc_t>(gs + p * C, C);
        }
        double acc = 0;
        if (fast_norms(ss.data(), np + n * S + p0, t, p1 - p0, acc)) {
          part[j] = acc;
          continue;
        }
        for (int64_t p = p0; p < p1; ++p) {
          const acc_t s2 = ss[p - p0];
          np[n * S + p] = std::sqrt(s2);
          acc += static_cast<double>(group_penalty<acc_t>(s2, t));
        }
        part[j] = acc;
      }
    });
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < nb; ++k) s += part[n * nb + k];
      if (norm_over == 0) {
        np[n] = static_cast<acc_t>(std::sqrt(s));
        s = group_penalty<double>(s, target);
      }
      const double v = scale * s / static_cast<double>(G);
      if (reduction == 0) op[n] = static_cast<scalar_t>(v);
      total += v;
    }
    if (reduction != 0) op[0] = static_cast<scalar_t>(reduction == 1 ? total / static_cast<double>(N) : total);
  });
  return {out, norm};
}

at::Tensor gp_norm_penalty_backward_cpu(const at::Tensor& go_in, const at::Tensor& grad_in, const at::Tensor& norm_in,
                                        double target, double scale, int64_t norm_over, int64_t reduction) {
  check_penalty_backward(go_in, grad_in, norm_in, norm_over, reduction);
  TORCH_CHECK(grad_in.device().is_cpu(), "gp_norm_penalty_backward (cpu): grad must be a CPU tensor");
  at::Tensor gx = dense_output_like(grad_in);
  const bool cl = is_channels_last(gx);
  const at::Tensor g = as_layout(grad_in, cl), norm = norm_in.contiguous(), go = go_in.contiguous();
  const int64_t N = g.size(0), C = g.size(1), S = group_size(g), K = C * S;
  const int64_t G = norm_over == 0 ? 1 : std::max<int64_t>(S, 1);
  if (g.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "gp_norm_penalty_backward_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* gop = go.const_data_ptr<scalar_t>();
    const acc_t* np = norm.const_data_ptr<acc_t>();
    scalar_t* xp = gx.mutable_data_ptr<scalar_t>();
    const acc_t t = static_cast<acc_t>(target);
    std::vector<acc_t> k(N);
    for (int64_t n = 0; n < N; ++n) {
      const acc_t go_n = penalty::upstream<acc_t>(static_cast<acc_t>(gop[reduction == 0 ? n : 0]), N, reduction);
      k[n] = penalty::sample_coef<acc_t>(go_n, static_cast<acc_t>(scale), G);
    }
    if (norm_over == 0) {
      at::parallel_for(0, N * K, kGrain, [&](int64_t b, int64_t e) {
        while (b < e) {
          const int64_t n = b / K, stop = std::min(e, (n + 1) * K);
          const acc_t c = k[n] * grad_factor<acc_t>(np[n], t);
          if (!fast_scale(gp + b, c, xp + b, stop - b))
            for (int64_t i = b; i < stop; ++i) xp[i] = static_cast<scalar_t>(c * static_cast<acc_t>(gp[i]));
          b = stop;
        }
      });
    } else if (!cl) {
      const int64_t BLK = 1024, nb = (S + BLK - 1) / BLK;
      at::parallel_for(0, N * nb, std::max<int64_t>(1, kGrain / std::max<int64_t>(BLK * C, 1)), [&](int64_t b, int64_t e) {
        std::vector<acc_t> coef(BLK);
        for (int64_t j = b; j < e; ++j) {
          const int64_t n = j / nb, p0 = (j % nb) * BLK, p1 = std::min(S, p0 + BLK);
          for (int64_t p = p0; p < p1; ++p) coef[p - p0] = k[n] * grad_factor<acc_t>(np[n * S + p], t);
          for (int64_t c = 0; c < C; ++c) {
            const int64_t off = n * K + c * S;
            if (fast_mul(gp + off + p0, coef.data(), xp + off + p0, p1 - p0)) continue;
            for (int64_t p = p0; p < p1; ++p)
              xp[off + p] = static_cast<scalar_t>(coef[p - p0] * static_cast<acc_t>(gp[off + p]));
          }
        }
      });
    } else {
      at::parallel_for(0, N * S, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
        for (int64_t q = b; q < e; ++q) {
          const acc_t c = k[q / S] * grad_factor<acc_t>(np[q], t);
          for (int64_t i = q * C; i < (q + 1) * C; ++i) xp[i] = static_cast<scalar_t>(c * static_cast<acc_t>(gp[i]));
        }
      });
    }
  });
  return gx;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_FRAGMENT(ganops, m) {
  m.def("gp_interpolate(Tensor real, Tensor fake, Tensor alpha) -> Tensor");
  m.def("gp_norm_penalty(Tensor grad, float target, float scale, int norm_over, int reduction) -> (Tensor, Tensor)");
  m.def(
      "gp_norm_penalty_backward(Tensor grad_out, Tensor grad, Tensor norm, float target, float scale, int norm_over, "
      "int reduction) -> Tensor");
}

TORCH_LIBRARY_IMPL(ganops, CPU, m) {
  m.impl("gp_interpolate", &ganops::gp_interpolate_cpu);
  m.impl("gp_norm_penalty", &ganops::gp_norm_penalty_cpu);
  m.impl("gp_norm_penalty_backward", &ganops::gp_norm_penalty_backward_cpu);
}
