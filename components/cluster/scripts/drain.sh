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
set -euo pipefail
: "${NODE_NAME:?}" "${NODE_ROLE:?}" "${KUBECONFIG_PATH:?}" "${DRAIN_TIMEOUT:?}" "${DRAINED_ANNOTATION:?}"

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
