# The step runner of benchmarks/gpu_check.sh and benchmarks/gpu_train.sh (sourced, not run).
#
# open_run NAME [OUTDIR] (after `cd` to the repository): root (the repository), PY ($PYTHON, else python3), out
# (OUTDIR, else $OUT, else NAME-date; made and absolute), work (a new temporary folder with logs/), t0 (now), and
# the repository first on PYTHONPATH.
#
# The caller sets, before calling `step`:
#   work           folder with logs/ and steps.tsv
#   budget, t0     seconds for the whole run, and its start (date +%s)
#   step_reserve   seconds kept at the end of the budget (default 0)
#   step_filter    space-separated steps to run (empty: all) ...
#   step_always    ... and the steps run whatever the filter
#   step_tail      lines of a step's log echoed after it (default 4)
#
# step NAME LIMIT [box] CMD...: CMD under `timeout` (the limit capped by what is left of the budget), logged to
# logs/NAME.log, "NAME rc seconds note" in steps.tsv; a step that would start with under 20 s left is skipped
# (rc -1, the reason in its note). With `box`, the limit is a time box: SIGTERM at the limit (the recipes checkpoint
# and stop at the next step), SIGKILL 45 s later, and rc 124 then counts as passed ("stopped at its time box").
# `status` becomes 1 when a step fails or is skipped.
status=0

open_run() {
  root=$(pwd)
  PY=${PYTHON:-python3}
  out=${2:-${OUT:-$1-$(date +%Y%m%d-%H%M%S)}}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  mkdir -p "$work/logs"
  t0=$(date +%s)
  export PYTHONUNBUFFERED=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
}

elapsed() { echo $(( $(date +%s) - t0 )); }

step() {
  local name=$1 limit=$2 boxed=0
  shift 2
  [ "${1:-}" = box ] && { boxed=1; shift; }
  if [ -n "${step_filter:-}" ] && [[ " ${step_always:-} $step_filter " != *" $name "* ]]; then
    return 0
  fi
  local left=$(( budget - ${step_reserve:-0} - $(elapsed) ))
  if (( left < 20 )); then
    printf '%s\t-1\t0\tskipped: the budget of %ss was spent\n' "$name" "$budget" >> "$work/steps.tsv"
    echo "== $name: skipped (budget spent)"
    status=1
    return 0
  fi
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s$( ((boxed)) && echo ", time box"), $(elapsed)s elapsed)"
  local s rc note=""
  s=$(date +%s)
  if ((boxed)); then
    timeout -s TERM -k 45 "$limit" "$@" > "$work/logs/$name.log" 2>&1
  else
    timeout -k 10 "$limit" "$@" > "$work/logs/$name.log" 2>&1
  fi
  rc=$?
  ((boxed && rc == 124)) && note="stopped at its ${limit}s time box"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - s ))" "$note" >> "$work/steps.tsv"
  tail -n "${step_tail:-4}" "$work/logs/$name.log" | sed 's/^/   /'
  if (( rc != 0 )) && ! ((boxed && rc == 124)); then
    status=1
    echo "   -> exit $rc$( ((rc == 124 || rc == 137)) && echo " (its ${limit}s limit)")"
  fi
  return $rc
}
