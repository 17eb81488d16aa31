#!/usr/bin/env bash
# Build the four wugui binaries as static executables for x86_64-unknown-linux-gnu (glibc,
# +crt-static), copy them to dist/, check that each is static and runs, and print one line each:
#
#   binary=NAME bytes=SIZE static=1
#
# Usage: scripts/build-static.sh [--strip] [--out DIR]
#   --strip     strip debug info from the copies in DIR (keeps the symbol table for backtraces)
#   --out DIR   where to copy the binaries (default: dist/ in the repo)
# Env: CARGO_TARGET_DIR (default: target/static, so the normal build in target/ is untouched and
#      its lock is not shared), CARGO (default: cargo).
# Exit status: 0 when every binary was built, is static and prints its version with -v;
#              1 when the build failed or a binary is missing; 2 when a binary is not static
#              or does not run.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=x86_64-unknown-linux-gnu
BINS="masterwugui wugui-po wugui-cac wugui-stat"
OUT="$ROOT/dist"
STRIP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --strip) STRIP=1 ;;
        --out) shift; OUT=${1:?--out needs a directory} ;;
        -h|--help) sed -n '2,$ { /^#/!q; s/^# \{0,1\}//p; }' "$0"; exit 0 ;;
        *) echo "build-static.sh: unknown argument $1 (try -h)" >&2; exit 1 ;;
    esac
    shift
done
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/static}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CARGO="${CARGO:-cargo}"

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "build-static.sh: rust target $TARGET is not installed (rustup target add $TARGET)" >&2
    exit 1
fi

echo "build-static.sh: building $BINS for $TARGET (+crt-static) in $CARGO_TARGET_DIR" >&2
# --target keeps RUSTFLAGS away from build scripts and proc macros (they run on the host).
if ! RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    "$CARGO" build --release --locked --target "$TARGET" --bins >&2; then
    echo "build-static.sh: cargo build failed" >&2
    exit 1
fi

BUILT="$CARGO_TARGET_DIR/$TARGET/release"
mkdir -p "$OUT"
# dist/ is a build output: keep it out of git without touching the repo's .gitignore.
[ "$OUT" = "$ROOT/dist" ] && [ ! -e "$OUT/.gitignore" ] && printf '*\n' >"$OUT/.gitignore"

# is_static FILE: 0 if FILE is a static (or static-pie) ELF executable, 1 if it is dynamic,
# 2 if no tool could tell. Static means: no PT_INTERP program header (no dynamic loader) and,
# where readelf can show it, no DT_NEEDED library.
is_static() {
    local f=$1 out
    if command -v file >/dev/null 2>&1; then
        out=$(file -b "$f" 2>/dev/null || true)
        case "$out" in
            *"statically linked"*|*"static-pie linked"*) return 0 ;;
            *"dynamically linked"*) return 1 ;;
        esac
    fi
    if command -v readelf >/dev/null 2>&1; then
        out=$(readelf -lW "$f" 2>/dev/null) && {
            if grep -q 'INTERP' <<<"$out"; then return 1; fi
            if readelf -dW "$f" 2>/dev/null | grep -q '(NEEDED)'; then return 1; fi
            return 0
        }
    fi
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$f" <<'PY' && return 0 || { [ $? -eq 1 ] && return 1; }
import struct, sys
# Read the ELF program headers: a PT_INTERP (type 3) entry names the dynamic loader.
with open(sys.argv[1], "rb") as fh:
    d = fh.read(1 << 20)
if d[:4] != b"\x7fELF" or d[4] != 2:
    sys.exit(2)  # not a 64-bit ELF: cannot tell
e = "<" if d[5] == 1 else ">"
phoff, = struct.unpack_from(e + "Q", d, 0x20)
phentsize, phnum = struct.unpack_from(e + "HH", d, 0x36)
fh = open(sys.argv[1], "rb")
fh.seek(phoff)
ph = fh.read(phentsize * phnum)
for i in range(phnum):
    p_type, = struct.unpack_from(e + "I", ph, i * phentsize)
    if p_type == 3:
        sys.exit(1)
sys.exit(0)
PY
    fi
    if command -v ldd >/dev/null 2>&1; then
        out=$(ldd "$f" 2>&1 || true)
        case "$out" in
            *"not a dynamic executable"*|*"statically linked"*) return 0 ;;
            *"=>"*|*"ld-linux"*) return 1 ;;
        esac
    fi
    return 2
}

fail=0
for b in $BINS; do
    src="$BUILT/$b"
    if [ ! -x "$src" ]; then
        echo "build-static.sh: $src was not built" >&2
        exit 1
    fi
    dst="$OUT/$b"
    # Copy to a temp name, then rename: a running daemon using dist/NAME keeps its inode.
    cp -f "$src" "$dst.tmp.$$"
    if [ "$STRIP" = 1 ]; then
        if command -v strip >/dev/null 2>&1; then
            strip --strip-debug "$dst.tmp.$$"
        else
            echo "build-static.sh: strip not found; $b keeps its debug info" >&2
        fi
    fi
    chmod 0755 "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"

    st=0
    is_static "$dst" || st=$?
    if [ $st -eq 1 ]; then
        echo "build-static.sh: $b is NOT static" >&2
        fail=1
        static=0
    elif [ $st -eq 2 ]; then
        echo "build-static.sh: cannot tell whether $b is static (no file, readelf, python3 or ldd)" >&2
        fail=1
        static=0
    else
        static=1
    fi

    if ! ver=$("$dst" -v 2>&1) || [ -z "$ver" ]; then
        echo "build-static.sh: $b -v failed: $ver" >&2
        fail=1
    else
        echo "build-static.sh: $dst: $ver" >&2
    fi
    echo "binary=$b bytes=$(wc -c <"$dst" | tr -d ' ') static=$static"
done

if [ $fail -ne 0 ]; then
    exit 2
fi
echo "build-static.sh: all binaries static, in $OUT" >&2
