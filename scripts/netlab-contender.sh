#!/usr/bin/env bash
# wugui in the network lab (../shared/bench): a CAC on h0, a po on every receiver, the master
# on h0. Called by the lab's contenders/wugui.sh as: netlab-contender.sh setup|run|teardown,
# with the environment documented in the lab's README.
#
# The class: p2p = on, verify = crc32, the default block size, publish = each. Extra class
# lines come from WUGUI_CLASS_EXTRA, separated by ';' (e.g. "p2p = off;rate_limit = 5M").
# Each receiver is marked done at the moment its po logged event=publish (the log's own
# timestamp), so host_done shows every po's own time. The result line also gets each daemon's
# CPU per GiB of data (utime + stime from /proc/PID/stat around the run; the master's from a
# wrapping shell's `times`): master_cpu_gib, po_cpu_gib (mean) and po_cpu_gib_max, in core·s.
set -euo pipefail
# lab.sh (write_confs, the ports) first: lib.sh's helpers of the same names replace its own.
# shellcheck source=lab.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lab.sh"
# shellcheck source=/dev/null
source "$BENCH_DIR/lib.sh"
root=${WUGUI_ROOT:?}
bin=${WUGUI_BIN:-$root/target/release}
conf=$RUN_DIR/wugui
mkdir -p "$conf"

# cpu_ticks PID: utime + stime of PID in clock ticks (0 when it is gone).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# report_cpu: add_result the master's and the pos' CPU (core·s) per GiB of the source tree.
report_cpu() {
    local gib hz m h sum=0 max=0 n=0 t
    gib=$(du -sb --apparent-size "$SRC_DIR" | awk '{print $1 / 2^30}')
    hz=$(getconf CLK_TCK)
    # `times` prints the shell's own line, then its children's: "0m1.234s 0m0.456s".
    m=$(sed -n 2p "$conf/master.times" 2>/dev/null | awk '{
        split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
    [ -n "$m" ] && add_result master_cpu_gib "$(awk -v c="$m" -v g="$gib" 'BEGIN {printf "%.3f", c / g}')"
    for h in $RECV_HOSTS; do
        t=$(( $(cpu_ticks "$(cat "$conf/$h.pid")") - $(cat "$conf/$h.cpu0") ))
        sum=$((sum + t)); n=$((n + 1)); [ $t -gt $max ] && max=$t
    done
    [ $n -gt 0 ] || return 0
    add_result po_cpu_gib "$(awk -v t="$sum" -v n="$n" -v h="$hz" -v g="$gib" 'BEGIN {printf "%.3f", t / n / h / g}')"
    add_result po_cpu_gib_max "$(awk -v t="$max" -v h="$hz" -v g="$gib" 'BEGIN {printf "%.3f", t / h / g}')"
}

case "$1" in
setup)
    for b in wugui-cac wugui-po masterwugui; do
        [ -x "$bin/$b" ] || { echo "no $bin/$b: run cargo build --release in $root" >&2; exit 2; }
    done
    src_addr=${SRC_ADDR:?}
    write_confs "$RECV_HOSTS" "$RUN_DIR" "${WUGUI_CLASS_EXTRA:-}" "timeout = ${BENCH_TIMEOUT:-300}"
    start_bg "$SRC_HOST" wugui-cac "$bin/wugui-cac" -f "$conf/cac.conf"
    for h in $RECV_HOSTS; do
        start_bg "$h" "wugui-po-$h" "$bin/wugui-po" -f "$conf/$h.conf"
        echo "$LAST_PID" > "$conf/$h.pid"
    done
    wait_listen "$SRC_HOST" $port_cac 20
    for h in $RECV_HOSTS; do wait_listen "$h" $port_po 20; done
    ;;
run)
    for h in $RECV_HOSTS; do cpu_ticks "$(cat "$conf/$h.pid")" > "$conf/$h.cpu0"; done
    # The shell's `times` after the master's exit is the master's own CPU (its only child).
    in_host "$SRC_HOST" bash -c '"$@"; rc=$?; times > "'"$conf"'/master.times"; exit $rc' _ \
        "$bin/masterwugui" -f "$conf/master.conf" -c bench -p "$SRC_DIR" \
        > "$conf/master.out" 2> "$conf/master.err" &
    mpid=$!
    # Mark each receiver done with the timestamp of its own publish event.
    pending=" $RECV_HOSTS "
    deadline=$((SECONDS + ${BENCH_TIMEOUT:-300}))
    while [ -n "${pending// /}" ] && [ $SECONDS -lt $deadline ]; do
        for h in $pending; do
            line=$(grep -m1 'event=publish ' "$conf/$h.log" 2>/dev/null || true)
            if [ -n "$line" ]; then
                date -d "${line%% *}" +%s.%N > "$BENCH_DONE_DIR/$h"
                pending=${pending/ $h / }
            fi
        done
        kill -0 $mpid 2>/dev/null || { [ -n "${pending// /}" ] && sleep 0.2; kill -0 $mpid 2>/dev/null || break; }
        sleep 0.02
    done
    rc=0; wait $mpid || rc=$?
    summary=$(tail -n1 "$conf/master.out" || true)
    end=$(grep -m1 'event=transfer_end' "$conf/master.log" || true)
    copies=$(sed -n 's/.* src_copies=\([0-9.]*\).*/\1/p' <<< "$end")
    add_result wugui_exit "$rc"
    [ -n "$copies" ] && add_result master_copies "$copies"
    report_cpu
    [ $rc -eq 0 ] || { echo "masterwugui exited $rc: $summary" >&2; cat "$conf/master.err" >&2; }
    # Keep the logs next to the harness's for a failed or --keep run.
    cp "$conf"/*.log "$conf"/master.* "$BENCH_LOG_DIR/" 2>/dev/null || true
    [ $rc -eq 0 ]
    ;;
teardown)
    ;;
esac
