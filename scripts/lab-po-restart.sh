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
export NETLAB_PREFIX=${NETLAB_PREFIX:-wgrs}
# shellcheck source=lab.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lab.sh"
TARGET=${RESTART_TARGET:-1.15}
KILL_AT=${KILL_AT:-0.5}
RESTART_DELAY=${RESTART_DELAY:-1}
VICTIM=h1

if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ]; then die "N must be >= 1"; fi
lab_check

# ---- lab, data set, configs, daemons ---------------------------------------------------------
lab_start wgrs
write_confs "$recv" "$tmp" "" "retries = 10" "timeout = $MASTER_TIMEOUT"
start_daemons 1
[ "$(cat "/proc/${popid[$VICTIM]}/comm" 2>/dev/null)" = wugui-po ] || die "victim PID is not the po"

declare -A rx0
for h in h0 $recv; do rx0[$h]=$(rx "$h"); done
tx0=$(tx h0)

# ---- master, kill and restart the victim ------------------------------------------------------
start_master ""

kill_bytes=$(awk -v b="$data_bytes" -v f="$KILL_AT" 'BEGIN {printf "%.0f", b * f}')
killed=0 rx_kill="" t_kill="" t_restart="" t_listen=""
deadline=$((master_started + MASTER_TIMEOUT))
while [ $SECONDS -lt $deadline ] && kill -0 "$mpid" 2>/dev/null; do
    got=$(( $(rx "$VICTIM") - ${rx0[$VICTIM]} ))
    if [ "$got" -ge "$kill_bytes" ]; then
        kill -KILL "${popid[$VICTIM]}"
        t_kill=$(now)
        rx_kill=$got
        killed=1
        wait "${popid[$VICTIM]}" 2>/dev/null || true
        forget "${popid[$VICTIM]}"
        break
    fi
    sleep 0.02
done
if [ $killed = 1 ]; then
    sleep "$RESTART_DELAY"
    t_restart=$(now)
    start_po "$VICTIM" 2
    wait_listen "$VICTIM" $port_po 20
    t_listen=$(now)
else
    echo "lab-po-restart: the victim was never killed (master ended or timed out first)" >&2
fi

# ---- wait for the master (bounded) -------------------------------------------------------------
wait_master "$MASTER_TIMEOUT"
# the po writes its tree (publish = each) before the master returns; a tiny grace period
# for the rx counters of the last ACK/close exchange
sleep 0.2
declare -A rx1
for h in h0 $recv; do rx1[$h]=$(rx "$h"); done
tx1=$(tx h0)

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
rx_ratio=$(ratio "$rx_v" "$data_bytes")
seconds=$(elapsed "$t_start" "$t_end")
pass=0
if [ $killed = 1 ] && [ "$master_exit" = 0 ] && [ $tree_ok = 1 ] &&
    awk -v r="$rx_ratio" -v t="$TARGET" 'BEGIN {exit !(r <= t)}'; then
    pass=1
fi
echo "case=po_restart n=$N size_mb=$SIZE_MB victim=$VICTIM rx_bytes=$rx_v rx_ratio=$rx_ratio target=$TARGET pass=$pass master_exit=$master_exit seconds=$seconds tree_ok=$tree_ok others_ok=$others_ok rate=$RATE data_bytes=$data_bytes"

line="others:"
for h in $recv; do
    [ "$h" = "$VICTIM" ] && continue
    line+=" $h=$(ratio "$(( ${rx1[$h]} - ${rx0[$h]} ))" "$data_bytes")"
done
line+=" (rx ratios) h0_tx=$(ratio "$((tx1 - tx0))" "$data_bytes")"
echo "$line"

resume=$(grep -m1 'event=resume ' "$conf/$VICTIM.log" 2>/dev/null || true)
held=$(sed -n 's/.* held=\([0-9]*\/[0-9]*\).*/\1/p' <<< "$resume")
if [ $killed = 1 ]; then
    kill_ratio=$(ratio "$rx_kill" "$data_bytes")
    t_res=""
    [ -n "$resume" ] && t_res=$(date -d "${resume%% *}" +%s.%N 2>/dev/null || true)
    echo "victim: resume=$([ -n "$resume" ] && echo 1 || echo 0) held=${held:-none} rx_at_kill=$rx_kill ($kill_ratio) kill_at_s=$(elapsed "$t_start" "$t_kill") restart_after_s=$(elapsed "$t_kill" "$t_restart") listening_after_s=$(elapsed "$t_kill" "$t_listen")${t_res:+ resume_after_s=$(elapsed "$t_kill" "$t_res")}"
else
    echo "victim: killed=0 resume=$([ -n "$resume" ] && echo 1 || echo 0)"
fi
[ "$master_exit" = 0 ] || { echo "--- master.err" >&2; tail -n 5 "$conf/master.err" >&2 || true; }
[ $pass = 1 ]
