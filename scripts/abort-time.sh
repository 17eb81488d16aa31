#!/usr/bin/env bash
# How long masterwugui takes to exit after SIGINT mid-push: runs the real-process test
# (tests/signals.rs, sigint_on_the_master_aborts_the_push_everywhere) RUNS times and prints
#   case=sigint_abort run=I took=DURATION
# The test itself fails above 5 s. Usage: RUNS=5 scripts/abort-time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
cargo test --release --quiet --test signals --no-run 2>/dev/null
for i in $(seq 1 "$runs"); do
    out=$(cargo test --release --quiet --test signals sigint_on_the_master -- --nocapture 2>&1)
    secs=$(printf '%s\n' "$out" | sed -n 's/^masterwugui exited \(.*\) after SIGINT$/\1/p')
    [ -n "$secs" ] || { printf '%s\n' "$out" >&2; exit 1; }
    echo "case=sigint_abort run=$i took=$secs"
done
