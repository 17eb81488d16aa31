#!/usr/bin/env bash
# lab-po-kill.sh - a po killed for good halfway through, in the network lab (../shared/bench).
#
#   scripts/lab-po-kill.sh [N=8] [SIZE_MB=64] [RATE=100mbit]
#
# Brings up the lab (netlab.sh, prefix $NETLAB_PREFIX, default wgkl), makes a data set
# (gendata.py), starts a CAC on h0 and a po on h1..hN (class: p2p = on, verify = crc32,
# publish = each), runs masterwugui on h0 and, when the victim po (VICTIM, default h4: mid-chain
# in every stripe of a rotated plan) has received KILL_AT (0.5) of the data (its eth0 rx_bytes),
# kills it with SIGKILL and never restarts it. Then waits for the master (bounded) and prints
#
#   case=po_kill n=N size_mb=S victim=h4 others_max=R target=1.25 pass=0|1 master_exit=RC trees_ok=0|1 ...
#
# others_max = the latest publish (each po's own event=publish timestamp) of the other pos,
# seconds after the master's start, divided by the ideal S/R. pass=1 iff others_max <= target,
# every other po's tree equals the source and the master exited 3 (some pos failed). Then one
# line with each survivor's ratio and h0's tx bytes ÷ S. Exit 0 iff pass=1.
#
# Environment: WUGUI_BIN, BENCH_DIR, NETLAB_PREFIX (wgkl), VICTIM (h4), KILL_AT (0.5), SIGNAL (KILL, or
# STOP: the victim stalls, alive with its links open, and is not resumed until the end),
# KILL_TARGET (1.25), MASTER_TIMEOUT (180 s), WUGUI_CLASS_EXTRA (class lines, ';'-separated).
# Needs root. Traffic stays inside the lab (198.18.0.0/24).
set -euo pipefail

N=${1:-8}
SIZE_MB=${2:-64}
RATE=${3:-100mbit}
export NETLAB_PREFIX=${NETLAB_PREFIX:-wgkl}
# shellcheck source=lab.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lab.sh"
TARGET=${KILL_TARGET:-1.25}
KILL_AT=${KILL_AT:-0.5}
VICTIM=${VICTIM:-h4}
# STOP: the victim stalls (alive, its sockets open, reading nothing) instead of dying.
SIGNAL=${SIGNAL:-KILL}
[ "$SIGNAL" = KILL ] || [ "$SIGNAL" = STOP ] || die "SIGNAL must be KILL or STOP"

if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 2 ]; then die "N must be >= 2"; fi
[ "${VICTIM#h}" -ge 1 ] && [ "${VICTIM#h}" -le "$N" ] || die "VICTIM must be one of h1..h$N"
# The link rate in bit/s (tc's units: kbit, mbit, gbit).
rate_bps=$(awk -v r="$RATE" 'BEGIN {
    n = r + 0; u = tolower(substr(r, length(n "") + 1))
    m = (u ~ /^g/) ? 1e9 : (u ~ /^m/) ? 1e6 : (u ~ /^k/) ? 1e3 : 1
    print n * m }')
lab_check

lab_start wgkl
write_confs "$recv" "$tmp" "${WUGUI_CLASS_EXTRA:-}" "timeout = $MASTER_TIMEOUT"
start_daemons 1
v0=$(rx "$VICTIM")
tx0=$(tx h0)
start_master ""

kill_bytes=$(awk -v b="$data_bytes" -v f="$KILL_AT" 'BEGIN {printf "%.0f", b * f}')
killed=0 t_kill=""
deadline=$((master_started + MASTER_TIMEOUT))
while [ $SECONDS -lt $deadline ] && kill -0 "$mpid" 2>/dev/null; do
    if [ $(( $(rx "$VICTIM") - v0 )) -ge "$kill_bytes" ]; then
        kill -"$SIGNAL" "${popid[$VICTIM]}"
        t_kill=$(now)
        killed=1
        if [ "$SIGNAL" = KILL ]; then
            wait "${popid[$VICTIM]}" 2>/dev/null || true
            forget "${popid[$VICTIM]}"
        fi
        break
    fi
    sleep 0.02
done
[ $killed = 1 ] || echo "lab-po-kill: the victim was never killed (the master ended first)" >&2
wait_master "$MASTER_TIMEOUT"
tx1=$(tx h0)

ideal=$(awk -v b="$data_bytes" -v r="$rate_bps" 'BEGIN {print b * 8 / r}')
trees_ok=1 worst=0 line="others:"
for h in $recv; do
    [ "$h" = "$VICTIM" ] && continue
    cmp -s <(tree_manifest "$tmp/src") <(tree_manifest "$tmp/$h/data" 2>/dev/null) 2>/dev/null || trees_ok=0
    pub=$(grep -m1 'event=publish ' "$conf/$h.log" 2>/dev/null || true)
    if [ -z "$pub" ]; then r=inf; worst=inf; else
        r=$(awk -v t="$(date -d "${pub%% *}" +%s.%N)" -v s="$t_start" -v i="$ideal" 'BEGIN {printf "%.3f", (t - s) / i}')
        [ "$worst" = inf ] || worst=$(awk -v a="$worst" -v b="$r" 'BEGIN {print (b > a) ? b : a}')
    fi
    line+=" $h=$r"
done
pass=0
if [ $killed = 1 ] && [ "$master_exit" = 3 ] && [ $trees_ok = 1 ] && [ "$worst" != inf ] &&
    awk -v r="$worst" -v t="$TARGET" 'BEGIN {exit !(r <= t)}'; then
    pass=1
fi
echo "case=po_kill signal=$SIGNAL n=$N size_mb=$SIZE_MB rate=$RATE victim=$VICTIM others_max=$worst target=$TARGET pass=$pass master_exit=$master_exit trees_ok=$trees_ok killed=$killed kill_at_s=$([ $killed = 1 ] && elapsed "$t_start" "$t_kill") ideal_s=$ideal seconds=$(elapsed "$t_start" "$t_end")"
echo "$line h0_tx=$(ratio "$((tx1 - tx0))" "$data_bytes")"
grep -h 'event=transfer_end' "$conf/master.log" 2>/dev/null | tail -n1 || true
[ $pass = 1 ]
