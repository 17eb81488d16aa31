#!/usr/bin/env bash
# Installs the static wugui binaries, and with --configs the rest, where the system looks (FHS).
# Run with -h for the usage; the file list is in usage() below.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/install.sh [PREFIX] [--configs] [--from DIR] [--unitdir DIR] [--dry-run]

Installs the static wugui binaries where the system looks for them (FHS).
  PREFIX/bin/                    masterwugui wugui-po wugui-cac wugui-stat   (PREFIX: /usr/local)
  PREFIX/share/doc/wugui/        README.md (the units' Documentation=)
With --configs also:
  /etc/wugui/                    cac.conf po.conf master.conf, secrets/ (0700), hooks/reload.sh,
                                 cluster.key (0600, made when missing and DESTDIR is empty)
  /etc/init.d/                   wugui-po wugui-cac, and wugui-common (sourced by both)
  /etc/logrotate.d/wugui
  UNITDIR                        wugui-po.service wugui-cac.service: /etc/systemd/system, or
                                 /lib/systemd/system when PREFIX is /usr (a package)
  /var/lib/wugui/ /var/log/wugui/  the po's state and the daemons' logs

Options:
  --configs       also configs, hook, units, init scripts, logrotate, state and log dirs
  --from DIR      take the binaries from DIR (default: dist/, built by scripts/build-static.sh
                  when a binary is missing there; env WUGUI_DIST does the same)
  --unitdir DIR   where the systemd units go
  --dry-run       print what would be done, change nothing
  -h, --help      this text
Env: DESTDIR=DIR stages everything below DIR (for a package); the installed files still
name the final paths.

An existing config, hook or logrotate file is never overwritten: when it differs, the new one
goes beside it as NAME.example. Binaries, units and init scripts are replaced when they differ
(local changes belong in `systemctl edit` drop-ins and /etc/default/wugui-*). Running it again
changes nothing.
Examples: scripts/install.sh --configs      DESTDIR=/tmp/stage scripts/install.sh /usr --configs
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$here/.." && pwd)
BINS="masterwugui wugui-po wugui-cac wugui-stat"

PREFIX=""
CONFIGS=0
DRY=0
UNITDIR=""
FROM="${WUGUI_DIST:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --configs) CONFIGS=1 ;;
        --dry-run|-n) DRY=1 ;;
        --from) shift; FROM=${1:?--from needs a directory} ;;
        --unitdir) shift; UNITDIR=${1:?--unitdir needs a directory} ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "install.sh: unknown option $1 (try -h)" >&2; exit 1 ;;
        *)
            if [ -n "$PREFIX" ]; then echo "install.sh: one PREFIX only (try -h)" >&2; exit 1; fi
            PREFIX=$1
            ;;
    esac
    shift
done
PREFIX=${PREFIX:-/usr/local}
case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: PREFIX must be absolute (a staging dir is DESTDIR=DIR)" >&2; exit 1 ;;
esac
while [ "${PREFIX%/}" != "$PREFIX" ]; do PREFIX=${PREFIX%/}; done
DESTDIR=${DESTDIR:-}
case "$DESTDIR" in ''|/*) ;; *) DESTDIR="$(pwd)/$DESTDIR" ;; esac
DESTDIR=${DESTDIR%/}
if [ -z "$UNITDIR" ]; then
    if [ "$PREFIX" = /usr ]; then UNITDIR=/lib/systemd/system; else UNITDIR=/etc/systemd/system; fi
fi

# Final paths, as the installed files name them; D is where they are written now.
BINDIR="$PREFIX/bin"
DOCDIR="$PREFIX/share/doc/wugui"
ETCDIR=/etc/wugui
D=$DESTDIR

# --- helpers -------------------------------------------------------------------------------
# say WHAT PATH: one line of what was (or, with --dry-run, would be) done.
say() {
    if [ $DRY = 1 ]; then echo "would-$1 $2"; else echo "$1 $2"; fi
}

# dir PATH MODE: create a directory (and its parents) with MODE, unless it exists.
dir() {
    [ -d "$1" ] && return
    say mkdir "$1"
    [ $DRY = 1 ] || mkdir -p -m "$2" "$1"
}

# put SRC DEST MODE: copy SRC to DEST through a temp file and a rename (a running binary keeps
# its inode), unless DEST already has the same bytes and mode.
put() {
    local src=$1 dst=$2 mode=$3
    dir "$(dirname "$dst")" 0755
    if [ -f "$dst" ] && [ -f "$src" ] && cmp -s "$src" "$dst"; then
        [ $DRY = 1 ] || chmod "$mode" "$dst"
        echo "unchanged $dst"
        return
    fi
    local verb=installed
    [ -e "$dst" ] && verb=updated
    say "$verb" "$dst"
    [ $DRY = 1 ] && return
    cp "$src" "$dst.tmp.$$"
    chmod "$mode" "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"
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

# --- the binaries and the README ------------------------------------------------------------
if [ -z "$FROM" ]; then
    FROM="$ROOT/dist"
    missing=0
    for b in $BINS; do [ -x "$FROM/$b" ] || missing=1; done
    if [ $missing = 1 ]; then
        if [ $DRY = 1 ]; then
            echo "would-build $FROM (scripts/build-static.sh: no static binaries there)"
        else
            echo "install.sh: no static binaries in $FROM; building them with scripts/build-static.sh" >&2
            "$here/build-static.sh" --out "$FROM" >&2
        fi
    fi
fi
for b in $BINS; do
    if [ ! -x "$FROM/$b" ] && [ $DRY = 0 ]; then
        echo "install.sh: $FROM/$b is missing" >&2
        exit 1
    fi
done
for b in $BINS; do
    put "$FROM/$b" "$D$BINDIR/$b" 0755
done
put "$ROOT/README.md" "$D$DOCDIR/README.md" 0644

[ $CONFIGS = 1 ] || exit 0

# --- configs, hook, units, init scripts, state and log dirs ----------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The shipped files name /usr/local/bin and /usr/local/share/doc: point them at PREFIX.
rewrite() {
    sed -e "s#/usr/local/bin/#$BINDIR/#g" -e "s#/usr/local/share/doc/wugui/#$DOCDIR/#g" "$1" >"$2"
}

dir "$D$ETCDIR" 0755
dir "$D$ETCDIR/hooks" 0755
dir "$D$ETCDIR/secrets" 0700
dir "$D/var/lib/wugui" 0755
dir "$D/var/log/wugui" 0750
for c in cac po master; do
    put_config "$here/examples/$c.conf" "$D$ETCDIR/$c.conf" 0640
done
put_config "$here/examples/hooks/reload.sh" "$D$ETCDIR/hooks/reload.sh" 0755
put_config "$here/examples/logrotate.conf" "$D/etc/logrotate.d/wugui" 0644

for r in po cac; do
    rewrite "$here/systemd/wugui-$r.service" "$tmp/wugui-$r.service"
    put "$tmp/wugui-$r.service" "$D$UNITDIR/wugui-$r.service" 0644
    rewrite "$here/init.d/wugui-$r" "$tmp/wugui-$r"
    put "$tmp/wugui-$r" "$D/etc/init.d/wugui-$r" 0755
done
# Sourced, not run: not executable, so no init system takes it for a service.
put "$here/init.d/wugui-common" "$D/etc/init.d/wugui-common" 0644

# The CAC refuses to start without its cluster key. A staged package must not carry one (every
# install would share it): its postinst makes it.
key="$D$ETCDIR/cluster.key"
if [ ! -e "$key" ]; then
    if [ -z "$DESTDIR" ]; then
        say installed "$key"
        if [ $DRY = 0 ]; then
            (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key")
        fi
        echo "note: $key is new: every CAC replica needs the same one (copy it, mode 0600)"
    else
        echo "note: no $ETCDIR/cluster.key in DESTDIR: the package makes one at install"
    fi
fi
echo "note: systemd: systemctl daemon-reload && systemctl enable --now wugui-po (or wugui-cac);" \
    "SysV: update-rc.d wugui-po defaults or chkconfig --add wugui-po"
