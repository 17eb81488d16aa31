#!/usr/bin/env bash
# lab-sites.sh - sites (issue 17) in the network lab (../shared/bench): bytes that enter each
# site, counted by the kernel, with and without site labels.
#
#   scripts/lab-sites.sh [LAYOUT=2x8] [SIZE_MB=64] [RATE=100mbit]
#
# LAYOUT is SITESxPOS (2x8, 4x4, ...): N = SITES*POS receivers h1..hN; host hI is in site
# dc((I-1) mod SITES + 1), so the sites are interleaved in the class's po list as hosts of
# several data centres usually are. The master (h0, with the CAC) is in none of them: every
# site is remote. Brings up the lab (netlab.sh, prefix $NETLAB_PREFIX, default wgsi), makes a
# data set (gendata.py), and runs two transfers (class: p2p = on, verify = crc32,
# publish = each), each with fresh daemons, empty dests and empty state:
#   run=none    the class lists the pos without labels
#   run=labels  the class lists them as ADDR:PORT@dcK
# Independently of wugui, an nftables counter on every host counts the bytes (IP packets, so
# headers included) it received from addresses outside its own site, the master's and the
# CAC's (h0) included. Per run it prints
#
#   case=sites layout=2x8 run=none|labels seconds=T ratio=T/ideal site_in=dc1:R,dc2:R master_exit=RC trees_ok=0|1 [wugui_site_in=dc1:R,...]
#
# with R = bytes that entered the site ÷ the data bytes (the issue's target: <= 1.05 a site
# with labels), wugui_site_in the master's own figures (labels only), then
#
#   case=sites layout=2x8 time_ratio=labels/none max_site_in=R target=1.05 pass=0|1
#
# pass=1 iff both runs exited 0 with identical trees, every site's R <= target with labels,
# and the time ratio <= 1 + TIME_SLACK (0.05, the lab's noise). Without chains (issue 16)
# the swarm alone does not reach the target: the run still shows its cross-site bytes.
# Exit 0 iff pass=1.
#
# Environment: WUGUI_BIN (default target/release of this checkout), BENCH_DIR (the lab,
# default /work/shared/bench), NETLAB_PREFIX (wgsi), SITES_TARGET (1.05), TIME_SLACK (0.05),
# MASTER_TIMEOUT (180 s), WUGUI_CLASS_EXTRA (class lines separated by ';'), KEEP=1 keeps the
# temp dir (logs) and prints its path. Needs root and nft (apt-get install nftables).
# Traffic stays inside the lab (198.18.0.0/24).
set -euo pipefail

LAYOUT=${1:-2x8}
SIZE_MB=${2:-64}
RATE=${3:-100mbit}
export NETLAB_PREFIX=${NETLAB_PREFIX:-wgsi}
# shellcheck source=lab.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lab.sh"
TARGET=${SITES_TARGET:-1.05}
TIME_SLACK=${TIME_SLACK:-0.05}

[[ "$LAYOUT" =~ ^([0-9]+)x([0-9]+)$ ]] || die "LAYOUT must be SITESxPOS, like 2x8"
SITES=${BASH_REMATCH[1]}
PER=${BASH_REMATCH[2]}
[ "$SITES" -ge 1 ] && [ "$PER" -ge 1 ] || die "LAYOUT needs at least one site of one po"
N=$((SITES * PER))
lab_check
command -v nft >/dev/null || die "needs nft (apt-get install nftables)"

site_of() { echo "dc$(( (${1#h} - 1) % SITES + 1 ))"; }
rate_bps() {
    awk -v r="$1" 'BEGIN {
        n = r + 0; u = tolower(substr(r, length(n "") + 1))
        m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1
        printf "%.0f", n * m }'
}

lab_start lab-sites
ideal=$(awk -v b="$data_bytes" -v r="$(rate_bps "$RATE")" 'BEGIN {printf "%.3f", b * 8 / r}')

# count_setup: on every receiver, a fresh table whose counter takes what arrives from outside
# the host's site (h0 included).
count_setup() {
    local h o outside
    for h in $recv; do
        outside=$(addr h0)
        for o in $recv; do
            [ "$(site_of "$o")" = "$(site_of "$h")" ] || outside+=", $(addr "$o")"
        done
        "$NETLAB" exec "$h" nft delete table inet wsites 2>/dev/null || true
        "$NETLAB" exec "$h" nft -f - <<NFT
table inet wsites {
    counter from_outside { }
    set outside { type ipv4_addr; elements = { $outside } }
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr @outside counter name from_outside
    }
}
NFT
    done
}

# counted HOST: bytes HOST's counter has seen
counted() {
    "$NETLAB" exec "$1" nft list counter inet wsites from_outside | sed -n 's/.*bytes \([0-9]*\).*/\1/p'
}

# stop_daemons: the CAC and the pos of this run, by PID
stop_daemons() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

declare -A secs site_in oks exits
one_run() {
    local run=$1 h s pos="" line ok=1 site got sum
    rm -rf "${tmp:?}"/h[0-9]*
    write_confs "$recv" "$tmp" "${WUGUI_CLASS_EXTRA:-}" "timeout = $MASTER_TIMEOUT"
    if [ "$run" = labels ]; then
        for h in $recv; do pos+="${pos:+, }$(addr "$h"):$port_po@$(site_of "$h")"; done
        sed -i "s/^po = .*/po = $pos/" "$conf/cac.conf"
    fi
    start_daemons "$run"
    count_setup
    start_master "$run"
    wait_master "$MASTER_TIMEOUT"
    sleep 0.2
    for h in $recv; do
        cmp -s <(tree_manifest "$tmp/src") <(tree_manifest "$tmp/$h/data" 2>/dev/null) 2>/dev/null || ok=0
    done
    line=""
    for s in $(seq 1 "$SITES"); do
        site=dc$s
        sum=0
        for h in $recv; do
            if [ "$(site_of "$h")" = "$site" ]; then got=$(counted "$h"); sum=$((sum + ${got:-0})); fi
        done
        site_in[$run.$site]=$(ratio "$sum" "$data_bytes")
        line+="${line:+,}$site:${site_in[$run.$site]}"
    done
    secs[$run]=$(elapsed "$t_start" "$t_end")
    out="case=sites layout=$LAYOUT run=$run seconds=${secs[$run]} ratio=$(ratio "${secs[$run]}" "$ideal")"
    out+=" site_in=$line master_exit=$master_exit trees_ok=$ok"
    # The master's own count, from its summary's site_in=SITE:BYTES,...
    local own
    own=$(tail -n 1 "$conf/master.$run.out" | tr ' ' '\n' | sed -n 's/^site_in=//p' | tr ',' '\n' |
        awk -F: -v b="$data_bytes" '{printf "%s%s:%.3f", (NR > 1 ? "," : ""), $1, $2 / b}')
    [ -n "$own" ] && out+=" wugui_site_in=$own"
    echo "$out rate=$RATE data_bytes=$data_bytes ideal_seconds=$ideal"
    [ "$master_exit" = 0 ] || { echo "--- master.$run.err" >&2; tail -n 5 "$conf/master.$run.err" >&2 || true; }
    oks[$run]=$ok
    exits[$run]=$master_exit
    stop_daemons
}

one_run none
one_run labels

max=0
for s in $(seq 1 "$SITES"); do
    max=$(awk -v a="$max" -v b="${site_in[labels.dc$s]}" 'BEGIN {print (b > a) ? b : a}')
done
time_ratio=$(ratio "${secs[labels]}" "${secs[none]}")
pass=0
if [ "${exits[none]}" = 0 ] && [ "${exits[labels]}" = 0 ] && [ "${oks[none]}" = 1 ] && [ "${oks[labels]}" = 1 ] &&
    awk -v m="$max" -v t="$TARGET" -v r="$time_ratio" -v s="$TIME_SLACK" 'BEGIN {exit !(m <= t && r <= 1 + s)}'; then
    pass=1
fi
echo "case=sites layout=$LAYOUT time_ratio=$time_ratio max_site_in=$max target=$TARGET pass=$pass"
[ $pass = 1 ]
