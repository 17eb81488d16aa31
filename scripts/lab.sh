# shellcheck shell=bash
# lab.sh - sourced by the scripts that run wugui in the network lab of ../shared/bench
# (lab-delta.sh, lab-po-restart.sh; netlab-contender.sh takes only write_confs from it).
#
# Gives: `bin` (WUGUI_BIN, default target/release of this checkout), BENCH_DIR, NETLAB,
# MASTER_TIMEOUT (180), the ports and h0's address; `die` and `lab_check`; addr, rx, tx, now,
# tree_manifest, ratio, elapsed; `pids` (add every background child's PID) and `forget`;
# `lab_start TAG`, from which on `lab_cleanup` runs on exit; `write_confs`; `start_daemons`,
# `start_po`, `wait_listen`; `start_master`, `wait_master`, `run_master`. Sourcing it starts
# nothing. netlab-contender.sh sources it before the lab's lib.sh, whose wait_listen, now and
# tree_manifest then replace these.
# shellcheck disable=SC2034 # data_bytes, popid, t_start, t_end: for the scripts that source it

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WUGUI_BIN:-$here/target/release}
BENCH_DIR=${BENCH_DIR:-/work/shared/bench}
NETLAB=$BENCH_DIR/netlab.sh
MASTER_TIMEOUT=${MASTER_TIMEOUT:-180}
port_cac=7100
port_po=7200
src_addr=198.18.0.10
lab_name=${0##*/}
lab_name=${lab_name%.sh}   # what die's messages start with
tmp=""
conf=""
lab_up=0
pids=()
declare -A popid=()

die() { echo "$lab_name: $*" >&2; exit 2; }

# lab_check: dies unless we are root and have the binaries and the lab.
lab_check() {
    local b
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    for b in wugui-cac wugui-po masterwugui; do
        [ -x "$bin/$b" ] || die "no $bin/$b: run cargo build --release"
    done
    [ -x "$NETLAB" ] || die "no $NETLAB"
}

addr() { echo "198.18.0.$((10 + ${1#h}))"; }
# rx/tx HOST: bytes received/sent by HOST's eth0 (read inside its namespace)
rx() { "$NETLAB" exec "$1" cat /sys/class/net/eth0/statistics/rx_bytes; }
tx() { "$NETLAB" exec "$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
now() { date +%s.%N; }
tree_manifest() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum); }
ratio() { awk -v x="$1" -v s="$2" 'BEGIN {printf "%.3f", x / s}'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

# forget PID: a child we have reaped leaves the list, so cleanup never signals a reused PID
forget() {
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# Our processes by PID (TERM, then KILL after 5 s), the lab if we brought it up, the temp dir
# (KEEP=1 keeps it and prints its path); exits with the script's code.
lab_cleanup() {
    local rc=$? p alive deadline any
    trap - EXIT INT TERM
    alive=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    if [ ${#alive[@]} -gt 0 ]; then
        kill -TERM "${alive[@]}" 2>/dev/null || true
        kill -CONT "${alive[@]}" 2>/dev/null || true # a stopped po (lab-po-kill SIGNAL=STOP)
        deadline=$((SECONDS + 5))
        while [ $SECONDS -lt $deadline ]; do
            any=0
            for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && any=1; done
            [ $any = 0 ] && break
            sleep 0.1
        done
        kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ $lab_up = 1 ]; then "$NETLAB" down || true; fi
    if [ -n "$tmp" ]; then
        if [ "${KEEP:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
    fi
    exit $rc
}

# lab_start TAG: from here on lab_cleanup runs on exit (INT and TERM exit 130); makes the temp
# dir `tmp` (${TMPDIR:-/tmp}/TAG.XXXXXX) and `conf` in it, brings up the lab (N receivers, RATE,
# prefix NETLAB_PREFIX) and a data set of SIZE_MB MB in $tmp/src (`data_bytes`); `recv` = h1..hN.
lab_start() {
    local i
    trap lab_cleanup EXIT
    trap 'exit 130' INT TERM
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    conf=$tmp/conf
    mkdir -p "$conf"
    "$NETLAB" up "$N" --rate "$RATE"
    lab_up=1
    python3 "$BENCH_DIR/gendata.py" "$SIZE_MB" "$tmp/src" >/dev/null
    data_bytes=$(find "$tmp/src" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
    recv=""
    for i in $(seq 1 "$N"); do recv+="${recv:+ }h$i"; done
}

# write_confs HOSTS BASE EXTRA [DEFAULT...]: writes into $conf a new cluster.key; cac.conf: the
# CAC on $src_addr:$port_cac with class `bench` (a po on port $port_po of each of HOSTS, dest
# /data, masters 198.18.0.0/24, then p2p = on, verify = crc32, publish = each and each DEFAULT
# ("key = value"), each unless EXTRA sets that key, then EXTRA's lines: class lines separated by
# ';'); HOST.conf for each po (root BASE/HOST, state_dir BASE/HOST/state, made here); master.conf.
write_confs() {
    local hosts=$1 base=$2 pos="" h kv key l
    local -a extra
    IFS=';' read -ra extra <<< "$3"
    shift 3
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$conf/cluster.key"
    for h in $hosts; do pos+="${pos:+, }$(addr "$h"):$port_po"; done
    {
        echo "[cac]"
        echo "listen = $src_addr:$port_cac"
        echo "secret_file = $conf/cluster.key"
        echo "log = $conf/cac.log"
        echo
        echo "[class bench]"
        echo "po = $pos"
        echo "dest = /data"
        echo "masters = 198.18.0.0/24"
        for kv in "p2p = on" "verify = crc32" "publish = each" "$@"; do
            key=${kv%% *}
            printf '%s\n' "${extra[@]}" | grep -qE "^ *$key *=" || echo "$kv"
        done
        for l in "${extra[@]}"; do if [ -n "${l// /}" ]; then echo "$l"; fi; done
    } > "$conf/cac.conf"
    for h in $hosts; do
        mkdir -p "$base/$h/state"
        cat > "$conf/$h.conf" <<CONF
[po]
listen = $(addr "$h"):$port_po
cac = $src_addr:$port_cac
state_dir = $base/$h/state
allow_dest = /data
root = $base/$h
log = $conf/$h.log
CONF
    done
    printf '[master]\ncac = %s:%s\nlog = %s/master.log\n' "$src_addr" "$port_cac" "$conf" > "$conf/master.conf"
}

# wait_listen HOST PORT TIMEOUT
wait_listen() {
    local deadline=$((SECONDS + $3))
    until "$NETLAB" exec "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q .; do
        [ $SECONDS -lt $deadline ] || die "$1: nothing listens on port $2 after $3 s"
        sleep 0.05
    done
}

# start_po HOST [TAG]: HOST's po in its namespace, in the background (output in
# $conf/HOST[.TAG].out); its PID in popid[HOST] and in pids.
# (netlab.sh exec and ip netns exec both exec, so $! is the po itself.)
start_po() {
    "$NETLAB" exec "$1" "$bin/wugui-po" -f "$conf/$1.conf" >"$conf/$1${2:+.$2}.out" 2>&1 &
    popid[$1]=$!
    pids+=("$!")
}

# start_daemons TAG: the CAC on h0 and a po on every host of $recv (start_po HOST TAG), then
# waits until each listens (20 s at most each).
start_daemons() {
    local h
    "$NETLAB" exec h0 "$bin/wugui-cac" -f "$conf/cac.conf" >"$conf/cac.out" 2>&1 &
    pids+=("$!")
    for h in $recv; do start_po "$h" "$1"; done
    wait_listen h0 $port_cac 20
    for h in $recv; do wait_listen "$h" $port_po 20; done
}

# start_master TAG [ARGS...]: masterwugui on h0 (class bench, the tree $tmp/src) in the
# background, stdout and stderr in $conf/master[.TAG].out and .err; sets t_start, mpid (also in
# pids) and master_started ($SECONDS).
start_master() {
    master_tag=$1
    shift
    t_start=$(now)
    "$NETLAB" exec h0 "$bin/masterwugui" -f "$conf/master.conf" -c bench -p "$tmp/src" "$@" \
        >"$conf/master${master_tag:+.$master_tag}.out" 2>"$conf/master${master_tag:+.$master_tag}.err" &
    mpid=$!
    master_started=$SECONDS
    pids+=("$mpid")
}

# wait_master LIMIT: waits until the master ends, LIMIT s after its start at most (then stops
# it); sets master_exit (its code, or "timeout" when we had to stop it) and t_end.
wait_master() {
    local deadline=$((master_started + $1)) rc
    while [ $SECONDS -lt $deadline ] && kill -0 "$mpid" 2>/dev/null; do sleep 0.05; done
    if kill -0 "$mpid" 2>/dev/null; then
        echo "$lab_name: master${master_tag:+ ($master_tag)} still running after $1 s" >&2
        kill -TERM "$mpid" 2>/dev/null || true
        master_exit=timeout
        wait "$mpid" 2>/dev/null || true
    else
        rc=0; wait "$mpid" || rc=$?
        master_exit=$rc
    fi
    forget "$mpid"
    t_end=$(now)
}

# run_master TAG [ARGS...]: start_master, then wait_master bounded by MASTER_TIMEOUT + 15 s (so
# that the class timeout ends it first); says on stderr when it did not exit 0.
run_master() {
    start_master "$@"
    wait_master $((MASTER_TIMEOUT + 15))
    if [ "$master_exit" != 0 ]; then
        echo "$lab_name: master ($master_tag) exited $master_exit" >&2
        tail -n 5 "$conf/master.$master_tag.err" >&2 || true
    fi
}
