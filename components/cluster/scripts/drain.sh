#!/usr/bin/env bash
# Drain (the delete of the admit step, runs on the first server): the first step of taking a node
# out. Evicts its pods through the eviction API, which respects PodDisruptionBudgets, within
# DRAIN_TIMEOUT. If that does not finish, the node is uncordoned again and the step fails: the
# node stays a full member and nothing after this step (uninstall, removal) runs.
#
# A server is also an etcd member. Uninstalled first, it would stay in etcd as a dead member until
# its Node object is deleted: two of three servers removed at once would take etcd below quorum,
# and with it the API that the removal steps need. So once a server is drained, K3s removes its
# member while it still runs (annotation etcd.k3s.cattle.io/remove; K3s's etcd member controller
# records etcd.k3s.cattle.io/removed-node-name when done), and the uninstall starts only after that.
#
# Before anything else, the data guard: K3s's local-path volumes live in the node's data directory,
# which the uninstall after this step deletes. While a bound local-path volume sits on the node,
# the removal refuses, naming the volumes, unless the node's settings say `allowDataLoss: true`
# (ALLOW_DATA_LOSS). It runs even when the Node object is already gone: the data still is not.
set -euo pipefail
: "${NODE_NAME:?}" "${NODE_ROLE:?}" "${KUBECONFIG_PATH:?}" "${DRAIN_TIMEOUT:?}" "${DRAINED_ANNOTATION:?}"
: "${LOCAL_STORAGE_CLASS:?}" "${ALLOW_DATA_LOSS:?}"

# Every PersistentVolume as `name|phase|class|namespace/claim|nodes of its affinity`. Read at the top
# level, so that an API that does not answer fails the step: no answer is not "no volumes".
listing=$(kube get pv -o 'jsonpath={range .items[*]}{.metadata.name}{"|"}{.status.phase}{"|"}{.spec.storageClassName}{"|"}{.spec.claimRef.namespace}/{.spec.claimRef.name}{"|"}{.spec.nodeAffinity.required.nodeSelectorTerms[*].matchExpressions[*].values[*]}{"\n"}{end}')
held=""
while IFS='|' read -r name phase class claim nodes; do
  if [[ -n $name && $phase == Bound && $class == "$LOCAL_STORAGE_CLASS" && " $nodes " == *" $NODE_NAME "* ]]; then
    held+="${held:+$'\n'}$claim ($name)"
  fi
done <<<"$listing"
held=$(sort <<<"$held" | paste -sd ',' - | sed 's/,/, /g')

if [[ -n $held ]]; then
  if [[ $ALLOW_DATA_LOSS != true ]]; then
    die "node $NODE_NAME holds bound $LOCAL_STORAGE_CLASS volumes: $held; removing it would delete their data. Move those services to another node first (README, \"Backups and restore\"), or set allowDataLoss: true on the node, pulumi up, then remove it"
  fi
  log "node $NODE_NAME holds $LOCAL_STORAGE_CLASS volumes $held; allowDataLoss is set, so their data goes with it"
fi

etcd_member_removed() {
  [[ -n $(kube get node "$NODE_NAME" -o 'jsonpath={.metadata.annotations.etcd\.k3s\.cattle\.io/removed-node-name}' 2>/dev/null) ]]
}

if [[ -z $(kube get node "$NODE_NAME" --ignore-not-found -o name) ]]; then
  log "node $NODE_NAME is not in the cluster; nothing to drain"
  exit 0
fi
# The mark tells admit that this cordon is the program's own, to lift if the node ever comes back.
kube annotate node "$NODE_NAME" "$DRAINED_ANNOTATION=true" --overwrite >/dev/null
if ! kube drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data --timeout="${DRAIN_TIMEOUT}s"; then
  kube uncordon "$NODE_NAME" >/dev/null || true
  kube annotate node "$NODE_NAME" "$DRAINED_ANNOTATION-" >/dev/null || true
  remaining=$(kube get pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null | tr '\n' ' ')
  die "could not drain $NODE_NAME within ${DRAIN_TIMEOUT}s (a PodDisruptionBudget may forbid more evictions; pods left: ${remaining:-none}); the node was uncordoned and stays in the cluster"
fi
log "node $NODE_NAME is drained"
if [[ $NODE_ROLE == server ]]; then
  kube annotate node "$NODE_NAME" etcd.k3s.cattle.io/remove=true --overwrite >/dev/null
  if ! wait_until $((SECONDS + DRAIN_TIMEOUT)) etcd_member_removed; then
    die "K3s did not remove the etcd member of server $NODE_NAME within ${DRAIN_TIMEOUT}s (do the other servers have quorum?); it stays cordoned and is not uninstalled"
  fi
  log "server $NODE_NAME is no longer an etcd member"
fi
