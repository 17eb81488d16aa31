#!/usr/bin/env bash
# Two builds of wugui in the network lab, interleaved so that both see the same conditions
# (the lab moves by about +-0.1 from one minute to the next), with other contenders in the same
# sitting.
#
#   scripts/lab-compare.sh OLD_BIN_DIR NEW_BIN_DIR [RUNS] [CELL...]
#
# A CELL is "N SIZE_MB RATE" (default: "8 64 100mbit"), optionally preceded by environment
# assignments for that cell, each ended by '|': "WUGUI_CLASS_EXTRA=verify = md5|20 256 50mbit".
# Each run of each cell runs OLD then NEW (NEW then OLD on even runs), then each contender named
# in CONTENDERS (e.g. CONTENDERS="chain-tar bt-libtorrent"), and prints the lab's result line
# with build=old|new|CONTENDER in front. OLD_BIN_DIR may be "-" to run only the new build.
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

# one CELL WHO [BIN_DIR]: one run.sh of WHO (wugui or a contender) in CELL; prints its last line.
one() {
    local cell=$1 who=$2 dir=${3:-} spec
    local -a envs=()
    while [[ $cell == *'|'* ]]; do
        envs+=("${cell%%|*}")
        cell=${cell#*|}
    done
    read -ra spec <<< "$cell"
    (cd "$bench" && env "${envs[@]}" WUGUI_ROOT="$root" ${dir:+WUGUI_BIN="$dir"} \
        ./run.sh "$who" "${spec[@]}" 2>/dev/null | tail -1) || true
}

for r in $(seq 1 "$runs"); do
    order=(old new)
    [ $((r % 2)) -eq 0 ] && order=(new old)
    for cell in "${cells[@]}"; do
        for b in "${order[@]}"; do
            dir=$old
            [ "$b" = new ] && dir=$new
            [ "$dir" = - ] && continue
            echo "build=$b run=$r cell=\"$cell\" $(one "$cell" wugui "$dir")"
        done
        for c in ${CONTENDERS:-}; do
            echo "build=$c run=$r cell=\"$cell\" $(one "$cell" "$c")"
        done
    done
done
