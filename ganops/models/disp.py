# SPDX-License-Identifier: BSD-3-Clause
"""DISP (Mangla et al. 2022): SNGAN/BigGAN-style ResNet G and projection D conditioned on data-instance priors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.condbn import CondBatchNorm2d
from ..nn.spectral_norm import sn_wrap

__all__ = ["ARCH", "DispGenerator", "DispDiscriminator", "GBlock", "DBlock"]

# Channel multipliers (of `ch`) per resolution, BigGAN's tables (which extend SNGAN's ResNets to 64/128).
# G: the linear layer maps to g_in[0]*ch x 4 x 4, then one up-block per entry: g_in[i] -> g_out[i].
# D: one down-block per entry d_in[i] -> d_out[i] (input 3 channels), downsampling where d_down[i].
ARCH: dict[int, dict[str, list]] = {
    32: dict(g_in=[4, 4, 4], g_out=[4, 4, 4], d_in=[0, 4, 4, 4], d_out=[4, 4, 4, 4],
             d_down=[True, True, False, False]),
    64: dict(g_in=[16, 16, 8, 4], g_out=[16, 8, 4, 2], d_in=[0, 1, 2, 4, 8], d_out=[1, 2, 4, 8, 16],
             d_down=[True, True, True, True, False]),
    128: dict(g_in=[16, 16, 8, 4, 2], g_out=[16, 8, 4, 2, 1], d_in=[0, 1, 2, 4, 8, 16], d_out=[1, 2, 4, 8, 16, 16],
              d_down=[True, True, True, True, True, False]),
}


def _init(m: nn.Module) -> nn.Module:
    """BigGAN's orthogonal init (applied before the spectral-norm wrap)."""
    nn.init.orthogonal_(m.weight)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)
    return m


def _conv(cin: int, cout: int, k: int, sn: bool) -> nn.Module:
    return sn_wrap(_init(nn.Conv2d(cin, cout, k, 1, k // 2)), sn)


def _linear(cin: int, cout: int, sn: bool, bias: bool = True) -> nn.Module:
    return sn_wrap(_init(nn.Linear(cin, cout, bias=bias)), sn)


def _arch(resolution: int) -> dict[str, list]:
    if resolution not in ARCH:
        raise ValueError(f"resolution must be one of {sorted(ARCH)}, got {resolution}")
    return ARCH[resolution]


class _InstanceCondition(nn.Module):
    """The condition input: a prior vector ``c`` or, for the fair baseline, a learnable row per training image."""

    def __init__(self, prior_dim: int, n_instances: int | None) -> None:
        super().__init__()
        self.prior_dim = prior_dim
        self.instance_embed = None
        if n_instances is not None:
            if n_instances <= 0:
                raise ValueError(f"n_instances must be > 0 for the baseline, got {n_instances}")
            self.instance_embed = nn.Embedding(n_instances, prior_dim)
            nn.init.normal_(self.instance_embed.weight, std=1.0)

    def forward(self, c: torch.Tensor | None, idx: torch.Tensor | None, n: int) -> torch.Tensor:
        if self.instance_embed is not None:
            if c is not None:  # baseline sampling from mixed embeddings (vicinal/GMM) passes vectors directly
                pass
            elif idx is None:
                raise ValueError("baseline model (n_instances set): pass idx (training-image indices) or c")
            else:
                c = self.instance_embed(idx)
        if c is None:
            raise ValueError("pass the instance prior c (N, prior_dim)")
        if c.dim() not in (2, 3) or c.shape[0] != n or c.shape[-1] != self.prior_dim:
            raise ValueError(f"c must be ({n}, {self.prior_dim}) (or ({n}, blocks, {self.prior_dim}) per block "
                             f"for G), got {tuple(c.shape)}")
        return c


class GBlock(nn.Module):
    """Up-sampling residual block with conditional BN: h = conv(relu(cbn(up(conv(relu(cbn(x))))))) + up(conv1x1(x))."""

    def __init__(self, cin: int, cout: int, cond_dim: int, *, sn: bool = True) -> None:
        super().__init__()
        self.bn1 = CondBatchNorm2d(cin, cond_dim)
        self.conv1 = _conv(cin, cout, 3, sn)
        self.bn2 = CondBatchNorm2d(cout, cond_dim)
        self.conv2 = _conv(cout, cout, 3, sn)
        self.skip = _conv(cin, cout, 1, sn)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Down-sampling residual block (BigGAN D): pre-activation except for the first block."""

    def __init__(self, cin: int, cout: int, *, downsample: bool, preactivation: bool, sn: bool = True) -> None:
        super().__init__()
        self.downsample, self.preactivation = downsample, preactivation
        self.conv1 = _conv(cin, cout, 3, sn)
        self.conv2 = _conv(cout, cout, 3, sn)
        self.skip = _conv(cin, cout, 1, sn) if (cin != cout or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            if self.preactivation:  # conv then pool
                s = self.skip(s)
                s = F.avg_pool2d(s, 2) if self.downsample else s
            else:  # pool then conv (first block, on raw pixels)
                s = F.avg_pool2d(s, 2) if self.downsample else s
                s = self.skip(s)
        return h + s


class DispGenerator(nn.Module):
    """ResNet generator conditioned on an instance prior through conditional BatchNorm.

    Each block's CondBatchNorm2d reads ``W_G c`` (the paper's SNGAN conditioning: ``W_G`` a learnable linear
    projection of the prior); with ``hierarchical=True`` it reads ``cat(W_G c, z_b)``, ``z_b`` the block's chunk of
    the latent (BigGAN's hierarchical latent; the first chunk feeds the input linear layer); with ``cbn_z=True``
    (not hierarchical) ``cat(W_G c, z)``, the whole latent (this package's conditioning before it followed the
    paper; runs written then load with it).

    Args:
        resolution: output size, 32, 64 or 128.
        prior_dim: size of the instance prior C(x) (512 for pooled VGG16 conv5_3, 1280 for EfficientNet-Lite0).
        z_dim: latent size (a multiple of blocks + 1 when hierarchical).
        ch: width multiplier (64 as SNGAN/BigGAN at 128²).
        embed_dim: size of ``W_G c``.
        hierarchical: BigGAN-style hierarchical latent.
        n_instances: when set, the fair baseline: a learnable embedding per training image replaces the prior
            (pass ``idx`` instead of ``c``).
        spectral_norm: SN on every conv/linear of G (DISP trains SN in G and D).
        cbn_z: without ``hierarchical``, also feed the whole latent to every CBN (``cat(W_G c, z)``).

    Shape:
        z (N, z_dim), c (N, prior_dim) or idx (N,) -> images (N, 3, resolution, resolution) in [-1, 1].
        ``c`` may also be (N, blocks, prior_dim): one prior per G block (the paper's inversion optimises these).
        Differentiable to any order (plain PyTorch).
    """

    def __init__(self, resolution: int = 64, prior_dim: int = 512, *, z_dim: int = 120, ch: int = 64,
                 embed_dim: int = 128, hierarchical: bool = False, n_instances: int | None = None,
                 spectral_norm: bool = True, cbn_z: bool = False) -> None:
        super().__init__()
        arch = _arch(resolution)
        nb = len(arch["g_in"])
        if hierarchical and cbn_z:
            raise ValueError("cbn_z and hierarchical exclude each other (hierarchical feeds each CBN its own chunk)")
        if hierarchical and z_dim % (nb + 1):
            raise ValueError(f"hierarchical latent: z_dim ({z_dim}) must be a multiple of blocks+1 ({nb + 1}) "
                             f"at resolution {resolution}")
        self.resolution, self.prior_dim, self.z_dim, self.ch = resolution, prior_dim, z_dim, ch
        self.hierarchical, self.cbn_z = hierarchical, cbn_z
        self.z_chunk = z_dim // (nb + 1) if hierarchical else z_dim
        self.condition = _InstanceCondition(prior_dim, n_instances)
        self.W_G = _linear(prior_dim, embed_dim, sn=False)
        cond_dim = embed_dim + (self.z_chunk if hierarchical or cbn_z else 0)
        self.c0 = arch["g_in"][0] * ch
        self.linear = _linear(self.z_chunk, self.c0 * 16, spectral_norm)
        self.blocks = nn.ModuleList(GBlock(i * ch, o * ch, cond_dim, sn=spectral_norm)
                                    for i, o in zip(arch["g_in"], arch["g_out"]))
        cl = arch["g_out"][-1] * ch
        self.out_bn = nn.BatchNorm2d(cl)
        self.out_conv = _conv(cl, 3, 3, spectral_norm)

    @property
    def baseline(self) -> bool:
        return self.condition.instance_embed is not None

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, idx: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Generate images from latents ``z`` and instance priors ``c`` (or baseline indices ``idx``)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (N, {self.z_dim}), got {tuple(z.shape)}")
        c = self.condition(c, idx, z.shape[0])
        nb = len(self.blocks)
        if c.dim() == 3 and c.shape[1] != nb:
            raise ValueError(f"per-block priors must be (N, {nb}, {self.prior_dim}), got {tuple(c.shape)}")
        e = self.W_G(c.to(z.dtype))  # (N, E), or (N, blocks, E) for per-block priors (inversion)
        es = list(e.unbind(1)) if e.dim() == 3 else [e] * nb
        if self.hierarchical:
            zs = torch.split(z, self.z_chunk, dim=1)
            z0, conds = zs[0], [torch.cat([eb, zb], 1) for eb, zb in zip(es, zs[1:])]
        elif self.cbn_z:
            z0, conds = z, [torch.cat([eb, z], 1) for eb in es]
        else:
            z0, conds = z, es
        h = self.linear(z0).view(z.shape[0], self.c0, 4, 4)
        for blk, cond in zip(self.blocks, conds):
            h = blk(h, cond)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class DispDiscriminator(nn.Module):
    """ResNet projection discriminator: ``D(x, c) = d(φ(x)) + <W_D c, φ(x)>``.

    ``φ(x)`` is the spatial sum of the last ReLU'd feature map (SNGAN/BigGAN), ``d`` a linear layer and ``W_D`` a
    learnable linear map from the prior to φ's dimension (Miyato & Koyama's projection head). All layers carry
    spectral norm.

    Args:
        resolution: input size, 32, 64 or 128.
        prior_dim: size of the instance prior.
        ch: width multiplier.
        n_instances: fair baseline: a learnable embedding per training image replaces the prior (pass ``idx``).
        spectral_norm: SN on every layer.

    Shape:
        x (N, 3, resolution, resolution), c (N, prior_dim) or idx (N,) -> logits (N,).
        Differentiable to any order (plain PyTorch), so R1/GP penalties work.
    """

    def __init__(self, resolution: int = 64, prior_dim: int = 512, *, ch: int = 64,
                 n_instances: int | None = None, spectral_norm: bool = True) -> None:
        super().__init__()
        arch = _arch(resolution)
        self.resolution, self.prior_dim = resolution, prior_dim
        self.condition = _InstanceCondition(prior_dim, n_instances)
        ins = [3] + [i * ch for i in arch["d_in"][1:]]
        outs = [o * ch for o in arch["d_out"]]
        self.blocks = nn.Sequential(*(DBlock(i, o, downsample=d, preactivation=k > 0, sn=spectral_norm)
                                      for k, (i, o, d) in enumerate(zip(ins, outs, arch["d_down"]))))
        self.feat_dim = outs[-1]
        self.d = _linear(self.feat_dim, 1, spectral_norm)
        self.W_D = _linear(prior_dim, self.feat_dim, spectral_norm, bias=False)

    @property
    def baseline(self) -> bool:
        return self.condition.instance_embed is not None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): the spatially summed last feature map, (N, feat_dim)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (N, 3, H, W), got {tuple(x.shape)}")
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, idx: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits ``d(φ(x)) + <W_D c, φ(x)>`` for images ``x`` paired with priors ``c`` (or baseline ``idx``)."""
        phi = self.features(x)
        c = self.condition(c, idx, x.shape[0])
        proj = (self.W_D(c.to(phi.dtype)) * phi).sum(dim=1)
        return self.d(phi).squeeze(1) + proj
