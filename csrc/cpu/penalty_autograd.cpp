// SPDX-License-Identifier: BSD-3-Clause
// Autograd kernel of ganops::gp_norm_penalty in C++ (device-agnostic): at ConSinGAN's small stages the penalty
// costs about as much as the Python autograd wrapper around it, so the first-order backward is wired here. The
// backward calls ganops::gp_norm_penalty_backward through the dispatcher, whose own (double) backward stays the
// differentiable composite registered in Python (ganops/ops/penalty.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace ganops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class NormPenaltyFn : public torch::autograd::Function<NormPenaltyFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad, double target, double scale,
                               int64_t norm_over, int64_t reduction) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ganops::gp_norm_penalty", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double, int64_t, int64_t)>();
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, norm] = op.call(grad, target, scale, norm_over, reduction);
    ctx->save_for_backward({grad, norm});
    ctx->saved_data["target"] = target;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["norm_over"] = norm_over;
    ctx->saved_data["reduction"] = reduction;
    ctx->mark_non_differentiable({norm});  // a by-product saved for the backward
    return {out, norm};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ganops::gp_norm_penalty_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                           int64_t, int64_t)>();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = saved[0];
    at::Tensor go = grads[0];
    if (!go.defined()) go = at::zeros({}, grad.options());
    // The norms are detached: the composite double backward differentiates through grad alone.
    at::Tensor gx = op.call(go.contiguous(), grad, saved[1].detach(), ctx->saved_data["target"].toDouble(),
                            ctx->saved_data["scale"].toDouble(), ctx->saved_data["norm_over"].toInt(),
                            ctx->saved_data["reduction"].toInt());
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> gp_norm_penalty_autograd(const at::Tensor& grad, double target, double scale,
                                                            int64_t norm_over, int64_t reduction) {
  auto r = NormPenaltyFn::apply(grad, target, scale, norm_over, reduction);
  return {r[0], r[1]};
}

}  // namespace
}  // namespace ganops

TORCH_LIBRARY_IMPL(ganops, Autograd, m) { m.impl("gp_norm_penalty", &ganops::gp_norm_penalty_autograd); }
