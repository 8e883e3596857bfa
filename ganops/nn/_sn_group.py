# SPDX-License-Identifier: BSD-3-Clause
"""SpectralNormGroup: every spectral-norm layer of a module tree updated by one fused call per root forward."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..ops.spectral_norm import spectral_norm_weight, spectral_norm_weights

if TYPE_CHECKING:
    from .spectral_norm import SpectralNorm

__all__ = ["SpectralNormGroup", "spectral_norm_group"]


class SpectralNormGroup:
    """Batch the spectral-norm work of all ganops-SN layers under ``root`` into a constant number of launches.

    On each ``root`` forward, a pre-hook computes W / sigma of every layer with one
    :func:`~ganops.ops.spectral_norm_weights` call per (device, dtype, n_power_iterations, eps, training) bucket;
    each layer's own hook then just picks its weight. After the forward, the new u, v of the layers that actually
    ran are written into their buffers with one ``torch._foreach_copy_`` per bucket, so layers skipped in a
    forward (e.g. FastGAN's decoders on fake images) keep their u, v exactly as torch's per-layer hooks would.
    A layer called twice in one root forward (shared weights) iterates again from its pending u, v, as torch does.
    A layer called outside a root forward falls back to its own per-layer update.

    Args:
        root: the module tree (e.g. a discriminator); layers added later are picked up by :meth:`refresh`.
        impl: backend for the grouped op ("auto" | "ref" | "cpu" | "cuda" | "triton").
    """

    def __init__(self, root: nn.Module, impl: str = "auto") -> None:
        self.root = root
        self.impl = impl
        self.active = False
        self.entries: list[tuple[nn.Module, SpectralNorm]] = []
        self._pending: dict[int, list] = {}  # id(fn) -> [weight_sn, u_new, v_new, used, module]
        self._handles = [root.register_forward_pre_hook(self._pre),
                         root.register_forward_hook(self._post, always_call=True)]
        self.refresh()

    def refresh(self) -> None:
        """(Re)collect the ganops spectral-norm hooks under ``root``."""
        from .spectral_norm import SpectralNorm

        for _, fn in self.entries:
            fn.group = None
        self.entries = []
        for m in self.root.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm):
                    hook.group = self
                    self.entries.append((m, hook))

    def discard(self, fn: "SpectralNorm") -> None:
        self.entries = [(m, f) for m, f in self.entries if f is not fn]
        fn.group = None

    def remove(self) -> None:
        """Detach the group: layers go back to per-layer updates."""
        for h in self._handles:
            h.remove()
        for _, fn in self.entries:
            fn.group = None
        self.entries = []

    def _buckets(self) -> dict:
        buckets: dict = {}
        for m, fn in self.entries:
            w = getattr(m, fn.name + "_orig")
            n = fn.n_power_iterations if m.training else 0
            buckets.setdefault((w.device, w.dtype, n, fn.eps, fn.impl), []).append((m, fn))
        return buckets

    def _pre(self, root: nn.Module, inputs) -> None:
        if self.active:  # re-entrant root call: the outer forward's pending state stays in charge
            return
        self._pending = {}
        for (_, _, n, eps, impl), items in self._buckets().items():
            ws, us, vs, dims = [], [], [], []
            for m, fn in items:
                fn._sync_user_weight(m)
                ws.append(getattr(m, fn.name + "_orig"))
                us.append(getattr(m, fn.name + "_u"))
                vs.append(getattr(m, fn.name + "_v"))
                dims.append(fn.dim)
            outs, _, un, vn = spectral_norm_weights(ws, us, vs, dims, n_power_iterations=n, eps=eps,
                                                    impl=self.impl if impl == "auto" else impl)
            for (m, fn), o, u, v in zip(items, outs, un, vn):
                self._pending[id(fn)] = [o, u, v, 0, m, n]
        self.active = True

    def weight_for(self, fn: "SpectralNorm", module: nn.Module) -> torch.Tensor:
        """The normalised weight of ``fn``'s layer for this root forward."""
        p = self._pending.get(id(fn))
        if p is None:  # a layer added after the group was built
            return fn.compute_weight(module, do_power_iteration=module.training)
        p[3] += 1
        if p[3] > 1:  # shared layer called again: torch iterates again, starting from the updated u, v
            w = getattr(module, fn.name + "_orig")
            p[0], _, p[1], p[2] = spectral_norm_weight(w, p[1], p[2], dim=fn.dim, n_power_iterations=p[5],
                                                       eps=fn.eps, impl=self.impl if fn.impl == "auto" else fn.impl)
        return p[0]

    def _post(self, root: nn.Module, inputs, output) -> None:
        if not self.active:
            return
        self.active = False
        dst_u, src_u, dst_v, src_v = [], [], [], []
        for m, fn in self.entries:
            p = self._pending.get(id(fn))
            if p is None or p[3] == 0 or p[5] == 0:
                continue
            dst_u.append(getattr(m, fn.name + "_u"))
            dst_v.append(getattr(m, fn.name + "_v"))
            src_u.append(p[1])
            src_v.append(p[2])
        self._pending = {}
        if dst_u:
            with torch.no_grad():
                torch._foreach_copy_(dst_u + dst_v, src_u + src_v)


def spectral_norm_group(root: nn.Module, impl: str = "auto") -> SpectralNormGroup:
    """Group every ganops spectral-norm layer under ``root`` (see :class:`SpectralNormGroup`).

    Returns the group; keep it or call ``.remove()`` to go back to per-layer updates. The result is identical to
    the per-layer (and to torch's) update when each SN layer runs at most once per root forward, and when it runs
    more often (see the class docs).
    """
    existing = getattr(root, "_ganops_sn_group", None)
    if existing is not None:
        existing.remove()
    group = SpectralNormGroup(root, impl)
    root._ganops_sn_group = group  # type: ignore[attr-defined]
    return group
