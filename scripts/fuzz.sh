#!/usr/bin/env bash
# Fuzz the decoders and the role machines: every cargo-fuzz target in fuzz/, one after another,
# SECS seconds each (the default 60 s is the smoke run).
#
#   scripts/fuzz.sh [SECS] [TARGET...]      (SECS defaults to 60; targets default to all)
#
# Prints one line per target:
#
#   target=NAME execs=N crashes=N secs=S
#
# and exits 1 if any target crashed. A crash (a panic, a failed property, an allocation over
# the limit, a timeout or an out-of-memory) stops that target at once; its input is saved under
# fuzz/artifacts/NAME/ and the tail of the log is shown. Reproduce one with
#
#   cargo +nightly fuzz run NAME fuzz/artifacts/NAME/crash-...
#
# po_machine and master_machine drive PoMachine / MasterMachine through event sequences built
# from the input (fuzz/fuzz_targets/sim/); they run with -rss_limit_mb=1024 -malloc_limit_mb=64,
# so that any allocation a peer's frame can make grow without bound is reported as a crash.
# `WUGUI_FUZZ_LOG=debug fuzz/target/x86_64-unknown-linux-gnu/release/po_machine INPUT` shows
# what an input does, as the machine's log lines; WUGUI_FUZZ_TRACE=1 also prints every event the
# driver hands the machine.
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Inputs that found new
# coverage are kept in fuzz/corpus/NAME/ (git-ignored); fuzz/seeds/NAME/ holds the committed seeds,
# written from the current protocol by `cargo run --manifest-path fuzz/seedgen/Cargo.toml` (run it
# after a wire or driver change; the config seeds are kept by hand).
#
# Environment:
#   WUGUI_FUZZ_STRICT=1   also check that class settings round-trip through
#                         ClassCfg::to_pairs/from_pairs (frame and config targets). Off by
#                         default: a dest with a blank before its trailing slash ("/a /") is
#                         known not to round-trip, and that would stop every run at once.
#   FUZZ_ARGS="..."       more libFuzzer flags, e.g. "-max_len=65536" or "-jobs=2 -workers=2".
#   FUZZ_BUILD_RETRIES=N  how often to retry a failed build, a minute apart (default 3): the
#                         crate may be mid-edit.
set -uo pipefail

secs=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame manifest token config po_machine master_machine)
fi
case "$secs" in
    ''|*[!0-9]*) echo "usage: $0 [SECS] [TARGET...]" >&2; exit 2 ;;
esac

cd "$fuzz" || exit 2
retries=${FUZZ_BUILD_RETRIES:-3}
for attempt in $(seq 0 "$retries"); do
    mkdir -p "$fuzz/target"
    if cargo +nightly fuzz build >"$fuzz/target/build.log" 2>&1; then
        break
    fi
    if [ "$attempt" -eq "$retries" ]; then
        tail -30 "$fuzz/target/build.log" >&2
        echo "fuzz.sh: build failed $((retries + 1)) times" >&2
        exit 2
    fi
    echo "fuzz.sh: build failed (crate mid-edit?); retrying in 60 s" >&2
    sleep 60
done

bin="$fuzz/target/x86_64-unknown-linux-gnu/release"
status=0
for t in "${targets[@]}"; do
    corpus="$fuzz/corpus/$t"
    artifacts="$fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    [ -d "$fuzz/seeds/$t" ] && seeds=("$fuzz/seeds/$t")
    log="$fuzz/target/fuzz-$t.log"
    before=$(find "$artifacts" -type f | wc -l)
    start=$(date +%s.%N)
    # The same binary `cargo +nightly fuzz run $t` builds and runs, run directly so that a
    # rebuild (others editing src/) never eats into the time.
    limits=()
    case "$t" in
        *_machine) limits=(-rss_limit_mb=1024 -malloc_limit_mb=64) ;;
    esac
    # shellcheck disable=SC2086
    # TMPDIR: the config target's fixture directory (secrets, po files) goes there.
    tmp="$fuzz/target/tmp-$t"
    mkdir -p "$tmp"
    TMPDIR="$tmp" ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        "$bin/$t" -artifact_prefix="$artifacts/" -max_total_time="$secs" -timeout=10 \
        -print_final_stats=1 "${limits[@]}" ${FUZZ_ARGS:-} "$corpus" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    rm -rf "$tmp"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then # no final stats: take the last status line, "#N ..."
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # died without leaving an input (should not happen); the log says why
    fi
    printf 'target=%s execs=%s crashes=%s secs=%.0f\n' "$t" "${execs:-0}" "$crashes" "$(awk "BEGIN { print $end - $start }")"
    if [ "$crashes" -ne 0 ]; then
        status=1
        {
            echo "--- $t: log $log, new inputs in $artifacts:"
            find "$artifacts" -type f -newermt "@${start%.*}" -print
            grep -m1 -A12 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log"
        } >&2
    fi
done
exit $status
