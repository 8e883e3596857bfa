# SPDX-License-Identifier: BSD-3-Clause
"""Count the Triton binaries a GPU run would compile, from a run under the interpreter (pytest plugin).

On a GPU, Triton compiles one binary per kernel and *specialisation*: each tensor argument's dtype and 16-byte
alignment, each int argument's ``== 1`` / ``% 16 == 0`` / 64-bit-ness, each ``tl.constexpr`` value and the launch
options (num_warps, num_stages). Under ``TRITON_INTERPRET=1`` nothing compiles, so a CPU rehearsal cannot show the
compile time a device step will spend (about 0.3-1.5 s a binary). This plugin records the specialisation key of
every interpreted launch and reports the distinct keys per kernel, a count of the compiles the same tests would do
on a GPU (an upper bound per process: the on-disk cache of an earlier step of the same machine saves some)::

    TRITON_INTERPRET=1 python -m pytest -p tools.triton_variants tests/test_fuzz.py -k triton
    TRITON_INTERPRET=1 python -m tools.triton_variants benchmarks.gpu_check correct --op sle --quick
    TRITON_VARIANTS_JSON=counts.json ...   also writes the counts as JSON
"""
from __future__ import annotations

import inspect
import json
import os
from collections import defaultdict

_keys: dict[str, set] = defaultdict(set)
_launches: dict[str, int] = defaultdict(int)


def _spec(v):
    if hasattr(v, "data_ptr") and hasattr(v, "dtype"):
        return ("ptr", str(v.dtype), v.data_ptr() % 16 == 0)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", v == 1, v % 16 == 0, not -2**31 <= v < 2**31)
    if isinstance(v, float):
        return ("fp32",)
    return (type(v).__name__,)


def specialisation_key(fn, arg_names: list[str], args: tuple, kwargs: dict) -> tuple:
    """The parts of a launch that select a compiled binary (see the module docstring)."""
    params = inspect.signature(fn).parameters
    bound = dict(zip(arg_names, args), **kwargs)
    key = []
    for name, v in bound.items():
        p = params.get(name)
        constexpr = p is not None and "constexpr" in str(p.annotation)
        key.append((name, repr(v) if constexpr or p is None else _spec(v)))
    return tuple(sorted(key))


def _install() -> None:
    from triton.runtime import interpreter

    run = interpreter.InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        name = f"{self.fn.__module__.rsplit('.', 1)[-1]}.{self.fn.__name__}"
        _keys[name].add(specialisation_key(self.fn, self.arg_names, args, kwargs))
        _launches[name] += 1
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    interpreter.InterpretedFunction.run = recording_run


def summary() -> list[str]:
    """One line a kernel: distinct specialisations / launches, most binaries first, then the total."""
    rows = sorted(((len(k), _launches[n], n) for n, k in _keys.items()), reverse=True)
    lines = [f"{n_keys:6d} / {n_launch:6d}  {name}" for n_keys, n_launch, name in rows]
    lines.append(f"{sum(r[0] for r in rows):6d} / {sum(r[1] for r in rows):6d}  in all")
    if os.environ.get("TRITON_VARIANTS_JSON"):
        with open(os.environ["TRITON_VARIANTS_JSON"], "w") as f:
            json.dump({n: {"binaries": k, "launches": la} for k, la, n in rows}, f, indent=1)
    return lines


def _check_interpreting() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("tools.triton_variants needs TRITON_INTERPRET=1 (it counts interpreted launches)")


def pytest_configure(config):  # noqa: D103 - pytest hook
    _check_interpreting()
    _install()


def pytest_terminal_summary(terminalreporter):  # noqa: D103 - pytest hook
    terminalreporter.write_sep("-", "Triton binaries a GPU would compile (distinct specialisations) / launches")
    for line in summary():
        terminalreporter.write_line(line)


def main() -> None:
    """``python -m tools.triton_variants MODULE [ARGS...]``: run MODULE as ``python -m`` would, then the counts."""
    import runpy
    import sys

    _check_interpreting()
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    _install()
    sys.argv = sys.argv[1:]
    try:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (0, None):
            print(f"(the module exited {e.code})")
    print("Triton binaries a GPU would compile (distinct specialisations) / launches")
    print("\n".join(summary()))


if __name__ == "__main__":
    main()
