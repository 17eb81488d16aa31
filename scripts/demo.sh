#!/usr/bin/env bash
# A real distribution on this machine: builds wugui, starts a CAC and 3 pos on 127.0.0.1 with
# generated configs, pushes a generated tree with the seed's own command line, shows
# wugui-stat, checks every copy and cleans up. Usage: scripts/demo.sh [SIZE_MB]
# Env: WUGUI_BIN=DIR runs the binaries in DIR (e.g. /usr/bin, installed by the .deb) and builds
# nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-64}
if [ -n "${WUGUI_BIN:-}" ]; then
    bin=$WUGUI_BIN
else
    cargo build --release --quiet
    bin=$PWD/target/release
fi
. scripts/local.sh
need_bins "$bin"
work=$(mktemp -d /tmp/wugui-demo.XXXXXX)

echo "== generating a ${size_mb} MiB tree in $work/src"
src=$work/src
mkdir -p "$src/index/deep/er" "$src/conf" "$src/empty/dir" "$src/sub"
head -c $((size_mb * 1024 * 1024 * 9 / 10)) /dev/urandom > "$src/index/big.bin"
for i in $(seq 1 40); do head -c $((RANDOM * 4)) /dev/urandom > "$src/index/deep/er/part-$i"; done
echo "threads = 8" > "$src/conf/base.conf"; chmod 640 "$src/conf/base.conf"
ln -s index/big.bin "$src/latest"
for f in a.txt b.txt sub/c.txt data.txt; do echo "excluded" > "$src/$f"; done

echo "== starting a CAC and 3 pos on 127.0.0.1"
cluster_key "$work/cluster.key"
read -r -a ports <<< "$(free_ports 4)"
cac_port=${ports[0]}
cac_conf "$work/cac.conf" "127.0.0.1:$cac_port" "$work/cluster.key" "$work/cac.log"
cat >> "$work/cac.conf" <<CONF

[class base1]
po = 127.0.0.1:${ports[1]}, 127.0.0.1:${ports[2]}, 127.0.0.1:${ports[3]}
dest = /home/work/data/base
masters = 127.0.0.0/8
block_size = 4M
verify = md5
flag_file = data.done
CONF
start_daemon wugui-cac "$work/cac"
for i in 0 1 2; do
    po_conf "$work/po$i" "127.0.0.1:${ports[$((i + 1))]}" "127.0.0.1:$cac_port" /home/work/data
    start_daemon wugui-po "$work/po$i"
done
for f in cac po0 po1 po2; do wait_listening "$work/$f.out"; done
master_conf "$work/master.conf" "127.0.0.1:$cac_port" "$work/master.log"

echo "== masterwugui -c base1 -x a.txt b.txt c.txt -p $src"
"$bin/masterwugui" -f "$work/master.conf" -c base1 -x a.txt b.txt c.txt -p "$src" &
mpid=$!
sleep 0.5
echo "== wugui-stat -s 127.0.0.1:$cac_port (while it runs)"
"$bin/wugui-stat" -s "127.0.0.1:$cac_port" || true
rc=0; wait $mpid || rc=$?
echo "== masterwugui exited $rc"
echo "== wugui-stat -s 127.0.0.1:$cac_port (after)"
"$bin/wugui-stat" -s "127.0.0.1:$cac_port"

echo "== checking the copies"
ok=1
listing() { (cd "$1" && find . -path ./data.done -prune -o \( -type f -o -type l -o -type d \) -printf '%p %y %m %s %l\n' | sort); }
contents() { (cd "$1" && find . -type f ! -name data.done -exec md5sum {} + | sort -k2); }
want_list=$(listing "$src" | grep -v -E '(^\./(a|b|data)\.txt |^\./sub/c\.txt )')
want_sums=$(contents "$src" | grep -v -E ' \./(a|b|data)\.txt$| \./sub/c\.txt$')
for i in 0 1 2; do
    d=$work/po$i/home/work/data/base
    if [ "$(listing "$d")" == "$want_list" ] && [ "$(contents "$d")" == "$want_sums" ] && [ -f "$d/data.done" ]; then
        echo "po$i: identical ($(du -sh "$d" | cut -f1)), excluded files absent, flag file present"
    else
        echo "po$i: DIFFERS"; ok=0
        diff <(echo "$want_list") <(listing "$d") | head -20 || true
    fi
done
[ $rc -eq 0 ] && [ $ok -eq 1 ] && echo "== demo OK" || { echo "== demo FAILED (see logs in $work)"; KEEP=1; exit 1; }
