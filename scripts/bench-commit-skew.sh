#!/usr/bin/env bash
# Commit skew of a simultaneous publish: with `publish = together` (the default), how far apart
# in time do N pos publish after the master's COMMIT?
#
# For each case (p2p = off, then p2p = on) and each of RUNS repetitions: a fresh CAC and N fresh
# pos on 127.0.0.1 (each with its own root and state dir, as in scripts/demo.sh), masterwugui
# pushes a generated tree (SIZE_MB in a few files). After masterwugui exits 0 the script reads
# every po's `event=publish` timestamp from its log (UTC, millisecond resolution) and prints
#   case=commit_skew pos=N p2p=off|on skew_ms=X first=TS last=TS target_ms=100 pass=0|1 ...
# where skew = last minus first publish time. Extra keys after `pass`: the run number, the
# transfer's seconds from the master's summary line, the master's `event=commit` time, commit ->
# first / last publish, the last po to publish and its READY -> publish gap. Then per case:
#   case=commit_skew_max pos=N p2p=... runs=R max_skew_ms=X target_ms=100 pass=0|1
#
# Usage: scripts/bench-commit-skew.sh [N] [SIZE_MB]   (defaults 16 and 64; env RUNS=3,
# TARGET_MS=100, MASTER_TIMEOUT=300: seconds masterwugui may take before it is killed,
# KEEP=1 keeps the temp dir for inspection). Per-run details go to stderr, figures to stdout.
# All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-16}
size_mb=${2:-64}
runs=${RUNS:-3}
target_ms=${TARGET_MS:-100}
master_timeout=${MASTER_TIMEOUT:-300}
case "$n" in ''|*[!0-9]*) echo "usage: $0 [N] [SIZE_MB]" >&2; exit 2;; esac
case "$size_mb" in ''|*[!0-9]*) echo "usage: $0 [N] [SIZE_MB]" >&2; exit 2;; esac
[ "$n" -ge 1 ] && [ "$size_mb" -ge 1 ] || { echo "usage: $0 [N>=1] [SIZE_MB>=1]" >&2; exit 2; }

cargo build --release --quiet --bins
bin=$PWD/target/release
. scripts/local.sh
work=$(mktemp -d /tmp/wugui-skew.XXXXXX)

log "generating a ${size_mb} MiB tree in $work/src"
src=$work/src
gen_parts "$src" "$size_mb"
echo "generated = $(date -u +%FT%TZ)" > "$src/VERSION"
sync
cluster_key "$work/cluster.key"

# Reads the logs of one run and prints the figure line (stdout); returns the skew in ms through
# $work/last_skew. Arguments: RUNDIR P2P RUN SECONDS
report() {
    python3 - "$@" "$n" "$target_ms" <<'PY'
import datetime, os, re, sys
rundir, p2p, run, seconds, n, target = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
ts_re = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")
def ms(line):
    m = ts_re.match(line)
    if not m:
        return None
    d = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    return round(d.timestamp() * 1000)
def first_event(path, ev):
    try:
        with open(path) as f:
            for line in f:
                if f" event={ev} " in line or line.rstrip().endswith(f" event={ev}"):
                    return ms(line), line.split(" ", 1)[0]
    except FileNotFoundError:
        pass
    return None, None
pub, ready = {}, {}
for i in range(n):
    p = os.path.join(rundir, f"po{i}", "po.log")
    t, s = first_event(p, "publish")
    if t is not None:
        pub[f"po{i}"] = (t, s)
    r, _ = first_event(p, "po_ready")
    if r is not None:
        ready[f"po{i}"] = r
commit, commit_s = first_event(os.path.join(rundir, "master.log"), "commit")
if len(pub) < n:
    missing = sorted(set(f"po{i}" for i in range(n)) - set(pub), key=lambda x: int(x[2:]))
    print(f"case=commit_skew pos={n} p2p={p2p} skew_ms=NA first=NA last=NA target_ms={target} pass=0 "
          f"run={run} seconds={seconds} published={len(pub)}/{n} missing={','.join(missing)}")
    open(os.path.join(rundir, "..", "last_skew"), "w").write("NA")
    sys.exit(0)
order = sorted(pub.items(), key=lambda kv: (kv[1][0], int(kv[0][2:])))
(first_po, (first, first_s)), (last_po, (last, last_s)) = order[0], order[-1]
skew = last - first
extra = f"run={run} seconds={seconds}"
if commit is not None:
    extra += f" commit={commit_s} commit_to_first_ms={first - commit} commit_to_last_ms={last - commit}"
extra += f" first_po={first_po} last_po={last_po}"
if last_po in ready:
    extra += f" last_po_ready_to_publish_ms={last - ready[last_po]}"
print(f"case=commit_skew pos={n} p2p={p2p} skew_ms={skew} first={first_s} last={last_s} "
      f"target_ms={target} pass={1 if skew <= target else 0} {extra}")
# per-po detail for stderr: publish offset from commit, in publish order
base = commit if commit is not None else first
detail = " ".join(f"{po}:+{t - base}" for po, (t, _) in order)
print(f"# publish order (ms after {'commit' if commit is not None else 'first publish'}): {detail}", file=sys.stderr)
open(os.path.join(rundir, "..", "last_skew"), "w").write(str(skew))
PY
}

# One run: fresh CAC and N pos, one transfer. Arguments: P2P RUN
one_run() {
    local p2p=$1 run=$2 rd=$work/$1-$2 ports cac_port i po_list rc=0 out seconds
    mkdir -p "$rd"
    read -r -a ports <<< "$(free_ports $((n + 1)))"
    cac_port=${ports[0]}
    po_list=$(for i in $(seq 1 "$n"); do printf '127.0.0.1:%s, ' "${ports[$i]}"; done)
    po_list=${po_list%, }
    cac_conf "$rd/cac.conf" "127.0.0.1:$cac_port" "$work/cluster.key" "$rd/cac.log"
    cat >> "$rd/cac.conf" <<CONF

[class skew]
po = $po_list
dest = /home/work/data/skew
masters = 127.0.0.0/8
p2p = $p2p
publish = together
block_size = 4M
verify = md5
timeout = $master_timeout
CONF
    start_daemon wugui-cac "$rd/cac"
    wait_listening "$rd/cac.out" $! || return 1
    local po_pids=()
    for i in $(seq 0 $((n - 1))); do
        po_conf "$rd/po$i" "127.0.0.1:${ports[$((i + 1))]}" "127.0.0.1:$cac_port" /home/work/data
        start_daemon wugui-po "$rd/po$i"
        po_pids+=($!)
    done
    for i in $(seq 0 $((n - 1))); do wait_listening "$rd/po$i.out" "${po_pids[$i]}" || return 1; done
    master_conf "$rd/master.conf" "127.0.0.1:$cac_port" "$rd/master.log"
    # in the background and waited for, so that a signal to this script is handled at once
    timeout -k 5 "$master_timeout" "$bin/masterwugui" -f "$rd/master.conf" -c skew -p "$src" \
        > "$rd/master.out" 2> "$rd/master.err" &
    local mpid=$!
    pids+=("$mpid")
    wait "$mpid" || rc=$?
    out=$(grep -E '^transfer=[0-9]+ ' "$rd/master.out" | tail -1 || true)
    log "p2p=$p2p run=$run masterwugui exited $rc: $out"
    seconds=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<< "$out")
    # let the pos finish writing their logs (publish is logged before DONE goes out, so this is
    # only a safety margin), then stop this run's daemons
    sleep 0.2
    kill_pids
    if [ "$rc" -ne 0 ]; then
        echo "case=commit_skew pos=$n p2p=$p2p skew_ms=NA first=NA last=NA target_ms=$target_ms pass=0 run=$run seconds=${seconds:-NA} master_exit=$rc"
        sed 's/^/#   master: /' "$rd/master.err" | tail -5 >&2
        echo NA > "$work/last_skew"
        return 0
    fi
    report "$rd" "$p2p" "$run" "${seconds:-NA}"
}

fail=0
for p2p in off on; do
    max=-1 bad=0
    for run in $(seq 1 "$runs"); do
        if ! one_run "$p2p" "$run"; then
            kill_pids
            echo "case=commit_skew pos=$n p2p=$p2p skew_ms=NA first=NA last=NA target_ms=$target_ms pass=0 run=$run error=daemon_start"
            bad=1
            continue
        fi
        s=$(cat "$work/last_skew")
        if [ "$s" = NA ]; then bad=1; elif [ "$s" -gt "$max" ]; then max=$s; fi
    done
    if [ "$bad" -eq 1 ] || [ "$max" -lt 0 ]; then
        pass=0
        [ "$max" -ge 0 ] || max=NA
    elif [ "$max" -le "$target_ms" ]; then pass=1; else pass=0; fi
    [ "$pass" -eq 1 ] || fail=1
    echo "case=commit_skew_max pos=$n p2p=$p2p runs=$runs max_skew_ms=$max target_ms=$target_ms pass=$pass"
done
exit $fail
