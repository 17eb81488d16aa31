#!/usr/bin/env bash
# Many pos in one transfer (issue #7 item 4): one CAC and N pos on 127.0.0.1, one masterwugui
# run with `p2p = on` (default `peers = 8`) and `verify = crc32`, a SIZE_MB tree of a few files
# of random data.
#
# Every daemon binds port 0 and its port is read back from its `listening=ADDR` line: the CAC
# starts with no class, the pos start pointing at it, then the class (its `po_file` lists the
# pos' real addresses) is added to cac.conf and the CAC reloads it on SIGHUP. Each po has its own
# root and state dir and `fsync = off`.
#
# A baseline with BASE_N pos (default 16) runs first, then N. While masterwugui runs, a sampler
# reads every SAMPLE_MS (200) ms: the master's VmRSS/VmHWM and socket fds (its TCP connections),
# MemAvailable, and the socket fds of SAMPLE_POS (20) pos spread over the list. Every
# CLASSIFY_EVERY (5) samples it reads /proc/net/tcp and sorts those pos' sockets into listener /
# master / CAC / peer links (4-tuples matched against the master's sockets), and the same for the
# next slice of all pos, so that every po is classified once every SWEEP_TICKS (50) samples.
# After the run every copied file is md5summed (in parallel) and compared with the source's sums;
# a po's copy is good when it has exactly the source's files with the same sums. Figures go to
# stdout:
#   case=many_pos n=16 seconds=T wall_s=W ratio_to_16=1.00 master_exit=0 master_peak_conns=C
#     master_rss_kb=R po_max_peer_conns=P peers_le_16=1 copies_ok=K/N ... pass=1
#   case=many_pos n=1000 seconds=T ... ratio_to_16=X ...
# `seconds` is the transfer time from the master's summary line, `wall_s` the master process's
# wall time, `master_rss_kb` its peak RSS (GNU time's %M when /usr/bin/time exists, else the last
# VmHWM sampled). Details (startup time, warnings in the logs, failing pos) go to stderr.
#
# If N cannot run (too few fds, pids, ports or too little memory, a daemon that does not start,
# or a transfer that fails), the script prints
#   case=many_pos_limit n=N result=failed reason=...
# and tries N/2, and so on down to BASE_N, to find the largest N that works here.
#
# Exit 0 iff the baseline and the requested N both ran with every copy identical to the source
# and masterwugui exiting 0.
#
# Usage: scripts/bench-many-pos.sh [N] [SIZE_MB]   (defaults 1000 and 16)
# Env: WUGUI_BIN=DIR (binaries; default: cargo build --release, then target/release),
#   BASE_N=16, MASTER_TIMEOUT=900 (seconds; also the class timeout), SAMPLE_POS=20,
#   SAMPLE_MS=200, CLASSIFY_EVERY=5, SWEEP_TICKS=50, PEERS_LIMIT=16,
#   WORK_BASE=DIR (default: /dev/shm when the N copies fit in RAM next to the processes, else
#   /tmp), PO_KB=KIB (memory per po for the pre-check; default: measured in the baseline),
#   KEEP=1 (keep the temp dirs), NO_HALVE=1 (no retry with N/2), PRECHECK=0 (start N pos even
#   when the pre-check says they cannot run, to see how they fail).
# The sampler costs CPU (sampler_cpu_s in the figure line; ~15% of a core at N=1000) and the
# host's other load is printed as load1: on a small shared host both skew the times.
# Needs python3 (the sampler and a few helpers), md5sum, xargs. All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 [N] [SIZE_MB]" >&2; exit 2; }
n_req=${1:-1000}
size_mb=${2:-16}
case "$n_req" in '' | *[!0-9]*) usage ;; esac
case "$size_mb" in '' | *[!0-9]*) usage ;; esac
if [ "$n_req" -lt 1 ] || [ "$size_mb" -lt 1 ]; then usage; fi
base_n=${BASE_N:-16}
master_timeout=${MASTER_TIMEOUT:-900}
sample_pos=${SAMPLE_POS:-20}
sample_ms=${SAMPLE_MS:-200}
classify_every=${CLASSIFY_EVERY:-5}
sweep_ticks=${SWEEP_TICKS:-50}
peers_limit=${PEERS_LIMIT:-16}
cpus=$(nproc 2>/dev/null || echo 2)

if [ -n "${WUGUI_BIN:-}" ]; then
    bin=$(cd "$WUGUI_BIN" && pwd)
else
    cargo build --release --quiet --bins
    bin=$PWD/target/release
fi
# Children and temp dirs (pids, work, dirs) are cleaned up on any exit.
. scripts/local.sh
need_bins "$bin"

# A master holds two connections per po, and each po a few plus its peers.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

work=$(mktemp -d /dev/shm/wugui-many.XXXXXX 2>/dev/null || mktemp -d /tmp/wugui-many.XXXXXX)

# ---------------------------------------------------------------------------------------------
# The source tree and its sums.

src=$work/src
log "generating a ${size_mb} MiB tree in $src"
gen_parts "$src" "$size_mb"
echo "generated = $(date -u +%FT%TZ)" > "$src/VERSION"
(cd "$src" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum) > "$work/src.md5"
src_files=$(wc -l < "$work/src.md5")
cluster_key "$work/cluster.key"

# ---------------------------------------------------------------------------------------------
# The sampler: runs until the master exits (or kills it at the deadline), prints key=value.

cat > "$work/sampler.py" <<'PY'
import os, signal, sys, time

out_path, pid_file, cac_port, interval, deadline_s, sample_file, all_file, classify_every, sweep_ticks = sys.argv[1:10]
cac_hex = "%04X" % int(cac_port)
interval = float(interval)
classify_every = max(1, int(classify_every))
sweep_ticks = max(1, int(sweep_ticks))
sample_pids = [int(x) for x in open(sample_file).read().split()]
all_pids = [int(x) for x in open(all_file).read().split()]
# Ready: the script starts the master now and writes its pid to pid_file.
open(out_path + ".ready", "w").close()
while not os.path.exists(pid_file):
    time.sleep(0.002)
outer_pid = int(open(pid_file).read().split()[0])
deadline = time.time() + float(deadline_s)
started = time.time()

def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []

def status(pid):
    d = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        return None
    return d

def kb(d, k):
    try:
        return int(d.get(k, "0 kB").split()[0])
    except (ValueError, IndexError):
        return 0

def gone(pid):
    s = status(pid)
    return s is None or s.get("State", "").startswith(("Z", "X"))

def tcp_table():
    """By socket inode: (local, remote, state); and by (local, remote): state, for every
    socket, also those no process holds any more (inode 0)."""
    t, pairs = {}, {}
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f, None)
                for line in f:
                    p = line.split(None, 10)
                    if len(p) > 9:
                        t[p[9]] = (p[1], p[2], p[3])
                        pairs[(p[1], p[2])] = p[3]
        except OSError:
            pass
    return t, pairs

# TCP states of a link that is going away: FIN_WAIT1/2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK,
# CLOSING.
CLOSING = {"04", "05", "06", "07", "08", "09", "0B"}
# Every master connection seen so far (4-tuples from the master's side): a po's end of a
# connection the master has just closed is still ESTABLISHED until the FIN is processed.
master_seen = set()

def socks(pid):
    out = []
    d = f"/proc/{pid}/fd"
    try:
        names = os.listdir(d)
    except OSError:
        return None
    for n in names:
        try:
            l = os.readlink(f"{d}/{n}")
        except OSError:
            continue
        if l.startswith("socket:["):
            out.append(l[8:-1])
    return out

# The master: the outer pid itself, or its child when it runs under /usr/bin/time.
master = outer_pid
t0 = time.time()
while True:
    s = status(outer_pid)
    name = s.get("Name", "") if s else ""
    if name.startswith("masterwugui") or s is None or gone(outer_pid):
        break
    ch = children(outer_pid)
    if ch:
        master = ch[0]
        break
    if time.time() - t0 > 5:
        break
    time.sleep(0.01)

peak_conns = 0
peak_rss = 0
hwm = 0
mem_avail_min = None
po_max_peer = 0
po_max_peer_pid = 0
po_max_peer_states = "-"
po_max_socks = 0
po_rss_max = 0
po_anon_max = 0
po_gone = set()
samples = 0
classified = 0
swept = set()
sweep_at = 0
timed_out = 0
kill_at = None

def po_classify(po_inodes, table, pairs, master_pairs):
    """Peer links of each po: its TCP sockets that are neither listening, nor to the CAC, nor
    the other end of one of the master's sockets (now or before), nor closing (at either end)."""
    global po_max_peer, po_max_peer_pid, po_max_peer_states, po_rss_max, po_anon_max
    for pid, inodes in po_inodes.items():
        if inodes is None:
            po_gone.add(pid)
            continue
        peer = 0
        states = {}
        for ino in inodes:
            e = table.get(ino)
            if e is None or e[2] == "0A":      # not TCP, or LISTEN
                continue
            local, rem, st = e
            if rem.endswith(":" + cac_hex) or (rem, local) in master_pairs or (rem, local) in master_seen:
                continue
            if st in CLOSING or pairs.get((rem, local)) in CLOSING:
                continue
            peer += 1
            states[st] = states.get(st, 0) + 1
        if peer > po_max_peer:
            po_max_peer, po_max_peer_pid = peer, pid
            # TCP states of those links (01 established, 02 syn_sent, 08 close_wait, ...)
            po_max_peer_states = ",".join(f"{k}:{v}" for k, v in sorted(states.items()))
        s = status(pid)
        if s:
            po_rss_max = max(po_rss_max, kb(s, "VmHWM"))
            po_anon_max = max(po_anon_max, kb(s, "RssAnon"))

# Every tick: the master (RSS, socket fds), MemAvailable, the sampled pos' socket fds. Every
# CLASSIFY_EVERY ticks (reading /proc/net/tcp costs; every tick at first): the
# sampled pos' sockets classified, plus the next slice of all pos, so that every po is
# classified once every SWEEP_TICKS ticks.
sweep_chunk = max(1, -(-len(all_pids) // max(1, sweep_ticks // classify_every)))
while True:
    if gone(master) or (master != outer_pid and gone(outer_pid)):
        break
    now = time.time()
    if now > deadline and kill_at is None:
        timed_out = 1
        try:
            os.kill(master, signal.SIGTERM)
        except OSError:
            pass
        kill_at = now + 10
    if kill_at is not None and now > kill_at:
        try:
            os.kill(master, signal.SIGKILL)
        except OSError:
            pass
    s = status(master)
    if s is None:
        break
    peak_rss = max(peak_rss, kb(s, "VmRSS"))
    hwm = max(hwm, kb(s, "VmHWM"))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    v = int(line.split()[1])
                    mem_avail_min = v if mem_avail_min is None else min(mem_avail_min, v)
                    break
    except OSError:
        pass
    m_inodes = socks(master) or []
    peak_conns = max(peak_conns, len(m_inodes))
    for pid in sample_pids:
        i = socks(pid)
        if i is None:
            po_gone.add(pid)
        else:
            po_max_socks = max(po_max_socks, len(i))
    if samples < 10 or samples % classify_every == 0:    # every tick at first
        chunk = all_pids[sweep_at:sweep_at + sweep_chunk]
        sweep_at = sweep_at + sweep_chunk if sweep_at + sweep_chunk < len(all_pids) else 0
        swept.update(chunk)
        # In this order (the pos' fds, the master's, then the table), the master's end of any
        # connection a po holds is already there when the master's fds are read, even while
        # the master is still dialling.
        po_inodes = {pid: socks(pid) for pid in sample_pids + chunk}
        table_master = socks(master) or []
        table, pairs = tcp_table()
        master_pairs = set()
        for ino in table_master:
            e = table.get(ino)
            if e is not None:
                master_pairs.add((e[0], e[1]))
        master_seen.update(master_pairs)
        po_classify(po_inodes, table, pairs, master_pairs)
        classified += 1
    samples += 1
    # Denser at first, so that a run of a fraction of a second still gets a few samples.
    time.sleep(min(interval, 0.05) if time.time() - started < 1 else interval)

with open(out_path, "w") as f:
    f.write(
        f"master_pid={master} master_peak_conns={peak_conns} master_peak_vmrss_kb={peak_rss} "
        f"master_vmhwm_kb={hwm} po_max_peer_conns={po_max_peer} po_max_peer_pid={po_max_peer_pid} "
        f"po_max_peer_states={po_max_peer_states} "
        f"po_max_socks={po_max_socks} po_rss_kb={po_rss_max} po_anon_kb={po_anon_max} "
        f"mem_avail_min_kb={mem_avail_min if mem_avail_min is not None else 'NA'} "
        f"samples={samples} classified={classified} pos_classified={len(swept | set(sample_pids))} "
        f"pos_gone_while_sampling={len(po_gone)} timed_out={timed_out} "
        f"sampler_cpu_s={sum(os.times()[:2]):.2f}\n"
    )
PY

# ---------------------------------------------------------------------------------------------
# Helpers.

kv() { # KEY LINE: the value of KEY=... in LINE
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2" | head -1
}

# Resource pre-check for N pos. Prints a reason and returns 1 when N cannot run here.
po_kb=${PO_KB:-12288} # refined from the baseline's measurement
precheck() {
    local n=$1 hard procs userprocs pid_max maxu range lo hi avail need
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt $((2 * n + 32)) ]; then
        echo "fds: the master needs over $((2 * n + 32)) fds (2 connections per po), hard nofile limit is $hard"
        return 1
    fi
    pid_max=$(cat /proc/sys/kernel/pid_max)
    procs=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
    if [ $((procs + n + 64)) -gt "$pid_max" ]; then
        echo "pids: $procs processes running, $n more needed, pid_max is $pid_max"
        return 1
    fi
    maxu=$(ulimit -u)
    userprocs=$(ps -L -u "$(id -u)" --no-headers 2>/dev/null | wc -l)
    if [ "$maxu" != unlimited ] && [ $((userprocs + 2 * n + 64)) -gt "$maxu" ]; then
        echo "pids: ulimit -u is $maxu, this user runs $userprocs threads, $n pos need up to $((2 * n))"
        return 1
    fi
    read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
    range=$((hi - lo + 1))
    if [ "$range" -lt $((10 * n + 1000)) ]; then
        echo "ports: ip_local_port_range has $range ports, $n pos need about $((10 * n)) (listeners, master and peer links)"
        return 1
    fi
    avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    need=$((n * po_kb + 262144))
    if [ $((need * 10)) -gt $((avail * 9)) ]; then
        echo "memory: $n pos need about $((need / 1024)) MiB (${po_kb} KiB each), MemAvailable is $((avail / 1024)) MiB"
        return 1
    fi
    return 0
}

# Where the N copies go: /dev/shm when they fit in RAM next to the processes, else /tmp.
pick_base() {
    local n=$1 avail need shm_free
    if [ -n "${WORK_BASE:-}" ]; then echo "$WORK_BASE"; return; fi
    avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    need=$((n * (po_kb + size_mb * 1024 + 64) + 524288))
    shm_free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$shm_free" ] && [ $((need * 10)) -le $((avail * 8)) ] && [ $((n * (size_mb * 1024 + 64))) -lt "$shm_free" ]; then
        echo /dev/shm
    else
        echo /tmp
    fi
}

# ---------------------------------------------------------------------------------------------
# One run with N pos. Prints the figure line; sets run_seconds, run_reason; returns 0 when the
# run passed, 1 when it ran and failed, 2 when it could not start.

base_seconds=
run_seconds=
run_reason=
drop_run() { # RUNDIR: stop this run's daemons, remove its dir (unless KEEP=1)
    kill_pids
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$1"; fi
}
run_case() {
    local n=$1 is_base=${2:-0} base rd reason i p cac_pid cac_addr t_start t_up t0 t1 mpid rc=0 out seconds load
    run_seconds=NA
    run_reason=
    if [ "${PRECHECK:-1}" != 0 ] && ! reason=$(precheck "$n"); then
        run_reason=$reason
        return 2
    fi
    base=$(pick_base "$n")
    rd=$(mktemp -d "$base/wugui-many-run.XXXXXX")
    dirs+=("$rd")
    mkdir -p "$rd/pos"
    log "n=$n: run dir $rd ($(awk '/^MemAvailable:/ {printf "%d MiB", $2 / 1024}' /proc/meminfo) available)"
    t_start=$(now)
    load=$(cut -d' ' -f1 /proc/loadavg) # other work on the host skews the times

    # The CAC, with no class yet.
    cac_conf "$rd/cac.conf" 127.0.0.1:0 "$work/cluster.key" "$rd/cac.log"
    start_daemon wugui-cac "$rd/cac"
    cac_pid=$!
    if ! wait_listening "$rd/cac.out" "$cac_pid"; then
        run_reason="daemon_start: the CAC did not start: $(tail -1 "$rd/cac.out")"
        drop_run "$rd"
        return 2
    fi
    cac_addr=$(listening_addr "$rd/cac.out")

    # N pos on port 0, all started before any is waited for.
    local po_pids=()
    for ((i = 0; i < n; i++)); do
        po_conf "$rd/pos/po$i" 127.0.0.1:0 "$cac_addr" /home/work/data "fsync = off"
        start_daemon wugui-po "$rd/pos/po$i"
        po_pids+=($!)
    done
    # Read back every po's port (a few seconds' grace per hundred pos).
    local limit=$((20 + n / 50)) deadline up=0 dead=0
    deadline=$(($(date +%s) + limit))
    : > "$rd/pos.txt"
    while :; do
        up=$(grep -ls '^listening=' "$rd"/pos/po*.out | wc -l)
        [ "$up" -ge "$n" ] && break
        dead=0
        for p in "${po_pids[@]}"; do kill -0 "$p" 2>/dev/null || { dead=1; break; }; done
        if [ "$dead" = 1 ] || [ "$(date +%s)" -gt "$deadline" ]; then
            for ((i = 0; i < n; i++)); do
                if ! grep -qs '^listening=' "$rd/pos/po$i.out"; then
                    reason=$(tail -1 "$rd/pos/po$i.out" 2>/dev/null)
                    [ -n "$reason" ] || reason="no listening= line after ${limit}s"
                    run_reason="daemon_start: $up/$n pos listening; po$i: $reason"
                    break
                fi
            done
            drop_run "$rd"
            return 2
        fi
        sleep 0.2
    done
    for ((i = 0; i < n; i++)); do
        listening_addr "$rd/pos/po$i.out" >> "$rd/pos.txt"
    done
    t_up=$(now)

    # The class, now that the pos' addresses are known; SIGHUP makes the CAC read it.
    cat >> "$rd/cac.conf" <<CONF

[class many]
po_file = $rd/pos.txt
dest = /home/work/data/many
masters = 127.0.0.0/8
p2p = on
verify = crc32
timeout = $master_timeout
CONF
    kill -HUP "$cac_pid"
    local ok=0
    for ((i = 0; i < 200; i++)); do
        if grep -qs 'event=config_reload role=cac .*classes=1' "$rd/cac.log"; then ok=1; break; fi
        if grep -qs 'event=config_refused' "$rd/cac.log"; then break; fi
        sleep 0.05
    done
    if [ "$ok" != 1 ]; then
        run_reason="daemon_start: the CAC did not load the class: $(grep -h 'config_refused' "$rd/cac.log" | tail -1)"
        drop_run "$rd"
        return 2
    fi
    master_conf "$rd/master.conf" "$cac_addr" "$rd/master.log"
    log "n=$n: $n pos and the CAC up in $(elapsed "$t_start" "$t_up")s"

    # Which pos the sampler watches every time: SAMPLE_POS spread over the list.
    local k=$sample_pos
    [ "$k" -le "$n" ] || k=$n
    for ((i = 0; i < k; i++)); do echo "${po_pids[$((i * n / k))]}"; done > "$rd/sample.pids"
    printf '%s\n' "${po_pids[@]}" > "$rd/all.pids"

    # The transfer, under GNU time for the master's exact peak RSS when it is there.
    local timer=()
    [ -x /usr/bin/time ] && timer=(/usr/bin/time -f 'maxrss_kb=%M cpu_s=%U+%S' -o "$rd/master.time")
    python3 "$work/sampler.py" "$rd/sample.out" "$rd/master.pid" "${cac_addr##*:}" \
        "$(awk -v ms="$sample_ms" 'BEGIN {print ms / 1000}')" "$((master_timeout + 60))" \
        "$rd/sample.pids" "$rd/all.pids" "$classify_every" "$sweep_ticks" &
    local spid=$!
    pids+=("$spid")
    for ((i = 0; i < 400; i++)); do
        [ -e "$rd/sample.out.ready" ] && break
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.05
    done
    [ -e "$rd/sample.out.ready" ] || log "n=$n: the sampler did not start; no samples"
    t0=$(now)
    "${timer[@]}" "$bin/masterwugui" -f "$rd/master.conf" -c many -p "$src" \
        > "$rd/master.out" 2> "$rd/master.err" < /dev/null &
    mpid=$!
    pids+=("$mpid")
    echo "$mpid" > "$rd/master.pid.tmp" && mv "$rd/master.pid.tmp" "$rd/master.pid"
    wait "$mpid" || rc=$?
    t1=$(now)
    wait "$spid" || true
    local sample
    sample=$(cat "$rd/sample.out" 2>/dev/null || true)
    out=$(grep -E '^transfer=[0-9]+ ' "$rd/master.out" | tail -1 || true)
    seconds=$(kv seconds "$out")
    [ -n "$seconds" ] || seconds=NA
    run_seconds=$seconds
    log "n=$n: masterwugui exited $rc after $(elapsed "$t0" "$t1")s: ${out:-no summary line}"
    log "n=$n: sampler: ${sample:-nothing}"
    local top_pid top_i
    top_pid=$(kv po_max_peer_pid "$sample")
    if [ -n "$top_pid" ] && [ "$top_pid" != 0 ]; then
        top_i=$(grep -nx "$top_pid" "$rd/all.pids" | cut -d: -f1)
        [ -z "$top_i" ] || log "n=$n: most peer links: po$((top_i - 1)) ($(sed -n "${top_i}p" "$rd/pos.txt")," \
            "states $(kv po_max_peer_states "$sample"))"
    fi

    # Pos that died during the run (a crash), before this script stops them.
    local pos_dead=0
    for p in "${po_pids[@]}"; do kill -0 "$p" 2>/dev/null || pos_dead=$((pos_dead + 1)); done
    sleep 0.2
    kill_pids

    # What the logs say: the master's stderr and WARN/ERROR events in every log.
    if [ -s "$rd/master.err" ]; then
        log "n=$n: master stderr ($(wc -l < "$rd/master.err") lines), last lines:"
        tail -5 "$rd/master.err" | sed 's/^/#   /' >&2
    fi
    local warn_master warn_pos warn_cac
    warn_master=$(grep -hE ' (WARN|ERROR) ' "$rd/master.log" 2>/dev/null | sed -n 's/.* event=\([^ ]*\).*/\1/p' | sort | uniq -c | awk '{printf "%s%s:%s", s, $2, $1; s=","}')
    warn_pos=$(find "$rd/pos" -name po.log -print0 | xargs -0 -r grep -hE ' (WARN|ERROR) ' | sed -n 's/.* event=\([^ ]*\).*/\1/p' | sort | uniq -c | awk '{printf "%s%s:%s", s, $2, $1; s=","}')
    warn_cac=$(grep -hE ' (WARN|ERROR) ' "$rd/cac.log" 2>/dev/null | sed -n 's/.* event=\([^ ]*\).*/\1/p' | sort | uniq -c | awk '{printf "%s%s:%s", s, $2, $1; s=","}')
    log "n=$n: warnings/errors: master={${warn_master}} pos={${warn_pos}} cac={${warn_cac}}"
    if grep -qsi 'too many open files\|EMFILE' "$rd/master.err" "$rd/master.log" "$rd/cac.log"; then
        log "n=$n: EMFILE seen ($(grep -csi 'too many open files\|EMFILE' "$rd/master.err") lines in master stderr):" \
            "$(grep -hsi 'too many open files\|EMFILE' "$rd/master.err" "$rd/master.log" "$rd/cac.log" | head -1)"
    fi

    # Every copy against the source's sums: one md5sum pass over all copied files, in parallel.
    local tv0 tv1 check copies_ok bad_list
    tv0=$(now)
    (cd "$rd/pos" && find . -path './po*/home/work/data/many/*' -type f -print0 |
        xargs -0 -r -P "$cpus" -n 64 md5sum) > "$rd/copies.md5" 2>/dev/null || true
    check=$(awk -v n="$n" -v nf="$src_files" '
        FNR == NR { sum[substr($0, 35)] = $1; next }
        {
            path = substr($0, 35); sub(/^\.\//, "", path)
            po = path; sub(/\/.*/, "", po); sub(/^po/, "", po)
            rel = path; sub(/^po[0-9]+\/home\/work\/data\/many\//, "", rel)
            if ((rel in sum) && sum[rel] == $1) good[po]++; else bad[po] = 1
        }
        END {
            ok = 0; list = ""; nb = 0
            for (i = 0; i < n; i++) {
                if (!(i in bad) && good[i] == nf) ok++
                else if (nb++ < 10) list = list (list == "" ? "" : ",") "po" i
            }
            print ok, (list == "" ? "-" : list)
        }' "$work/src.md5" "$rd/copies.md5")
    copies_ok=${check%% *}
    bad_list=${check#* }
    tv1=$(now)
    [ "$bad_list" = - ] || log "n=$n: pos whose copy differs (first 10): $bad_list"

    # The figure line.
    local ratio=NA peak_rss pass=0 peer_max peers_ok=0
    if [ "$is_base" = 1 ] && [ "$seconds" != NA ]; then
        ratio=1.00
    elif [ -n "$base_seconds" ] && [ "$seconds" != NA ] && [ "$base_seconds" != NA ]; then
        ratio=$(awk -v a="$seconds" -v b="$base_seconds" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "NA" }')
    fi
    peak_rss=$(sed -n 's/^maxrss_kb=\([0-9]*\).*/\1/p' "$rd/master.time" 2>/dev/null | tail -1)
    local mcpu
    mcpu=$(sed -n 's/^maxrss_kb=.* cpu_s=\([0-9.]*\)+\([0-9.]*\)$/\1 \2/p' "$rd/master.time" 2>/dev/null | tail -1 |
        awk '{printf "%.2f", $1 + $2}')
    [ -n "$peak_rss" ] || peak_rss=$(kv master_vmhwm_kb "$sample")
    peer_max=$(kv po_max_peer_conns "$sample")
    [ -n "$peer_max" ] && [ "$peer_max" -le "$peers_limit" ] && peers_ok=1
    [ "$rc" -eq 0 ] && [ "$copies_ok" = "$n" ] && pass=1
    echo "case=many_pos n=$n seconds=$seconds wall_s=$(elapsed "$t0" "$t1") ratio_to_$base_n=$ratio" \
        "master_exit=$rc master_peak_conns=$(kv master_peak_conns "$sample") master_rss_kb=${peak_rss:-NA} master_cpu_s=${mcpu:-NA}" \
        "po_max_peer_conns=${peer_max:-NA} peers_le_$peers_limit=$peers_ok copies_ok=$copies_ok/$n" \
        "po_rss_kb=$(kv po_rss_kb "$sample") po_anon_kb=$(kv po_anon_kb "$sample") po_max_socks=$(kv po_max_socks "$sample")" \
        "pos_classified=$(kv pos_classified "$sample")" \
        "pos_dead=$pos_dead mem_avail_min_mb=$(awk -v k="$(kv mem_avail_min_kb "$sample")" 'BEGIN { if (k + 0 > 0) print int(k / 1024); else print "NA" }')" \
        "startup_s=$(elapsed "$t_start" "$t_up") verify_s=$(elapsed "$tv0" "$tv1") size_mb=$size_mb" \
        "workdir=$base load1=$load samples=$(kv samples "$sample") sampler_cpu_s=$(kv sampler_cpu_s "$sample") timed_out=$(kv timed_out "$sample") pass=$pass"

    # Learn the real memory per po for the next pre-check: its peak anonymous RSS (the file
    # pages of the binary are shared), doubled, plus room for socket buffers and page tables.
    local measured
    measured=$(kv po_anon_kb "$sample")
    if [ -z "${PO_KB:-}" ] && [ -n "$measured" ] && [ "$measured" -gt 0 ]; then
        po_kb=$((measured * 2 + 2048))
    fi

    if [ "$pass" != 1 ]; then
        local why="master_exit=$rc copies_ok=$copies_ok/$n"
        [ "$pos_dead" -eq 0 ] || why="$why pos_dead=$pos_dead"
        [ "$(kv timed_out "$sample")" != 1 ] || why="$why timed_out_after=${master_timeout}s"
        local last_err
        last_err=$(grep -E 'po=.*result=' "$rd/master.err" 2>/dev/null | head -1 || true)
        [ -z "$last_err" ] || why="$why first_po_error=[$last_err]"
        run_reason="transfer: $why"
        drop_run "$rd"
        return 1
    fi
    drop_run "$rd"
    return 0
}

# ---------------------------------------------------------------------------------------------

status=0
base_ok=0
log "baseline: $base_n pos, ${size_mb} MiB, binaries in $bin"
if run_case "$base_n" 1; then
    base_seconds=$run_seconds
    base_ok=1
else
    echo "case=many_pos_limit n=$base_n result=failed reason=\"${run_reason//\"/\'}\""
    base_seconds=$run_seconds
    status=1
fi
if [ "$n_req" != "$base_n" ]; then
    n=$n_req
    while :; do
        if run_case "$n"; then
            [ "$n" = "$n_req" ] || echo "case=many_pos_largest n=$n requested=$n_req"
            break
        fi
        echo "case=many_pos_limit n=$n result=failed reason=\"${run_reason//\"/\'}\""
        status=1
        [ "${NO_HALVE:-0}" != 1 ] || break
        if [ $((n / 2)) -le "$base_n" ]; then
            if [ "$base_ok" = 1 ]; then
                echo "case=many_pos_largest n=$base_n requested=$n_req note=only_the_baseline_worked"
            else
                echo "case=many_pos_largest n=none requested=$n_req note=not_even_the_baseline_worked"
            fi
            break
        fi
        n=$((n / 2))
        log "trying n=$n"
    done
fi
exit $status
