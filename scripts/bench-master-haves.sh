#!/usr/bin/env bash
# Issue 16's master CPU: what the master machine spends per HAVE'd block in a chain transfer,
# with no network (examples/master_haves.rs; its header says how the pos are played). One line
# per case and build: us_per_have_block, us_per_event, and a digest of the schedule (two builds
# that schedule alike print the same one).
#
# Usage: scripts/bench-master-haves.sh [CASES]   (POSxBLOCKS,..; default 16x1024,16x4096,200x4096)
# env RUNS=3; KILL=PO@TURN,.. (a po dies, repair runs); ARGS="--have-every 4" (more options of
# the example: HAVEs batched as a po's chain HAVEs are); BASE=REV also builds the example against
# REV's code (a temp worktree; its target in target/master-haves-base) and interleaves the two.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cases=${1:-16x1024,16x4096,200x4096}
cargo build --release --quiet --example master_haves
names=(new) bins=("$root/target/release/examples/master_haves")
if [ -n "${BASE:-}" ]; then
    wt=$(mktemp -d)
    trap 'git -C "$root" worktree remove --force "$wt"' EXIT
    git worktree add --detach --quiet "$wt" "$BASE"
    cp examples/master_haves.rs "$wt/examples/"
    (cd "$wt" && CARGO_TARGET_DIR="$root/target/master-haves-base" cargo build --release --quiet --example master_haves)
    names+=(base) bins+=("$root/target/master-haves-base/release/examples/master_haves")
fi
for run in $(seq "${RUNS:-3}"); do
    for k in "${!bins[@]}"; do
        "${bins[$k]}" --cases "$cases" ${KILL:+--kill "$KILL"} ${ARGS:-} | sed "s/^/build=${names[$k]} run=$run /"
    done
done
