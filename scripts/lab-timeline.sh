#!/usr/bin/env bash
# lab-timeline.sh - per-host link rates over time during a network-lab run.
#
#   scripts/lab-timeline.sh [N=8] [SIZE_MB=64] [RATE=100mbit] [WINDOW_S=0.5]
#
# Runs `../shared/bench/run.sh wugui N SIZE_MB RATE` and, while the lab is up, reads every
# host's eth0 rx and tx byte counters inside its namespace about every 0.1 s. Prints the
# harness's contender line, then one line a window:
#
#   t=SECONDS src_tx=MBIT po_rx=AVG/MIN/MAX po_tx=AVG/MIN/MAX
#
# in Mbit/s (h0 is the source; h1..hN the pos). po_tx is the pos' uplinks: how busy they are
# bounds the swarm (see the note of 2026-11-28). Env as for run.sh (NETLAB_HOST_RATES,
# WUGUI_CLASS_EXTRA, ...); BENCH_DIR (../shared/bench). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-8}
size=${2:-64}
rate=${3:-100mbit}
window=${4:-0.5}
bench=${BENCH_DIR:-/work/shared/bench}
prefix=${NETLAB_PREFIX:-wbench}
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT

sample() {
    local h t line
    for _ in $(seq 1 600); do ip netns list | grep -q "^$prefix-h$n\b" && break; sleep 0.05; done
    while ip netns list | grep -q "^$prefix-h0\b"; do
        t=$(date +%s.%N)
        line="$t"
        for h in $(seq 0 "$n"); do
            line+=" $(ip netns exec "$prefix-h$h" cat /sys/class/net/eth0/statistics/rx_bytes \
                /sys/class/net/eth0/statistics/tx_bytes 2>/dev/null | tr '\n' ' ' || echo '0 0')"
        done
        echo "$line"
        sleep 0.1
    done
}
sample > "$samples" &
sampler=$!
NETLAB_PREFIX=$prefix "$bench/run.sh" wugui "$n" "$size" "$rate" 2>&1 | grep '^contender=' || true
wait "$sampler" 2>/dev/null || true
python3 - "$samples" "$n" "$window" <<'PY'
import sys
path, n, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = [list(map(float, l.split())) for l in open(path) if len(l.split()) == 1 + 2 * (n + 1)]
if not rows:
    sys.exit("no samples (was the lab up?)")
t0, prev = rows[0][0], rows[0]
def rates(a, b, dt, col):
    return [(b[1 + 2 * h + col] - a[1 + 2 * h + col]) * 8 / dt / 1e6 for h in range(n + 1)]
fmt = lambda v: f"{sum(v) / len(v):.0f}/{min(v):.0f}/{max(v):.0f}"
for r in rows[1:]:
    dt = r[0] - prev[0]
    if dt < window:
        continue
    rx, tx = rates(prev, r, dt, 0), rates(prev, r, dt, 1)
    if max(rx + tx) > 1:
        print(f"t={r[0] - t0:.1f} src_tx={tx[0]:.0f} po_rx={fmt(rx[1:])} po_tx={fmt(tx[1:])}")
    prev = r
PY
