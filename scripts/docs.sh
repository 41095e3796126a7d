#!/usr/bin/env bash
# Build the documentation (issue 18) and run its examples.
#
#   scripts/docs.sh
#
# 1. html:    sphinx-build -W --keep-going: every warning (a broken reference, a docstring
#             numpydoc cannot parse, a Markdown problem) fails the build, after all are shown;
# 2. doctest: sphinx-build -b doctest runs every `>>>` example of the docstrings (the API
#             reference) and every ```{doctest} block of the pages, so they cannot drift
#             from the code.
# Installs the `docs` extra's requirements (pyproject.toml) into this Python when Sphinx is
# missing. Needs an importable fastconv (an in-place build or an install). Output in
# $FASTCONV_DOCS_OUT (default build/docs); prints the time of each step.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${FASTCONV_DOCS_OUT:-$ROOT/build/docs}"

if ! "$PYTHON" -c "import sphinx, numpydoc, myst_parser, dask.array" 2>/dev/null; then
    # the `docs` extra, read from pyproject.toml (no editable reinstall, which would rebuild)
    mapfile -t requirements < <("$PYTHON" - "$ROOT/pyproject.toml" <<'PY'
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

with open(sys.argv[1], "rb") as handle:
    print("\n".join(tomllib.load(handle)["project"]["optional-dependencies"]["docs"]))
PY
)
    "$PYTHON" -m pip install -q "${requirements[@]}"
fi

STEP_PREFIX=docs
# shellcheck source=scripts/_steps.sh
. "$ROOT/scripts/_steps.sh"

rm -rf "$OUT"
step html "$PYTHON" -m sphinx -b html -W --keep-going -q -d "$OUT/doctrees" \
    "$ROOT/docs" "$OUT/html"
step doctest "$PYTHON" -m sphinx -b doctest -W --keep-going -q -d "$OUT/doctrees" \
    "$ROOT/docs" "$OUT/doctest"
echo "docs: HTML in $OUT/html"
step_times
# sphinx's summary ("N tests", "M failures in tests") as the plain closing line of a test run
tests=$(awk '/^ *[0-9]+ tests?$/ { n = $1 } END { print n + 0 }' "$OUT/doctest/output.txt")
failed=$(awk '/^ *[0-9]+ failures? in tests$/ { n = $1 } END { print n + 0 }' \
    "$OUT/doctest/output.txt")
[ "$tests" -gt 0 ] || { echo "docs: the doctest builder ran no example" >&2; exit 1; }
echo "doctest: $((tests - failed)) passed, $failed failed"
