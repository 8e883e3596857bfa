# SPDX-License-Identifier: BSD-3-Clause
"""ganops._io: the one atomic writer (temp file beside the target, fsync, os.replace) of run files, checkpoints,
samples, the metrics caches and sweep tables."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch

import ganops._io as io_mod
from ganops._io import atomic_write, temp_path, write_text
from ganops.train import StatsWriter, save_checkpoint
from ganops.train.rundir import _TEMP


def test_temp_names_are_the_ones_a_resume_clears(tmp_path):
    pid = os.getpid()
    assert temp_path(tmp_path / "config.json").name == f".config.json.tmp{pid}"
    assert temp_path(tmp_path / "fakes01.png", ".png").name == f"fakes01.png.tmp{pid}.png"
    for suffix in ("", ".png", ".gif"):
        assert _TEMP.match(temp_path(tmp_path / "x.y", suffix).name), suffix


def test_write_text_replaces_and_fsyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(io_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    p = tmp_path / "a.txt"
    write_text(p, "one\n")
    write_text(p, "two ü\n")
    assert p.read_text(encoding="utf-8") == "two ü\n" and len(synced) == 2
    assert os.listdir(tmp_path) == ["a.txt"]
    atomic_write(tmp_path / "b.bin", lambda tmp: open(tmp, "wb").close(), fsync=False)
    assert len(synced) == 2


@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_failed_write_keeps_the_old_file_leaves_no_temp_and_names_the_target(tmp_path, monkeypatch, where):
    p = tmp_path / "table.json"
    write_text(p, "old\n")

    def half(tmp):
        with open(tmp, "w") as f:
            f.write("ne")
        if where == "write":
            raise OSError(errno.ENOSPC, "No space left on device", tmp)

    if where == "replace":
        monkeypatch.setattr(io_mod.os, "replace", lambda a, b: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", a)))
    with pytest.raises(OSError) as e:
        atomic_write(p, half)
    assert e.value.filename == str(p) and e.value.errno in (errno.ENOSPC, errno.EACCES)
    assert where != "replace" or isinstance(e.value, PermissionError)
    assert p.read_text() == "old\n" and os.listdir(tmp_path) == ["table.json"]


def test_an_interrupt_leaves_no_temp(tmp_path):
    def interrupted(tmp):
        with open(tmp, "w") as f:
            f.write("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a", interrupted)
    assert os.listdir(tmp_path) == []


def test_checkpoint_and_stats_truncation_go_through_it(tmp_path, monkeypatch):
    """save_checkpoint's OSError names the checkpoint (not its temp name); a resume's stats.jsonl truncation that
    fails keeps the whole log."""
    def full(a, b):
        raise OSError(errno.ENOSPC, "No space left on device", a)

    p = tmp_path / "stats.jsonl"
    p.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))
    before = p.read_text()
    monkeypatch.setattr(io_mod.os, "replace", full)
    with pytest.raises(OSError) as e:
        save_checkpoint({"step": 1, "w": torch.zeros(2)}, tmp_path / "checkpoint-1.pt")
    assert e.value.filename == str(tmp_path / "checkpoint-1.pt")
    with pytest.raises(OSError):
        StatsWriter(p, truncate_after=2)
    assert p.read_text() == before and sorted(os.listdir(tmp_path)) == ["stats.jsonl"]
