#!/usr/bin/env bash
# Builds the wugui .deb with dpkg-deb: the four static binaries and everything
# `scripts/install.sh /usr --configs` installs (it stages the files, so the layout has one
# source of truth), plus the maintainer scripts and the CAC's user drop-in (scripts/deb/).
# Prints one line: deb=PATH.
#
# Usage: scripts/build-deb.sh [--from DIR] [--out DIR] [--revision N] [--compress TYPE]
#   --from DIR      package the binaries in DIR as they are (default: a fresh static build,
#                   scripts/build-static.sh --strip (debug info dropped, symbols kept), into a
#                   temp dir; cargo rebuilds only what changed)
#   --out DIR       where the .deb goes (default: dist/)
#   --revision N    the Debian revision: VERSION-N, VERSION from Cargo.toml (default: 1)
#   --compress TYPE xz (default: every dpkg since Debian 6 and Ubuntu 10.04 reads it), gzip
#                   (faster, for tests) or none
# Env: WUGUI_DEB_MAINTAINER (the Maintainer: field), CARGO_TARGET_DIR (for build-static.sh).
# Needs: bash, dpkg-deb, coreutils, md5sum. No root: file owners are set by dpkg-deb.
# Exit status: 0 built; 1 usage, build or packaging error.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$here/.." && pwd)
FROM=""
OUT="$ROOT/dist"
REVISION=1
COMPRESS=xz
while [ $# -gt 0 ]; do
    case "$1" in
        --from) shift; FROM=${1:?--from needs a directory} ;;
        --out) shift; OUT=${1:?--out needs a directory} ;;
        --revision) shift; REVISION=${1:?--revision needs a number} ;;
        --compress) shift; COMPRESS=${1:?--compress needs xz, gzip or none} ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1 (try -h)" >&2; exit 1 ;;
    esac
    shift
done
case "$OUT" in /*) ;; *) OUT="$(pwd)/$OUT" ;; esac
case "$COMPRESS" in xz|gzip|none) ;; *) echo "build-deb.sh: --compress takes xz, gzip or none" >&2; exit 1 ;; esac
case "$REVISION" in ''|*[!0-9a-zA-Z.+~]*) echo "build-deb.sh: bad --revision $REVISION" >&2; exit 1 ;; esac
command -v dpkg-deb >/dev/null 2>&1 || { echo "build-deb.sh: dpkg-deb not found (apt-get install dpkg)" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
[ -n "$VERSION" ] || { echo "build-deb.sh: no version in Cargo.toml" >&2; exit 1; }
DEBVER="$VERSION-$REVISION"
ARCH=amd64   # the static build is x86_64-unknown-linux-gnu only
MAINTAINER=${WUGUI_DEB_MAINTAINER:-wugui developers <wugui@localhost>}

work=$(mktemp -d "${TMPDIR:-/tmp}/wugui-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkg="$work/pkg"

if [ -z "$FROM" ]; then
    FROM="$work/bin"
    "$here/build-static.sh" --strip --out "$FROM" >&2 || { echo "build-deb.sh: the static build failed" >&2; exit 1; }
fi

# The files: exactly what install.sh puts on a system with PREFIX=/usr.
DESTDIR="$pkg" "$here/install.sh" /usr --configs --from "$FROM" >"$work/install.log" \
    || { cat "$work/install.log" >&2; echo "build-deb.sh: install.sh failed" >&2; exit 1; }
# The state and log dirs are the postinst's: their owners (root, the wugui group) are not known
# here, and files the daemons write in them are not the package's.
rm -rf "$pkg/var"
# What only the package adds: the CAC's user under systemd and SysV init, the copyright.
install -D -m 0644 "$here/deb/wugui-cac-user.conf" "$pkg/lib/systemd/system/wugui-cac.service.d/wugui-user.conf"
install -D -m 0644 "$here/deb/default-wugui-cac" "$pkg/etc/default/wugui-cac"
cat >"$pkg/usr/share/doc/wugui/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: wugui

Files: *
License: MIT
COPYRIGHT
chmod 0644 "$pkg/usr/share/doc/wugui/copyright"

mkdir -p "$pkg/DEBIAN"
for s in postinst prerm postrm; do
    install -m 0755 "$here/deb/$s" "$pkg/DEBIAN/$s"
done
# Every file under /etc is a conffile: dpkg keeps an edited one on upgrade and asks.
(cd "$pkg" && find etc -type f | sort | sed 's#^#/#') >"$pkg/DEBIAN/conffiles"
# md5sums for `dpkg --verify`, without the conffiles (dpkg keeps their sums itself).
(cd "$pkg" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$pkg/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: wugui
Version: $DEBVER
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $size
Section: net
Priority: optional
Suggests: logrotate
Description: P2P distribution of directory trees from one producer to many hosts
 wugui pushes a directory tree from one producer host to tens or hundreds of
 downstream hosts, verifying every block and publishing by atomic renames.
 .
 Static binaries: masterwugui (one push), wugui-po (receiving daemon, runs as
 root), wugui-cac (config and auth center, runs as the system user wugui) and
 wugui-stat (live status). Neither daemon is enabled or started at install.
CONTROL

mkdir -p "$OUT"
deb="$OUT/wugui_${DEBVER}_${ARCH}.deb"
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$pkg" "$deb.tmp" >&2
mv -f "$deb.tmp" "$deb"
echo "deb=$deb"
