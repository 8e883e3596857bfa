#!/usr/bin/env bash
# The device check: on a machine with a CUDA GPU, build ganops._C for that GPU, check every op x backend against
# the float64 reference, run the CUDA/Triton tests and compute-sanitizer, time the ops, FastGAN, ConSinGAN and the
# GMM fit, and leave everything in OUTDIR as one archive, one JSON of results and a summary table (printed last).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]     OUTDIR: default $OUT if set (the device tool), else gpu-check-<date>
#
# Installs nothing when a working torch is importable (the lent machines have no network). Each step runs in its
# own process under its own `timeout` (a crash or a hung kernel costs one step, not the run), and the whole run
# keeps to GPU_CHECK_BUDGET seconds (default 510, build included): the steps come in order of value, and a step
# that would start with too little time left is skipped and says so. The check stops at once (exit 3) when the
# CUDA kernels did not build or load: a silent fallback to the reference would make every later figure meaningless.
#
#   GPU_CHECK_BUDGET=S   seconds for the whole run (default 510)
#   GPU_CHECK_QUICK=1    tiny shapes and few rounds: the CPU dry run (without a GPU the cpu backend and the Triton
#                        interpreter stand in for cuda/triton, so every step's code runs); default without a GPU
#   GPU_CHECK_STEPS="env correct-sle ..."   run only these steps (build and env always run)
#   GPU_CHECK_BUILD=0    use the ganops._C already built (tests of this script)
#   PYTHON=...           the interpreter (default python3)
#
# OUTDIR gets: gpu-check.tar.gz (every log, each step's JSON, tests.xml), results.json (every section's results and
# each step's exit status and seconds), summary.txt (the table printed last). Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
# the step runner (open_run; step NAME LIMIT CMD...; status; elapsed): benchmarks/steps.sh
source benchmarks/steps.sh
open_run gpu-check "${1:-}"
budget=${GPU_CHECK_BUDGET:-510}

pack() {  # the archive, results.json and summary.txt into OUTDIR (also when the run is cut short)
  [ -f "$work/steps.tsv" ] || return 0
  timeout 60 "$PY" -m benchmarks.gpu_check summary --out "$work" > "$work/summary.txt" 2>&1
  cp "$work/summary.txt" "$out/summary.txt" 2>/dev/null
  cp "$work/results.json" "$out/results.json" 2>/dev/null
  tar czf "$out/gpu-check.tar.gz" -C "$work" . 2>/dev/null
  cat "$out/summary.txt"
  echo "== results: $out/results.json, $out/summary.txt, $out/gpu-check.tar.gz"
}
trap 'pack; rm -rf "$work"' EXIT
trap 'echo "== interrupted"; exit 130' INT TERM

step_filter=${GPU_CHECK_STEPS:-} step_always="build env" step_reserve=0 step_tail=4

has_gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null)
if [ -z "$has_gpu" ]; then
  echo "== no importable torch: installing the pinned requirements (needs a package registry)"
  pip install -q -r requirements.txt || { echo "FAIL: no torch, and it could not be installed"; exit 3; }
  has_gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
fi
quick=${GPU_CHECK_QUICK:-$(( 1 - has_gpu ))}
q=()
(( quick )) && q=(--quick)
echo "== ganops device check -> $out (budget ${budget}s, quick=$quick, gpu=$has_gpu)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null | tee "$work/logs/nvidia-smi.txt"

# 1. build for this GPU (in place: the tree's own ganops/_C*.so), then check that the CUDA kernels loaded
if (( has_gpu )); then
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c \
    "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')")}
  export TORCH_CUDA_ARCH_LIST FORCE_CUDA=1
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "== build (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-setup.py default}, MAX_JOBS=$MAX_JOBS)"
if [ "${GPU_CHECK_BUILD:-1}" = 0 ]; then
  printf 'build\t0\t0\tnot built: GPU_CHECK_BUILD=0 (the installed ganops._C)\n' >> "$work/steps.tsv"
else
  step build 300 "$PY" setup.py build_ext --inplace || { tail -n 40 "$work/logs/build.log"; echo "FAIL: build"; exit 3; }
fi
step env 90 "$PY" -m benchmarks.gpu_check env --out "$work" || {
  echo "FAIL: the CUDA kernels did not load (logs/env.log); nothing else is worth measuring"; exit 3; }

# 2. correctness of every op x backend against float64 (the most valuable figures come first)
for op in sle diff_augment penalty spectral_norm gp_end_to_end; do
  step "correct-$op" 120 "$PY" -m benchmarks.gpu_check correct --op "$op" --out "$work" "${q[@]}"
done
if (( has_gpu )) && command -v compute-sanitizer > /dev/null; then
  step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    "$PY" -m benchmarks.gpu_check memcheck --out "$work"
else
  step memcheck 60 "$PY" -m benchmarks.gpu_check memcheck --out "$work"  # no sanitizer here: the calls alone
fi
# 3. the test suite's CUDA and Triton tests (on a GPU the Triton ones compile for it). Triton compiles a binary per
# kernel and specialisation (dtypes, 16-byte alignment, ints == 1 or % 16): ~200 for these tests, ~160 for 20 fuzz
# cases per op (tools/triton_variants.py counts them from an interpreted run), at ~0.3-1.5 s each, serial in a
# process: the tests run in pytest-xdist workers where it is installed (the device image has it), up to 8.
xd=()
if "$PY" -c "import xdist" 2> /dev/null; then n=$(nproc); xd=(-n $(( n < 8 ? n : 8 ))); fi
step tests 150 "$PY" -m pytest -q -rfE -m "cuda or triton" -p no:cacheprovider --junitxml="$work/tests.xml" \
  "${xd[@]}" --ignore=tests/test_fuzz.py tests/  # the fuzz suite runs in its own step
# the fuzz suite's generator on the GPU backends, more cases than the tests step's CI subset (compiled Triton: 20
# cases per op, its largest test ~50 compiles in one worker)
fz=(300 20)
(( quick )) && fz=(25 6)
step fuzz 90 env GANOPS_FUZZ_CASES=${fz[0]} GANOPS_FUZZ_TRITON_CASES=${fz[1]} \
  "$PY" -m pytest -q -rfE -p no:cacheprovider "${xd[@]}" tests/test_fuzz.py -k "cuda or triton"
# 4. speed, then the model-level figures
step speed 150 "$PY" -m benchmarks.gpu_check speed --out "$work" "${q[@]}"
step fastgan 170 "$PY" -m benchmarks.gpu_check fastgan --out "$work" "${q[@]}"
step consingan 100 "$PY" -m benchmarks.gpu_check consingan --out "$work" "${q[@]}"
step gmm 80 "$PY" -m benchmarks.gpu_check gmm --out "$work" "${q[@]}"
echo "== done in $(elapsed)s (status $status)"
exit $status
