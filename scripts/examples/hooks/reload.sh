#!/bin/sh
# Example post-transfer hook for wugui-po. Install it in the po's hook_dir (see po.conf) and
# name it in the class (`hook = reload.sh` in cac.conf). It runs after the po has published the
# tree, with a timeout of the class's hook_timeout. Its exit status and the tail of its output
# go back to the master (exit 5 = every po committed but a hook failed), so exit 0 on success.
#
# Environment set by wugui-po:
#   WUGUI_TRANSFER  transfer id (decimal)
#   WUGUI_CLASS     class name
#   WUGUI_DEST      the dest directory that was just published
#   WUGUI_FILES     number of files in the tree
#   WUGUI_BYTES     bytes in the tree
set -eu

transfer=${WUGUI_TRANSFER:-?}
class=${WUGUI_CLASS:-?}
dest=${WUGUI_DEST:-}
files=${WUGUI_FILES:-0}
bytes=${WUGUI_BYTES:-0}

echo "reload.sh: transfer=$transfer class=$class dest=$dest files=$files bytes=$bytes"

# Leave a marker that monitoring can stat: outside the dest, so the published tree stays
# exactly what the master sent (and mirror = on does not remove it next time).
marker="${TMPDIR:-/tmp}/wugui-hook-$class.last"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) transfer=$transfer files=$files bytes=$bytes" >"$marker" 2>/dev/null || true

# Then tell the service that reads the data, for example:
#   systemctl reload my-search-server
#   kill -HUP "$(cat /var/run/my-server.pid)"
exit 0
