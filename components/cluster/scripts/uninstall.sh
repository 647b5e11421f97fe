#!/usr/bin/env bash
# Uninstall (the delete of the prepare step): runs after the node was drained (its admit step's
# delete) and before its Node object is removed from the cluster (its claim step's delete). Runs
# the K3s uninstall script, which stops K3s, removes its files, network interfaces and the
# binaries. Safe to re-run: a machine without K3s is already uninstalled.
set -euo pipefail
: "${NODE_NAME:?}" "${K3S_SERVICE:?}" "${TOKEN_FILE:?}" "${MARKER_FILE:?}"

uninstaller=$ROOT/usr/local/bin/$K3S_SERVICE-uninstall.sh
if as_root test -x "$uninstaller"; then
  log "uninstalling K3s from $NODE_NAME"
  as_root "$uninstaller"
else
  log "K3s is not installed on $NODE_NAME"
fi
as_root rm -f "$ROOT$TOKEN_FILE" "$ROOT${AGENT_TOKEN_FILE:-$TOKEN_FILE}" "$ROOT$MARKER_FILE"
log "$NODE_NAME no longer runs K3s"
