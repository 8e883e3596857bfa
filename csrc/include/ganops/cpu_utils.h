// SPDX-License-Identifier: BSD-3-Clause
// Helpers for the CPU kernels and the CUDA glue (ATen side).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace ganops {

template <typename T>
struct AccType { using type = float; };
template <>
struct AccType<double> { using type = double; };

// Which of the two dense layouts a 4-D output uses. Callers allocate the output with dense_output_like(x) (the
// fake kernels apply the same rule, so strides agree) and compute on inputs made contiguous in that layout.
inline bool is_channels_last(const at::Tensor& out) {
  return !out.is_contiguous() && out.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor as_layout(const at::Tensor& t, bool channels_last) {
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

// An uninitialised output shaped like x in a layout the NCHW/NHWC kernels write: at::empty_like(x) when that is
// NCHW- or NHWC-contiguous (x dense in either, or non-dense: empty_like then picks by x's strides); otherwise (x
// dense in another permutation, whose strides empty_like would keep and the kernels would not write) contiguous.
// The fake kernels apply the same rule (ganops/_layout.py dense_output_like).
inline at::Tensor dense_output_like(const at::Tensor& x) {
  at::Tensor out = at::empty_like(x);
  if (out.is_contiguous() || is_channels_last(out)) return out;
  return at::empty(x.sizes(), x.options());
}

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
              t.scalar_type());
}

inline int dtype_code(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return 0;
    case c10::ScalarType::Double: return 1;
    case c10::ScalarType::Half: return 2;
    case c10::ScalarType::BFloat16: return 3;
    default: TORCH_CHECK(false, "ganops: unsupported dtype ", t);
  }
  return -1;
}

}  // namespace ganops
