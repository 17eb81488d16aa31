# shellcheck shell=bash
# local.sh - sourced by the scripts that run wugui daemons on 127.0.0.1 (demo, benches).
#
# Cleanup: add every background child's PID to `pids`, set `work` to the temp dir and add any
# other temp dir to `dirs`; on exit the children are killed by PID and the dirs removed (KEEP=1
# keeps the dirs). `kill_pids` stops the children early. INT and TERM exit 130.
# Helpers: `log`, `free_port`, `free_ports N`, `need_bins DIR`, `wait_listening FILE [PID]`,
# `listening_addr FILE`, `cluster_key FILE`, `cac_conf`, `po_conf`, `master_conf`,
# `start_daemon`, `gen_parts DIR MIB`.

pids=()
work=""
dirs=()

log() { echo "# $*" >&2; }

# Kills our children by PID, and their children (masterwugui may run under /usr/bin/time, which
# a signal would leave orphaned), then waits for them.
kill_pids() {
    local p kids
    for p in "${pids[@]}"; do
        kids=$(cat "/proc/$p/task/$p/children" 2>/dev/null || true)
        # shellcheck disable=SC2086 # one word a PID
        [ -z "$kids" ] || kill $kids 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

local_cleanup() {
    kill_pids
    local d
    for d in "$work" "${dirs[@]}"; do
        [ -n "$d" ] || continue
        if [ "${KEEP:-0}" = 1 ]; then log "kept $d"; else rm -rf "$d"; fi
    done
}
trap local_cleanup EXIT
trap 'exit 130' INT TERM

# COUNT distinct TCP ports on 127.0.0.1 that nothing listens on now (all bound at once, so no
# duplicates), on one line.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
PY
}
free_port() { free_ports 1; }

# need_bins DIR: exits 2 unless the daemons and the master are built in DIR.
need_bins() {
    local b
    for b in wugui-cac wugui-po masterwugui; do
        [ -x "$1/$b" ] || { echo "no $1/$b: run cargo build --release" >&2; exit 2; }
    done
}

# wait_listening FILE [PID]: waits (10 s at most, less if PID exits) until the daemon whose
# stdout is FILE prints `listening=`. Otherwise shows FILE on stderr and returns 1.
wait_listening() {
    local _
    for _ in $(seq 1 200); do
        grep -qs '^listening=' "$1" && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then break; fi
        sleep 0.05
    done
    grep -qs '^listening=' "$1" && return 0
    echo "a daemon did not start ($1):" >&2
    cat "$1" >&2 2>/dev/null || true
    return 1
}

# The address the daemon whose stdout is FILE listens on.
listening_addr() { sed -n 's/^listening=//p' "$1" | head -1; }

# A fresh cluster key in FILE.
cluster_key() { echo "wugui-local-key-$RANDOM$RANDOM$RANDOM" > "$1"; }

# cac_conf FILE LISTEN KEYFILE LOG: a [cac] section in FILE; append the classes to it.
cac_conf() {
    printf '[cac]\nlisten = %s\nsecret_file = %s\nlog = %s\n' "$2" "$3" "$4" > "$1"
}

# po_conf ROOT LISTEN CAC ALLOW_DEST [LINE...]: ROOT.conf for a po whose root, state dir
# (ROOT/state) and log (ROOT/po.log) are under ROOT, with extra `key = value` LINEs.
po_conf() {
    local root=$1 listen=$2 cac=$3 allow=$4
    shift 4
    mkdir -p "$root/state"
    {
        printf '[po]\nlisten = %s\ncac = %s\nstate_dir = %s\nallow_dest = %s\nlog = %s\nroot = %s\n' \
            "$listen" "$cac" "$root/state" "$allow" "$root/po.log" "$root"
        [ $# -eq 0 ] || printf '%s\n' "$@"
    } > "$root.conf"
}

# master_conf FILE CAC LOG
master_conf() { printf '[master]\ncac = %s\nlog = %s\n' "$2" "$3" > "$1"; }

# start_daemon NAME BASE: runs $bin/NAME -f BASE.conf in the background, stdout and stderr in
# BASE.out, and adds it to `pids` (its PID is in $! afterwards).
start_daemon() {
    "$bin/$1" -f "$2.conf" > "$2.out" 2>&1 &
    pids+=($!)
}

# gen_parts DIR MIB: MIB MiB of random data in four files (40/30/20/10%) under DIR/data.
gen_parts() {
    local total=$(($2 * 1024 * 1024))
    mkdir -p "$1/data/sub"
    head -c $((total * 4 / 10)) /dev/urandom > "$1/data/part-0.bin"
    head -c $((total * 3 / 10)) /dev/urandom > "$1/data/part-1.bin"
    head -c $((total * 2 / 10)) /dev/urandom > "$1/data/sub/part-2.bin"
    head -c $((total - total * 4 / 10 - total * 3 / 10 - total * 2 / 10)) /dev/urandom > "$1/data/sub/part-3.bin"
}
