# shellcheck shell=bash
# local.sh - sourced by the scripts that run wugui daemons on 127.0.0.1 (demo, benches).
#
# Gives: `pids` (add every background child's PID) and `work` (the temp dir), both cleaned up
# on exit by `local_cleanup`; `free_port`; `wait_listening DIR FILE...`; `need_bins DIR`.

pids=()
work=""

# Kills our children by PID, then removes the temp dir.
local_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap local_cleanup EXIT

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (5 s at most) until each daemon's stdout file in DIR shows `listening=`; exits 1 if one
# does not.
wait_listening() {
    local dir=$1 f
    shift
    for f in "$@"; do
        for _ in $(seq 1 100); do grep -q '^listening=' "$dir/$f" && break; sleep 0.05; done
        grep -q '^listening=' "$dir/$f" || { echo "a daemon did not start:"; cat "$dir/$f"; exit 1; }
    done
}

# need_bins DIR: exits 2 unless the daemons and the master are built in DIR.
need_bins() {
    local b
    for b in wugui-cac wugui-po masterwugui; do
        [ -x "$1/$b" ] || { echo "no $1/$b: run cargo build --release" >&2; exit 2; }
    done
}
