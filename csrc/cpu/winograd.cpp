// SPDX-License-Identifier: BSD-3-Clause
// Winograd F(4x4, 3x3) for stride-1 3x3 convolutions on channels_last CPU tensors (float32 and float64):
// the forward (with virtual zero padding, which also gives the input gradient as a "full" convolution) and the
// weight gradient in the transformed domain. The weight transforms (G w G^T and back) are done by the caller in
// ATen (ganops/ops/winograd.py), so that the weight side stays differentiable for double backward.
//
// Per block of TB output tiles (4x4 each): transform the 6x6 input tiles (B^T d B, vectors of channels), 36
// GEMMs (TB x C) . (C x K) through BLAS, inverse-transform (A^T m A) into the output. The blocks stay in L2, so
// the memory traffic is one read of x and one write of y; the GEMMs do 36/16 = 2.25 multiply-adds per output
// element and channel pair instead of 9.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <mutex>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GANOPS_WINO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GANOPS_WINO_CLONES
#endif

// The Fortran BLAS that libtorch_cpu carries (MKL on x86-64); weak, so that a build without it still loads and
// falls back to at::mm.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace ganops {
namespace {

constexpr int kTB = 64;  // tiles per block: 2 x 36 x 64 x 64 floats = 1.2 MB of workspace, within L2

// Column-major C(m x n) = op(A) op(B) (+ C when beta = 1), A/B/C given with their leading dimensions.
// blas = false takes the ATen path even where BLAS is there (GANOPS_WINO_ATEN_GEMM=1: lets the tests run it).
template <typename T>
void gemm(bool blas, char ta, char tb, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c,
          int ldc) {
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) {
    if (blas && sgemm_) return sgemm_(&ta, &tb, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
  } else {
    if (blas && dgemm_) return dgemm_(&ta, &tb, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
  }
  // Fallback: the same product through ATen (row-major views of the column-major operands).
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto A = at::from_blob(const_cast<T*>(a), {ta == 'N' ? k : m, lda}, opts).narrow(1, 0, ta == 'N' ? m : k);
  auto B = at::from_blob(const_cast<T*>(b), {tb == 'N' ? n : k, ldb}, opts).narrow(1, 0, tb == 'N' ? k : n);
  auto C = at::from_blob(c, {n, ldc}, opts).narrow(1, 0, m);  // C^T (n x m) row-major
  // C^T = op(B)^T op(A)^T
  auto Bt = tb == 'N' ? B : B.t();  // (n x k)
  auto At = ta == 'N' ? A : A.t();  // (k x m)
  auto P = at::mm(Bt, At);
  if (beta == T(0)) C.copy_(P); else C.add_(P);
}

// 1-D transforms on channel vectors of length n: 16 floats (8 doubles) at a time through GCC vector types, which
// compile to one zmm, two ymm or four xmm registers in the avx512f / avx2 / default clones; scalar tail.
typedef float VecF __attribute__((vector_size(64)));
typedef double VecD __attribute__((vector_size(64)));
template <typename T>
struct VecOf {  // (an alias template would drop the attribute: GCC ignores vector_size on dependent types)
  typedef VecF type;
};
template <>
struct VecOf<double> {
  typedef VecD type;
};
template <typename T>
using Vec = typename VecOf<T>::type;
static_assert(sizeof(Vec<float>) == 64 && sizeof(Vec<double>) == 64, "vector types");

template <typename E, typename T>
__attribute__((always_inline)) inline E ld(const T* p) {
  E v;
  std::memcpy(&v, p, sizeof(E));
  return v;
}

template <typename E, typename T>
__attribute__((always_inline)) inline void st(T* p, E v) {
  std::memcpy(p, &v, sizeof(E));
}

template <typename T, typename E>
__attribute__((always_inline)) inline void bt6_at(const T* const* d, T* const* r, int c) {  // B^T: 6 -> 6
  const E a0 = ld<E>(d[0] + c), a1 = ld<E>(d[1] + c), a2 = ld<E>(d[2] + c), a3 = ld<E>(d[3] + c),
          a4 = ld<E>(d[4] + c), a5 = ld<E>(d[5] + c);
  st(r[0] + c, E(T(4) * a0 - T(5) * a2 + a4));
  st(r[1] + c, E(T(-4) * (a1 + a2) + a3 + a4));
  st(r[2] + c, E(T(4) * (a1 - a2) - a3 + a4));
  st(r[3] + c, E(T(-2) * (a1 - a3) - a2 + a4));
  st(r[4] + c, E(T(2) * (a1 - a3) - a2 + a4));
  st(r[5] + c, E(T(4) * a1 - T(5) * a3 + a5));
}

template <typename T, typename E>
__attribute__((always_inline)) inline void at6_at(const T* const* m, T* const* y, int c) {  // A^T: 6 -> 4
  const E a0 = ld<E>(m[0] + c), a1 = ld<E>(m[1] + c), a2 = ld<E>(m[2] + c), a3 = ld<E>(m[3] + c),
          a4 = ld<E>(m[4] + c), a5 = ld<E>(m[5] + c);
  const E s12 = a1 + a2, d12 = a1 - a2, s34 = a3 + a4, d34 = a3 - a4;
  st(y[0] + c, E(a0 + s12 + s34));
  st(y[1] + c, E(d12 + T(2) * d34));
  st(y[2] + c, E(s12 + T(4) * s34));
  st(y[3] + c, E(d12 + T(8) * d34 + a5));
}

template <typename T, typename E>
__attribute__((always_inline)) inline void a4_at(const T* const* g, T* const* r, int c) {  // A: 4 -> 6
  const E a0 = ld<E>(g[0] + c), a1 = ld<E>(g[1] + c), a2 = ld<E>(g[2] + c), a3 = ld<E>(g[3] + c);
  const E s02 = a0 + a2, s13 = a1 + a3, p = a0 + T(4) * a2, q = T(2) * a1 + T(8) * a3;
  st(r[0] + c, a0);
  st(r[1] + c, E(s02 + s13));
  st(r[2] + c, E(s02 - s13));
  st(r[3] + c, E(p + q));
  st(r[4] + c, E(p - q));
  st(r[5] + c, a3);
}

#define GANOPS_WINO_SPAN(name)                                                                  \
  template <typename T>                                                                         \
  __attribute__((always_inline)) inline void name(const T* const* in, T* const* out, int n) {   \
    constexpr int L = static_cast<int>(64 / sizeof(T));                                         \
    int c = 0;                                                                                  \
    for (; c + L <= n; c += L) name##_at<T, Vec<T>>(in, out, c);                                \
    for (; c < n; ++c) name##_at<T, T>(in, out, c);                                             \
  }
GANOPS_WINO_SPAN(bt6)
GANOPS_WINO_SPAN(at6)
GANOPS_WINO_SPAN(a4)
#undef GANOPS_WINO_SPAN

// Per-thread workspaces, kept between calls: a fresh 0.6 MB std::vector per call is an mmap with page faults on
// first touch, which dominates at ConSinGAN's small stages. Slot i of thread t only ever serves one call at a time.
template <typename T>
T* workspace(int slot, size_t n) {
  thread_local std::vector<T> buf[5];
  if (buf[slot].size() < n) buf[slot].resize(n);
  return buf[slot].data();
}

// One thread's block buffers: V (input tiles, 36 x kTB x C), W (output or gradient tiles, 36 x kTB x K), a zero
// channel vector for taps outside the map, transform scratch, and `extra` elements (output tile / dU accumulator).
template <typename T>
struct Work {
  T *V, *W, *zero, *tmp, *extra;
  Work(int64_t C, int64_t K, int64_t extra_n) {
    const int64_t mx = std::max(C, K);
    V = workspace<T>(0, 36 * kTB * C);
    W = workspace<T>(1, 36 * kTB * K);
    zero = workspace<T>(2, mx);
    tmp = workspace<T>(3, 36 * mx);
    extra = workspace<T>(4, extra_n);
    std::fill(zero, zero + mx, T(0));
  }
};

struct Geom {
  int64_t N, H, W, C;  // input (NHWC)
  int64_t Ho, Wo, K;   // output
  int64_t pad;
  int64_t ty, tx;      // tiles per image along H, W
  int64_t blocks;      // blocks per image
  int64_t tb;          // tiles per block (<= kTB; the last block of an image may have fewer)
};

// Input tiles of block b of image n: V[e][t][C] (e = 6 r + s), zeros outside the (virtually padded) input.
template <typename T>
GANOPS_WINO_CLONES void input_block(const T* x, const Geom& g, int64_t n, int64_t t0, int64_t nt, T* V, T* zero,
                                    T* tmp) {
  const int64_t C = g.C;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t tt = t0 + t, oy = (tt / g.tx) * 4 - g.pad, ox = (tt % g.tx) * 4 - g.pad;
    const T* d[6][6];
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) {
        const int64_t h = oy + i, w = ox + j;
        d[i][j] = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? x + ((n * g.H + h) * g.W + w) * C : zero;
      }
    // rows: tmp[r][j] = B^T column j
    for (int j = 0; j < 6; ++j) {
      T* r[6];
      for (int k = 0; k < 6; ++k) r[k] = tmp + (k * 6 + j) * C;
      const T* col[6] = {d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]};
      bt6(col, r, static_cast<int>(C));
    }
    for (int rr = 0; rr < 6; ++rr) {
      T* r[6];
      for (int s = 0; s < 6; ++s) r[s] = V + ((rr * 6 + s) * kTB + t) * C;
      const T* q = tmp + rr * 6 * C;
      const T* row[6] = {q, q + C, q + 2 * C, q + 3 * C, q + 4 * C, q + 5 * C};
      bt6(row, r, static_cast<int>(C));
    }
  }
}

template <typename T>
GANOPS_WINO_CLONES void output_block(const T* M, const Geom& g, int64_t n, int64_t t0, int64_t nt, const T* bias,
                                     T* y, T* tmp, T* tile) {
  const int64_t K = g.K;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t tt = t0 + t, oy = (tt / g.tx) * 4, ox = (tt % g.tx) * 4;
    // along s: tmp[r][jj] = A^T (M[r][0..5])
    for (int r = 0; r < 6; ++r) {
      const T* m[6];
      for (int s = 0; s < 6; ++s) m[s] = M + ((r * 6 + s) * kTB + t) * K;
      T* q[4];
      for (int jj = 0; jj < 4; ++jj) q[jj] = tmp + (r * 4 + jj) * K;
      at6(m, q, static_cast<int>(K));
    }
    for (int jj = 0; jj < 4; ++jj) {
      T* q[4];
      for (int ii = 0; ii < 4; ++ii) q[ii] = tile + (ii * 4 + jj) * K;
      const T* c0 = tmp + jj * K;
      const T* col[6] = {c0, c0 + 4 * K, c0 + 8 * K, c0 + 12 * K, c0 + 16 * K, c0 + 20 * K};
      at6(col, q, static_cast<int>(K));
    }
    for (int ii = 0; ii < 4; ++ii) {
      const int64_t h = oy + ii;
      if (h >= g.Ho) break;
      for (int jj = 0; jj < 4; ++jj) {
        const int64_t w = ox + jj;
        if (w >= g.Wo) break;
        T* dst = y + ((n * g.Ho + h) * g.Wo + w) * K;
        const T* src = tile + (ii * 4 + jj) * K;
        if (bias)
          for (int64_t k = 0; k < K; ++k) dst[k] = src[k] + bias[k];
        else
          for (int64_t k = 0; k < K; ++k) dst[k] = src[k];
      }
    }
  }
}

// Output-gradient tiles: Yh[e][t][K] = A gy A^T (4x4 -> 6x6), zeros outside the output.
template <typename T>
GANOPS_WINO_CLONES void grad_block(const T* gy, const Geom& g, int64_t n, int64_t t0, int64_t nt, T* Yh, T* zero,
                                   T* tmp) {
  const int64_t K = g.K;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t tt = t0 + t, oy = (tt / g.tx) * 4, ox = (tt % g.tx) * 4;
    const T* d[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t h = oy + i, w = ox + j;
        d[i][j] = (h < g.Ho && w < g.Wo) ? gy + ((n * g.Ho + h) * g.Wo + w) * K : zero;
      }
    for (int j = 0; j < 4; ++j) {  // along i: tmp[r][j]
      T* r[6];
      for (int k = 0; k < 6; ++k) r[k] = tmp + (k * 4 + j) * K;
      const T* col[4] = {d[0][j], d[1][j], d[2][j], d[3][j]};
      a4(col, r, static_cast<int>(K));
    }
    for (int rr = 0; rr < 6; ++rr) {
      T* r[6];
      for (int s = 0; s < 6; ++s) r[s] = Yh + ((rr * 6 + s) * kTB + t) * K;
      const T* q = tmp + rr * 4 * K;
      const T* row[4] = {q, q + K, q + 2 * K, q + 3 * K};
      a4(row, r, static_cast<int>(K));
    }
  }
}

Geom geometry(const at::Tensor& x, int64_t K, int64_t pad, int64_t Ho, int64_t Wo) {
  Geom g;
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.K = K, g.pad = pad, g.Ho = Ho, g.Wo = Wo;
  g.ty = (Ho + 3) / 4, g.tx = (Wo + 3) / 4;
  const int64_t tiles = g.ty * g.tx, nth = at::get_num_threads();
  int64_t b = (tiles + kTB - 1) / kTB;
  // at::parallel_for hands each thread ceil(total / threads) consecutive blocks. When there are few blocks (small
  // maps, batch 1 or 2), a total that is not a multiple of the thread count leaves one thread with a short block
  // and the other idle (70 tiles: blocks of 64 + 6 tiles). Split into more, equal blocks instead.
  if (nth > 1 && g.N * b < 8 * nth)
    while ((g.N * b) % nth != 0 && b < tiles) ++b;
  g.tb = (tiles + b - 1) / b;
  g.blocks = (tiles + g.tb - 1) / g.tb;  // no empty block (5 tiles in 4 blocks would give tb 2: 3 blocks)
  return g;
}

void check_nhwc(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "ganops.winograd: ", what, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 4, "ganops.winograd: ", what, " must be 4-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "ganops.winograd: float32 or float64 required, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "ganops.winograd: ", what,
              " must be channels_last contiguous");
}

template <typename T>
void fwd_impl(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias, at::Tensor& y,
              const Geom& g) {
  const T* xp = x.data_ptr<T>();
  const T* up = u.data_ptr<T>();
  const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  T* yp = y.data_ptr<T>();
  const int64_t C = g.C, K = g.K, total = g.N * g.blocks;
  const bool blas = std::getenv("GANOPS_WINO_ATEN_GEMM") == nullptr;
  at::parallel_for(0, total, 1, [&](int64_t b0, int64_t b1) {
    Work<T> w(C, K, 16 * K);
    T *V = w.V, *M = w.W, *zero = w.zero, *tmp = w.tmp, *tile = w.extra;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b / g.blocks, t0 = (b % g.blocks) * g.tb, nt = std::min<int64_t>(g.tb, g.ty * g.tx - t0);
      input_block<T>(xp, g, n, t0, nt, V, zero, tmp);
      for (int e = 0; e < 36; ++e)  // M_e^T (K x nt) = U_e^T (K x C) . V_e^T (C x nt), column-major
        gemm<T>(blas, 'N', 'N', static_cast<int>(K), static_cast<int>(nt), static_cast<int>(C), up + e * C * K,
                static_cast<int>(K), V + e * kTB * C, static_cast<int>(C), T(0), M + e * kTB * K,
                static_cast<int>(K));
      output_block<T>(M, g, n, t0, nt, bp, yp, tmp, tile);
    }
  });
}

template <typename T>
void wgrad_impl(const at::Tensor& x, const at::Tensor& gy, at::Tensor& du, const Geom& g) {
  const T* xp = x.data_ptr<T>();
  const T* gp = gy.data_ptr<T>();
  T* dup = du.data_ptr<T>();
  const int64_t C = g.C, K = g.K, total = g.N * g.blocks;
  const bool blas = std::getenv("GANOPS_WINO_ATEN_GEMM") == nullptr;
  std::mutex mu;
  at::parallel_for(0, total, 1, [&](int64_t b0, int64_t b1) {
    Work<T> w(C, K, 36 * C * K);
    T *V = w.V, *Yh = w.W, *zero = w.zero, *tmp = w.tmp, *acc = w.extra;
    std::fill(acc, acc + 36 * C * K, T(0));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b / g.blocks, t0 = (b % g.blocks) * g.tb, nt = std::min<int64_t>(g.tb, g.ty * g.tx - t0);
      input_block<T>(xp, g, n, t0, nt, V, zero, tmp);
      grad_block<T>(gp, g, n, t0, nt, Yh, zero, tmp);
      for (int e = 0; e < 36; ++e)  // dU_e^T (K x C) += Yh_e^T (K x nt) . V_e (nt x C), column-major
        gemm<T>(blas, 'N', 'T', static_cast<int>(K), static_cast<int>(C), static_cast<int>(nt), Yh + e * kTB * K,
                static_cast<int>(K), V + e * kTB * C, static_cast<int>(C), T(1), acc + e * C * K,
                static_cast<int>(K));
    }
    std::lock_guard<std::mutex> lock(mu);
    for (int64_t i = 0; i < 36 * C * K; ++i) dup[i] += acc[i];
  });
}

// y = conv2d(x, w, bias, padding=pad) with U = G w G^T given as (36, C, K); x channels_last, y channels_last.
at::Tensor wino_fwd_cpu(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias,
                        int64_t pad) {
  check_nhwc(x, "x");
  TORCH_CHECK(u.dim() == 3 && u.size(0) == 36 && u.size(1) == x.size(1) && u.is_contiguous(),
              "ganops.winograd: u must be a contiguous (36, C, K) tensor with C = x.size(1)");
  TORCH_CHECK(u.scalar_type() == x.scalar_type(), "ganops.winograd: u and x must have the same dtype");
  TORCH_CHECK(pad >= 0, "ganops.winograd: pad must be >= 0");
  const int64_t K = u.size(2), Ho = x.size(2) + 2 * pad - 2, Wo = x.size(3) + 2 * pad - 2;
  TORCH_CHECK(Ho > 0 && Wo > 0, "ganops.winograd: input too small for a 3x3 convolution");
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == K && bias->is_contiguous() &&
                    bias->scalar_type() == x.scalar_type(), "ganops.winograd: bias must be a contiguous (K,) tensor");
  auto y = at::empty({x.size(0), K, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const Geom g = geometry(x, K, pad, Ho, Wo);
  if (x.scalar_type() == at::kFloat) fwd_impl<float>(x, u, bias, y, g); else fwd_impl<double>(x, u, bias, y, g);
  return y;
}

// dU (36, C, K) = sum over tiles of V^T Yh, the weight gradient of conv2d(x, w) (no padding) in the transformed
// domain: dW = G^T dU G.
at::Tensor wino_wgrad_cpu(const at::Tensor& x, const at::Tensor& gy) {
  check_nhwc(x, "x");
  check_nhwc(gy, "grad_out");
  TORCH_CHECK(gy.scalar_type() == x.scalar_type(), "ganops.winograd: x and grad_out must have the same dtype");
  TORCH_CHECK(gy.size(0) == x.size(0) && gy.size(2) == x.size(2) - 2 && gy.size(3) == x.size(3) - 2,
              "ganops.winograd: grad_out must be (N, K, H - 2, W - 2) for x (N, C, H, W)");
  const int64_t K = gy.size(1);
  auto du = at::zeros({36, x.size(1), K}, x.options());
  const Geom g = geometry(x, K, 0, gy.size(2), gy.size(3));
  if (x.scalar_type() == at::kFloat) wgrad_impl<float>(x, gy, du, g); else wgrad_impl<double>(x, gy, du, g);
  return du;
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_FRAGMENT(ganops, m) {
  m.def("wino3x3_forward(Tensor x, Tensor u, Tensor? bias, int pad) -> Tensor");
  m.def("wino3x3_wgrad(Tensor x, Tensor grad_out) -> Tensor");
}

TORCH_LIBRARY_IMPL(ganops, CPU, m) {
  m.impl("wino3x3_forward", &ganops::wino_fwd_cpu);
  m.impl("wino3x3_wgrad", &ganops::wino_wgrad_cpu);
}
