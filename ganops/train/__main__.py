# SPDX-License-Identifier: BSD-3-Clause
"""``python -m ganops.train check-data PATH --resolution R``: validate a dataset before training."""
from __future__ import annotations

import sys

import click

from ..data import BUILTINS, load_builtin
from .data import check_image_folder, is_builtin
from .errors import RecipeGroup

__all__ = ["main"]


@click.group(cls=RecipeGroup)
def main() -> None:
    """ganops training toolkit utilities."""


@main.command("check-data")
@click.argument("path")
@click.option("--resolution", type=click.IntRange(min=1), default=None, help="target training resolution")
@click.option("--allow-upscale", is_flag=True, help="accept images smaller than --resolution")
@click.option("--skip-bad", is_flag=True, help="accept (and skip) unreadable files")
def check_data(path: str, resolution: int | None, allow_upscale: bool, skip_bad: bool) -> None:
    """Decode every image under PATH (or a builtin:NAME) and report problems with the flag that fixes them."""
    if is_builtin(path):
        check_image_folder(path)  # an unknown name: DataError, one Error: line (RecipeGroup)
        data = load_builtin(path)
        click.echo(f"{path}: {len(data.images)} image(s), licence {data.license}")
        if data.attribution:
            click.echo(f"attribution: {data.attribution}")
        return
    rep = check_image_folder(path, resolution, allow_upscale=allow_upscale, skip_bad=skip_bad)
    click.echo(f"{path}: {len(rep.files)} usable image(s), sizes: {sorted(rep.sizes)[:5]}"
               + (" ..." if len(rep.sizes) > 5 else ""))
    for n in rep.notes:
        click.echo(f"note: {n}")
    for e in rep.errors:
        click.echo(f"error: {path}: {e}", err=True)
    sys.exit(1 if rep.errors else 0)


@main.command("builtins")
def builtins() -> None:
    """List the embedded datasets."""
    for name, (desc, lic) in BUILTINS.items():
        click.echo(f"builtin:{name:8s} {desc} [{lic}]")


if __name__ == "__main__":
    main()
