#!/usr/bin/env bash
# Install: writes /etc/rancher/k3s/config.yaml, installs the pinned K3s release and (re)starts it.
#
# Idempotent: the desired state is the K3s version plus the config content; once a run has
# applied it (K3s restarted and healthy), it is recorded in APPLIED_FILE. A re-run with the same
# version and config on an active service changes nothing. A run interrupted anywhere finds
# APPLIED_FILE out of date and does the restart again.
#
# Servers restart one at a time. Pulumi runs every joining node's steps in parallel once the first
# server is ready (so the dependency graph stays flat and `pulumi up` takes as long for 50
# machines as for 5); a restart of a running server member would then be concurrent with the
# others' and could take etcd below quorum. So a server that is already running takes a
# cluster-wide lock first, a coordination.k8s.io Lease in kube-system created and taken over with
# optimistic concurrency (resourceVersion), and hands it back only when its node is Ready again. A
# holder that died keeps it for at most LEASE_SECONDS. Agents do not take it: they restart in
# parallel. A server's first start does not restart a running member, so it takes no lease.
set -euo pipefail
: "${NODE_NAME:?}" "${NODE_ROLE:?}" "${K3S_VERSION:?}" "${K3S_SERVICE:?}" "${K3S_CONFIG:?}" "${CONFIG_FILE:?}"
: "${TOKEN_FILE:?}" "${APPLIED_FILE:?}" "${K3S_INSTALL_URL:?}" "${READY_TIMEOUT:?}" "${KUBECONFIG_PATH:?}"
: "${LEASE_NAME:?}" "${LEASE_SECONDS:?}" "${DOWNLOAD_TIMEOUT:?}"

now_micro() {
  date -u +%Y-%m-%dT%H:%M:%S.000000Z
}

lease_manifest() {
  local resource_version=$1 holder=$2
  printf 'apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: %s\n  namespace: kube-system\n' "$LEASE_NAME"
  if [[ -n $resource_version ]]; then
    printf '  resourceVersion: "%s"\n' "$resource_version"
  fi
  printf 'spec:\n  holderIdentity: "%s"\n  leaseDurationSeconds: %s\n  renewTime: "%s"\n' \
    "$holder" "$LEASE_SECONDS" "$(now_micro)"
}

lease_read() {
  kube -n kube-system get lease "$LEASE_NAME" --ignore-not-found \
    -o 'jsonpath={.metadata.resourceVersion}|{.spec.holderIdentity}|{.spec.renewTime}|{.spec.leaseDurationSeconds}'
}

# A lease expires by its own duration, as its holder wrote it.
lease_expired() {
  local renewed=$1 duration=$2
  if [[ -z $renewed || -z $duration ]]; then
    return 0
  fi
  (($(date -u +%s) > $(date -u -d "$renewed" +%s) + duration))
}

acquire_lease() {
  local deadline=$((SECONDS + LEASE_SECONDS)) version holder renewed duration
  while :; do
    IFS='|' read -r version holder renewed duration <<<"$(lease_read)"
    if [[ -z $version ]]; then
      if lease_manifest "" "$NODE_NAME" | kube create -f - >/dev/null 2>&1; then
        break
      fi
    elif [[ -z $holder || $holder == "$NODE_NAME" ]] || lease_expired "$renewed" "$duration"; then
      if lease_manifest "$version" "$NODE_NAME" | kube replace -f - >/dev/null 2>&1; then
        break
      fi
    fi
    if ((SECONDS >= deadline)); then
      die "waited ${LEASE_SECONDS}s for server '$holder' to finish restarting (Lease kube-system/$LEASE_NAME)"
    fi
    log "server '${holder:-?}' is restarting; $NODE_NAME waits for its turn"
    sleep "${POLL_SECONDS:-5}"
  done
  log "$NODE_NAME holds the server restart lease"
}

release_lease() {
  local version holder _
  IFS='|' read -r version holder _ <<<"$(lease_read)"
  if [[ -n $version && $holder == "$NODE_NAME" ]]; then
    lease_manifest "$version" "" | kube replace -f - >/dev/null
    log "$NODE_NAME released the server restart lease"
  fi
}

if ! as_root test -s "$ROOT$TOKEN_FILE"; then
  die "the join token file $TOKEN_FILE is missing on $NODE_NAME; the prepare step must run first"
fi

# A server with backups gets the restore tool (restore.sh; README, "Backups and restore"), which an
# operator runs during an incident. It is written first, so that it is current even when K3s itself
# needs nothing; without backups there is nothing to restore from, and no tool.
if [[ -n ${RESTORE_PATH:-} ]]; then
  if [[ -n ${RESTORE_SCRIPT_B64:-} ]]; then
    if base64 -d <<<"$RESTORE_SCRIPT_B64" | put_file "$ROOT$RESTORE_PATH" 0700; then
      log "wrote $RESTORE_PATH"
    fi
  else
    as_root rm -f "$ROOT$RESTORE_PATH"
  fi
fi

config_sum=$(printf '%s' "$K3S_CONFIG" | sha256sum)
desired="$K3S_VERSION ${config_sum%% *}"
installed=""
if as_root test -x "$K3S_BIN"; then
  installed=$(as_root "$K3S_BIN" --version | awk 'NR == 1 { print $3 }')
fi
applied=$(as_root cat "$ROOT$APPLIED_FILE" 2>/dev/null || true)
config_current=false
if printf '%s' "$K3S_CONFIG" | as_root cmp -s - "$ROOT$CONFIG_FILE"; then
  config_current=true
fi

if [[ $installed == "$K3S_VERSION" && $applied == "$desired" && $config_current == true ]] && service_active; then
  log "$NODE_NAME already runs K3s $K3S_VERSION with this configuration; nothing to do"
  exit 0
fi

# A joining node that cannot reach the first server would only say so in its own log, after the
# start times out; say it now, with the address it tried.
server_answers() {
  [[ $(curl -sk --max-time 5 "$SERVER_URL/ping" 2>/dev/null) == pong ]]
}
if [[ -n ${SERVER_URL:-} ]] && ! wait_until $((SECONDS + 60)) server_answers; then
  die "$NODE_NAME cannot reach the first server at $SERVER_URL (is TCP ${SERVER_URL##*:} open between the machines?)"
fi

holds_lease=false
if [[ $NODE_ROLE == server ]] && service_active; then
  acquire_lease
  holds_lease=true
fi

if printf '%s' "$K3S_CONFIG" | put_file "$ROOT$CONFIG_FILE" 0600; then
  log "wrote $CONFIG_FILE"
fi

if [[ $installed != "$K3S_VERSION" ]]; then
  log "installing K3s $K3S_VERSION (found: ${installed:-none}) as $K3S_SERVICE"
  installer=$(mktemp)
  trap 'rm -f "$installer"' EXIT
  # Every download is bounded: a connection that stalls would otherwise hold the step for ever.
  curl -sfL --connect-timeout 15 --max-time "$DOWNLOAD_TIMEOUT" --retry 5 --retry-delay 3 -o "$installer" "$K3S_INSTALL_URL" ||
    die "could not download $K3S_INSTALL_URL within ${DOWNLOAD_TIMEOUT}s"
  # The installer picks the binary for this machine's architecture (arm64 on GH200) and checks its
  # sha256; starting is left to this script, which bounds the wait. Its own downloads (binary,
  # checksums) have no time limit of their own, so the whole installer runs under one.
  if ! as_root timeout "$DOWNLOAD_TIMEOUT" env INSTALL_K3S_VERSION="$K3S_VERSION" INSTALL_K3S_EXEC="$NODE_ROLE" \
    INSTALL_K3S_SKIP_START=true sh "$installer"; then
    die "the K3s $K3S_VERSION installer failed or did not finish within ${DOWNLOAD_TIMEOUT}s"
  fi
fi

log "restarting $K3S_SERVICE"
as_root systemctl enable "$K3S_SERVICE" >/dev/null 2>&1
deadline=$((SECONDS + READY_TIMEOUT))
# The unit is Type=notify, so `restart` returns once the new K3s process says it is up (and the
# checks below cannot see the old one); it has no start timeout of its own, so a join that cannot
# complete (wrong token, unreachable server) would hang here for ever without `timeout`.
if ! as_root timeout "$READY_TIMEOUT" systemctl restart "$K3S_SERVICE"; then
  die "$K3S_SERVICE on $NODE_NAME did not start within ${READY_TIMEOUT}s; its log: $(service_log)"
fi
if [[ $NODE_ROLE == server ]] && ! wait_until "$deadline" api_ready; then
  die "the API server on $NODE_NAME did not answer /readyz within ${READY_TIMEOUT}s; its log: $(service_log)"
fi
if [[ $holds_lease == true ]]; then
  if ! wait_until "$deadline" node_ready; then
    die "node $NODE_NAME did not become Ready within ${READY_TIMEOUT}s after restarting (the lease stays held until it expires); its log: $(service_log)"
  fi
fi
printf '%s\n' "$desired" | put_file "$ROOT$APPLIED_FILE" 0600 || true
if [[ $holds_lease == true ]]; then
  release_lease
fi
log "$NODE_NAME runs K3s $K3S_VERSION"
