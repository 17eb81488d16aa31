#!/usr/bin/env bash
# Issue 18 item 3: the receiver's CPU per GiB for a block payload from a TCP socket to a file,
# read(2) + pwrite(2) against splice(2) socket -> pipe -> file with the CRC-32 taken from the
# page cache, over 127.0.0.1 (examples/recv_path.rs; its header says what each method does).
#
# Prints the example's table (stat=best and stat=median lines per method and block size; each
# run's line goes to stderr), then per block size the checksummed method with the lowest median
# receiver CPU per GiB, and one verdict line:
#   recv_path_winner=METHOD   the checksummed method (read, splice-pread, splice-chunk, splice-map) with the
#                             lowest receiver CPU per GiB, medians summed over the block sizes
# The nocrc methods are printed for the copy cost alone and take no part in the verdict.
#
# Usage: scripts/bench-recv-path.sh [MIB]   (default 1024; env RUNS=5, BLOCKS=2M,256K,64K,
# METHODS=read,splice-pread,splice-chunk,splice-map,read-nocrc,splice-nocrc, BENCH_TMP=/dev/shm)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
cargo build --release --quiet --example recv_path
out=$(BENCH_TMP=${BENCH_TMP:-/dev/shm} target/release/examples/recv_path --mib "$mib" --runs "${RUNS:-5}" \
    --blocks "${BLOCKS:-2M,256K,64K}" \
    --methods "${METHODS:-read,splice-pread,splice-chunk,splice-map,read-nocrc,splice-nocrc}")
printf '%s\n' "$out"
printf '%s\n' "$out" | awk '
    $1 == "stat=median" {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        if (f["method"] ~ /nocrc/) next
        m = f["method"]; b = f["block"]; c = f["recv_cpu_s_per_gib"] + 0
        sum[m] += c
        if (!(b in best) || c < best[b]) { best[b] = c; win[b] = m }
    }
    END {
        for (b in win) printf "block=%s median_recv_cpu_winner=%s recv_cpu_s_per_gib=%.3f\n", b, win[b], best[b]
        w = ""
        for (m in sum) if (w == "" || sum[m] < sum[w]) w = m
        if (w == "") { print "recv_path_winner=none (no checksummed method ran)"; exit 1 }
        printf "recv_path_winner=%s\n", w
    }'
