#!/usr/bin/env bash
# lab-delta.sh - incremental transfer: a second distribution after ~5% of the blocks changed,
# in the network lab (../shared/bench).
#
#   scripts/lab-delta.sh [N=4] [SIZE_MB=64] [RATE=100mbit] [CHANGED_PCT=5]
#
# Brings up the lab (netlab.sh, prefix $NETLAB_PREFIX, default wgdl), makes a data set
# (gendata.py), starts a CAC on h0 and a po on h1..hN (class: p2p = on, verify = crc32,
# publish = each, plus the ';'-separated lines of WUGUI_CLASS_EXTRA; `delta` is left at the
# class default unless WUGUI_CLASS_EXTRA sets it), asks masterwugui --dry-run for the block
# size, and runs masterwugui on h0 (run 1: the full tree). Then it changes CHANGED_PCT% of the
# manifest's blocks in place: in each chosen block one range of CHUNK_KB (64 KiB, at most the
# block) inside existing files is overwritten with random bytes (same sizes; mtimes change).
# Blocks are counted as the manifest lays them out: the non-empty files in byte order of
# their relative paths, one stream cut into block_size pieces. Then run 2 (a new transfer,
# same class), reading h0's eth0 tx_bytes (inside its namespace) before and after, checks
# every po's tree against the changed source (md5sum listing) and prints
#
#   case=delta n=N size_mb=S changed_pct=P changed_bytes=X src_tx_bytes=Y src_tx_ratio=Y/S target=0.07 pass=0|1 master_exit=RC seconds=T ...
#
# changed_bytes = the bytes overwritten (distinct ranges), blocks_touched = the blocks they
# lie in, src_tx_bytes = what h0's eth0 sent during run 2, src_tx_ratio = that / data bytes;
# pass=1 iff src_tx_ratio <= target, both masters exited 0 and every po's tree equals the
# source after each run. Then a line with run 1's figures (its src_tx_ratio is the full
# cost, ~1.0 with p2p) and a line with what each po received in run 2. Exit 0 iff pass=1.
# WUGUI_CLASS_EXTRA='delta = off' gives the ~100% run to compare with.
#
# Environment: WUGUI_BIN (default target/release of this checkout), BENCH_DIR (the lab,
# default /work/shared/bench), NETLAB_PREFIX (wgdl), DELTA_TARGET (0.07), CHUNK_KB (64),
# CHANGE_SEED (which blocks and where in them, 1), MASTER_TIMEOUT (180: the class timeout;
# each run is stopped 15 s later), WUGUI_CLASS_EXTRA (extra class lines, ';'-separated),
# KEEP=1 keeps the temp dir (logs, the changed ranges in conf/changes.txt) and prints its path.
# Needs root and python3. Traffic stays inside the lab (198.18.0.0/24).
set -euo pipefail

N=${1:-4}
SIZE_MB=${2:-64}
RATE=${3:-100mbit}
CHANGED_PCT=${4:-5}
export NETLAB_PREFIX=${NETLAB_PREFIX:-wgdl}
# shellcheck source=lab.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lab.sh"
TARGET=${DELTA_TARGET:-0.07}
CHUNK_KB=${CHUNK_KB:-64}
CHANGE_SEED=${CHANGE_SEED:-1}

if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ]; then die "N must be >= 1"; fi
[[ "$SIZE_MB" =~ ^[0-9]+$ ]] || die "SIZE_MB must be a whole number"
[[ "$CHANGED_PCT" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "CHANGED_PCT must be a number"
[[ "$CHUNK_KB" =~ ^[1-9][0-9]*$ ]] || die "CHUNK_KB must be >= 1"
lab_check
command -v python3 >/dev/null || die "needs python3"

# ---- lab, data set, configs ----------------------------------------------------------------
lab_start wgdl
write_confs "$recv" "$tmp" "${WUGUI_CLASS_EXTRA:-}" "timeout = $MASTER_TIMEOUT"

# trees_ok: 1 iff every po's tree has the source's md5sum listing
trees_ok() {
    local h ok=1
    tree_manifest "$tmp/src" > "$conf/src.md5"
    for h in $recv; do
        if ! [ -d "$tmp/$h/data" ] || ! cmp -s "$conf/src.md5" <(tree_manifest "$tmp/$h/data" 2>/dev/null); then
            echo "lab-delta: $h's tree differs from the source" >&2
            ok=0
        fi
    done
    echo $ok
}

# transfer_end: the master log's last event=transfer_end KEY value
last_end() { grep 'event=transfer_end' "$conf/master.log" 2>/dev/null | tail -n1 | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# ---- daemons -----------------------------------------------------------------------------
start_daemons ""

# ---- the block size, from a dry run -------------------------------------------------------
# stdout: "dry-run class=bench files=F dirs=D symlinks=L bytes=B blocks=K block_size=BS ..."
run_master dry --dry-run
[ "$master_exit" = 0 ] || die "the dry run failed (exit $master_exit)"
dry=$(grep -m1 '^dry-run ' "$conf/master.dry.out" || true)
block_size=$(sed -n 's/.* block_size=\([0-9]*\).*/\1/p' <<< "$dry")
blocks=$(sed -n 's/.* blocks=\([0-9]*\).*/\1/p' <<< "$dry")
if [ -z "$block_size" ] || [ -z "$blocks" ]; then
    die "no blocks=/block_size= in the dry run's stdout: $dry"
fi

# ---- run 1: the whole tree ------------------------------------------------------------------
tx0=$(tx h0)
run_master run1
sleep 0.2   # the counters of the last ACK/close exchange
tx1=$(tx h0)
exit1=$master_exit
secs1=$(elapsed "$t_start" "$t_end")
ok1=$(trees_ok)
mb1=$(last_end master_bytes)

# ---- change CHANGED_PCT% of the blocks in place ---------------------------------------------
# Prints "changed_bytes=X blocks_touched=K files_touched=F stream_blocks=B"; the ranges go to
# conf/changes.txt (path offset length block).
changes=$(python3 - "$tmp/src" "$block_size" "$CHANGED_PCT" "$((CHUNK_KB * 1024))" "$CHANGE_SEED" \
    "$conf/changes.txt" <<'PY'
import os, random, sys

src, bs, pct, chunk, seed, listing = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
# The manifest's stream: non-empty regular files, sorted by the bytes of their relative paths.
files = []
for dp, dns, fns in os.walk(src):
    for f in fns:
        p = os.path.join(dp, f)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        size = os.path.getsize(p)
        if size > 0:
            files.append((os.path.relpath(p, src).encode(), p, size))
files.sort()
starts, total = [], 0
for rel, p, size in files:
    starts.append(total)
    total += size
nblocks = -(-total // bs)
k = round(nblocks * pct / 100)
if pct > 0 and k == 0:
    k = 1
k = min(k, nblocks)
rng = random.Random(f"lab-delta-{seed}")
changed = touched = 0
blocks_touched, files_touched = set(), set()
with open(listing, "w") as out:
    for b in sorted(rng.sample(range(nblocks), k)):
        off = b * bs
        blen = min(bs, total - off)
        clen = min(chunk, blen)
        lo = off + rng.randrange(blen - clen + 1)
        hi = lo + clen
        # write [lo, hi) of the stream into the files it covers
        for (rel, p, size), start in zip(files, starts):
            a, z = max(lo, start), min(hi, start + size)
            if a >= z:
                continue
            with open(p, "r+b") as f:
                f.seek(a - start)
                f.write(os.urandom(z - a))
            out.write(f"{rel.decode()} {a - start} {z - a} {b}\n")
            files_touched.add(rel)
        changed += clen
        blocks_touched.update(range(lo // bs, (hi - 1) // bs + 1))
print(f"changed_bytes={changed} blocks_touched={len(blocks_touched)} files_touched={len(files_touched)} stream_blocks={nblocks}")
PY
)
changed_bytes=$(sed -n 's/.*changed_bytes=\([0-9]*\).*/\1/p' <<< "$changes")
blocks_touched=$(sed -n 's/.*blocks_touched=\([0-9]*\).*/\1/p' <<< "$changes")
files_touched=$(sed -n 's/.*files_touched=\([0-9]*\).*/\1/p' <<< "$changes")
stream_blocks=$(sed -n 's/.*stream_blocks=\([0-9]*\).*/\1/p' <<< "$changes")
[ -n "$changed_bytes" ] || die "changing the data failed: $changes"
if [ "$stream_blocks" != "$blocks" ]; then
    echo "lab-delta: the master counts $blocks blocks, this script $stream_blocks: blocks_touched may be off" >&2
fi

# ---- run 2: a new transfer of the changed tree ------------------------------------------------
declare -A rx0 rx1
for h in $recv; do rx0[$h]=$(rx "$h"); done
tx2=$(tx h0)
run_master run2
sleep 0.2
tx3=$(tx h0)
for h in $recv; do rx1[$h]=$(rx "$h"); done
exit2=$master_exit
secs2=$(elapsed "$t_start" "$t_end")
ok2=$(trees_ok)
mb2=$(last_end master_bytes)

# ---- verdict -----------------------------------------------------------------------------------
src_tx=$((tx3 - tx2))
r2=$(ratio "$src_tx" "$data_bytes")
pass=0
if [ "$exit1" = 0 ] && [ "$ok1" = 1 ] && [ "$exit2" = 0 ] && [ "$ok2" = 1 ] &&
    awk -v r="$r2" -v t="$TARGET" 'BEGIN {exit !(r <= t)}'; then
    pass=1
fi
echo "case=delta n=$N size_mb=$SIZE_MB changed_pct=$CHANGED_PCT changed_bytes=$changed_bytes src_tx_bytes=$src_tx src_tx_ratio=$r2 target=$TARGET pass=$pass master_exit=$exit2 seconds=$secs2 blocks_touched=$blocks_touched blocks=$blocks block_size=$block_size files_touched=$files_touched changed_ratio=$(ratio "$changed_bytes" "$data_bytes") trees_ok=$ok2 master_bytes=${mb2:-none} rate=$RATE data_bytes=$data_bytes${WUGUI_CLASS_EXTRA:+ class_extra=\"$WUGUI_CLASS_EXTRA\"}"
echo "run1: src_tx_bytes=$((tx1 - tx0)) src_tx_ratio=$(ratio "$((tx1 - tx0))" "$data_bytes") master_exit=$exit1 seconds=$secs1 trees_ok=$ok1 master_bytes=${mb1:-none}"
line="run2 rx ratios:"
for h in $recv; do line+=" $h=$(ratio "$(( ${rx1[$h]} - ${rx0[$h]} ))" "$data_bytes")"; done
echo "$line"
[ $pass = 1 ]
