# SPDX-License-Identifier: BSD-3-Clause
"""ganops.train.commands (seed lists, per-seed latents, option replacement), append_jsonl, FastGAN's style grid."""
from __future__ import annotations

import json
import warnings

import click
import pytest
import torch
from click.testing import CliRunner

from ganops.train import fixed_noise
from ganops.train.commands import SEEDS, given, parse_seeds, replace_option, run_option, seed_latents, seed_option
from ganops.train.progress import append_jsonl


@pytest.mark.parametrize("spec, seeds", [("0-3,42", [0, 1, 2, 3, 42]), ("7", [7]), ("5, 2-3", [5, 2, 3]),
                                         ("4-4", [4]), (" 0 - 2 ", [0, 1, 2])])
def test_parse_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec, needle", [("x", "'x' is not a seed"), ("3-1", "range '3-1' is empty"),
                                          ("-1", "'-1' is not a seed"), ("0,,1", "'' is not a seed"),
                                          ("1-", "'1-' is not a seed"), ("1.5", "'1.5' is not a seed")])
def test_parse_seeds_refuses(spec, needle):
    with pytest.raises(ValueError, match=needle):
        parse_seeds(spec)


def test_seed_list_option_and_replace_option():
    @click.command()
    @replace_option("seeds", click.Option(["--seeds"], type=SEEDS, default="0-2", show_default=True))
    @click.option("--seeds", default="unused")
    @run_option()
    def cmd(seeds, run):
        click.echo(json.dumps({"seeds": seeds, "run": run}))

    ok = CliRunner().invoke(cmd, ["--run", "R"])
    assert ok.exit_code == 0 and json.loads(ok.output) == {"seeds": [0, 1, 2], "run": "R"}
    assert json.loads(CliRunner().invoke(cmd, ["--run", "R", "--seeds", "9,1-2"]).output)["seeds"] == [9, 1, 2]
    bad = CliRunner().invoke(cmd, ["--run", "R", "--seeds", "2-1"])
    assert bad.exit_code == 2 and "Invalid value for '--seeds': range '2-1' is empty" in bad.output
    assert "[default: 0-2]" in CliRunner().invoke(cmd, ["--help"]).output
    assert "Missing option '--run'" in CliRunner().invoke(cmd, []).output
    with pytest.raises(KeyError, match="no option 'nope'"):
        replace_option("nope", click.Option(["--nope"]))(cmd.callback)


def test_seed_option_and_given():
    @click.command()
    @seed_option("seed of the draws")
    @click.option("--n", default=1)
    @click.pass_context
    def cmd(ctx: click.Context, seed: int, n: int) -> None:
        click.echo(f"{seed} {given(ctx, 'seed')} {given(ctx, 'n')}")

    assert CliRunner().invoke(cmd, []).output == "0 False False\n"
    assert CliRunner().invoke(cmd, ["--seed", "0"]).output == "0 True False\n"
    bad = CliRunner().invoke(cmd, ["--seed", "-1"])
    assert bad.exit_code == 2 and "x>=0" in bad.output
    assert "seed of the draws  [default: 0; x>=0]" in CliRunner().invoke(cmd, ["--help"]).output


def test_seed_latents_rows_depend_on_their_seed_only():
    z = seed_latents([3, 1], 5)
    assert z.shape == (2, 5)
    assert torch.equal(z[0], fixed_noise(1, 5, seed=3)[0]) and torch.equal(z[1], seed_latents([7, 1], 5)[1])


def test_append_jsonl(tmp_path):
    p = tmp_path / "metrics.jsonl"
    append_jsonl(p, {"a": 1})
    append_jsonl(p, {"b": [1.5]})
    assert [json.loads(x) for x in p.read_text().splitlines()] == [{"a": 1}, {"b": [1.5]}]


def test_style_mix_grid_layout():
    """Row 0 = styles (blank corner), column 0 = contents; with running BN stats and the contents as styles the
    diagonal is the contents again, and no swapped link leaves every cell its content."""
    from ganops.models.fastgan import weights_init
    from ganops.train.fastgan import build_generator, run_g, style_mix_grid

    torch.manual_seed(0)
    cfg = {"resolution": 256, "ngf": 4, "nz": 16, "tanh": "auto"}
    g = weights_init(build_generator(cfg)).eval()
    for m in g.noise_layers():
        m.fixed = torch.zeros(1)
    zc, zs = fixed_noise(2, 16, seed=1), fixed_noise(3, 16, seed=2)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", RuntimeWarning)
        grid = style_mix_grid(g, zc, zs, [64, 128], "running")
        content = run_g(g, "running", zc)[0].clamp(-1, 1)
        style = run_g(g, "running", zs)[0].clamp(-1, 1)
        same = style_mix_grid(g, zc, zc, [64, 128, 256], "running")
        none = style_mix_grid(g, zc, zs, [], "batch")
        content_b = run_g(g, "batch", zc)[0].clamp(-1, 1)
    assert grid.shape == (3 * 4, 3, 256, 256)
    assert torch.all(grid[0] == 1) and torch.allclose(grid[1:4], style, atol=1e-6)
    assert torch.allclose(grid[4], content[0], atol=1e-6) and torch.allclose(grid[8], content[1], atol=1e-6)
    assert (grid[5:8] - content[0]).abs().mean() > 1e-4  # the styles change the image
    assert torch.allclose(same[3], same[4], atol=1e-5) and torch.allclose(same[6], same[8], atol=1e-5)
    assert all(torch.allclose(none[4 * (i + 1) + j], content_b[i], atol=1e-6) for i in range(2) for j in range(4))


def test_save_images_names(tmp_path):
    """save_images(names=): one file per image under the given stems (FastGAN's generate --per-image)."""
    from PIL import Image

    from ganops.train.samples import save_images

    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    paths = save_images(x, tmp_path / "out", names=["seed00005", "seed00007"])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["seed00005.png", "seed00007.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seed00005.png", "seed00007.png"]
    assert Image.open(paths[1]).size == (4, 4)
    with pytest.raises(ValueError, match="1 names for 2 images"):
        save_images(x, tmp_path / "bad", names=["a"])
