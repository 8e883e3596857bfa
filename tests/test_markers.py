# SPDX-License-Identifier: BSD-3-Clause
"""Marker wiring: `pytest -m cuda` selects every test that uses a CUDA device (and each of them skips with a reason
without a GPU); `pytest -m triton` selects every test that runs a Triton kernel. A new GPU test written without
`requires_cuda` (or a "cuda" parameter without `backends()`/`devices()`) fails here, on CPU CI."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# Source that puts tensors or work on a CUDA device.
CUDA_USE = re.compile(r"""device\s*=\s*["']cuda|\.cuda\(\)|torch\.device\(\s*["']cuda"""
                      r"""|(autocast|GradScaler|Generator)\(\s*(device\s*=\s*)?["']cuda"""
                      r"""|["']--device["']\s*,\s*["']cuda""")
# Source that launches Triton kernels whatever the parameters.
TRITON_USE = re.compile(r"""impl\s*=\s*["']triton|ganops\.triton\b|\b\w+_triton\b|_kernel\[""")
# A parametrize list (decorator) with a "cuda"/"triton" value: the items of that value need the marker.
PARAM_VALUE = re.compile(r"""["'](cuda|triton)["']""")
# Tests whose source names a CUDA device without using one (reason given).
NOT_GPU = {
    "test_train_core.py::test_cli_options_defaults_and_validation": "runs `--device cuda` only without a GPU (error)",
    "test_launch_plan.py::test_sn_tables_uploaded_in_one_copy": "names a cuda device; pinning and the copy are faked",
}
# Tests whose source names ganops.triton without launching a kernel (reason given).
NOT_TRITON = {
    "test_imports.py::test_layering_check_sees_an_upward_import": "writes a stand-in ganops/triton package as text",
    "test_imports.py::test_triton_kernel_modules_import_first": "imports the kernel modules; launches nothing",
    "test_imports.py::test_every_module_imports_first": "imports each module first; launches nothing",
    "test_use_impl.py::test_triton_loader_loads_once_and_retries_a_failed_import": "a stand-in module; launches nothing",
    "test_use_impl.py::test_each_triton_op_loads_through_its_modules_loader": "compares loader objects; launches "
                                                                               "nothing",
}

_PLUGIN = """
import json, os
def pytest_collection_modifyitems(session, config, items):
    out = {}
    for it in items:
        skips = [m.kwargs.get("reason", "") for m in it.iter_markers("skipif")]
        out[it.nodeid] = {"marks": sorted({m.name for m in it.iter_markers()}), "skip_reasons": skips}
    with open(os.environ["GANOPS_MARKER_DUMP"], "w") as f:
        json.dump(out, f)
"""


def _functions(path: Path):
    """(name, decorator source, body source) of each test function (module level and in Test classes)."""
    src = path.read_text()
    tree = ast.parse(src)
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for c in tree.body:
        if isinstance(c, ast.ClassDef) and c.name.startswith("Test"):
            nodes += [n for n in c.body if isinstance(n, ast.FunctionDef)]
    lines = src.splitlines()
    for n in nodes:
        if not n.name.startswith("test_"):
            continue
        deco = "\n".join(ast.get_source_segment(src, d) or "" for d in n.decorator_list)
        body = "\n".join(lines[n.body[0].lineno - 1:n.end_lineno])
        yield n.name, deco, body


def required_markers():
    """{"file::func": [(marker, which)]}: which is "all" (every item) or "param" (items whose id has the value)."""
    need = {}
    for path in sorted(p for p in HERE.glob("test_*.py") if p.name != Path(__file__).name):
        for name, deco, body in _functions(path):
            key = f"{path.name}::{name}"
            req = []
            if CUDA_USE.search(deco + "\n" + body) and key not in NOT_GPU:
                req.append(("cuda", "all" if CUDA_USE.search(body) else "param"))
            elif any(v == "cuda" for v in PARAM_VALUE.findall(deco)):
                req.append(("cuda", "param"))
            if key in NOT_TRITON:
                pass
            elif TRITON_USE.search(body):
                req.append(("triton", "all"))
            elif any(v == "triton" for v in PARAM_VALUE.findall(deco)):
                req.append(("triton", "param"))
            if req:
                need[key] = req
    return need


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Every item of tests/ with its markers, from a real collection in a subprocess."""
    d = tmp_path_factory.mktemp("markers")
    (d / "ganops_marker_dump.py").write_text(_PLUGIN)
    dump = d / "items.json"
    env = dict(os.environ, GANOPS_MARKER_DUMP=str(dump),
               PYTHONPATH=os.pathsep.join([str(d)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "ganops_marker_dump",
                        "-p", "no:cacheprovider", str(HERE)], capture_output=True, text=True, env=env,
                       cwd=HERE.parent, timeout=300)
    assert r.returncode == 0 and dump.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    return {k.split("tests/", 1)[-1]: v for k, v in json.loads(dump.read_text()).items()}


def _items(collected, key):
    return {k: v for k, v in collected.items() if k == key or k.startswith(key + "[")}


def test_detection_finds_the_known_gpu_and_triton_tests():
    """The source scan itself works (so an empty scan cannot pass the checks below vacuously)."""
    need = required_markers()
    assert ("cuda", "all") in need["test_sle.py::test_cuda_gradgradcheck"]
    assert ("cuda", "all") in need["test_train_loop.py::test_cuda_amp_channels_last_resume"]
    assert ("triton", "param") in need["test_sle.py::test_forward_backward_match_reference"]
    assert ("triton", "all") in need["test_penalty.py::test_triton_no_out_of_bounds_writes"]
    assert "test_train_core.py::test_cli_options_defaults_and_validation" not in need
    assert sum(("cuda", "all") in r or ("cuda", "param") in r for r in need.values()) >= 13


@pytest.mark.slow
def test_every_cuda_and_triton_test_carries_its_marker(collected):
    missing = []
    for key, reqs in required_markers().items():
        items = _items(collected, key)
        assert items, f"{key}: not collected"
        for marker, which in reqs:
            for nodeid, info in items.items():
                param_id = nodeid[len(key) + 1:-1] if nodeid != key else ""
                if which == "param" and marker not in re.split(r"[-\[\]]", param_id):
                    continue
                if marker not in info["marks"]:
                    missing.append(f"{nodeid}: no `{marker}` marker")
    assert not missing, ("tests using CUDA need @requires_cuda (or backends()/devices() params), tests running "
                         "Triton @requires_triton or a backends() param:\n" + "\n".join(missing))


def test_cuda_marked_tests_skip_cleanly_without_a_gpu(collected):
    """`-m cuda` means "needs a GPU": every such item also carries the skip (reason given) that requires_cuda adds."""
    cuda = {k: v for k, v in collected.items() if "cuda" in v["marks"]}
    assert len(cuda) >= 50
    bad = [k for k, v in cuda.items() if "needs a CUDA GPU" not in v["skip_reasons"]]
    assert not bad, "cuda marker without the requires_cuda skip:\n" + "\n".join(bad)
