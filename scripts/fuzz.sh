#!/usr/bin/env bash
# Differential fuzzing, the long run: tests/test_fuzz.py with the "fastconv-fuzz" profile.
#
#   scripts/fuzz.sh                        # 2000 calls per public function
#   FASTCONV_FUZZ_EXAMPLES=500 scripts/fuzz.sh
#   FASTCONV_FUZZ_BUDGET=600 scripts/fuzz.sh    # seconds for the whole run (default 900)
#
# The calls are derandomized (a fixed seed per function, no example database), so a run
# repeats exactly. The budget stops a run that hangs or crawls; running out of it fails the
# step. Hypothesis' statistics (calls tried, how many returned, which errors) are printed
# per function.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
BUDGET="${FASTCONV_FUZZ_BUDGET:-900}"
export FASTCONV_FUZZ=1
export FASTCONV_FUZZ_EXAMPLES="${FASTCONV_FUZZ_EXAMPLES:-2000}"
echo "fuzz: $FASTCONV_FUZZ_EXAMPLES calls per function, budget ${BUDGET} s"
start=$SECONDS
status=0
timeout --signal=INT --kill-after=30 "$BUDGET" "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_fuzz.py --hypothesis-show-statistics "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
    echo "fuzz: over the budget of $BUDGET s (a hang or a very slow call?)" >&2
fi
echo "fuzz: took $((SECONDS - start)) s, exit status $status"
exit "$status"
