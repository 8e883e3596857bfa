#!/usr/bin/env bash
# Rebuild ganops._C in place for development, safely while other processes use it:
# serialised with a lock, built outside the package, then moved into place atomically.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/ganops_build.lock
flock 9
export MAX_JOBS=${MAX_JOBS:-2}
python setup.py -q build_ext --build-lib build/devlib --build-temp build/devtemp
so=$(ls build/devlib/ganops/_C*.so)
cp "$so" ganops/.tmp_C.so && mv -f ganops/.tmp_C.so "ganops/$(basename "$so")"
cp build/devlib/ganops/build_info.json ganops/build_info.json 2>/dev/null || true
echo "built $(basename "$so")"
