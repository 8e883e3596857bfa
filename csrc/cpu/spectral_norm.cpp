// SPDX-License-Identifier: BSD-3-Clause
// Spectral norm: schemas (TORCH_LIBRARY_FRAGMENT), shared input checks and the C++ CPU kernels (math in
// ganops/spectral_norm.h). One call handles a whole group of weights; each weight is parallelised internally.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "ganops/cpu_utils.h"
#include "ganops/spectral_norm.h"
#include "ganops/spectral_norm_checks.h"

namespace ganops {
namespace {

constexpr int64_t kGrain = 32768;  // elements of W per task

// sum_k a[k] * b[k] with 8 independent accumulators (the compiler may not reorder one float sum).
template <typename A, typename X, typename Y>
inline A dot_n(const X* a, const Y* b, int64_t n) {
  A acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int q = 0; q < 8; ++q) acc[q] += static_cast<A>(a[k + q]) * static_cast<A>(b[k + q]);
  for (; k < n; ++k) acc[0] += static_cast<A>(a[k]) * static_cast<A>(b[k]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// float32 hot loops, compiled twice (AVX2 and baseline) and picked at load time by the CPU's features.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define GANOPS_SN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GANOPS_SN_CLONES
#endif

GANOPS_SN_CLONES void axpy_f32(float a, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t k = 0; k < n; ++k) y[k] += a * x[k];
}

GANOPS_SN_CLONES float dot_f32(const float* __restrict a, const float* __restrict b, int64_t n) {
  return dot_n<float>(a, b, n);
}

GANOPS_SN_CLONES void div_f32(const float* __restrict x, float s, float* __restrict y, int64_t n) {
  for (int64_t k = 0; k < n; ++k) y[k] = x[k] / s;
}

// gw = g / sigma + (coef * u_i) * v  (the association of sn::grad_weight)
GANOPS_SN_CLONES void grad_row_f32(const float* __restrict g, float sigma, float cu, const float* __restrict v,
                                   float* __restrict gw, int64_t n) {
  for (int64_t k = 0; k < n; ++k) gw[k] = g[k] / sigma + cu * v[k];
}

template <typename T, typename A>
constexpr bool kF32 = std::is_same_v<T, float> && std::is_same_v<A, float>;

template <typename T, typename A>
void layer_forward(const T* W, const T* u_in, const T* v_in, T* out, T* u_out, T* v_out, T* sigma_out,
                   const LayerShape& sh, int64_t n_iter, A eps) {
  const int64_t P = sh.P, H = sh.H, R = sh.R, C = P * R, N = P * H * R;
  std::vector<A> u(H), v(C), t(C), s(H);
  for (int64_t i = 0; i < H; ++i) u[i] = static_cast<A>(u_in[i]);
  for (int64_t j = 0; j < C; ++j) v[j] = static_cast<A>(v_in[j]);
  const int64_t rgrain = std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1));
  const int64_t cgrain = std::max<int64_t>(16, kGrain / std::max<int64_t>(H, 1));
  // s = W v: one dot product per row (contiguous runs of R elements).
  auto rows_times_v = [&] {
    at::parallel_for(0, H, rgrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        A acc = 0;
        for (int64_t p = 0; p < P; ++p) {
          const T* row = W + sn::offset(p, i, 0, H, R);
          const A* vp = v.data() + p * R;
          if constexpr (kF32<T, A>) {
            acc += dot_f32(row, vp, R);
          } else {
            acc += dot_n<A>(row, vp, R);
          }
        }
        s[i] = acc;
      }
    });
  };
  for (int64_t it = 0; it < n_iter; ++it) {
    // t = W^T u: each task owns a range of columns r (for every p) and sweeps the rows.
    at::parallel_for(0, R, cgrain, [&](int64_t b, int64_t e) {
      for (int64_t p = 0; p < P; ++p) {
        A* tp = t.data() + p * R;
        for (int64_t r = b; r < e; ++r) tp[r] = 0;
        for (int64_t i = 0; i < H; ++i) {
          const A ui = u[i];
          const T* row = W + sn::offset(p, i, 0, H, R);
          if constexpr (kF32<T, A>) {
            axpy_f32(ui, row + b, tp + b, e - b);
          } else {
            for (int64_t r = b; r < e; ++r) tp[r] += ui * static_cast<A>(row[r]);
          }
        }
      }
    });
    A ss = 0;
    for (int64_t j = 0; j < C; ++j) ss += t[j] * t[j];
    A d = sn::denom<A>(ss, eps);
    for (int64_t j = 0; j < C; ++j) v[j] = static_cast<A>(static_cast<T>(t[j] / d));  // stored as T, as torch
    rows_times_v();
    ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += s[i] * s[i];
    d = sn::denom<A>(ss, eps);
    for (int64_t i = 0; i < H; ++i) u[i] = static_cast<A>(static_cast<T>(s[i] / d));
  }
  if (n_iter == 0) rows_times_v();
  A sigma = 0;
  for (int64_t i = 0; i < H; ++i) sigma += u[i] * s[i];
  const T sigma_t = static_cast<T>(sigma);
  *sigma_out = sigma_t;
  const A sg = static_cast<A>(sigma_t);
  at::parallel_for(0, N, kGrain, [&](int64_t b, int64_t e) {
    if constexpr (kF32<T, A>) {
      div_f32(W + b, sg, out + b, e - b);
    } else {
      for (int64_t k = b; k < e; ++k) out[k] = static_cast<T>(static_cast<A>(W[k]) / sg);
    }
  });
  for (int64_t i = 0; i < H; ++i) u_out[i] = static_cast<T>(u[i]);
  for (int64_t j = 0; j < C; ++j) v_out[j] = static_cast<T>(v[j]);
}

template <typename T, typename A>
void layer_backward(const T* g, const T* W, const T* u_t, const T* v_t, T* gw, A sigma, A g_sigma,
                    const LayerShape& sh) {
  const int64_t P = sh.P, H = sh.H, R = sh.R, N = P * H * R;
  const A dot = at::parallel_reduce(0, N, kGrain, A(0), [&](int64_t b, int64_t e, A acc) {
    if constexpr (kF32<T, A>) {
      return acc + dot_f32(g + b, W + b, e - b);
    } else {
      return acc + dot_n<A>(g + b, W + b, e - b);
    }
  }, std::plus<A>());
  const A coef = sn::grad_coef<A>(g_sigma, dot, sigma);
  const int64_t rows = P * H;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(R, 1)), [&](int64_t b, int64_t e) {
    for (int64_t pi = b; pi < e; ++pi) {
      const int64_t p = pi / H, i = pi % H;
      const A ui = static_cast<A>(u_t[i]);
      const T* vp = v_t + p * R;
      const int64_t o = pi * R;
      if constexpr (kF32<T, A>) {
        grad_row_f32(g + o, sigma, coef * ui, vp, gw + o, R);
        continue;
      }
      for (int64_t r = 0; r < R; ++r)
        gw[o + r] = static_cast<T>(sn::grad_weight<A>(static_cast<A>(g[o + r]), sigma, coef, ui,
                                                      static_cast<A>(vp[r])));
    }
  });
}

std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>
spectral_norm_forward_cpu(at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims,
                          int64_t n_power_iterations, double eps) {
  const auto shapes = check_sn_inputs(weights, us, vs, dims, n_power_iterations, eps, "spectral_norm_forward");
  TORCH_CHECK(weights[0].device().is_cpu(), "spectral_norm_forward (cpu): weights must be CPU tensors");
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> outs, un, vn;
  at::Tensor sigmas = at::empty({L}, weights[0].options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights[0].scalar_type(), "spectral_norm_forward_cpu",
                                  [&] {
    using A = typename AccType<scalar_t>::type;
    for (int64_t l = 0; l < L; ++l) {
      const at::Tensor w = weights[l].contiguous(), u = us[l].contiguous(), v = vs[l].contiguous();
      at::Tensor out = at::empty(w.sizes(), w.options());
      at::Tensor uo = at::empty(u.sizes(), u.options()), vo = at::empty(v.sizes(), v.options());
      layer_forward<scalar_t, A>(w.const_data_ptr<scalar_t>(), u.const_data_ptr<scalar_t>(),
                                 v.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                 uo.mutable_data_ptr<scalar_t>(), vo.mutable_data_ptr<scalar_t>(),
                                 sigmas.mutable_data_ptr<scalar_t>() + l, shapes[l], n_power_iterations,
                                 static_cast<A>(eps));
      outs.push_back(out);
      un.push_back(uo);
      vn.push_back(vo);
    }
  });
  return {outs, sigmas, un, vn};
}

std::vector<at::Tensor> spectral_norm_backward_cpu(at::TensorList grads, const at::Tensor& grad_sigmas,
                                                   at::TensorList weights, at::TensorList us, at::TensorList vs,
                                                   at::IntArrayRef dims, const at::Tensor& sigmas) {
  const auto shapes = check_sn_inputs(weights, us, vs, dims, 0, 1.0, "spectral_norm_backward");
  check_sn_grads(grads, grad_sigmas, weights, sigmas, "spectral_norm_backward");
  TORCH_CHECK(weights[0].device().is_cpu(), "spectral_norm_backward (cpu): weights must be CPU tensors");
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> gws;
  const at::Tensor sig = sigmas.contiguous(), gsig = grad_sigmas.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights[0].scalar_type(), "spectral_norm_backward_cpu",
                                  [&] {
    using A = typename AccType<scalar_t>::type;
    for (int64_t l = 0; l < L; ++l) {
      const at::Tensor w = weights[l].contiguous(), g = grads[l].contiguous();
      const at::Tensor u = us[l].contiguous(), v = vs[l].contiguous();
      at::Tensor gw = at::empty(w.sizes(), w.options());
      layer_backward<scalar_t, A>(g.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                  u.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                                  gw.mutable_data_ptr<scalar_t>(), static_cast<A>(sig.const_data_ptr<scalar_t>()[l]),
                                  static_cast<A>(gsig.const_data_ptr<scalar_t>()[l]), shapes[l]);
      gws.push_back(gw);
    }
  });
  return gws;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_FRAGMENT(ganops, m) {
  m.def("spectral_norm_forward(Tensor[] weights, Tensor[] us, Tensor[] vs, int[] dims, int n_power_iterations, "
        "float eps) -> (Tensor[], Tensor, Tensor[], Tensor[])");
  m.def("spectral_norm_backward(Tensor[] grads, Tensor grad_sigmas, Tensor[] weights, Tensor[] us, Tensor[] vs, "
        "int[] dims, Tensor sigmas) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ganops, CPU, m) {
  m.impl("spectral_norm_forward", &ganops::spectral_norm_forward_cpu);
  m.impl("spectral_norm_backward", &ganops::spectral_norm_backward_cpu);
}
