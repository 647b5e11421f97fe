#!/usr/bin/env bash
# Admit (runs on the first server, after the node is Ready): checks from the cluster's side that the
# node joined under its name, sets its configured labels and taints and makes it schedulable.
# K3s applies `node-label`/`node-taint` only when a node first registers; setting them here too
# makes a changed label in the configuration take effect on a node that joined long ago.
set -euo pipefail
: "${NODE_NAME:?}" "${KUBECONFIG_PATH:?}" "${READY_TIMEOUT:?}"

deadline=$((SECONDS + READY_TIMEOUT))
if ! wait_until "$deadline" node_ready; then
  die "the cluster does not see node $NODE_NAME as Ready after ${READY_TIMEOUT}s"
fi
# NODE_LABELS and NODE_TAINTS: one key=value (key=value:Effect) per line; may be empty.
while IFS= read -r label; do
  if [[ -n $label ]]; then
    kube label node "$NODE_NAME" "$label" --overwrite >/dev/null
  fi
done <<<"${NODE_LABELS:-}"
while IFS= read -r taint; do
  if [[ -n $taint ]]; then
    kube taint node "$NODE_NAME" "$taint" --overwrite >/dev/null
  fi
done <<<"${NODE_TAINTS:-}"
kube uncordon "$NODE_NAME" >/dev/null
log "node $NODE_NAME is Ready, labelled, tainted as configured and schedulable"
