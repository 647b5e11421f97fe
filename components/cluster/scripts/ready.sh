#!/usr/bin/env bash
# Ready: waits, bounded by READY_TIMEOUT, until K3s runs on this node, the API answers /readyz and
# this node is Ready, so that nothing that depends on the node starts before it can take work.
# Agents ask through their own kubelet credentials (they may read their own Node object).
set -euo pipefail
: "${NODE_NAME:?}" "${K3S_SERVICE:?}" "${READY_TIMEOUT:?}" "${KUBECONFIG_PATH:?}" "${GPU_COUNT:?}"

deadline=$((SECONDS + READY_TIMEOUT))
if ! wait_until "$deadline" service_active; then
  die "$K3S_SERVICE is not running on $NODE_NAME after ${READY_TIMEOUT}s; its log: $(service_log)"
fi
if ! wait_until "$deadline" api_ready; then
  die "the API server did not answer /readyz from $NODE_NAME within ${READY_TIMEOUT}s; its log: $(service_log)"
fi
if ! wait_until "$deadline" node_ready; then
  die "node $NODE_NAME did not register as Ready within ${READY_TIMEOUT}s (a join that fails says why here): $(service_log)"
fi
# K3s adds the `nvidia` containerd runtime only if it finds nvidia-container-runtime when it starts;
# without it the device plugin sees no GPU and GPU pods never start. Say so here, not there.
if ((GPU_COUNT > 0)); then
  containerd_config=$ROOT/var/lib/rancher/k3s/agent/etc/containerd/config.toml
  if ! as_root grep -Eq "runtimes\.['\"]nvidia['\"]" "$containerd_config"; then
    die "K3s on $NODE_NAME did not register the nvidia container runtime ($containerd_config); GPUs would stay invisible to Kubernetes"
  fi
fi
log "$NODE_NAME is Ready"
