#!/usr/bin/env bash
# Prepare: claims the machine for this node and stores the cluster join token.
# The token arrives on standard input only (never in the script, an argument or the environment,
# so never in a process listing or a log) and is kept in a root-only file that config.yaml names
# with `token-file:`. A marker records which node the machine is, so that two configured nodes
# pointing at one machine fail here instead of fighting over it.
set -euo pipefail
: "${NODE_NAME:?}" "${TOKEN_FILE:?}" "${MARKER_FILE:?}"

marker=$ROOT$MARKER_FILE
if as_root test -e "$marker"; then
  owner=$(as_root cat "$marker")
  if [[ $owner != "$NODE_NAME" ]]; then
    die "this machine is already node '$owner' of the cluster; configured here as '$NODE_NAME'"
  fi
fi

changed=false
if put_file "$ROOT$TOKEN_FILE" 0600; then
  changed=true
fi
if ! as_root test -s "$ROOT$TOKEN_FILE"; then
  die "no join token arrived on standard input"
fi
if printf '%s\n' "$NODE_NAME" | put_file "$marker" 0644; then
  changed=true
fi
log "machine claimed as $NODE_NAME (changed: $changed)"
