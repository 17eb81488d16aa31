#!/usr/bin/env bash
# bench-many-files.sh - a tree of many small files through wugui on 127.0.0.1.
#
#   scripts/bench-many-files.sh [FILES=100000] [FILE_BYTES=512]   (env POS=1: how many pos, p2p off)
#
# Makes FILES files of FILE_BYTES (1,000 directories) under TMPDIR (default /dev/shm, so the
# disk is out of it), starts a CAC and one po (fsync = off) on 127.0.0.1, pushes the tree with
# masterwugui under /usr/bin/time (for its peak RSS), samples the po's peak RSS, checks the
# copy (an md5sum listing of both trees) and prints
#
#   case=many_files files=F file_bytes=B seconds=T master_rss_kb=R po_rss_kb=P identical=1 target_master_kb=65536 pass=1
#
# pass=1 iff the master exited 0, the copy is identical and the master's peak RSS is at most
# 64 MiB (issue #7). Exit 0 iff pass=1.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
size=${2:-512}
bin=${WUGUI_BIN:-$PWD/target/release}
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
. scripts/local.sh
need_bins "$bin"
work=$(mktemp -d "${TMPDIR:-/dev/shm}/wugui-files.XXXXXX")

python3 - "$work/src" "$files" "$size" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dirs = max(1, min(1000, n // 100))
for d in range(dirs):
    os.makedirs(os.path.join(root, f"d{d:04d}"), exist_ok=True)
for i in range(n):
    with open(os.path.join(root, f"d{i % dirs:04d}", f"f{i:06d}"), "wb") as f:
        f.write(os.urandom(size))
PY

npos=${POS:-1}
read -r -a ports <<< "$(free_ports $((npos + 1)))"
cac_port=${ports[0]}
po_list=$(printf '127.0.0.1:%s, ' "${ports[@]:1}")
cluster_key "$work/cluster.key"
cac_conf "$work/cac.conf" "127.0.0.1:$cac_port" "$work/cluster.key" "$work/cac.log"
cat >> "$work/cac.conf" <<CONF

[class files]
po = ${po_list%, }
dest = /data/files
masters = 127.0.0.0/8
verify = crc32
CONF
master_conf "$work/master.conf" "127.0.0.1:$cac_port" "$work/master.log"
start_daemon wugui-cac "$work/cac"
po_pids=()
for i in $(seq 0 $((npos - 1))); do
    po_conf "$work/po$i" "127.0.0.1:${ports[$((i + 1))]}" "127.0.0.1:$cac_port" /data "fsync = off"
    start_daemon wugui-po "$work/po$i"
    po_pids+=($!)
done
wait_listening "$work/cac.out"
for i in $(seq 0 $((npos - 1))); do wait_listening "$work/po$i.out" "${po_pids[$i]}"; done

t0=$(date +%s.%N)
rc=0
/usr/bin/time -f '%M' -o "$work/master.rss" timeout 1800 \
    "$bin/masterwugui" -f "$work/master.conf" -c files -p "$work/src" > "$work/master.out" 2>&1 || rc=$?
t1=$(date +%s.%N)
po_rss=$(for p in "${po_pids[@]}"; do awk '/^VmHWM/ { print $2 }' "/proc/$p/status"; done | sort -n | tail -1)
master_rss=$(tail -1 "$work/master.rss")
[ "$rc" = 0 ] || { echo "masterwugui exited $rc"; tail -5 "$work/master.out"; }
listing() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum); }
want=$(listing "$work/src" | md5sum)
identical=1
for i in $(seq 0 $((npos - 1))); do
    [ "$want" = "$(listing "$work/po$i/data/files" | md5sum)" ] || identical=0
done
seconds=$(echo "$t1 - $t0" | bc)
pass=0
[ "$rc" = 0 ] && [ "$identical" = 1 ] && [ "$master_rss" -le 65536 ] && pass=1
echo "case=many_files pos=$npos files=$files file_bytes=$size seconds=$seconds master_rss_kb=$master_rss po_rss_kb=$po_rss identical=$identical master_exit=$rc target_master_kb=65536 pass=$pass"
[ "$pass" = 1 ]
