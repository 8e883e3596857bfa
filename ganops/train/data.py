# SPDX-License-Identifier: BSD-3-Clause
"""Image datasets (folders or builtins), the validation pass, and a seed-reproducible, DDP-sharded sampler."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image

from ..data import (IMAGE_SUFFIXES, SINGLE_IMAGE, builtin_name, is_builtin, list_images, load_builtin,
                    pil_to_uint8, read_image, read_rgb, to_rgb, visible_files)
from .errors import DatasetError

__all__ = [
    "DatasetError", "FolderReport", "list_images", "check_image_folder", "ImageDataset", "open_dataset",
    "load_single_image", "InfiniteSampler", "InfiniteLoader", "RESIZE_MODES",
]


@dataclass
class FolderReport:
    """Result of :func:`check_image_folder`: usable files plus everything worth telling the user."""

    path: str
    resolution: int | None
    files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    too_small: list[tuple[Path, tuple[int, int]]] = field(default_factory=list)
    non_image: list[Path] = field(default_factory=list)
    converted: dict[str, int] = field(default_factory=dict)  # original mode -> count
    sizes: set[tuple[int, int]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flag: str = "--data"

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> "FolderReport":
        """Raise :class:`DatasetError` (one line: the flag and path, then every error); return self otherwise."""
        if self.errors:
            raise DatasetError(f"{self.flag} {self.path}: " + "; ".join(self.errors))
        return self


def _first(items: Sequence, n: int = 5, root: Path | None = None) -> str:
    def name(x) -> str:
        q = x[0] if isinstance(x, tuple) else x
        return str(q.relative_to(root)) if root is not None and isinstance(q, Path) and q.is_relative_to(root) \
            else str(q)

    shown = ", ".join(name(x) for x in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def _why(e: Exception, path: Path) -> str:
    """PIL's reason without the path it repeats (``cannot identify image file '/x/a.png'``)."""
    msg = str(e).replace(repr(str(path)), "").replace(str(path), "").strip(" :'\"")
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _resolution_advice(small: int, resolutions: Sequence[int] | None) -> str:
    """What to pass for images whose smallest side is ``small``: a lower --resolution the recipe accepts, or
    --allow-upscale."""
    if resolutions is None:
        return f"pass --resolution {_floor_pow2(small)} or lower, or --allow-upscale"
    fits = [r for r in resolutions if r <= small]
    if fits:
        return f"pass --resolution {max(fits)} or lower (this recipe takes {', '.join(map(str, resolutions))}), " \
               "or --allow-upscale"
    return f"this recipe's smallest --resolution is {min(resolutions)}: use larger images or pass --allow-upscale"


#: aspect ratio beyond which the centre crop keeps less than half of an image (a note, not an error)
WIDE = 2.0


def check_image_folder(path: str | os.PathLike, resolution: int | None = None, *, allow_upscale: bool = False,
                       skip_bad: bool = False, raise_on_error: bool = False, flag: str = "--data",
                       resolutions: Sequence[int] | None = None) -> FolderReport:
    """Validate an image folder before training: decode every image once.

    Errors (training would fail or silently degrade): missing path, a file instead of a folder, no images, no
    readable image, unreadable/corrupt files (unless ``skip_bad``; a float image with NaN/Inf values counts as
    unreadable), images smaller than ``resolution`` on their short side (unless ``allow_upscale``). Notes:
    greyscale/RGBA/palette/CMYK/16-bit images (converted to RGB, RGBA on white), mixed sizes, non-square and
    very elongated images (centre-cropped), non-image files ignored.

    Args:
        path: folder (searched recursively) or ``builtin:<name>`` (always valid).
        resolution: target training resolution, or None to skip the size check.
        allow_upscale: accept images smaller than the resolution (they are upscaled).
        skip_bad: drop unreadable files with a note instead of an error.
        raise_on_error: raise :class:`DatasetError` when there are errors.
        flag: the command-line flag that named ``path``, for the messages.
        resolutions: the resolutions the recipe accepts, for the advice on images that are too small.

    Returns:
        A :class:`FolderReport`; ``report.files`` are the usable images.
    """
    rep = FolderReport(path=str(path), resolution=resolution, flag=flag)
    if is_builtin(path):
        builtin_name(str(path), flag)  # validates the name
        return rep
    p = Path(path)
    if not p.exists():
        rep.errors.append(f"does not exist; check the path (or use a builtin such as {flag} builtin:emoji)")
    elif not p.is_dir():
        hint = f"; to train on this image's folder pass {flag} {p.parent}" if p.suffix.lower() in IMAGE_SUFFIXES \
            else ""
        rep.errors.append(f"is a file, not a directory: {flag} takes a folder of images "
                          f"({'/'.join(e[1:] for e in IMAGE_SUFFIXES)}){hint}")
    else:
        all_files = visible_files(p)
        candidates = [q for q in all_files if q.suffix.lower() in IMAGE_SUFFIXES]
        rep.non_image = [q for q in all_files if q.suffix.lower() not in IMAGE_SUFFIXES]
        if not candidates:
            rep.errors.append(f"no images found (searched recursively for {', '.join(IMAGE_SUFFIXES)}, any case)"
                              + (f"; {len(rep.non_image)} other files ignored" if rep.non_image else ""))
        wide: list[tuple[Path, tuple[int, int]]] = []
        for q in candidates:
            try:
                im = read_image(q)
                size, mode = im.size, im.mode
            except Exception as e:  # PIL raises many types for corrupt data
                rep.unreadable.append((q, _why(e, q)))
                continue
            if mode != "RGB":
                rep.converted[mode] = rep.converted.get(mode, 0) + 1
            rep.sizes.add(size)
            if resolution is not None and min(size) < resolution:
                rep.too_small.append((q, size))
            if max(size) > WIDE * min(size):
                wide.append((q, size))
            rep.files.append(q)
        bad = "; ".join(f"{q.relative_to(p)} ({why})" for q, why in rep.unreadable[:3]) \
            + (f" (and {len(rep.unreadable) - 3} more)" if len(rep.unreadable) > 3 else "")
        if rep.unreadable and not rep.files:
            rep.errors.append(f"none of its {len(rep.unreadable)} image file(s) can be read: {bad}; replace them "
                              "with images PIL can open")
        elif rep.unreadable:
            msg = f"{len(rep.unreadable)} unreadable image(s): {bad}"
            if skip_bad:
                rep.notes.append(msg + " -- skipped (--skip-bad)")
            else:
                rep.errors.append(msg + "; delete or fix them, or pass --skip-bad to train on the readable ones")
        if rep.too_small:
            small = min(min(s) for _, s in rep.too_small)
            msg = (f"{len(rep.too_small)} image(s) smaller than --resolution {resolution}: "
                   f"{_first(rep.too_small, root=p)} (smallest side {small})")
            if allow_upscale:
                rep.notes.append(msg + " -- upscaled (--allow-upscale)")
            else:
                rep.errors.append(msg + "; " + _resolution_advice(small, resolutions))
        if rep.converted:
            kinds = ", ".join(f"{n} {m}" for m, n in sorted(rep.converted.items()))
            rep.notes.append(f"{kinds} image(s) converted to RGB (RGBA/transparent palette composited on white, "
                             "16-bit scaled to 8)")
        non_square = sum(1 for w, h in rep.sizes if w != h)
        if non_square:
            rep.notes.append("non-square images are center-cropped to square before resizing")
        if wide:
            rep.notes.append(f"{len(wide)} image(s) more than {WIDE:g}:1 keep less than half their area in the "
                             f"center crop: {_first(wide, 3, root=p)}")
        if len(rep.sizes) > 1:
            rep.notes.append(f"mixed image sizes ({len(rep.sizes)} distinct); all are center-cropped to square "
                             "and resized")
        if rep.non_image:
            rep.notes.append(f"{len(rep.non_image)} non-image file(s) ignored: {_first(rep.non_image, 3, root=p)}")
    if raise_on_error:
        rep.raise_if_errors()
    return rep


def _floor_pow2(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


#: how :class:`ImageDataset` makes an image square: "square" (centre crop, Lanczos resize; the default) or
#: "stretch" (the whole image resized to R x R, aspect ratio not kept, PIL bilinear: FastGAN's reference loader)
RESIZE_MODES = ("square", "stretch")


def _resize(im: Image.Image, resolution: int | None, mode: str) -> Image.Image:
    if resolution is None:
        return im
    w, h = im.size
    if mode == "square":
        s = min(w, h)
        if w != h:
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
        if s != resolution:
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        return im
    if mode == "stretch":  # FastGAN reference: torchvision Resize((R, R)) on a PIL image (bilinear, no crop)
        return im if (w, h) == (resolution, resolution) else im.resize((resolution, resolution),
                                                                        Image.Resampling.BILINEAR)
    if mode == "max-side":  # longest side = resolution, aspect kept (single-image GANs)
        scale = resolution / max(w, h)
        if scale != 1.0:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        return im
    raise ValueError(f"resize mode must be one of {RESIZE_MODES + ('max-side',)}, got {mode!r}")


class ImageDataset(torch.utils.data.Dataset):
    """Images from paths or PIL images, as float tensors (3, R, R) in [-1, 1].

    With ``hflip=True`` the dataset doubles: index ``i + len(images)`` is image ``i`` mirrored (StyleGAN's
    ``--mirror``), so flips are decided by the sampler and are reproducible from the seed.

    Args:
        items: image file paths or RGB PIL images.
        resolution: output side (center crop to square, then Lanczos resize); None keeps the size.
        hflip: add horizontally flipped copies.
        attribution: licence text that must travel with the data (written to the run dir as ATTRIBUTION.txt).
        resize: "square" (center crop, Lanczos) or "stretch" (whole image to R x R, bilinear), see
            :data:`RESIZE_MODES`; :meth:`set_resize` changes it later.
    """

    def __init__(self, items: Sequence[str | os.PathLike | Image.Image], resolution: int | None, *,
                 hflip: bool = False, attribution: str | None = None, name: str = "", resize: str = "square") -> None:
        if len(items) == 0:
            raise DatasetError(f"dataset {name!r} has no images")
        if resize not in RESIZE_MODES:
            raise ValueError(f"ImageDataset: resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.items = list(items)
        self.resolution = resolution
        self.hflip = hflip
        self.resize = resize
        self.attribution = attribution
        self.name = name
        self._cache: torch.Tensor | None = None

    def preload(self, max_bytes: int = 512 << 20) -> bool:
        """Decode and resize every image once into one uint8 tensor (shared copy-on-write with DataLoader
        workers), if it fits in ``max_bytes``; later items are bitwise the same as without. Returns True if
        cached. The TrainLoop calls it before the first batch."""
        if self._cache is not None:
            return True
        n, r = len(self.items), self.resolution
        if r is None or n * 3 * r * r > max_bytes:
            return False
        self._cache = torch.stack([self._decode(i) for i in range(n)])
        return True

    def set_resize(self, mode: str) -> None:
        """Switch the resize mode (:data:`RESIZE_MODES`); a preloaded cache is rebuilt in the new mode."""
        if mode not in RESIZE_MODES:
            raise ValueError(f"ImageDataset: resize must be one of {RESIZE_MODES}, got {mode!r}")
        if mode != self.resize:
            self.resize, cached = mode, self._cache is not None
            self._cache = None
            if cached:
                self.preload()

    def _decode(self, i: int) -> torch.Tensor:
        item = self.items[i]
        im = read_rgb(item, lambda e: DatasetError(f"cannot read image {item} ({_why(e, Path(item))}); fix or remove "
                                                   "it (a file changed after the data check?), or pass --skip-bad"))
        return pil_to_uint8(_resize(im, self.resolution, self.resize))

    def __len__(self) -> int:
        return len(self.items) * (2 if self.hflip else 1)

    def load(self, i: int) -> torch.Tensor:
        """Item ``i`` as float (3, R, R) in [-1, 1] (mirrored for ``i >= len(items)`` with hflip)."""
        n = len(self.items)
        u8 = self._cache[i % n] if self._cache is not None else self._decode(i % n)
        x = u8.float().div_(127.5).sub_(1.0)
        return x.flip(-1) if i >= n else x

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(int(i))


def open_dataset(spec: str | os.PathLike, resolution: int | None, *, hflip: bool = False,
                 allow_upscale: bool = False, skip_bad: bool = False, verbose: bool = True, flag: str = "--data",
                 resolutions: Sequence[int] | None = None, resize: str = "square") -> ImageDataset:
    """Validate and open ``--data``: a folder or ``builtin:<name>``.

    ``flag`` names the option in messages; ``resolutions`` (the recipe's accepted sizes) shapes the advice for
    images that are too small (see :func:`check_image_folder`); ``resize`` see :class:`ImageDataset`.

    Raises:
        DatasetError: with every problem found by :func:`check_image_folder` and the flag that fixes it.
        DataError: an unknown ``builtin:<name>`` (``ganops.data``'s error; recipes show it as a DatasetError).
    """
    if is_builtin(spec):
        data = load_builtin(builtin_name(spec, flag))
        if verbose and data.attribution:
            print(f"[ganops.train] builtin:{data.name}: {data.attribution}")
        small = min(min(im.size) for im in data.images)
        if verbose and resolution is not None and small < resolution:
            print(f"[ganops.train] note: builtin:{data.name} images are {small} px, upscaled to {resolution}")
        return ImageDataset(data.images, resolution, hflip=hflip, attribution=data.attribution,
                            name=f"builtin:{data.name}", resize=resize)
    rep = check_image_folder(spec, resolution, allow_upscale=allow_upscale, skip_bad=skip_bad,
                             raise_on_error=True, flag=flag, resolutions=resolutions)
    if verbose:
        for note in rep.notes:
            print(f"[ganops.train] note: {note}")
    return ImageDataset(rep.files, resolution, hflip=hflip, name=str(spec), resize=resize)


def load_single_image(spec: str | os.PathLike, max_size: int | None = None, *,
                      flag: str = "--data") -> tuple[torch.Tensor, str | None]:
    """One image for single-image GANs (ConSinGAN): a file path or ``builtin:china|flower|rocket``.

    A folder holding exactly one image stands for that image. Errors are :class:`DatasetError` s naming ``flag``
    (an unknown builtin: ``ganops.data.DataError``, which recipes show the same way).

    Returns:
        (image (1, 3, H, W) in [-1, 1] with the longest side resized to ``max_size``, attribution or None).
    """
    if is_builtin(spec):
        data = load_builtin(builtin_name(spec, flag))
        if data.name not in SINGLE_IMAGE:
            warnings.warn(f"builtin:{data.name} is a multi-image set; using its first image", stacklevel=2)
        im, attribution = data.images[0], data.attribution
    else:
        p = Path(spec)
        if p.is_dir():
            files = list_images(p)
            if len(files) != 1:
                raise DatasetError(f"{flag} {p}: a folder; a single-image GAN needs one image file, found "
                                   f"{len(files)} images in it; pass the file path")
            p = files[0]
        try:
            im = read_image(p)
        except FileNotFoundError:
            raise DatasetError(f"{flag} {p}: no such file") from None
        except Exception as e:
            raise DatasetError(f"{flag} {p}: cannot read image ({_why(e, p)}); pass a jpg/png/webp/bmp image") \
                from e
        attribution = None
    im, _ = to_rgb(im)
    return pil_to_uint8(_resize(im, max_size, "max-side")).float().div_(127.5).sub_(1.0)[None], attribution


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless, seed-reproducible index stream sharded over DDP ranks, resumable at any position.

    The global stream is the concatenation of ``torch.randperm(n)`` for epoch 0, 1, 2, ... (generator seeded with
    ``seed + epoch``); rank ``r`` of ``W`` takes global positions ``r, r + W, r + 2W, ...``. So a batch of
    ``B`` per rank on ``W`` ranks consumes exactly the same images as a batch of ``B*W`` on one rank, and position
    ``p`` (samples consumed by this rank) fully determines the continuation.

    Args:
        n: dataset length.
        seed: base seed (shared by all ranks).
        rank, world_size: this process's shard.
        shuffle: False gives 0, 1, ..., n-1 repeated.
        start: position to start from (see :meth:`state_dict`).
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 start: int = 0) -> None:
        if n <= 0:
            raise ValueError(f"InfiniteSampler: n must be positive, got {n}")
        if not 0 <= rank < world_size:
            raise ValueError(f"InfiniteSampler: rank {rank} not in [0, {world_size})")
        self.n, self.seed, self.rank, self.world_size, self.shuffle = n, seed, rank, world_size, shuffle
        self.position = start
        self._perm_epoch, self._perm = -1, None

    def _perm_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + epoch)
                self._perm = torch.randperm(self.n, generator=g)
            else:
                self._perm = torch.arange(self.n)
            self._perm_epoch = epoch
        return self._perm

    def index_at(self, position: int) -> int:
        """Dataset index this rank draws at ``position``."""
        g = self.rank + position * self.world_size
        return int(self._perm_for(g // self.n)[g % self.n])

    def __iter__(self) -> Iterator[int]:
        while True:
            i = self.index_at(self.position)
            self.position += 1
            yield i

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "n": self.n, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


class InfiniteLoader:
    """Endless batches (B, 3, R, R) of one rank, exactly resumable: the state is the number of samples consumed.

    A ``DataLoader`` prefetches ahead of what training consumed, so the position is counted here, on consumption,
    and a resume rebuilds the DataLoader from that position.

    Args:
        dataset: map-style dataset.
        batch_size: per-rank batch.
        seed, rank, world_size, shuffle: see :class:`InfiniteSampler`.
        num_workers: DataLoader workers (0 = load in this process).
        device: move batches there (non_blocking with pinned memory on CUDA).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, num_workers: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.num_workers, self.device = num_workers, torch.device(device)
        self.consumed = 0
        self._it = None

    def _build(self) -> None:
        sampler = InfiniteSampler(len(self.dataset), seed=self.seed, rank=self.rank, world_size=self.world_size,
                                  shuffle=self.shuffle, start=self.consumed)
        dl = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler,
                                         num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                         persistent_workers=self.num_workers > 0, drop_last=True,
                                         generator=torch.Generator().manual_seed(self.seed + self.consumed))
        # An own generator: creating the iterator must not draw from the global RNG (exact resume).
        self._it = iter(dl)

    def __iter__(self) -> "InfiniteLoader":
        return self

    def __next__(self) -> torch.Tensor:
        if self._it is None:
            self._build()
        x = next(self._it)
        self.consumed += self.batch_size
        return x.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
        self._it = None
