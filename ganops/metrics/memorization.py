# SPDX-License-Identifier: BSD-3-Clause
"""Memorisation check of the FastGAN appendix: nearest training image of each generated image by LPIPS."""
from __future__ import annotations

import torch

from ._images import open_images
from .lpips import LPIPS, normalize_tensor

__all__ = ["pairwise_lpips", "nearest_training_images", "memorization_check"]


def _embed(net: LPIPS, x: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, unit-normalised features scaled by sqrt(head weight) / sqrt(H W), flattened: (N, C H W).

    Then ``LPIPS(a, b) = sum_layers |E_a - E_b|^2`` exactly (the heads are non-negative).
    """
    w = net.lins[0].weight
    shift = torch.tensor((-0.030, -0.088, -0.188), dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
    scale = torch.tensor((0.458, 0.448, 0.450), dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
    feats = net.taps_forward((x.to(w.dtype) - shift) / scale)
    out = []
    for f, lin in zip(feats, net.lins):
        g = lin.weight.view(1, -1, 1, 1).clamp_min(0).sqrt() if net.lpips else 1.0
        e = normalize_tensor(f) * g / (f.shape[2] * f.shape[3]) ** 0.5
        out.append(e.flatten(1))
    return out


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2 * a @ b.T).clamp_min(0)


@torch.no_grad()
def pairwise_lpips(a: torch.Tensor, b: torch.Tensor, net: LPIPS | None = None, block: int = 16) -> torch.Tensor:
    """All-pairs LPIPS ``D[i, j] = LPIPS(a[i], b[j])`` from one forward pass per image (Gram-matrix form).

    Args:
        a, b: images (M, 3, H, W), (N, 3, H, W) in [-1, 1], same H, W.
        net: an :class:`LPIPS` (VGG by default, built once per call otherwise).
        block: images per forward pass.

    Returns:
        (M, N) distances, equal to calling the LPIPS module on each pair up to rounding.
    """
    net = net if net is not None else LPIPS("vgg")
    ea = [torch.cat(t) for t in zip(*[_embed(net, a[s:s + block]) for s in range(0, a.shape[0], block)])]
    out = torch.zeros(a.shape[0], b.shape[0], dtype=ea[0].dtype, device=ea[0].device)
    for s in range(0, b.shape[0], block):
        for fa, fb in zip(ea, _embed(net, b[s:s + block].to(ea[0].device))):
            out[:, s:s + block] += _sqdist(fa, fb)
    return out


def _load(src, n: int | None, size: int) -> torch.Tensor:
    s = open_images(src)
    n = len(s) if n is None else min(n, len(s))
    return torch.stack([s.get(i, size) for i in range(n)]).float() / 127.5 - 1


@torch.no_grad()
def nearest_training_images(fakes, reals, *, k: int = 1, net: str = "vgg", resolution: int | None = None,
                            num_fakes: int | None = None, device="cpu", block: int = 16,
                            lpips_net: LPIPS | None = None) -> dict:
    """For every generated image, the ``k`` nearest training images by LPIPS.

    Args:
        fakes, reals: image sets (folder, ``builtin:<name>``, tensor in [-1, 1] or uint8).
        k: neighbours per generated image.
        net: LPIPS trunk, "vgg" (FastGAN) or "alex".
        resolution: common side (default: the generated images' height).
        lpips_net: an already built :class:`LPIPS` to use (overrides ``net``).

    Returns:
        dict with ``distances`` (M, k), ``indices`` (M, k) into the training set, the resized ``fakes``
        (M, 3, R, R) and ``reals`` (N, 3, R, R) in [-1, 1], and the LPIPS module used (``net``).
    """
    fs = open_images(fakes)
    size = resolution or int(fs.get(0).shape[1])
    f = _load(fs, num_fakes, size).to(device)
    r = _load(reals, None, size).to(device)
    lp = lpips_net if lpips_net is not None else LPIPS(net).to(device)
    d = pairwise_lpips(f, r, lp, block)
    k = min(k, r.shape[0])
    dist, idx = d.topk(k, dim=1, largest=False)
    return {"distances": dist.cpu(), "indices": idx.cpu(), "fakes": f.cpu(), "reals": r.cpu(), "net": lp}


def memorization_check(fakes, reals, *, grid_path: str | None = None, num_show: int = 8, k: int = 3,
                       threshold: float | None = None, **kwargs) -> dict:
    """The FastGAN-appendix check: LPIPS to the nearest training image, summary statistics and a grid.

    A generator that memorises its (few-shot) training set produces images with near-zero LPIPS to some
    training image; compare the nearest-neighbour distances with the typical distance between training images.

    Args:
        grid_path: write a PNG grid, one row per generated image: the image, then its ``k`` nearest reals
            (closest first), for the ``num_show`` most-memorised (smallest distance) images.
        threshold: also report the fraction of generated images whose nearest distance is below it.
        **kwargs: forwarded to :func:`nearest_training_images`.

    Returns:
        dict: ``nn_lpips_mean``, ``nn_lpips_min``, ``nn_lpips_median``, ``train_nn_lpips_median`` (nearest
        distance between distinct training images: the scale to compare with), per-image ``nn_lpips`` and
        ``nn_index`` lists, ``frac_below`` when ``threshold`` is given, ``grid`` path when written.
    """
    res = nearest_training_images(fakes, reals, k=k, **kwargs)
    d1 = res["distances"][:, 0]
    reals_t = res["reals"]
    report: dict = {"nn_lpips_mean": float(d1.mean()), "nn_lpips_min": float(d1.min()),
                    "nn_lpips_median": float(d1.median()), "nn_lpips": d1.tolist(),
                    "nn_index": res["indices"][:, 0].tolist()}
    if reals_t.shape[0] > 1:
        lp = res["net"]
        rr = pairwise_lpips(reals_t.to(lp.lins[0].weight.device), reals_t, lp).cpu()
        rr.fill_diagonal_(float("inf"))
        report["train_nn_lpips_median"] = float(rr.min(1).values.median())
    if threshold is not None:
        report["frac_below"] = float((d1 < threshold).double().mean())
    if grid_path:
        from torchvision.utils import save_image

        order = d1.argsort()[:num_show]
        rows = [torch.cat([res["fakes"][i:i + 1], reals_t[res["indices"][i]]]) for i in order.tolist()]
        save_image(torch.cat(rows), grid_path, nrow=1 + res["indices"].shape[1], normalize=True,
                   value_range=(-1, 1), padding=2)
        report["grid"] = grid_path
    return report
