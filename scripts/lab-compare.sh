#!/usr/bin/env bash
# Two builds of wugui in the network lab, interleaved so that both see the same conditions
# (the lab moves by about +-0.1 from one minute to the next).
#
#   scripts/lab-compare.sh OLD_BIN_DIR NEW_BIN_DIR [RUNS] [CELL...]
#
# A CELL is "N SIZE_MB RATE" (default: "8 64 100mbit"). Each run of each cell runs OLD then NEW
# (NEW then OLD on odd runs) and prints the lab's result line with build=old|new in front.
# Needs root and ../shared/bench; the bin dirs hold wugui-cac, wugui-po and masterwugui.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
old=${1:?usage: $0 OLD_BIN_DIR NEW_BIN_DIR [RUNS] [CELL...]}
new=${2:?usage: $0 OLD_BIN_DIR NEW_BIN_DIR [RUNS] [CELL...]}
runs=${3:-2}
shift $(($# < 3 ? $# : 3))
cells=("$@")
[ ${#cells[@]} -gt 0 ] || cells=("8 64 100mbit")
for r in $(seq 1 "$runs"); do
    order=(old new)
    [ $((r % 2)) -eq 0 ] && order=(new old)
    for cell in "${cells[@]}"; do
        for b in "${order[@]}"; do
            dir=$old
            [ "$b" = new ] && dir=$new
            # shellcheck disable=SC2086
            line=$(cd "$bench" && WUGUI_ROOT=$root WUGUI_BIN=$dir ./run.sh wugui $cell 2>/dev/null | tail -1) || true
            echo "build=$b run=$r $line"
        done
    done
done
