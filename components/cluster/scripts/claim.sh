#!/usr/bin/env bash
# Claim (runs on the first server, before the node joins): the node name must be free in the
# cluster, or already belong to this machine. K3s refuses a second machine under a taken name
# ("node password rejected") only in its own log, a join that fails silently; this says it here.
set -euo pipefail
: "${NODE_NAME:?}" "${NODE_IP:?}" "${KUBECONFIG_PATH:?}"

# Every address: without a private network NODE_IP is the node's ExternalIP (node-external-ip).
addresses=$(kube get node "$NODE_NAME" --ignore-not-found -o 'jsonpath={.status.addresses[*].address}')
if [[ -n $addresses && " $addresses " != *" $NODE_IP "* ]]; then
  die "the cluster already has a node named $NODE_NAME at $addresses, not at $NODE_IP; remove it first or choose another name"
fi
log "node name $NODE_NAME is free for $NODE_IP"
