#!/usr/bin/env bash
# Run the test suite against kernels built with AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/sanitize.sh                 # the whole suite
#   scripts/sanitize.sh tests/test_conv.py -k transpose    # any pytest arguments
#
# The kernels are rebuilt (FASTCONV_SANITIZE=1: gcc -fsanitize=address,undefined -O1 -g) in
# a temporary copy of the source, so the checkout's own build is left alone. Python itself is
# not instrumented, so the ASan runtime is preloaded (LD_PRELOAD) and leak detection is off
# (the interpreter keeps memory until exit). Any ASan or UBSan report stops the run with a
# non-zero status. Needs gcc and a Python with numpy, scipy, pytest and hypothesis; Cython and
# setuptools are installed into that Python when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    [ -f "$lib" ] || { echo "sanitize: $lib not found (gcc's sanitizer runtimes)" >&2; exit 1; }
done
"$PYTHON" -c "import Cython, setuptools" 2>/dev/null \
    || "$PYTHON" -m pip install -q "Cython>=3.0" setuptools

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The sources and tests only: no in-place build products from the checkout.
tar -C "$ROOT" -cf - --exclude='*.so' --exclude='fastconv/_kernels/*.c' --exclude='__pycache__' \
    --exclude='fastconv/_build_info.py' setup.py pyproject.toml README.md fastconv tests \
    examples \
    | tar -C "$WORK" -xf -

echo "sanitize: building the kernels with -fsanitize=address,undefined in $WORK"
start=$SECONDS
(cd "$WORK" && FASTCONV_SANITIZE=1 "$PYTHON" setup.py -q build_ext --inplace -j 2 \
    >"$WORK/build.log" 2>&1) || { tail -50 "$WORK/build.log" >&2; exit 1; }
echo "sanitize: built in $((SECONDS - start)) s"

# allocator_may_return_null: an allocation too large for ASan returns NULL, so NumPy raises
# MemoryError as it does without ASan (the size-limit tests rely on it).
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
# dask's LocalCluster worker processes die under the preloaded ASan runtime; the threaded
# scheduler tests run the same kernels in this process.
export FASTCONV_SKIP_CLUSTER="sanitizer run (worker processes die under the ASan runtime)"
cd "$WORK"
# Make sure the sanitized copy is the one imported (an editable install of the checkout
# must not win).
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" "$PYTHON" - "$WORK" <<'PY'
import os, sys
import fastconv
from fastconv import _build_info
work = os.path.realpath(sys.argv[1])
assert os.path.realpath(fastconv.__file__).startswith(work + os.sep), fastconv.__file__
assert "-fsanitize=address,undefined" in _build_info.COMPILE_ARGS, _build_info.COMPILE_ARGS
flags = " ".join(_build_info.COMPILE_ARGS)
print(f"sanitize: testing {os.path.dirname(fastconv.__file__)} ({flags})")
PY
start=$SECONDS
status=0
# --capture=sys: pytest's default fd capture would swallow a report printed as the process
# halts; at the sys level, reports (written to fd 2 by the runtimes) always show.
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys \
    "${@:-tests}" || status=$?
echo "sanitize: tests took $((SECONDS - start)) s, exit status $status"
exit "$status"
