#!/usr/bin/env bash
# Prepare: claims the machine for this node and stores its join token(s).
# They arrive on standard input only (never in the script, an argument or the environment, so never
# in a process listing or a log), one per line, and are kept in root-only files that config.yaml
# names: TOKEN_FILE (`token-file`) always and, on servers, AGENT_TOKEN_FILE (`agent-token-file`),
# the separate token agents join with. A marker records which node the machine is, so that two
# configured nodes pointing at one machine fail here instead of fighting over it.
set -euo pipefail
: "${NODE_NAME:?}" "${TOKEN_FILE:?}" "${MARKER_FILE:?}"

marker=$ROOT$MARKER_FILE
if as_root test -e "$marker"; then
  owner=$(as_root cat "$marker")
  if [[ $owner != "$NODE_NAME" ]]; then
    die "this machine is already node '$owner' of the cluster; configured here as '$NODE_NAME'"
  fi
fi

token=""
agent_token=""
IFS= read -r token || true
IFS= read -r agent_token || true
if [[ -z $token ]]; then
  die "no join token arrived on standard input"
fi
changed=false
# printf is a shell builtin: the token never becomes a process argument.
if printf '%s' "$token" | put_file "$ROOT$TOKEN_FILE" 0600; then
  changed=true
fi
if [[ -n ${AGENT_TOKEN_FILE:-} ]]; then
  if [[ -z $agent_token ]]; then
    die "no agent token arrived on standard input (second line); a server needs it"
  fi
  if printf '%s' "$agent_token" | put_file "$ROOT$AGENT_TOKEN_FILE" 0600; then
    changed=true
  fi
fi
if printf '%s\n' "$NODE_NAME" | put_file "$marker" 0644; then
  changed=true
fi
log "machine claimed as $NODE_NAME (changed: $changed)"
