#!/usr/bin/env bash
# Install the static wugui binaries, and optionally the example configs, hook, systemd units
# and SysV init scripts, below PREFIX.
#
# Usage: scripts/install.sh PREFIX [--configs] [--from DIR]
#   PREFIX/bin/                      masterwugui wugui-po wugui-cac wugui-stat (always)
#   with --configs:
#   PREFIX/etc/wugui/                cac.conf po.conf master.conf, secrets/ (mode 0700)
#   PREFIX/etc/wugui/hooks/          reload.sh (an example hook)
#   PREFIX/lib/systemd/system/       wugui-po.service wugui-cac.service
#   PREFIX/etc/init.d/               wugui-po wugui-cac, and wugui-common (sourced by both)
#   PREFIX/etc/logrotate.d/          wugui
#   --from DIR   take the binaries from DIR (default: dist/, built by scripts/build-static.sh
#                when a binary is missing there; env WUGUI_DIST does the same)
#
# An existing config, hook or logrotate file is never overwritten: when it differs, the new one
# is put beside it as NAME.example. Binaries, units and init scripts are replaced when they
# differ (local changes belong in `systemctl edit` drop-ins and /etc/default/wugui-*). Running it
# again changes nothing. The units and init scripts name PREFIX/bin and PREFIX/etc/wugui.
# Examples: scripts/install.sh /usr/local --configs    scripts/install.sh /tmp/w --configs
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$here/.." && pwd)
BINS="masterwugui wugui-po wugui-cac wugui-stat"

PREFIX=""
CONFIGS=0
FROM="${WUGUI_DIST:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --configs) CONFIGS=1 ;;
        --from) shift; FROM=${1:?--from needs a directory} ;;
        -h|--help) sed -n '2,$ { /^#/!q; s/^# \{0,1\}//p; }' "$0"; exit 0 ;;
        -*) echo "install.sh: unknown option $1 (try -h)" >&2; exit 1 ;;
        *)
            if [ -n "$PREFIX" ]; then echo "install.sh: one PREFIX only (try -h)" >&2; exit 1; fi
            PREFIX=$1
            ;;
    esac
    shift
done
if [ -z "$PREFIX" ]; then
    echo "usage: scripts/install.sh PREFIX [--configs] [--from DIR]" >&2
    exit 1
fi
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac
# `/` installs into /bin, /etc/wugui, /lib/systemd/system, /etc/init.d.
while [ "${PREFIX%/}" != "$PREFIX" ]; do PREFIX=${PREFIX%/}; done

BINDIR="$PREFIX/bin"
ETCDIR="$PREFIX/etc/wugui"
UNITDIR="$PREFIX/lib/systemd/system"
INITDIR="$PREFIX/etc/init.d"
LOGROTDIR="$PREFIX/etc/logrotate.d"

# --- the binaries -------------------------------------------------------------------------
if [ -z "$FROM" ]; then
    FROM="$ROOT/dist"
    missing=0
    for b in $BINS; do [ -x "$FROM/$b" ] || missing=1; done
    if [ $missing = 1 ]; then
        echo "install.sh: no static binaries in $FROM; building them with scripts/build-static.sh" >&2
        "$here/build-static.sh" --out "$FROM" >&2
    fi
fi
for b in $BINS; do
    if [ ! -x "$FROM/$b" ]; then
        echo "install.sh: $FROM/$b is missing" >&2
        exit 1
    fi
done

# put SRC DEST MODE: copy SRC to DEST through a temp file and a rename (a running binary keeps
# its inode), unless DEST already has the same bytes and mode. Prints what it did.
put() {
    local src=$1 dst=$2 mode=$3
    mkdir -p "$(dirname "$dst")"
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        chmod "$mode" "$dst"
        echo "unchanged $dst"
        return
    fi
    local verb=installed
    [ -e "$dst" ] && verb=updated
    cp "$src" "$dst.tmp.$$"
    chmod "$mode" "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"
    echo "$verb $dst"
}

# put_config SRC DEST MODE: like put, but an existing DEST is the admin's: keep it, and put a
# differing new version beside it as DEST.example.
put_config() {
    local src=$1 dst=$2 mode=$3
    if [ -e "$dst" ] && ! cmp -s "$src" "$dst"; then
        echo "kept $dst (yours; the example is $dst.example)"
        put "$src" "$dst.example" "$mode" >/dev/null
        return
    fi
    put "$src" "$dst" "$mode"
}

for b in $BINS; do
    put "$FROM/$b" "$BINDIR/$b" 0755
done

[ $CONFIGS = 1 ] || exit 0

# --- configs, hook, units, init scripts ----------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Point the shipped paths at this PREFIX: binaries in PREFIX/bin, configs in PREFIX/etc/wugui,
# init scripts in PREFIX/etc/init.d.
rewrite() {
    sed -e "s#/usr/local/bin/#$BINDIR/#g" -e "s#/etc/wugui/#$ETCDIR/#g" -e "s#/etc/wugui\$#$ETCDIR#" \
        -e "s#/etc/init\.d/#$INITDIR/#g" "$1" >"$2"
}

mkdir -p "$ETCDIR/hooks"
mkdir -p -m 0700 "$ETCDIR/secrets"
for c in cac po master; do
    rewrite "$here/examples/$c.conf" "$tmp/$c.conf"
    put_config "$tmp/$c.conf" "$ETCDIR/$c.conf" 0640
done
put_config "$here/examples/hooks/reload.sh" "$ETCDIR/hooks/reload.sh" 0755
put_config "$here/examples/logrotate.conf" "$LOGROTDIR/wugui" 0644

for r in po cac; do
    rewrite "$here/systemd/wugui-$r.service" "$tmp/wugui-$r.service"
    put "$tmp/wugui-$r.service" "$UNITDIR/wugui-$r.service" 0644
    rewrite "$here/init.d/wugui-$r" "$tmp/wugui-$r"
    put "$tmp/wugui-$r" "$INITDIR/wugui-$r" 0755
done
# Sourced, not run: not executable, so no init system takes it for a service.
rewrite "$here/init.d/wugui-common" "$tmp/wugui-common"
put "$tmp/wugui-common" "$INITDIR/wugui-common" 0644

if [ ! -e "$ETCDIR/cluster.key" ]; then
    echo "note: the CAC needs its cluster key ($ETCDIR/cluster.key, the same on every replica):" \
        "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > $ETCDIR/cluster.key; chmod 600 $ETCDIR/cluster.key"
fi
echo "note: systemd: systemctl daemon-reload && systemctl enable --now wugui-po (or wugui-cac);" \
    "SysV: update-rc.d wugui-po defaults or chkconfig --add wugui-po"
