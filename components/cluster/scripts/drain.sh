#!/usr/bin/env bash
# Drain (the delete of the admit step, runs on the first server): the first step of taking a node
# out. Evicts its pods through the eviction API, which respects PodDisruptionBudgets, within
# DRAIN_TIMEOUT. If that does not finish, the node is uncordoned again and the step fails: the
# node stays a full member and nothing after this step (uninstall, removal) runs.
set -euo pipefail
: "${NODE_NAME:?}" "${KUBECONFIG_PATH:?}" "${DRAIN_TIMEOUT:?}"

if [[ -z $(kube get node "$NODE_NAME" --ignore-not-found -o name) ]]; then
  log "node $NODE_NAME is not in the cluster; nothing to drain"
  exit 0
fi
if ! kube drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data --timeout="${DRAIN_TIMEOUT}s"; then
  kube uncordon "$NODE_NAME" >/dev/null || true
  remaining=$(kube get pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null | tr '\n' ' ')
  die "could not drain $NODE_NAME within ${DRAIN_TIMEOUT}s (a PodDisruptionBudget may forbid more evictions; pods left: ${remaining:-none}); the node was uncordoned and stays in the cluster"
fi
log "node $NODE_NAME is drained"
