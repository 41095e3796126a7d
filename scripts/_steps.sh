# Sourced by scripts/wheel.sh and scripts/docs.sh: time named steps.
#   STEP_PREFIX=NAME; step NAME COMMAND...   runs COMMAND, records its wall time under NAME
#   step_times                               prints the recorded times, one step a line
TIMES=()
step() {
    local name="$1"; shift
    echo "${STEP_PREFIX}: == $name"
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    TIMES+=("$(awk -v a="$start" -v b="$end" -v n="$name" \
        'BEGIN { printf "%-10s %7.1f s", n, b - a }')")
}
step_times() {
    echo "${STEP_PREFIX}: time per step"
    printf '  %s\n' "${TIMES[@]}"
}
