# SPDX-License-Identifier: BSD-3-Clause
"""Build ganops._C (C++ CPU kernels, plus CUDA kernels when a toolkit is found) from csrc/.

Switches (environment):
  GANOPS_BUILD_EXT=0      pure-Python install (reference and Triton backends only).
  FORCE_CUDA=1            build the CUDA kernels (error if no toolkit is found).
  GANOPS_NO_CUDA=1        never build the CUDA kernels, even when a toolkit is found.
  CUDA_HOME / CUDA_PATH   toolkit root; otherwise found from `nvcc` on PATH (symlinks and wrapper
                          scripts resolved) or /usr/local/cuda.
  TORCH_CUDA_ARCH_LIST    GPU architectures; default "7.5;8.0;8.6;8.9;9.0+PTX" (Turing .. Hopper).
  MAX_JOBS                parallel compile jobs (default 2).

Whether CUDA is built is never decided by torch.cuda.is_available(): no GPU is needed to compile.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"


def _log(msg: str) -> None:
    print(f"[ganops setup] {msg}", flush=True)


def _env_flag(name: str) -> bool | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    return v.strip().lower() not in ("0", "false", "no", "off")


def find_cuda_home() -> tuple[str | None, str]:
    """Return (toolkit root, how it was found). Resolves wrapper scripts such as /usr/local/bin/nvcc."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        p = os.environ.get(var)
        if p and os.path.exists(os.path.join(p, "bin", "nvcc")):
            return p, f"${var}"
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        cand = os.path.dirname(os.path.dirname(real))
        if os.path.exists(os.path.join(cand, "include", "cuda_runtime.h")):
            return cand, f"nvcc on PATH ({real})"
        # A wrapper script (e.g. `exec /usr/local/cuda-13.0/bin/nvcc "$@"`): read the path it execs.
        try:
            with open(nvcc, "r", errors="ignore") as f:
                text = f.read(4096)
            m = re.search(r"(/\S+)/bin/nvcc", text)
            if m and os.path.exists(os.path.join(m.group(1), "include", "cuda_runtime.h")):
                return m.group(1), f"nvcc wrapper {nvcc} -> {m.group(1)}"
        except OSError:
            pass
    for cand in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        if os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return cand, f"default location {cand}"
    return None, "no nvcc on PATH, no CUDA_HOME, no /usr/local/cuda*"


def nvcc_version(cuda_home: str) -> str:
    try:
        out = subprocess.check_output([os.path.join(cuda_home, "bin", "nvcc"), "--version"], text=True)
        m = re.search(r"release (\d+\.\d+)", out)
        return m.group(1) if m else "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def get_extensions():
    build_ext_flag = _env_flag("GANOPS_BUILD_EXT")
    if build_ext_flag is False:
        _log("GANOPS_BUILD_EXT=0: pure-Python install (reference and Triton backends only)")
        return [], {}, {"built": False, "reason": "GANOPS_BUILD_EXT=0"}

    import torch
    from torch.utils import cpp_extension

    force_cuda = bool(_env_flag("FORCE_CUDA"))
    no_cuda = bool(_env_flag("GANOPS_NO_CUDA"))
    cuda_home, how = find_cuda_home()
    with_cuda = False
    why = ""
    if no_cuda:
        why = "GANOPS_NO_CUDA=1"
    elif torch.version.cuda is None:
        why = f"torch {torch.__version__} is a CPU-only build"
        if force_cuda:
            raise RuntimeError(f"FORCE_CUDA=1 but {why}: install a CUDA build of torch")
    elif cuda_home is None:
        why = how
        if force_cuda:
            raise RuntimeError(f"FORCE_CUDA=1 but no CUDA toolkit found ({how}); set CUDA_HOME")
    else:
        with_cuda = True
        why = f"toolkit found: {how}" + (" (FORCE_CUDA=1)" if force_cuda else "")

    csrc = os.path.join(ROOT, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")) + glob.glob(os.path.join(csrc, "cuda", "*.cpp")))
    rel = lambda ps: [os.path.relpath(p, ROOT) for p in ps]  # noqa: E731
    define_macros = []  # torch adds Py_LIMITED_API for py_limited_api=True
    extra_cxx = ["-O3", "-fopenmp", "-fdiagnostics-color=always"]  # -fopenmp: at::parallel_for runs serially without it
    info = {
        "built": True,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "with_cuda": with_cuda,
        "cuda_reason": why,
    }
    if with_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home  # torch guesses wrongly when nvcc is a wrapper outside the root
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if not archs:
            archs = DEFAULT_ARCHS
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # only set when the user gave none
            arch_src = "default"
        else:
            arch_src = "TORCH_CUDA_ARCH_LIST"
        info.update(cuda_home=cuda_home, nvcc=nvcc_version(cuda_home), arch_list=archs)
        _log(f"building C++ CPU kernels and CUDA kernels: {why}")
        _log(f"CUDA_HOME={cuda_home} nvcc {info['nvcc']}; archs {archs} ({arch_src})")
        ext = cpp_extension.CUDAExtension(
            "ganops._C",
            rel(sources + cuda_sources),
            include_dirs=[os.path.join(csrc, "include")],
            define_macros=define_macros + [("GANOPS_WITH_CUDA", "1")],
            extra_compile_args={"cxx": extra_cxx, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    else:
        _log(f"building C++ CPU kernels only: {why}")
        ext = cpp_extension.CppExtension(
            "ganops._C",
            rel(sources),
            include_dirs=[os.path.join(csrc, "include")],
            define_macros=define_macros,
            extra_compile_args={"cxx": extra_cxx},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    _log(f"{len(sources)} C++ sources, {len(cuda_sources) if with_cuda else 0} CUDA sources")
    os.environ.setdefault("MAX_JOBS", "2")

    class BuildExt(cpp_extension.BuildExtension):
        def run(self):
            super().run()
            # Record how the extension was built, next to the library.
            for out in self.get_outputs():
                path = os.path.join(os.path.dirname(out), "build_info.json")
                with open(path, "w") as f:
                    json.dump(info, f, indent=2)
            if self.inplace:
                with open(os.path.join(ROOT, "ganops", "build_info.json"), "w") as f:
                    json.dump(info, f, indent=2)

    return [ext], {"build_ext": BuildExt.with_options(use_ninja=True)}, info


ext_modules, cmdclass, _info = get_extensions()
setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if ext_modules else {},
)
