# SPDX-License-Identifier: BSD-3-Clause
"""Pieces of the recipes' subcommands beyond ``train_options``: seed lists, per-seed latents, ``--run``/``--device``."""
from __future__ import annotations

from typing import Callable

import click
import torch
from click.core import ParameterSource

from .samples import fixed_noise

__all__ = ["parse_seeds", "SeedList", "SEEDS", "seed_latents", "run_option", "device_option", "seed_option",
           "replace_option", "given"]


def parse_seeds(spec: str) -> list[int]:
    """Seeds from a comma list of seeds and inclusive ranges: ``"0-3,42"`` -> ``[0, 1, 2, 3, 42]`` (order kept).

    Raises:
        ValueError: a part that is not ``N`` or ``A-B`` with ``0 <= A <= B``, or no seed at all.
    """
    out: list[int] = []
    for part in str(spec).split(","):
        a, dash, b = (x.strip() for x in part.partition("-"))
        if not a.isdigit() or (dash and not b.isdigit()):
            raise ValueError(f"{part.strip()!r} is not a seed N or a range A-B (e.g. 0-7,42)")
        if dash and int(b) < int(a):
            raise ValueError(f"range {part.strip()!r} is empty: write the smaller seed first")
        out += list(range(int(a), int(b) + 1)) if dash else [int(a)]
    return out


class SeedList(click.ParamType):
    """click type of a seed list (:func:`parse_seeds`); the command receives a ``list[int]``."""

    name = "seeds"

    def convert(self, value, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return parse_seeds(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


SEEDS = SeedList()


def seed_latents(seeds: list[int], nz: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(len(seeds), nz) latents, row i from seed ``seeds[i]`` alone (:func:`fixed_noise`): a seed gives the same
    image whatever else is asked with it."""
    return torch.cat([fixed_noise(1, nz, seed=s, device=device) for s in seeds])


def run_option(help: str = "run directory (or checkpoint file) of a training run") -> Callable:  # noqa: A002
    """The subcommands' required ``--run`` (a run directory or checkpoint file, read by ``load_run_checkpoint``)."""
    return click.option("--run", "run", required=True, help=help)


def device_option(default: str = "cpu") -> Callable:
    """The subcommands' ``--device`` (shown default ``cpu``)."""
    return click.option("--device", default=default, show_default=True)


def seed_option(help: str | None = None) -> Callable:  # noqa: A002
    """The subcommands' ``--seed``: one seed of the command's random draws (an int >= 0, shown default 0)."""
    return click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help=help)


def replace_option(name: str, option: click.Option) -> Callable:
    """Put ``option`` in place of the option called ``name`` that a decorator below it added (e.g. a shared
    ``train_options`` flag a recipe defines its own way), at the same place in ``--help``.

    Use above the decorator that adds ``name``; a missing ``name`` is a ``KeyError`` at import time.
    """
    def deco(fn: Callable) -> Callable:
        params = getattr(fn, "__click_params__", [])
        i = next((i for i, p in enumerate(params) if p.name == name), None)
        if i is None:
            raise KeyError(f"replace_option: no option {name!r} on {fn.__name__}")
        params[i] = option
        return fn
    return deco


def given(ctx: click.Context, name: str) -> bool:
    """Whether the option ``name`` (its parameter name) was given by the user, not left at its default: what a
    preset may override (explicit options win)."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
