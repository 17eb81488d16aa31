#!/usr/bin/env bash
# Core data-path benchmark: one CAC and one po on 127.0.0.1, a single big file.
#
# Every throughput figure is a ratio against a baseline measured in the same run (the machine
# may be small and noisy), and the cases are interleaved per repetition so that baseline and
# wugui see the same conditions:
#   raw_pair     examples/rawpair.rs: sendfile sender -> read+write receiver (file in a temp dir)
#   raw_pair_fsync  the same, plus fdatasync of the copy before the clock stops (a po with
#                fsync = on, the default, syncs its stage before publish: the like-for-like
#                baseline for that setting; info)
#   md5sum       single-core `md5sum FILE` on the warm file
#   verify_none  wugui, verify = none,  sendfile = on; target >= 0.95 of raw_pair (best)
#   verify_crc32 wugui, verify = crc32, sendfile = on; target >= 0.90 of raw_pair (best)
#   verify_md5   wugui, verify = md5,   sendfile = on; target >= 0.65 of md5sum
#   b3sum        single-core `b3sum --num-threads 1 FILE` on the warm file, when b3sum is installed
#   verify_blake3  wugui, verify = blake3, sendfile = on (the digest every peer block is checked
#                against with p2p = on); target >= 0.65 of b3sum, or info only (ratio to raw_pair)
#                without b3sum
#   rate_limit   wugui, rate_limit = 10M over 64 MiB; achieved bytes/seconds within +-3% of 10 MiB/s
#   po_rss_anon  the po's peak RssAnon (sampled every ~50 ms) while receiving SIZE_MB; <= 32 MiB
#   wget         `wget` (else `curl`) of the same file from `python3 -m http.server` on 127.0.0.1
#                (the plain download a po replaces); its CPU per GiB is the bar for the po's
#   base_none    with BASE_BIN=DIR (release binaries of an earlier build, e.g. the build an issue
#                starts from): verify none through that build's master and po, interleaved, for
#                the po's CPU per GiB against this build's
# Each throughput is the BEST of RUNS repetitions (median also printed; the wugui cases run in a
# rotating order). wugui's rate is the
# summary line's bytes/seconds (primary; covers connect, publish and commit) and also bytes over
# the wall time of the masterwugui process. Each wugui run uses a fresh po (fresh root and state
# dir) so everything is transferred every time. cpu_* keys are CPU seconds / wall seconds of the
# process over the run (1.00 = one core busy); *_cpu_gib keys are CPU seconds (user + system,
# from /proc/PID/stat around the transfer for the po, from the process's own rusage for the
# master and the baselines) per GiB moved: core*s/GiB, the median over the runs.
#
# After the per-case lines come the ratios the targets need, one `name value` a line (grep
# them): none_vs_raw_best/_median, crc32_vs_raw_best, md5_vs_md5sum_best, md5_vs_ceiling (the
# ceiling on 2 cores where master and po both hash: 2 / (master + po core*s/GiB)),
# md5_cpu_bound (po CPU/GiB with md5 over md5sum's + the po's with verify none; target <= 1.15),
# crc32_po_vs_wget_cpu, blake3_vs_md5, po_rss_anon_mib, and with BASE_BIN none_po_cpu_vs_base.
#
# Usage: scripts/bench-core.sh [SIZE_MB]   (default 1024; env RUNS=5, BENCH_TMP=/tmp: where the
# temp dir goes, e.g. BENCH_TMP=/dev/shm to take the disk out of both the baseline and wugui;
# PO_FSYNC=off runs the po with fsync = off, like for like with raw_pair; BLOCK=64K sets the block
# size of the verify_* classes (default 4M), to show per-block costs; BASE_BIN=DIR adds the
# base_none case)
# Per-run details go to stderr; the figures (key=value, one a line) to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-1024}
runs=${RUNS:-5}
rl_mb=64
cargo build --release --quiet --bins --examples
bin=$PWD/target/release
rawpair=$bin/examples/rawpair
. scripts/local.sh
work=$(mktemp -d "${BENCH_TMP:-/tmp}/wugui-bench.XXXXXX")
calc() { awk "BEGIN { printf \"%s\", $1 }"; }
mib() { calc "sprintf(\"%.1f\", $1 / 1048576)"; }
now() { date +%s.%N; }
tck=$(getconf CLK_TCK)
# CPU seconds (user+sys) a live process has used so far.
cpu_of() { awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / t }' "/proc/$1/stat"; }
# Core seconds per GiB: CPU_SECONDS BYTES.
per_gib() { calc "sprintf(\"%.3f\", $1 * 1073741824 / $2)"; }

need_kb=$(((size_mb * 2 + rl_mb + 256) * 1024))
avail_kb=$(df -Pk "$work" | awk 'NR==2 { print $4 }')
if [ "$avail_kb" -lt "$need_kb" ]; then
    echo "not enough room in $work: ${avail_kb} KiB free, need ${need_kb} KiB" >&2
    exit 1
fi

log "generating a ${size_mb} MiB file and a ${rl_mb} MiB file in $work"
mkdir -p "$work/src" "$work/src_rl" "$work/raw"
src_file=$work/src/big.bin
head -c $((size_mb * 1024 * 1024)) /dev/urandom > "$src_file"
head -c $((rl_mb * 1024 * 1024)) /dev/urandom > "$work/src_rl/small.bin"
size_bytes=$(stat -c %s "$src_file")
sync

cluster_key "$work/cluster.key"
read -r cac_port po_port <<< "$(free_ports 2)"
cac_conf "$work/cac.conf" "127.0.0.1:$cac_port" "$work/cluster.key" "$work/cac.log"
{
    for v in none crc32 md5 blake3; do
        cat <<CONF

[class verify_$v]
po = 127.0.0.1:$po_port
dest = /bench/$v
masters = 127.0.0.0/8
p2p = off
block_size = ${BLOCK:-4M}
verify = $v
sendfile = on
rate_limit = 0
timeout = 1200
CONF
    done
    cat <<CONF

[class rate_limit]
po = 127.0.0.1:$po_port
dest = /bench/rl
masters = 127.0.0.0/8
p2p = off
block_size = 4M
verify = none
sendfile = on
rate_limit = 10M
timeout = 1200
CONF
} >> "$work/cac.conf"
master_conf "$work/master.conf" "127.0.0.1:$cac_port" "$work/master.log"

start_daemon wugui-cac "$work/cac"
wait_listening "$work/cac.out" $!

# Writes the largest RssAnon (kB) of PID seen so far to OUT, every ~50 ms, until killed.
sample_rss() {
    local pid=$1 out=$2 peak=0 k v _
    while [ -r "/proc/$pid/status" ]; do
        while read -r k v _; do
            if [ "$k" = "RssAnon:" ]; then
                if [ "$v" -gt "$peak" ]; then
                    peak=$v
                    echo "$peak" > "$out"
                fi
                break
            fi
        done < "/proc/$pid/status" 2>/dev/null || true
        sleep 0.05
    done
}

warm() { cat "$1" > /dev/null; }

# run_wugui CLASS SRCDIR TAG [BINDIR CAC_PORT MASTER_CONF]: one transfer to a fresh po (BINDIR's
# po and master with the CAC at CAC_PORT, else this build's). Sets R_RATE R_WALL_RATE R_BYTES R_SECS R_RSS_KB R_CPU_MASTER R_CPU_PO
# R_GIB_MASTER R_GIB_PO (core*s/GiB).
run_wugui() {
    local class=$1 srcdir=$2 tag=$3 bin=${4:-$bin} cport=${5:-$cac_port} mconf=${6:-$work/master.conf}
    local d=$work/run-$tag
    mkdir -p "$d"
    po_conf "$d/po" "127.0.0.1:$po_port" "127.0.0.1:$cport" /bench "fsync = ${PO_FSYNC:-on}"
    start_daemon wugui-po "$d/po"
    local po_pid=$!
    wait_listening "$d/po.out" "$po_pid"
    sample_rss "$po_pid" "$d/rss" &
    local smp_pid=$!
    pids+=("$smp_pid")
    local po_cpu0 t0 t1 rc=0
    po_cpu0=$(cpu_of "$po_pid")
    t0=$(now)
    TIMEFORMAT='%R %U %S'
    { time "$bin/masterwugui" -f "$mconf" -c "$class" -p "$srcdir" > "$d/master.out" 2> "$d/master.err"; } \
        2> "$d/master.time" || rc=$?
    t1=$(now)
    local po_cpu1
    po_cpu1=$(cpu_of "$po_pid")
    kill "$smp_pid" 2>/dev/null || true
    wait "$smp_pid" 2>/dev/null || true
    kill "$po_pid" 2>/dev/null || true
    wait "$po_pid" 2>/dev/null || true
    local summary
    summary=$(tail -n 1 "$d/master.out")
    if [ $rc -ne 0 ] || ! grep -q 'result=ok' <<< "$summary"; then
        echo "masterwugui failed (exit $rc) in $class: $summary" >&2
        cat "$d/master.err" >&2
        tail -n 20 "$d/po/po.log" >&2 2>/dev/null || true
        KEEP=1
        exit 1
    fi
    R_BYTES=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<< "$summary")
    R_SECS=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<< "$summary")
    R_RATE=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<< "$summary")
    local wall user sys
    read -r wall user sys < "$d/master.time"
    R_WALL_RATE=$(calc "$R_BYTES / ($t1 - $t0)")
    R_CPU_MASTER=$(calc "sprintf(\"%.2f\", ($user + $sys) / $wall)")
    R_CPU_PO=$(calc "sprintf(\"%.2f\", ($po_cpu1 - $po_cpu0) / $wall)")
    R_GIB_MASTER=$(per_gib "($user + $sys)" "$R_BYTES")
    R_GIB_PO=$(per_gib "($po_cpu1 - $po_cpu0)" "$R_BYTES")
    R_RSS_KB=$(cat "$d/rss" 2>/dev/null || echo 0)
    if [ "$R_BYTES" -ne "$(find "$srcdir" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')" ]; then
        echo "byte count mismatch in $class: $summary" >&2
        exit 1
    fi
    log "run case=$class tag=$tag $summary wall_s=$wall wall_rate_mib_s=$(mib "$R_WALL_RATE") cpu_master=$R_CPU_MASTER cpu_po=$R_CPU_PO master_cpu_gib=$R_GIB_MASTER po_cpu_gib=$R_GIB_PO po_rss_anon_mib=$(calc "sprintf(\"%.1f\", $R_RSS_KB / 1024)")"
    rm -rf "$d"
}

best() { tr ' ' '\n' | grep . | sort -g | tail -n 1; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

raw_rates="" rawf_rates="" md5_rates="" b3_rates="" wget_rates="" base_rates=""
raw_gib="" md5_gib="" wget_gib="" base_gib=""
b3sum=$(command -v b3sum || true)
declare -A rates wall_rates cpu_m cpu_p gib_m gib_p rss
for v in none crc32 md5 blake3; do rates[$v]="" wall_rates[$v]="" cpu_m[$v]="" cpu_p[$v]="" gib_m[$v]="" gib_p[$v]="" rss[$v]=0; done
raw_cpu=""
base_bin=${BASE_BIN:-}
if [ -n "$base_bin" ]; then
    # The earlier build talks to its own CAC (the wire may have changed since), same classes
    # (blake3 may be unknown there; only verify_none runs).
    need_bins "$base_bin"
    base_cac_port=$(free_port)
    sed -e "s|^listen = .*|listen = 127.0.0.1:$base_cac_port|" -e "s|^log = .*|log = $work/cac-base.log|" \
        -e 's|^verify = blake3$|verify = none|' \
        "$work/cac.conf" > "$work/cac-base.conf"
    master_conf "$work/master-base.conf" "127.0.0.1:$base_cac_port" "$work/master-base.log"
    bin=$base_bin start_daemon wugui-cac "$work/cac-base"
    wait_listening "$work/cac-base.out" $!
fi

# The plain download: an HTTP server on 127.0.0.1 serving the source dir.
http_port=$(free_port)
(cd "$work/src" && exec python3 -m http.server --bind 127.0.0.1 "$http_port" > "$work/http.out" 2>&1) &
pids+=($!)
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$http_port/" && break
    sleep 0.1
done
if command -v wget > /dev/null; then
    fetch() { wget -q -O "$1" "$2"; }
    fetcher=wget
else
    fetch() { curl -s -o "$1" "$2"; }
    fetcher=curl
fi
mkdir -p "$work/wget"

for i in $(seq 1 "$runs"); do
    warm "$src_file"
    TIMEFORMAT='%R %U %S'
    { time "$rawpair" "$src_file" "$work/raw" > "$work/raw.out"; } 2> "$work/raw.time"
    r=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' "$work/raw.out")
    read -r wall user sys < "$work/raw.time"
    c=$(calc "sprintf(\"%.2f\", ($user + $sys) / $wall)")
    raw_rates+=" $r"
    raw_cpu+=" $c"
    raw_gib+=" $(per_gib "($user + $sys)" "$size_bytes")"
    log "run case=raw_pair rep=$i $(cat "$work/raw.out") cpu=$c"
    rm -f "$work/raw/copy"

    warm "$src_file"
    "$rawpair" "$src_file" "$work/raw" --fsync > "$work/raw.out"
    rawf_rates+=" $(sed -n 's/.* rate=\([0-9]*\).*/\1/p' "$work/raw.out")"
    log "run case=raw_pair_fsync rep=$i $(cat "$work/raw.out")"
    rm -f "$work/raw/copy"

    warm "$src_file"
    { time md5sum "$src_file" > /dev/null; } 2> "$work/md5.time"
    read -r wall user sys < "$work/md5.time"
    r=$(calc "$size_bytes / $wall")
    md5_rates+=" $r"
    md5_gib+=" $(per_gib "($user + $sys)" "$size_bytes")"
    log "run case=md5sum rep=$i seconds=$wall rate_mib_s=$(mib "$r") cpu_gib=$(per_gib "($user + $sys)" "$size_bytes")"

    warm "$src_file"
    { time fetch "$work/wget/copy" "http://127.0.0.1:$http_port/big.bin"; } 2> "$work/wget.time"
    read -r wall user sys < "$work/wget.time"
    [ "$(stat -c %s "$work/wget/copy")" = "$size_bytes" ] || { echo "$fetcher got a short copy" >&2; exit 1; }
    r=$(calc "$size_bytes / $wall")
    wget_rates+=" $r"
    wget_gib+=" $(per_gib "($user + $sys)" "$size_bytes")"
    log "run case=$fetcher rep=$i seconds=$wall rate_mib_s=$(mib "$r") cpu_gib=$(per_gib "($user + $sys)" "$size_bytes")"
    rm -f "$work/wget/copy"

    if [ -n "$b3sum" ]; then
        warm "$src_file"
        t0=$(now)
        "$b3sum" --num-threads 1 "$src_file" > /dev/null
        t1=$(now)
        r=$(calc "$size_bytes / ($t1 - $t0)")
        b3_rates+=" $r"
        log "run case=b3sum rep=$i seconds=$(calc "$t1 - $t0") rate_mib_s=$(mib "$r")"
    fi

    if [ -n "$base_bin" ]; then
        warm "$src_file"
        run_wugui verify_none "$work/src" "base-$i" "$base_bin" "$base_cac_port" "$work/master-base.conf"
        base_rates+=" $R_RATE"
        base_gib+=" $R_GIB_PO"
    fi

    # rotate the order each repetition so no case always runs right after the raw pairs
    order=(none crc32 md5 blake3)
    for k in 0 1 2 3; do
        v=${order[$(((k + i - 1) % 4))]}
        warm "$src_file"
        run_wugui "verify_$v" "$work/src" "$v-$i"
        rates[$v]+=" $R_RATE"
        wall_rates[$v]+=" $R_WALL_RATE"
        cpu_m[$v]+=" $R_CPU_MASTER"
        cpu_p[$v]+=" $R_CPU_PO"
        gib_m[$v]+=" $R_GIB_MASTER"
        gib_p[$v]+=" $R_GIB_PO"
        [ "$R_RSS_KB" -gt "${rss[$v]}" ] && rss[$v]=$R_RSS_KB
    done
done

raw_best=$(best <<< "$raw_rates")
md5_best=$(best <<< "$md5_rates")
wget_best=$(best <<< "$wget_rates")
echo "case=raw_pair size_mib=$size_mb runs=$runs rate_mib_s=$(mib "$raw_best") median_mib_s=$(mib "$(median <<< "$raw_rates")") cpu=$(median <<< "$raw_cpu") cpu_gib=$(median <<< "$raw_gib")"
rawf_best=$(best <<< "$rawf_rates")
echo "case=raw_pair_fsync size_mib=$size_mb runs=$runs rate_mib_s=$(mib "$rawf_best") median_mib_s=$(mib "$(median <<< "$rawf_rates")")"
echo "case=md5sum size_mib=$size_mb runs=$runs rate_mib_s=$(mib "$md5_best") median_mib_s=$(mib "$(median <<< "$md5_rates")") cpu_gib=$(median <<< "$md5_gib")"
echo "case=$fetcher size_mib=$size_mb runs=$runs rate_mib_s=$(mib "$wget_best") median_mib_s=$(mib "$(median <<< "$wget_rates")") cpu_gib=$(median <<< "$wget_gib")"
if [ -n "$b3sum" ]; then
    b3_best=$(best <<< "$b3_rates")
    echo "case=b3sum size_mib=$size_mb runs=$runs rate_mib_s=$(mib "$b3_best") median_mib_s=$(mib "$(median <<< "$b3_rates")")"
fi
if [ -n "$base_bin" ]; then
    echo "case=base_none size_mib=$size_mb runs=$runs bin=$base_bin rate_mib_s=$(mib "$(best <<< "$base_rates")") median_mib_s=$(mib "$(median <<< "$base_rates")") po_cpu_gib=$(median <<< "$base_gib")"
fi
for v in none crc32 md5 blake3; do
    b=$(best <<< "${rates[$v]}")
    wb=$(best <<< "${wall_rates[$v]}")
    case $v in
        md5) base=$md5_best bname=md5sum target=0.65 ;;
        blake3) if [ -n "$b3sum" ]; then base=$b3_best bname=b3sum target=0.65; else base=$raw_best bname=raw target=info; fi ;;
        crc32) base=$raw_best bname=raw target=0.90 ;;
        *) base=$raw_best bname=raw target=0.95 ;;
    esac
    ratio=$(calc "sprintf(\"%.3f\", $b / $base)")
    wratio=$(calc "sprintf(\"%.3f\", $wb / $base)")
    pass=info
    [ "$target" != info ] && pass=$(calc "($ratio >= $target) ? 1 : 0")
    extra=""
    [ "$bname" = raw ] && extra=" ratio_vs_raw_fsync=$(calc "sprintf(\"%.3f\", $b / $rawf_best)")"
    echo "case=verify_$v size_mib=$size_mb runs=$runs rate_mib_s=$(mib "$b") median_mib_s=$(mib "$(median <<< "${rates[$v]}")") wall_rate_mib_s=$(mib "$wb") ratio_vs_$bname=$ratio wall_ratio_vs_$bname=$wratio target=$target pass=$pass$extra cpu_master=$(median <<< "${cpu_m[$v]}") cpu_po=$(median <<< "${cpu_p[$v]}") master_cpu_gib=$(median <<< "${gib_m[$v]}") po_cpu_gib=$(median <<< "${gib_p[$v]}")"
done

# The issue's ratios, `name value` a line.
ratio() { calc "sprintf(\"%.3f\", ($1) / ($2))"; }
gib=1073741824
po_none=$(median <<< "${gib_p[none]}")
po_crc=$(median <<< "${gib_p[crc32]}")
po_md5=$(median <<< "${gib_p[md5]}")
m_md5=$(median <<< "${gib_m[md5]}")
echo "none_vs_raw_best $(ratio "$(best <<< "${rates[none]}")" "$raw_best")"
echo "none_vs_raw_median $(ratio "$(median <<< "${rates[none]}")" "$(median <<< "$raw_rates")")"
echo "crc32_vs_raw_best $(ratio "$(best <<< "${rates[crc32]}")" "$raw_best")"
echo "md5_vs_md5sum_best $(ratio "$(best <<< "${rates[md5]}")" "$md5_best")"
echo "md5_ceiling_mib_s $(calc "sprintf(\"%.1f\", 2 / ($m_md5 + $po_md5) * 1024)")"
echo "md5_vs_ceiling $(ratio "$(best <<< "${rates[md5]}") / $gib" "2 / ($m_md5 + $po_md5)")"
echo "md5_cpu_bound $(ratio "$po_md5" "$(median <<< "$md5_gib") + $po_none")"
echo "po_cpu_gib_crc32 $po_crc"
echo "${fetcher}_cpu_gib $(median <<< "$wget_gib")"
echo "crc32_po_vs_${fetcher}_cpu $(ratio "$po_crc" "$(median <<< "$wget_gib")")"
echo "blake3_vs_md5 $(ratio "$(best <<< "${rates[blake3]}")" "$(best <<< "${rates[md5]}")")"
[ -z "$base_bin" ] || echo "none_po_cpu_vs_base $(ratio "$po_none" "$(median <<< "$base_gib")")"

run_wugui rate_limit "$work/src_rl" rl
want=10485760
err=$(calc "sprintf(\"%.2f\", ($R_RATE - $want) * 100 / $want)")
pass=$(calc "($err <= 3 && $err >= -3) ? 1 : 0")
echo "case=rate_limit size_mib=$rl_mb limit=$want achieved=$R_RATE seconds=$R_SECS wall_achieved=$(calc "sprintf(\"%.0f\", $R_WALL_RATE)") error_pct=$err target_pct=3 pass=$pass"

peak=0
for v in none crc32 md5 blake3; do [ "${rss[$v]}" -gt "$peak" ] && peak=${rss[$v]}; done
peak_mib=$(calc "sprintf(\"%.1f\", $peak / 1024)")
pass=$(calc "($peak_mib <= 32) ? 1 : 0")
echo "po_rss_anon_mib $peak_mib"
echo "case=po_rss_anon size_mib=$size_mb peak_mib=$peak_mib none_mib=$(calc "sprintf(\"%.1f\", ${rss[none]} / 1024)") crc32_mib=$(calc "sprintf(\"%.1f\", ${rss[crc32]} / 1024)") md5_mib=$(calc "sprintf(\"%.1f\", ${rss[md5]} / 1024)") blake3_mib=$(calc "sprintf(\"%.1f\", ${rss[blake3]} / 1024)") target=32 pass=$pass"
