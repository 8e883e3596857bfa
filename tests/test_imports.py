# SPDX-License-Identifier: BSD-3-Clause
"""The package's import structure: no import circles between ganops modules (at module level, nor through imports
inside functions), no package importing a package above it, and every module importable in a fresh interpreter
whatever comes first. Imports under ``if TYPE_CHECKING:`` and of a module's own parent packages (always imported
before it) do not count.

Layers, lowest first (an import may only point to its own layer or a lower one):
    _C, _ext, _layout, _dispatch, _io, profiling  <  triton  <  ops  <  nn  <  data  <  metrics  <  models  <  train
    <  ganops (the package itself), info  <  __main__
"""
from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys

import pytest

import ganops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "ganops")
LAYERS = [("_C", "_ext", "_layout", "_dispatch", "_io", "profiling"), ("triton",), ("ops",), ("nn",),
          ("data",), ("metrics",), ("models",), ("train",), ("", "info", "__version__"), ("__main__",)]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, str]:
    """{dotted module name: path} of every ganops source file and compiled extension (path "" for those)."""
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
            elif f.endswith((".so", ".pyd")):
                rel = os.path.relpath(os.path.join(dirpath, f.split(".")[0]), ROOT).replace(os.sep, ".")
                out[rel] = ""
    return out


def _import_nodes(tree: ast.AST, toplevel_only: bool):
    """The import statements of a module, without those under ``if TYPE_CHECKING:`` (and inside functions when
    ``toplevel_only``)."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
        elif not (toplevel_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            todo += ast.iter_child_nodes(node)


def _imports(name: str, path: str, known: set[str], toplevel_only: bool = False) -> list[tuple[str, int]]:
    """[(imported ganops module, line)] of the file's import statements (inside functions too unless
    ``toplevel_only``), without the imports of its own parent packages."""
    if not path:
        return []
    is_pkg = path.endswith("__init__.py")
    pkg = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node in _import_nodes(ast.parse(open(path).read(), path), toplevel_only):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "ganops":
                continue
            # `from pkg import name`: the submodule when name is one, else the package
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "ganops"]
        for t in targets:
            while t not in known and "." in t:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t != name and not name.startswith(t + "."):
                out.append((t, node.lineno))
    return out


def _graph(toplevel_only: bool, units: set[str] | None = None) -> dict[str, set[str]]:
    """Module -> ganops modules it imports (of the modules in layer ``units``, all when None)."""
    mods = _modules()
    known = set(mods)
    return {name: {t for t, _ in _imports(name, path, known, toplevel_only)} for name, path in mods.items()
            if units is None or _unit(name) in units}


def _unit(module: str) -> str:
    """The layer unit of a module: ganops.ops.sle -> "ops", ganops -> ""."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("toplevel_only, units", [(True, None), (False, None)], ids=["module-level", "in-functions-too"])
def test_no_import_circles(toplevel_only, units):
    graph = _graph(toplevel_only, units)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    circles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                circles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_package_imports_upward():
    mods = _modules()
    known = set(mods)
    unknown = sorted({_unit(m) for m in mods} - set(RANK))
    assert not unknown, f"add {unknown} to LAYERS in {__file__}"
    upward = []
    for name, path in sorted(mods.items()):
        for target, line in _imports(name, path, known):
            a, b = _unit(name), _unit(target)
            if RANK[b] > RANK[a]:
                upward.append(f"{os.path.relpath(path, ROOT)}:{line}: {a or 'ganops'} imports {b or 'ganops'}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_layering_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checks above find what they look for: a triton module importing ops, and a two-module circle."""
    pkg = tmp_path / "ganops"
    (pkg / "triton").mkdir(parents=True)
    (pkg / "ops").mkdir()
    files = {"__init__.py": "", "triton/__init__.py": "", "ops/__init__.py": "",
             "triton/k.py": "from ..ops.a import f\n", "ops/a.py": "def f():\n    from ..triton import k\n"}
    for f, text in files.items():
        (pkg / f).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "PKG", str(pkg))
    with pytest.raises(AssertionError, match="triton imports ops"):
        test_no_package_imports_upward()
    with pytest.raises(AssertionError, match=r"ganops.ops.a -> ganops.triton.k -> ganops.ops.a"):
        test_no_import_circles(False, None)
    test_no_import_circles(True, None)  # the ops -> triton import is inside a function


def _all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(ganops.__path__, "ganops.") if not m.name.endswith("__main__")]


def _import_in_fresh_interpreter(first: list[str]) -> None:
    code = ("import importlib, pkgutil, sys\n"
            f"for m in {first!r}:\n    importlib.import_module(m)\n"
            "import ganops\n"
            "for m in pkgutil.walk_packages(ganops.__path__, 'ganops.'):\n"
            "    if not m.name.endswith('__main__'):\n        importlib.import_module(m.name)\n"
            "print('imported', len(sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0 and "imported" in r.stdout, f"importing {first} first:\n{r.stderr[-3000:]}"


def test_triton_kernel_modules_import_first():
    """The Triton kernel modules are leaves: imported before anything else, then every module imports."""
    pytest.importorskip("triton")
    kernels = [m for m in _all_modules() if m.startswith("ganops.triton.")]
    assert kernels
    _import_in_fresh_interpreter(kernels)


@pytest.mark.slow
@pytest.mark.parametrize("module", _all_modules())
def test_every_module_imports_first(module):
    if module.startswith("ganops.triton."):
        pytest.importorskip("triton")
    _import_in_fresh_interpreter([module])
