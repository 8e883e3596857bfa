// SPDX-License-Identifier: BSD-3-Clause
// SLE: schemas (TORCH_LIBRARY_FRAGMENT) and the C++ CPU kernels; checks in ganops/sle_checks.h.
#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ganops/cpu_utils.h"
#include "ganops/sle.h"
#include "ganops/sle_checks.h"
#include "ganops/sle_rows.h"

namespace ganops {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Output allocation. SLE is memory-bound and its outputs are as large as its input; at FastGAN's shapes (32 MiB
// and up) every call gets fresh pages from the kernel (glibc mmaps blocks >= 32 MiB and unmaps them on free), and
// first-touch faults of 4 KiB pages cost more than the kernel's own reads and writes (docs/sle.md: ~1 us per
// fault, 8192 faults per 32 MiB). Large outputs therefore come from 2 MiB-aligned anonymous mappings advised
// MADV_HUGEPAGE (one fault per 2 MiB where transparent huge pages are enabled or "madvise"; plain 4 KiB pages,
// i.e. what glibc would give, where they are not). Smaller outputs use torch's CPU allocator, whose heap reuse
// already avoids faults. Memory is returned to the system when the tensor is freed, as with glibc's mmap.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHugeMin = size_t(32) << 20;  // glibc's largest mmap threshold: below it the heap is reused

#if defined(__linux__) && defined(MADV_HUGEPAGE)
struct Mapping {
  void* addr;
  size_t len;
};

void unmap(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  munmap(m->addr, m->len);
  delete m;
}

class HugePageAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kHugeMin) return c10::GetCPUAllocator()->allocate(n);
    const size_t body = (n + kHugePage - 1) / kHugePage * kHugePage;
    const size_t len = body + kHugePage;  // slack to align the start
    void* raw = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return c10::GetCPUAllocator()->allocate(n);
    const uintptr_t base = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t start = (base + kHugePage - 1) / kHugePage * kHugePage;
    if (start > base) munmap(raw, start - base);
    const size_t tail = (base + len) - (start + body);
    if (tail > 0) munmap(reinterpret_cast<void*>(start + body), tail);
    void* p = reinterpret_cast<void*>(start);
    madvise(p, body, MADV_HUGEPAGE);  // advice only: without THP the mapping keeps 4 KiB pages
    return {p, new Mapping{p, body}, &unmap, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, size_t count) const override { std::memcpy(dest, src, count); }
};

c10::Allocator* output_allocator(size_t nbytes) {
  static HugePageAllocator alloc;
  return nbytes >= kHugeMin ? static_cast<c10::Allocator*>(&alloc) : c10::GetCPUAllocator();
}
#else
c10::Allocator* output_allocator(size_t) { return c10::GetCPUAllocator(); }
#endif

// An output shaped like x in the layout the kernels write: x's own strides when x is dense NCHW or NHWC (as
// empty_like), otherwise contiguous or channels_last by x's strides (empty_like's rule for non-dense inputs). A
// dense input in another permutation gets a contiguous output (empty_like would keep its strides, which the
// kernels do not write). The fake kernel in ganops/ops/sle.py applies the same rule.
at::Tensor new_output(const at::Tensor& x) {
  constexpr auto kCL = at::MemoryFormat::ChannelsLast;
  c10::Allocator* alloc = output_allocator(static_cast<size_t>(x.numel()) * x.element_size());
  const auto ks = c10::DispatchKeySet(c10::DispatchKey::CPU);
  const bool dense = x.is_non_overlapping_and_dense();
  if (dense && (x.is_contiguous() || x.is_contiguous(kCL)))
    return at::Tensor(at::detail::empty_strided_generic(x.sizes(), x.strides(), alloc, ks, x.scalar_type()));
  const auto fmt = (!dense && x.suggest_memory_format() == kCL) ? kCL : at::MemoryFormat::Contiguous;
  return at::Tensor(at::detail::empty_generic(x.sizes(), alloc, ks, x.scalar_type(), fmt));
}

// float32 rows go through the vectorised loops in sle_rows.cpp; other dtypes use the generic loops below.
template <typename T, typename A>
bool fast_forward(const T*, A, T*, int64_t) { return false; }
inline bool fast_forward(const float* x, float s, float* y, int64_t n) { sle::row_forward_f32(x, s, y, n); return true; }
template <typename T, typename A>
bool fast_forward_cl(const T*, const A*, T*, int64_t) { return false; }
inline bool fast_forward_cl(const float* x, const float* s, float* y, int64_t n) {
  sle::row_forward_cl_f32(x, s, y, n);
  return true;
}
template <typename T, typename A>
bool fast_backward(const T*, const T*, A, T*, T*, int64_t) { return false; }
inline bool fast_backward(const float* gy, const float* x, float s, float* gx, float* gg, int64_t n) {
  *gg = static_cast<float>(sle::grad_gate<double>(sle::row_backward_f32(gy, x, s, gx, n), s));
  return true;
}
template <typename T, typename A>
bool fast_backward_cl(const T*, const T*, const A*, T*, double*, int64_t) { return false; }
inline bool fast_backward_cl(const float* gy, const float* x, const float* s, float* gx, double* acc, int64_t n) {
  sle::row_backward_cl_f32(gy, x, s, gx, acc, n);
  return true;
}

at::Tensor sle_forward_cpu(const at::Tensor& x_in, const at::Tensor& gate_in) {
  check_sle_inputs(x_in, gate_in, "sle_forward");
  TORCH_CHECK(x_in.device().is_cpu(), "sle_forward (cpu): x must be a CPU tensor");
  at::Tensor out = new_output(x_in);
  const bool cl = is_channels_last(out);
  const at::Tensor x = as_layout(x_in, cl);
  const at::Tensor gate = gate_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sle_forward_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = gate.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    std::vector<acc_t> s(N * C);
    for (int64_t i = 0; i < N * C; ++i) s[i] = sle::sigmoid<acc_t>(static_cast<acc_t>(gp[i]));
    if (!cl) {
      // NCHW: one contiguous row of H*W elements per (n, c).
      at::parallel_for(0, N * C, std::max<int64_t>(1, 32768 / std::max<int64_t>(HW, 1)), [&](int64_t b, int64_t e) {
        for (int64_t nc = b; nc < e; ++nc) {
          const acc_t sv = s[nc];
          const scalar_t* xr = xp + nc * HW;
          scalar_t* yr = yp + nc * HW;
          if (fast_forward(xr, sv, yr, HW)) continue;
          for (int64_t i = 0; i < HW; ++i) yr[i] = static_cast<scalar_t>(sle::forward<acc_t>(static_cast<acc_t>(xr[i]), sv));
        }
      });
    } else {
      // NHWC: rows of C channels; the gate row of sample n is reused for every pixel.
      at::parallel_for(0, N * HW, std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          const acc_t* sr = s.data() + (p / HW) * C;
          const scalar_t* xr = xp + p * C;
          scalar_t* yr = yp + p * C;
          if (fast_forward_cl(xr, sr, yr, C)) continue;
          for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<scalar_t>(sle::forward<acc_t>(static_cast<acc_t>(xr[c]), sr[c]));
        }
      });
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sle_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                    const at::Tensor& gate_in) {
  check_sle_inputs(x_in, gate_in, "sle_backward");
  check_sle_grad(grad_in, x_in, "sle_backward");
  TORCH_CHECK(x_in.device().is_cpu(), "sle_backward (cpu): x must be a CPU tensor");
  at::Tensor gx = new_output(x_in);
  SleBackwardOperands op = sle_backward_operands(gx, grad_in, x_in, gate_in);
  const int64_t N = op.x.size(0), C = op.x.size(1), HW = op.x.size(2) * op.x.size(3);
  if (op.gate.numel() == 0) return {gx, op.gg};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, op.x.scalar_type(), "sle_backward_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* xp = op.x.const_data_ptr<scalar_t>();
    const scalar_t* gyp = op.gy.const_data_ptr<scalar_t>();
    const scalar_t* gp = op.gate.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    scalar_t* ggp = op.gg.mutable_data_ptr<scalar_t>();
    if (!op.channels_last) {
      at::parallel_for(0, N * C, std::max<int64_t>(1, 32768 / std::max<int64_t>(HW, 1)), [&](int64_t b, int64_t e) {
        for (int64_t nc = b; nc < e; ++nc) {
          const acc_t sv = sle::sigmoid<acc_t>(static_cast<acc_t>(gp[nc]));
          const scalar_t* xr = xp + nc * HW;
          const scalar_t* gr = gyp + nc * HW;
          scalar_t* gxr = gxp + nc * HW;
          if (fast_backward(gr, xr, sv, gxr, ggp + nc, HW)) continue;
          double sum = 0;  // the gate's reduction in double for every dtype (see sle_rows.cpp)
          for (int64_t i = 0; i < HW; ++i) {
            const acc_t g = static_cast<acc_t>(gr[i]);
            sum += sle::gate_partial<double>(g, static_cast<acc_t>(xr[i]));
            gxr[i] = static_cast<scalar_t>(sle::grad_x<acc_t>(g, sv));
          }
          ggp[nc] = static_cast<scalar_t>(sle::grad_gate<double>(sum, sv));
        }
      });
    } else {
      at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
        std::vector<acc_t> s(C);
        std::vector<double> sum(C);
        for (int64_t n = b; n < e; ++n) {
          for (int64_t c = 0; c < C; ++c) {
            s[c] = sle::sigmoid<acc_t>(static_cast<acc_t>(gp[n * C + c]));
            sum[c] = 0;
          }
          for (int64_t p = 0; p < HW; ++p) {
            const int64_t off = (n * HW + p) * C;
            if (fast_backward_cl(gyp + off, xp + off, s.data(), gxp + off, sum.data(), C)) continue;
            for (int64_t c = 0; c < C; ++c) {
              const acc_t g = static_cast<acc_t>(gyp[off + c]);
              sum[c] += sle::gate_partial<double>(g, static_cast<acc_t>(xp[off + c]));
              gxp[off + c] = static_cast<scalar_t>(sle::grad_x<acc_t>(g, s[c]));
            }
          }
          for (int64_t c = 0; c < C; ++c) ggp[n * C + c] = static_cast<scalar_t>(sle::grad_gate<double>(sum[c], s[c]));
        }
      });
    }
  });
  return {gx, std::move(op.gg)};
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_FRAGMENT(ganops, m) {
  m.def("sle_forward(Tensor x, Tensor gate) -> Tensor");
  m.def("sle_backward(Tensor grad_out, Tensor x, Tensor gate) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ganops, CPU, m) {
  m.impl("sle_forward", &ganops::sle_forward_cpu);
  m.impl("sle_backward", &ganops::sle_backward_cpu);
}
