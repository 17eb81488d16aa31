#!/usr/bin/env bash
# wugui in the network lab (../shared/bench): a CAC on h0, a po on every receiver, the master
# on h0. Called by the lab's contenders/wugui.sh as: netlab-contender.sh setup|run|teardown,
# with the environment documented in the lab's README.
#
# The class: p2p = on, verify = crc32, the default block size, publish = each. Extra class
# lines come from WUGUI_CLASS_EXTRA, separated by ';' (e.g. "p2p = off;rate_limit = 5M").
# Each receiver is marked done at the moment its po logged event=publish (the log's own
# timestamp), so host_done shows every po's own time.
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

case "$1" in
setup)
    for b in wugui-cac wugui-po masterwugui; do
        [ -x "$bin/$b" ] || { echo "no $bin/$b: run cargo build --release in $root" >&2; exit 2; }
    done
    src_addr=${SRC_ADDR:?}
    write_confs "$RECV_HOSTS" "$RUN_DIR" "${WUGUI_CLASS_EXTRA:-}" "timeout = ${BENCH_TIMEOUT:-300}"
    start_bg "$SRC_HOST" wugui-cac "$bin/wugui-cac" -f "$conf/cac.conf"
    for h in $RECV_HOSTS; do start_bg "$h" "wugui-po-$h" "$bin/wugui-po" -f "$conf/$h.conf"; done
    wait_listen "$SRC_HOST" $port_cac 20
    for h in $RECV_HOSTS; do wait_listen "$h" $port_po 20; done
    ;;
run)
    in_host "$SRC_HOST" "$bin/masterwugui" -f "$conf/master.conf" -c bench -p "$SRC_DIR" \
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
    [ $rc -eq 0 ] || { echo "masterwugui exited $rc: $summary" >&2; cat "$conf/master.err" >&2; }
    # Keep the logs next to the harness's for a failed or --keep run.
    cp "$conf"/*.log "$conf"/master.* "$BENCH_LOG_DIR/" 2>/dev/null || true
    [ $rc -eq 0 ]
    ;;
teardown)
    ;;
esac
