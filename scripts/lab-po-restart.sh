#!/usr/bin/env bash
# lab-po-restart.sh - resume after a po is killed, in the network lab (../shared/bench).
#
#   scripts/lab-po-restart.sh [N=4] [SIZE_MB=64] [RATE=100mbit]
#
# Brings up the lab (netlab.sh, prefix $NETLAB_PREFIX, default wgrs), makes a data set
# (gendata.py), starts a CAC on h0 and a po on h1..hN (class: p2p = on, verify = crc32,
# publish = each, retries = 10), runs masterwugui on h0, and when the victim po (h1) has
# received about half of the data (its eth0 rx_bytes delta) kills it with SIGKILL, waits
# ~1 s and starts it again with the same po.conf (same state_dir, same root). Then waits for
# the master (bounded), checks h1's tree against the source (md5sum listing) and prints
#
#   case=po_restart n=N size_mb=S victim=h1 rx_bytes=X rx_ratio=X/S target=1.15 pass=0|1 master_exit=RC seconds=T ...
#
# rx_bytes = what h1's eth0 received from the master's start to its end (both po runs),
# rx_ratio = rx_bytes / data bytes; pass=1 iff rx_ratio <= target, the master exited 0
# and h1's tree equals the source. Then a line with the other receivers' ratios and a line
# about the victim's resume (event=resume held=K/M in its po log). Exit 0 iff pass=1.
#
# Environment: WUGUI_BIN (default target/release of this checkout), BENCH_DIR (the lab,
# default /work/shared/bench), NETLAB_PREFIX (wgrs), RESTART_TARGET (1.15),
# KILL_AT (fraction of the data, 0.5), RESTART_DELAY (1 s), MASTER_TIMEOUT (180 s),
# KEEP=1 keeps the temp dir (logs) and prints its path.
# Needs root. Traffic stays inside the lab (198.18.0.0/24).
set -euo pipefail

N=${1:-4}
SIZE_MB=${2:-64}
RATE=${3:-100mbit}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WUGUI_BIN:-$here/target/release}
BENCH_DIR=${BENCH_DIR:-/work/shared/bench}
NETLAB=$BENCH_DIR/netlab.sh
export NETLAB_PREFIX=${NETLAB_PREFIX:-wgrs}
TARGET=${RESTART_TARGET:-1.15}
KILL_AT=${KILL_AT:-0.5}
RESTART_DELAY=${RESTART_DELAY:-1}
MASTER_TIMEOUT=${MASTER_TIMEOUT:-180}
VICTIM=h1
port_cac=7100
port_po=7200
src_addr=198.18.0.10

die() { echo "lab-po-restart: $*" >&2; exit 2; }
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] || die "N must be >= 1"
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for b in wugui-cac wugui-po masterwugui; do
    [ -x "$bin/$b" ] || die "no $bin/$b: run cargo build --release"
done
[ -x "$NETLAB" ] || die "no $NETLAB"

addr() { echo "198.18.0.$((10 + ${1#h}))"; }
# rx HOST: bytes received by HOST's eth0 (read inside its namespace)
rx() { "$NETLAB" exec "$1" cat /sys/class/net/eth0/statistics/rx_bytes; }
now() { date +%s.%N; }
tree_manifest() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum); }

tmp=""
lab_up=0
pids=()
cleanup() {
    local rc=$? p alive deadline
    trap - EXIT INT TERM
    # our processes, by PID: TERM, then KILL after 5 s
    alive=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    if [ ${#alive[@]} -gt 0 ]; then
        kill -TERM "${alive[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while [ $SECONDS -lt $deadline ]; do
            local any=0
            for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && any=1; done
            [ $any = 0 ] && break
            sleep 0.1
        done
        kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ $lab_up = 1 ] && "$NETLAB" down || true
    if [ -n "$tmp" ]; then
        if [ "${KEEP:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tmp=$(mktemp -d "${TMPDIR:-/tmp}/wgrs.XXXXXX")
conf=$tmp/conf
mkdir -p "$conf"

# ---- lab and data set ------------------------------------------------------------------
"$NETLAB" up "$N" --rate "$RATE"
lab_up=1
python3 "$BENCH_DIR/gendata.py" "$SIZE_MB" "$tmp/src" >/dev/null
data_bytes=$(find "$tmp/src" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

# ---- configs -----------------------------------------------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$conf/cluster.key"
recv=""
for i in $(seq 1 "$N"); do recv+="${recv:+ }h$i"; done
pos=""
for h in $recv; do pos+="${pos:+, }$(addr "$h"):$port_po"; done
cat > "$conf/cac.conf" <<CONF
[cac]
listen = $src_addr:$port_cac
secret_file = $conf/cluster.key
log = $conf/cac.log

[class bench]
po = $pos
dest = /data
masters = 198.18.0.0/24
p2p = on
verify = crc32
publish = each
retries = 10
timeout = $MASTER_TIMEOUT
CONF
for h in $recv; do
    d=$tmp/$h
    mkdir -p "$d/state"
    cat > "$conf/$h.conf" <<CONF
[po]
listen = $(addr "$h"):$port_po
cac = $src_addr:$port_cac
state_dir = $d/state
allow_dest = /data
root = $d
log = $conf/$h.log
CONF
done
printf '[master]\ncac = %s:%s\nlog = %s/master.log\n' "$src_addr" "$port_cac" "$conf" > "$conf/master.conf"

# wait_listen HOST PORT TIMEOUT
wait_listen() {
    local deadline=$((SECONDS + $3))
    until "$NETLAB" exec "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q .; do
        [ $SECONDS -lt $deadline ] || die "$1: nothing listens on port $2 after $3 s"
        sleep 0.05
    done
}

# start_po HOST TAG: the po in HOST's namespace, in the background; PID in $po_pid.
# (netlab.sh exec and ip netns exec both exec, so $! is the po itself.)
start_po() {
    "$NETLAB" exec "$1" "$bin/wugui-po" -f "$conf/$1.conf" >"$conf/$1.$2.out" 2>&1 &
    po_pid=$!
    pids+=("$po_pid")
}

# ---- daemons -----------------------------------------------------------------------------
"$NETLAB" exec h0 "$bin/wugui-cac" -f "$conf/cac.conf" >"$conf/cac.out" 2>&1 &
pids+=("$!")
declare -A popid
for h in $recv; do start_po "$h" 1; popid[$h]=$po_pid; done
wait_listen h0 $port_cac 20
for h in $recv; do wait_listen "$h" $port_po 20; done
[ "$(cat "/proc/${popid[$VICTIM]}/comm" 2>/dev/null)" = wugui-po ] || die "victim PID is not the po"

declare -A rx0
for h in h0 $recv; do rx0[$h]=$(rx "$h"); done
tx0=$("$NETLAB" exec h0 cat /sys/class/net/eth0/statistics/tx_bytes)

# ---- master, kill and restart the victim ------------------------------------------------------
t0=$(now)
"$NETLAB" exec h0 "$bin/masterwugui" -f "$conf/master.conf" -c bench -p "$tmp/src" \
    >"$conf/master.out" 2>"$conf/master.err" &
mpid=$!
pids+=("$mpid")

kill_bytes=$(awk -v b="$data_bytes" -v f="$KILL_AT" 'BEGIN {printf "%d", b * f}')
killed=0 rx_kill="" t_kill="" t_restart="" t_listen=""
deadline=$((SECONDS + MASTER_TIMEOUT))
while [ $SECONDS -lt $deadline ] && kill -0 "$mpid" 2>/dev/null; do
    got=$(( $(rx "$VICTIM") - ${rx0[$VICTIM]} ))
    if [ "$got" -ge "$kill_bytes" ]; then
        kill -KILL "${popid[$VICTIM]}"
        t_kill=$(now)
        rx_kill=$got
        killed=1
        wait "${popid[$VICTIM]}" 2>/dev/null || true
        break
    fi
    sleep 0.02
done
if [ $killed = 1 ]; then
    sleep "$RESTART_DELAY"
    t_restart=$(now)
    start_po "$VICTIM" 2
    popid[$VICTIM]=$po_pid
    wait_listen "$VICTIM" $port_po 20
    t_listen=$(now)
else
    echo "lab-po-restart: the victim was never killed (master ended or timed out first)" >&2
fi

# ---- wait for the master (bounded) -------------------------------------------------------------
master_exit=""
while [ $SECONDS -lt $deadline ] && kill -0 "$mpid" 2>/dev/null; do sleep 0.05; done
if kill -0 "$mpid" 2>/dev/null; then
    echo "lab-po-restart: master still running after ${MASTER_TIMEOUT} s" >&2
    kill -TERM "$mpid" 2>/dev/null || true
    master_exit=timeout
    wait "$mpid" 2>/dev/null || true
else
    rc=0; wait "$mpid" || rc=$?
    master_exit=$rc
fi
t1=$(now)
# the po writes its tree (publish = each) before the master returns; a tiny grace period
# for the rx counters of the last ACK/close exchange
sleep 0.2
declare -A rx1
for h in h0 $recv; do rx1[$h]=$(rx "$h"); done
tx1=$("$NETLAB" exec h0 cat /sys/class/net/eth0/statistics/tx_bytes)

# ---- verdict -----------------------------------------------------------------------------------
tree_ok=0
if [ -d "$tmp/$VICTIM/data" ] && cmp -s <(tree_manifest "$tmp/src") <(tree_manifest "$tmp/$VICTIM/data"); then
    tree_ok=1
fi
others_ok=1
for h in $recv; do
    [ "$h" = "$VICTIM" ] && continue
    cmp -s <(tree_manifest "$tmp/src") <(tree_manifest "$tmp/$h/data" 2>/dev/null) 2>/dev/null || others_ok=0
done
rx_v=$(( ${rx1[$VICTIM]} - ${rx0[$VICTIM]} ))
ratio=$(awk -v x="$rx_v" -v s="$data_bytes" 'BEGIN {printf "%.3f", x / s}')
seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
pass=0
if [ $killed = 1 ] && [ "$master_exit" = 0 ] && [ $tree_ok = 1 ] &&
    awk -v r="$ratio" -v t="$TARGET" 'BEGIN {exit !(r <= t)}'; then
    pass=1
fi
echo "case=po_restart n=$N size_mb=$SIZE_MB victim=$VICTIM rx_bytes=$rx_v rx_ratio=$ratio target=$TARGET pass=$pass master_exit=$master_exit seconds=$seconds tree_ok=$tree_ok others_ok=$others_ok rate=$RATE data_bytes=$data_bytes"

line="others:"
for h in $recv; do
    [ "$h" = "$VICTIM" ] && continue
    line+=" $h=$(awk -v x="$(( ${rx1[$h]} - ${rx0[$h]} ))" -v s="$data_bytes" 'BEGIN {printf "%.3f", x / s}')"
done
line+=" (rx ratios) h0_tx=$(awk -v x="$((tx1 - tx0))" -v s="$data_bytes" 'BEGIN {printf "%.3f", x / s}')"
echo "$line"

resume=$(grep -m1 'event=resume ' "$conf/$VICTIM.log" 2>/dev/null || true)
held=$(sed -n 's/.* held=\([0-9]*\/[0-9]*\).*/\1/p' <<< "$resume")
if [ $killed = 1 ]; then
    f() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
    kill_ratio=$(awk -v x="$rx_kill" -v s="$data_bytes" 'BEGIN {printf "%.3f", x / s}')
    t_res=""
    [ -n "$resume" ] && t_res=$(date -d "${resume%% *}" +%s.%N 2>/dev/null || true)
    echo "victim: resume=$([ -n "$resume" ] && echo 1 || echo 0) held=${held:-none} rx_at_kill=$rx_kill ($kill_ratio) kill_at_s=$(f "$t0" "$t_kill") restart_after_s=$(f "$t_kill" "$t_restart") listening_after_s=$(f "$t_kill" "$t_listen")${t_res:+ resume_after_s=$(f "$t_kill" "$t_res")}"
else
    echo "victim: killed=0 resume=$([ -n "$resume" ] && echo 1 || echo 0)"
fi
[ "$master_exit" = 0 ] || { echo "--- master.err" >&2; tail -n 5 "$conf/master.err" >&2 || true; }
[ $pass = 1 ]
