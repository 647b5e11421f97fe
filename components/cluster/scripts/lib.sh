#!/usr/bin/env bash
# Helpers every node step script starts with (the Python side prepends them, after the prelude of
# `export` lines with the step's settings). SOPHIA_ROOT prefixes every system path so that the tests
# can run the real scripts against a scratch directory; on a machine it is unset.
set -euo pipefail

ROOT=${SOPHIA_ROOT:-}
K3S_BIN=$ROOT/usr/local/bin/k3s
STEP=${STEP:-step}
USER_ID=$(id -u)

log() {
  printf '[%s] %s\n' "$STEP" "$*"
}

die() {
  printf '[%s] FAILED: %s\n' "$STEP" "$*" >&2
  exit 1
}

# The SSH user is `ubuntu`; privileged commands go through non-interactive sudo (never a prompt
# that would hang the step).
as_root() {
  if ((USER_ID == 0)); then
    "$@"
  else
    sudo -n -- "$@"
  fi
}

# put_file DEST MODE < content
# Writes standard input to DEST (root-owned, MODE) only when the content differs, through a
# temporary file in the same directory and a rename, so an interrupted run leaves the old file or
# the new one, never half of one. Returns 0 when it changed the file, 1 when it was already so.
put_file() {
  local dest=$1 mode=$2 tmp
  as_root mkdir -p "$(dirname "$dest")"
  tmp=$(as_root mktemp "$dest.XXXXXX")
  as_root tee "$tmp" >/dev/null
  as_root chmod "$mode" "$tmp"
  if as_root cmp -s "$tmp" "$dest"; then
    as_root rm -f "$tmp"
    return 1
  fi
  as_root mv -f "$tmp" "$dest"
  return 0
}

# kube ARGS... : kubectl bundled with K3s, as root, with this node's credentials (the admin
# kubeconfig on servers, the kubelet's own on agents). Every request is bounded: kubectl waits
# for ever on an API server that accepted the connection and never answers, and so would the step.
kube() {
  as_root "$K3S_BIN" kubectl --kubeconfig "$ROOT$KUBECONFIG_PATH" --request-timeout="${KUBE_REQUEST_TIMEOUT:?}s" "$@"
}

# wait_until DEADLINE COMMAND... : runs COMMAND every few seconds until it succeeds (returns 0) or
# until $SECONDS reaches DEADLINE (returns 1); the caller says what timed out and why.
wait_until() {
  local deadline=$1
  shift
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep "${POLL_SECONDS:-5}"
  done
}

# True when the node's Ready condition is True.
node_ready() {
  [[ $(kube get node "$NODE_NAME" --ignore-not-found -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# True when the API server answers /readyz with ok.
api_ready() {
  [[ $(kube get --raw /readyz 2>/dev/null) == ok ]]
}

service_active() {
  as_root systemctl is-active --quiet "$K3S_SERVICE"
}

# The last lines of the K3s service log, for failure messages: a join that fails says why.
service_log() {
  as_root journalctl -u "$K3S_SERVICE" -n 30 --no-pager 2>&1 || true
}
