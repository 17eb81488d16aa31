#!/usr/bin/env bash
# bench-sparse.sh - a huge sparse file through wugui on 127.0.0.1.
#
#   scripts/bench-sparse.sh [SIZE_GB=200] [DATA_MB=8]
#
# Makes a SIZE_GB file that is all holes except DATA_MB of random data in 1 MiB pieces spread
# over it (first and last MiB included), starts a CAC and one po on 127.0.0.1, pushes it with
# masterwugui (class defaults: verify md5, delta on, block_size auto), then checks the copy:
# same size, same bytes (data extents of both files compared, holes read as zeros), and the
# disk it uses. Prints
#
#   case=sparse size_gb=G data_mb=D seconds=T master_bytes=B src_disk=X copy_disk=Y identical=1 pass=1
#
# master_bytes is what the master sent (its transfer_end line). Exit 0 iff pass=1.
# Needs about DATA_MB x 2 of disk under TMPDIR (default /tmp), which must keep holes.
set -euo pipefail
cd "$(dirname "$0")/.."
size_gb=${1:-200}
data_mb=${2:-8}
bin=${WUGUI_BIN:-$PWD/target/release}
. scripts/local.sh
need_bins "$bin"
work=$(mktemp -d "${TMPDIR:-/tmp}/wugui-sparse.XXXXXX")

src=$work/src
mkdir -p "$src"
python3 - "$src/huge.img" "$size_gb" "$data_mb" <<'PY'
import os, sys
path, gb, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = gb << 30
with open(path, "wb") as f:
    f.truncate(size)
    step = (size - (1 << 20)) // max(mb - 1, 1)
    for i in range(mb):
        f.seek(min(i * step, size - (1 << 20)) & ~4095)
        f.write(os.urandom(1 << 20))
PY
src_disk=$(du -B1 "$src/huge.img" | cut -f1)

read -r cac_port po_port <<< "$(free_ports 2)"
cluster_key "$work/cluster.key"
cac_conf "$work/cac.conf" "127.0.0.1:$cac_port" "$work/cluster.key" "$work/cac.log"
cat >> "$work/cac.conf" <<CONF

[class sparse]
po = 127.0.0.1:$po_port
dest = /data/sparse
masters = 127.0.0.0/8
CONF
po_conf "$work/po" "127.0.0.1:$po_port" "127.0.0.1:$cac_port" /data
master_conf "$work/master.conf" "127.0.0.1:$cac_port" "$work/master.log"
start_daemon wugui-cac "$work/cac"
start_daemon wugui-po "$work/po"
wait_listening "$work/cac.out"
wait_listening "$work/po.out" $!

t0=$(date +%s.%N)
rc=0
timeout 3600 "$bin/masterwugui" -f "$work/master.conf" -c sparse -p "$src" > "$work/master.out" 2>&1 || rc=$?
t1=$(date +%s.%N)
copy=$work/po/data/sparse/huge.img
[ "$rc" = 0 ] || { echo "masterwugui exited $rc"; tail -5 "$work/master.out" "$work/master.log"; }
master_bytes=$(grep -o 'master_bytes=[0-9]*' "$work/master.log" | tail -1 | cut -d= -f2)
copy_disk=$(du -B1 "$copy" 2>/dev/null | cut -f1 || echo 0)
identical=$(python3 - "$src/huge.img" "$copy" <<'PY'
import os, sys
def extents(f):
    fd, size, at, out = f.fileno(), os.fstat(f.fileno()).st_size, 0, []
    while at < size:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end - start))
        at = end
    return out
try:
    a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
except OSError:
    print(0); sys.exit()
if os.fstat(a.fileno()).st_size != os.fstat(b.fileno()).st_size:
    print(0); sys.exit()
# Outside both files' data extents both read as zeros; inside, compare the bytes.
for off, n in extents(a) + extents(b):
    if os.pread(a.fileno(), n, off) != os.pread(b.fileno(), n, off):
        print(0); sys.exit()
print(1)
PY
)
seconds=$(echo "$t1 - $t0" | bc)
pass=0
[ "$rc" = 0 ] && [ "$identical" = 1 ] && [ "$copy_disk" -le $((src_disk * 2)) ] && pass=1
echo "case=sparse size_gb=$size_gb data_mb=$data_mb seconds=$seconds master_bytes=${master_bytes:-0} src_disk=$src_disk copy_disk=$copy_disk identical=$identical master_exit=$rc pass=$pass"
[ "$pass" = 1 ]
