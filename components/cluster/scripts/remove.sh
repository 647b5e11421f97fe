#!/usr/bin/env bash
# Remove (the delete of the claim step, runs on the first server): the last step of taking a node
# out, after it was drained and K3s was uninstalled from it. Deletes its Node object (a server's
# etcd member already left in the drain step). Safe to re-run.
set -euo pipefail
: "${NODE_NAME:?}" "${KUBECONFIG_PATH:?}" "${DRAIN_TIMEOUT:?}"

kube delete node "$NODE_NAME" --ignore-not-found --wait=true --timeout="${DRAIN_TIMEOUT}s"
log "node $NODE_NAME is no longer part of the cluster"
