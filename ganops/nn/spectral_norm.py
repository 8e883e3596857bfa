# SPDX-License-Identifier: BSD-3-Clause
"""Spectral norm with torch's legacy semantics and state-dict layout, computed by ganops' fused op; the group that
updates every spectral-norm layer of a module tree with one fused call per root forward; :func:`sn_wrap`."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from ..ops.spectral_norm import spectral_norm_weight, spectral_norm_weights, weight_matrix

_tsn = importlib.import_module("torch.nn.utils.spectral_norm")  # the module (the package attribute is the function)

__all__ = ["SpectralNorm", "spectral_norm", "remove_spectral_norm", "SNConv2d", "SNConvTranspose2d", "SNLinear",
           "SNEmbedding", "SpectralNormGroup", "spectral_norm_group", "to_parametrizations_state_dict",
           "from_parametrizations_state_dict", "sn_wrap"]

T = TypeVar("T", bound=nn.Module)
_PARAM_SUFFIX = {"_orig": ".original", "_u": ".0._u", "_v": ".0._v"}


class SpectralNorm(_tsn.SpectralNorm):
    """The forward pre-hook: torch's legacy ``SpectralNorm`` with the weight computed by the fused op.

    A subclass of ``torch.nn.utils.spectral_norm.SpectralNorm``, so torch's ``remove_spectral_norm`` and
    ``isinstance`` checks keep working. ``impl`` picks the backend (see :func:`ganops.ops.spectral_norm_weights`).
    """

    def __init__(self, name: str = "weight", n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 impl: str = "auto") -> None:
        super().__init__(name, n_power_iterations, dim, eps)
        self.impl = impl
        self.group: SpectralNormGroup | None = None

    def compute_weight(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        w = getattr(module, self.name + "_orig")
        u = getattr(module, self.name + "_u")
        v = getattr(module, self.name + "_v")
        n = self.n_power_iterations if do_power_iteration else 0
        out, _, un, vn = spectral_norm_weight(w, u, v, dim=self.dim, n_power_iterations=n, eps=self.eps,
                                              impl=self.impl)
        if n > 0:
            with torch.no_grad():  # in place, as torch (DataParallel replica 0 and DDP keep the same buffers)
                torch._foreach_copy_([u, v], [un, vn])  # one op for both buffers
        return out

    def _sync_user_weight(self, module: nn.Module) -> None:
        """Make writes to ``module.<name>`` reach ``<name>_orig`` (assignments, and in-place writes tracked by
        autograd's version counter); see docs/spectral_norm.md."""
        name = self.name
        user = module._parameters.pop(name, None) if name in module._parameters else None
        if user is None:
            cur = module.__dict__.get(name)
            # Tensors we set carry (version, data_ptr) from the time they were set; a plain tensor without the
            # mark was assigned by the user; the same storage at a newer version was written in place. A copy
            # (deepcopy: other storage) is still ours.
            mark = getattr(cur, "_ganops_sn_mark", None)
            if isinstance(cur, torch.Tensor) and (mark is None or (mark[1] == cur.data_ptr()
                                                                    and mark[0] != cur._version)):
                user = cur
        if user is not None:
            orig = getattr(module, name + "_orig")
            if user.shape != orig.shape:
                raise ValueError(f"spectral_norm: {type(module).__name__}.{name} was set to a tensor of shape "
                                 f"{tuple(user.shape)}; expected {tuple(orig.shape)}")
            if user.data_ptr() != orig.data_ptr():
                with torch.no_grad():
                    orig.copy_(user)

    def _set(self, module: nn.Module, weight: torch.Tensor) -> None:
        weight._ganops_sn_mark = (weight._version, weight.data_ptr())  # type: ignore[attr-defined]
        setattr(module, self.name, weight)

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        self._sync_user_weight(module)
        group = self.group
        if group is not None and group.active:
            self._set(module, group.weight_for(self, module))
        else:
            self._set(module, self.compute_weight(module, do_power_iteration=module.training))

    def remove(self, module: nn.Module) -> None:
        self._sync_user_weight(module)
        if self.group is not None:
            self.group.discard(self)
        super().remove(module)

    @staticmethod
    def apply(module: nn.Module, name: str, n_power_iterations: int, dim: int, eps: float,  # type: ignore[override]
              impl: str = "auto") -> "SpectralNorm":
        """Register on ``module`` exactly as torch's ``SpectralNorm.apply`` (same RNG draws, names and order)."""
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, _tsn.SpectralNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
        fn = SpectralNorm(name, n_power_iterations, dim, eps, impl)
        weight = module._parameters.get(name)
        if weight is None:
            raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter {name!r} (or it is None)")
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError("spectral_norm: the module has uninitialized parameters; run a dummy forward first")
        with torch.no_grad():
            h, w = weight_matrix(weight, dim).size()
            u = nn.functional.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=eps)
            v = nn.functional.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=eps)
        delattr(module, name)
        module.register_parameter(name + "_orig", weight)
        fn._set(module, weight.data)  # an alias of weight_orig: init code writing module.<name> reaches it
        module.register_buffer(name + "_u", u)
        module.register_buffer(name + "_v", v)
        module.register_forward_pre_hook(fn)
        module._register_state_dict_hook(_tsn.SpectralNormStateDictHook(fn))
        module._register_load_state_dict_pre_hook(_ParametrizationsLoadHook(name))
        module._register_load_state_dict_pre_hook(_tsn.SpectralNormLoadStateDictPreHook(fn))
        return fn


class _ParametrizationsLoadHook:
    """Accept ``torch.nn.utils.parametrizations.spectral_norm`` keys when loading (renamed to the legacy ones)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        base = prefix + "parametrizations." + self.name
        for suffix, psuffix in _PARAM_SUFFIX.items():
            if base + psuffix in state_dict and prefix + self.name + suffix not in state_dict:
                state_dict[prefix + self.name + suffix] = state_dict.pop(base + psuffix)


def spectral_norm(module: T, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None, *, impl: str = "auto") -> T:
    """Apply spectral normalisation to ``module.<name>``: a drop-in for ``torch.nn.utils.spectral_norm``.

    Same semantics as torch's legacy hook (u/v initialisation draws, v-then-u iteration, one iteration per
    training forward, none in eval, sigma differentiable in W only) and state-dict layout (``<name>_orig``,
    ``<name>_u``, ``<name>_v``, metadata version 1); loads parametrizations-layout dicts too. The weight is
    computed by ganops' fused op; :func:`spectral_norm_group` batches all layers of a network into one call.

    Args:
        module: the module holding the parameter.
        name: parameter name.
        n_power_iterations: power iterations per training forward (>= 1).
        eps: normalisation epsilon.
        dim: the output dim; default 0, or 1 for ConvTranspose1d/2d/3d.
        impl: backend of the fused op ("auto" | "ref" | "cpu" | "cuda" | "triton").

    Returns:
        ``module`` with the hook registered.

    Gradients: first order w.r.t. the weight (any order w.r.t. the layer's input, e.g. R1/GP through D).
    """
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    SpectralNorm.apply(module, name, n_power_iterations, dim, eps, impl)
    return module


def sn_wrap(module: T, enabled: bool = True) -> T:
    """:func:`spectral_norm` (legacy torch semantics, methods.md §5.2) with the default settings when ``enabled``,
    else ``module`` unchanged (for models whose spectral norm is an option).

    Args:
        module: a Linear/Conv/Embedding layer.
        enabled: return ``module`` unchanged when False.

    Returns:
        The module, with a spectral-norm reparametrisation of its ``weight`` when ``enabled``.
    """
    return spectral_norm(module) if enabled else module


def remove_spectral_norm(module: T, name: str = "weight") -> T:
    """Remove the spectral norm (ours or torch's legacy one) from ``module``; ``<name>`` becomes W / sigma."""
    for k, hook in module._forward_pre_hooks.items():
        if isinstance(hook, _tsn.SpectralNorm) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[k]
            break
    else:
        raise ValueError(f"spectral_norm of '{name}' not found in {module}")
    for hooks in (module._state_dict_hooks, module._load_state_dict_pre_hooks):
        for k, hook in list(hooks.items()):
            h = getattr(hook, "hook", hook)
            if isinstance(h, (_tsn.SpectralNormStateDictHook, _tsn.SpectralNormLoadStateDictPreHook,
                              _ParametrizationsLoadHook)) and getattr(h, "fn", h).name == name:
                del hooks[k]
    return module


_LEGACY_RE = re.compile(r"^(?P<head>(?:.*\.)?)(?P<name>[^.]+)(?P<suffix>_orig|_u|_v)$")
_PARAM_RE = re.compile(r"^(?P<head>(?:.*\.)?)parametrizations\.(?P<name>[^.]+)(?P<suffix>\.original|\.0\._u|\.0\._v)$")


def _convert_keys(state_dict: dict, to_param: bool) -> dict:
    out = type(state_dict)()
    inverse = {v: k for k, v in _PARAM_SUFFIX.items()}
    for k, val in state_dict.items():
        m = (_LEGACY_RE if to_param else _PARAM_RE).match(k)
        if m and to_param and all(m["head"] + m["name"] + s in state_dict for s in _PARAM_SUFFIX):
            k = m["head"] + "parametrizations." + m["name"] + _PARAM_SUFFIX[m["suffix"]]
        elif m and not to_param:
            k = m["head"] + m["name"] + inverse[m["suffix"]]
        out[k] = val
    if hasattr(state_dict, "_metadata"):
        out._metadata = state_dict._metadata  # type: ignore[attr-defined]
    return out


def to_parametrizations_state_dict(state_dict: dict) -> dict:
    """Rename legacy keys (``x.weight_orig``, ``x.weight_u``, ``x.weight_v``) to the parametrizations layout."""
    return _convert_keys(state_dict, True)


def from_parametrizations_state_dict(state_dict: dict) -> dict:
    """Rename parametrizations keys (``x.parametrizations.weight.original``, ``.0._u``, ``.0._v``) to legacy."""
    return _convert_keys(state_dict, False)


def _sn_init(self: nn.Module, n_power_iterations: int, eps: float, dim: int | None, impl: str) -> None:
    spectral_norm(self, "weight", n_power_iterations, eps, dim, impl=impl)


class SNConv2d(nn.Conv2d):
    """``nn.Conv2d`` with spectral norm (legacy semantics); extra keyword args ``n_power_iterations``, ``eps``,
    ``dim`` (default 0), ``impl``. Shape: as ``nn.Conv2d``."""

    def __init__(self, *args, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None,
                 impl: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _sn_init(self, n_power_iterations, eps, dim, impl)


class SNConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with spectral norm over dim 1 by default (as torch). Shape: as the torch layer."""

    def __init__(self, *args, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None,
                 impl: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _sn_init(self, n_power_iterations, eps, dim, impl)


class SNLinear(nn.Linear):
    """``nn.Linear`` with spectral norm (legacy semantics). Shape: as ``nn.Linear``."""

    def __init__(self, *args, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None,
                 impl: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _sn_init(self, n_power_iterations, eps, dim, impl)


class SNEmbedding(nn.Embedding):
    """``nn.Embedding`` with spectral norm (legacy semantics, h = num_embeddings). Shape: as ``nn.Embedding``."""

    def __init__(self, *args, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None,
                 impl: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _sn_init(self, n_power_iterations, eps, dim, impl)


# ---------------------------------------------------------------------------------------------------------------
# Grouped updates: one fused call for every layer of a network.


@dataclass
class _Pending:
    """A layer's state during one root forward of its :class:`SpectralNormGroup`."""

    weight: torch.Tensor  # W / sigma for this forward
    u: torch.Tensor  # u and v after the power iteration, written into the buffers after the forward
    v: torch.Tensor
    n_iter: int  # power iterations of its bucket (0 in eval: nothing to write back)
    calls: int = 0  # times the layer ran in this forward (0: skipped, its buffers keep their values)


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
        self._pending: dict[int, _Pending] = {}  # id(fn) -> this root forward's state of that layer
        self._handles = [root.register_forward_pre_hook(self._pre),
                         root.register_forward_hook(self._post, always_call=True)]
        self.refresh()

    def refresh(self) -> None:
        """(Re)collect the ganops spectral-norm hooks under ``root``."""
        for _, fn in self.entries:
            fn.group = None
        self.entries = []
        for m in self.root.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm):
                    hook.group = self
                    self.entries.append((m, hook))

    def discard(self, fn: SpectralNorm) -> None:
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
                self._pending[id(fn)] = _Pending(o, u, v, n)
        self.active = True

    def weight_for(self, fn: SpectralNorm, module: nn.Module) -> torch.Tensor:
        """The normalised weight of ``fn``'s layer for this root forward."""
        p = self._pending.get(id(fn))
        if p is None:  # a layer added after the group was built
            return fn.compute_weight(module, do_power_iteration=module.training)
        p.calls += 1
        if p.calls > 1:  # shared layer called again: torch iterates again, starting from the updated u, v
            w = getattr(module, fn.name + "_orig")
            p.weight, _, p.u, p.v = spectral_norm_weight(w, p.u, p.v, dim=fn.dim, n_power_iterations=p.n_iter,
                                                         eps=fn.eps, impl=self.impl if fn.impl == "auto" else fn.impl)
        return p.weight

    def _post(self, root: nn.Module, inputs, output) -> None:
        if not self.active:
            return
        self.active = False
        dst_u, src_u, dst_v, src_v = [], [], [], []
        for m, fn in self.entries:
            p = self._pending.get(id(fn))
            if p is None or p.calls == 0 or p.n_iter == 0:
                continue
            dst_u.append(getattr(m, fn.name + "_u"))
            dst_v.append(getattr(m, fn.name + "_v"))
            src_u.append(p.u)
            src_v.append(p.v)
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
