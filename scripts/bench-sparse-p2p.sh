#!/usr/bin/env bash
# bench-sparse-p2p.sh - sparse and dense files through the swarm (`p2p = on`) on 127.0.0.1.
#
#   scripts/bench-sparse-p2p.sh [RUNS=5] [POS=3] [DENSE_MB=6] [SPARSE_MB=20]
#
# Starts a CAC and POS pos, then pushes RUNS times a tree of a DENSE_MB random file and a
# SPARSE_MB sparse file holding 4 bytes at its middle (new bytes each run, so every push moves
# data), with class `p2p = on`, `verify = crc32`, `block_size = 256K`. Each run's copies are
# compared with the source. A push that waits on a broken link for a timeout shows as a run of
# minutes. Prints one line per run and a summary:
#
#   case=sparse_p2p run=R seconds=T master_exit=0 identical=1
#   case=sparse_p2p runs=N pos=P max_seconds=M pass=1
#
# Exit 0 iff every run exited 0 with identical copies within LIMIT seconds (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
npos=${2:-3}
dense_mb=${3:-6}
sparse_mb=${4:-20}
limit=${LIMIT:-30}
bin=${WUGUI_BIN:-$PWD/target/release}
. scripts/local.sh
need_bins "$bin"
work=$(mktemp -d "${TMPDIR:-/tmp}/wugui-sparse-p2p.XXXXXX")

read -r -a ports <<< "$(free_ports $((npos + 1)))"
cac_port=${ports[0]}
po_ports=("${ports[@]:1}")
cluster_key "$work/cluster.key"
cac_conf "$work/cac.conf" "127.0.0.1:$cac_port" "$work/cluster.key" "$work/cac.log"
list=$(printf '127.0.0.1:%s, ' "${po_ports[@]}")
cat >> "$work/cac.conf" <<CONF

[class sparse]
po = ${list%, }
dest = /data/sparse
masters = 127.0.0.0/8
p2p = on
verify = crc32
block_size = 256K
CONF
master_conf "$work/master.conf" "127.0.0.1:$cac_port" "$work/master.log"
start_daemon wugui-cac "$work/cac"
wait_listening "$work/cac.out"
for i in "${!po_ports[@]}"; do
    po_conf "$work/po$i" "127.0.0.1:${po_ports[$i]}" "127.0.0.1:$cac_port" /data "fsync = off"
    start_daemon wugui-po "$work/po$i"
    wait_listening "$work/po$i.out" $!
done

src=$work/src
worst=0
pass=1
for run in $(seq 1 "$runs"); do
    rm -rf "$src"
    mkdir -p "$src"
    head -c $((dense_mb << 20)) /dev/urandom > "$src/dense.bin"
    truncate -s $((sparse_mb << 20)) "$src/sparse.img"
    printf '%04d' "$run" | dd of="$src/sparse.img" bs=1 seek=$(((sparse_mb << 20) / 2)) conv=notrunc status=none
    t0=$(date +%s.%N)
    rc=0
    timeout 600 "$bin/masterwugui" -f "$work/master.conf" -c sparse -p "$src" > "$work/master.out" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    seconds=$(printf %.2f "$(echo "$t1 - $t0" | bc)")
    identical=1
    for i in "${!po_ports[@]}"; do
        for f in dense.bin sparse.img; do
            cmp -s "$src/$f" "$work/po$i/data/sparse/$f" || identical=0
        done
    done
    echo "case=sparse_p2p run=$run seconds=$seconds master_exit=$rc identical=$identical"
    [ "$rc" = 0 ] && [ "$identical" = 1 ] && [ "$(echo "$seconds <= $limit" | bc)" = 1 ] || pass=0
    [ "$(echo "$seconds > $worst" | bc)" = 1 ] && worst=$seconds
done
echo "case=sparse_p2p runs=$runs pos=$npos max_seconds=$worst pass=$pass"
[ "$pass" = 1 ]
