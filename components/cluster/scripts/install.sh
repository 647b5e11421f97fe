#!/usr/bin/env bash
# Install: puts the pinned K3s release on the machine, writes /etc/rancher/k3s/config.yaml and K3s's
# systemd unit, and (re)starts it.
#
# No installer runs. This script downloads the K3s binary of the release for the node's architecture
# (K3S_BINARY_URL, from K3s's GitHub releases or `cluster.k3sMirror`) and checks its sha256 before it
# is made executable or run: against `cluster.k3sSha256.<arch>` when pinned, otherwise against the
# line for the binary in the release's sha256sum-<arch>.txt (K3S_SHA256_URL), as k3s-ansible's
# download role checks its binary (k3s-io/k3s-ansible roles/download/tasks/main.yml: get_url with
# `checksum: sha256:<release>/sha256sum-<arch>.txt`). A mismatch stops the step before anything on
# the machine changed. The binary then replaces /usr/local/bin/k3s in one rename, with the
# kubectl/crictl/ctr links K3s's installer makes, and the unit (node_config.systemd_unit) is written
# as K3s's installer writes it.
#
# Idempotent: the desired state is the K3s version plus the config and unit content; once a run has
# applied it (K3s restarted and healthy), it is recorded in APPLIED_FILE. A re-run with the same
# version, config and unit on an active service changes nothing. A run interrupted anywhere finds
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
: "${TOKEN_FILE:?}" "${APPLIED_FILE:?}" "${READY_TIMEOUT:?}" "${KUBECONFIG_PATH:?}"
: "${LEASE_NAME:?}" "${LEASE_SECONDS:?}" "${DOWNLOAD_TIMEOUT:?}"
: "${K3S_ARCH:?}" "${K3S_ASSET:?}" "${K3S_BINARY_URL:?}" "${K3S_SHA256_URL:?}" "${K3S_UNIT:?}" "${K3S_UNIT_FILE:?}"
: "${K3S_SHA256?}"

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

# The commands K3s's installer links to the K3s binary (install.sh create_symlinks). Like the
# installer, a command that is already on the machine's PATH (another kubectl, containerd's ctr) is
# left alone: the link in /usr/local/bin would shadow it.
LINKED_COMMANDS=(kubectl crictl ctr)
SYSTEM_PATH=(/usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin)

link_commands() {
  local cmd dir target owned
  for cmd in "${LINKED_COMMANDS[@]}"; do
    owned=false
    target=$(as_root readlink "$ROOT/usr/local/bin/$cmd" 2>/dev/null || true)
    [[ $target == k3s ]] && owned=true
    for dir in "${SYSTEM_PATH[@]}"; do
      if [[ $owned == false ]] && as_root test -e "$ROOT$dir/$cmd" -o -L "$ROOT$dir/$cmd"; then
        continue 2
      fi
    done
    if [[ $owned == false ]]; then
      as_root ln -s k3s "$ROOT/usr/local/bin/$cmd"
    fi
  done
}

# release_parts VERSION: "MAJOR MINOR PATCH REVISION" of a K3s release such as v1.35.5+k3s1.
release_parts() {
  [[ $1 =~ ^v([0-9]+)\.([0-9]+)\.([0-9]+)\+k3s([0-9]+)$ ]] || return 1
  printf '%s %s %s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}"
}

# K3s moves one minor version at a time and never back: "Ensure that your plan does not skip
# intermediate minor versions when upgrading" (k3s-io/docs docs/upgrades/manual.md, after the
# Kubernetes version skew policy), and going back is a rollback with an etcd snapshot taken before
# the upgrade (docs/upgrades/roll-back.md), not an install of the older binary. Checked against the
# version the machine really runs, before anything changes.
check_upgrade_path() {
  local from=$1 to=$2 parts
  local -a old new
  if ! parts=$(release_parts "$from"); then
    die "$NODE_NAME runs a K3s whose version '$from' ('k3s --version') is not a release such as v1.35.5+k3s1; install K3s $to by hand or uninstall it first"
  fi
  read -r -a old <<<"$parts"
  parts=$(release_parts "$to")
  read -r -a new <<<"$parts"
  local i newer=false older=false
  for i in 0 1 2 3; do
    if ((new[i] != old[i])); then
      if ((new[i] > old[i])); then newer=true; else older=true; fi
      break
    fi
  done
  if [[ $older == true ]]; then
    die "$NODE_NAME runs K3s $from, newer than k3sVersion $to, and K3s cannot be downgraded in place: set k3sVersion back to $from, or roll the cluster back from an etcd snapshot taken before the upgrade (README, Backups and restore; K3s docs, upgrades/roll-back)"
  fi
  if [[ $newer == true ]] && ((new[0] != old[0] || new[1] > old[1] + 1)); then
    die "$NODE_NAME runs K3s $from and k3sVersion $to skips minor versions, which K3s does not support (K3s docs, upgrades/manual): upgrade one minor at a time, first to the latest v${old[0]}.$((old[1] + 1)) release, pulumi up, then the next"
  fi
}

# download URL FILE: one bounded download (a connection that stalls would otherwise hold the step
# for ever), retried on transient errors.
download() {
  curl -fsSL --connect-timeout 15 --max-time "$DOWNLOAD_TIMEOUT" --retry 5 --retry-delay 3 -o "$2" "$1" ||
    die "could not download $1 within ${DOWNLOAD_TIMEOUT}s"
}

# fetch_verified_k3s DIR: the release's binary for this architecture in DIR/$K3S_ASSET, its sha256
# checked. Everything happens in DIR, as the SSH user: nothing on the machine changes, and the
# file is never executable, until it has passed.
fetch_verified_k3s() {
  local dir=$1 expected source found
  if [[ -n $K3S_SHA256 ]]; then
    expected=$K3S_SHA256
    source="cluster.k3sSha256.$K3S_ARCH"
  else
    download "$K3S_SHA256_URL" "$dir/sha256sum.txt"
    # `<sha256>  <asset>` lines (a `*` before the name in binary mode); only the exact asset's counts.
    expected=$(awk -v asset="$K3S_ASSET" '{ name = $2; sub(/^\*/, "", name) } name == asset { print $1; exit }' "$dir/sha256sum.txt")
    source=$K3S_SHA256_URL
    if [[ ! $expected =~ ^[0-9a-f]{64}$ ]]; then
      die "$K3S_SHA256_URL has no sha256 for $K3S_ASSET; nothing was installed on $NODE_NAME"
    fi
  fi
  log "downloading K3s $K3S_VERSION ($K3S_ASSET) from $K3S_BINARY_URL"
  download "$K3S_BINARY_URL" "$dir/$K3S_ASSET"
  found=$(sha256sum "$dir/$K3S_ASSET")
  found=${found%% *}
  if [[ $found != "$expected" ]]; then
    die "the K3s binary $K3S_BINARY_URL has sha256 $found, expected $expected ($source); nothing was installed on $NODE_NAME"
  fi
  log "sha256 of $K3S_ASSET matches $source"
}

if ! as_root test -s "$ROOT$TOKEN_FILE"; then
  die "the join token file $TOKEN_FILE is missing on $NODE_NAME; the prepare step must run first"
fi

installed=""
if as_root test -x "$K3S_BIN"; then
  installed=$(as_root "$K3S_BIN" --version | awk 'NR == 1 { print $3 }')
fi
if [[ -n $installed && $installed != "$K3S_VERSION" ]]; then
  check_upgrade_path "$installed" "$K3S_VERSION"
fi

# The new binary is downloaded and checked before anything on the machine is touched.
download_dir=""
if [[ $installed != "$K3S_VERSION" ]]; then
  download_dir=$(mktemp -d)
  trap 'rm -rf "$download_dir"' EXIT
  fetch_verified_k3s "$download_dir"
fi

# A server with backups gets the restore tool (restore.sh; README, "Backups and restore"), which an
# operator runs during an incident. It is written before the check for work to do, so that it is
# current even when K3s itself needs nothing; without backups there is nothing to restore from, and
# no tool.
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
unit_sum=$(printf '%s' "$K3S_UNIT" | sha256sum)
desired="$K3S_VERSION ${config_sum%% *} ${unit_sum%% *}"
applied=$(as_root cat "$ROOT$APPLIED_FILE" 2>/dev/null || true)
files_current=false
if printf '%s' "$K3S_CONFIG" | as_root cmp -s - "$ROOT$CONFIG_FILE" &&
  printf '%s' "$K3S_UNIT" | as_root cmp -s - "$ROOT$K3S_UNIT_FILE"; then
  files_current=true
fi

if [[ $installed == "$K3S_VERSION" && $applied == "$desired" && $files_current == true ]] && service_active; then
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

if [[ -n $download_dir ]]; then
  # Root-owned, 0755, renamed over the old binary in one step (put_file): a running K3s keeps the
  # old file until it restarts, and an interrupted copy never leaves half a binary in place.
  if put_file "$K3S_BIN" 0755 <"$download_dir/$K3S_ASSET"; then
    log "installed K3s $K3S_VERSION (found: ${installed:-none}) at /usr/local/bin/k3s"
  fi
fi
link_commands

if printf '%s' "$K3S_UNIT" | put_file "$ROOT$K3S_UNIT_FILE" 0644; then
  log "wrote $K3S_UNIT_FILE"
fi
# Always: a unit written by an earlier, interrupted run must be loaded too.
as_root systemctl daemon-reload

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
