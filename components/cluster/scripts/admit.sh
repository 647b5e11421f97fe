#!/usr/bin/env bash
# Admit (runs on the first server, after the node is Ready): checks from the cluster's side that the
# node joined under its name, sets its configured labels and taints and makes it schedulable.
# The labels are this step's alone (config.yaml has none, so a label change restarts nothing); the
# taints are also in config.yaml, which K3s applies only when the node first registers, so setting
# them here makes a changed taint take effect on a node that joined long ago.
#
# What an operator did by hand stays: a cordon is lifted only when this program's own drain set it
# (it marks the node with DRAINED_ANNOTATION), and only taints this step applied before (recorded
# in TAINTS_ANNOTATION) are removed when they leave the settings. Labels are only ever added or
# changed: a label dropped from the settings stays on the node (README, "Machines").
set -euo pipefail
: "${NODE_NAME:?}" "${KUBECONFIG_PATH:?}" "${READY_TIMEOUT:?}" "${TAINTS_ANNOTATION:?}" "${DRAINED_ANNOTATION:?}"

# jsonpath needs the dots inside an annotation key escaped.
annotation() {
  kube get node "$NODE_NAME" -o "jsonpath={.metadata.annotations.${1//./\\.}}"
}

# `key:Effect`, which is how kubectl names a taint to remove, of `key=value:Effect` or `key:Effect`.
taint_id() {
  local taint=$1
  printf '%s:%s' "${taint%%[=:]*}" "${taint##*:}"
}

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
wanted=()
while IFS= read -r taint; do
  if [[ -n $taint ]]; then
    kube taint node "$NODE_NAME" "$taint" --overwrite >/dev/null
    wanted+=("$(taint_id "$taint")")
  fi
done <<<"${NODE_TAINTS:-}"

present=$(kube get node "$NODE_NAME" -o 'jsonpath={range .spec.taints[*]}{.key}:{.effect}{"\n"}{end}')
IFS=',' read -r -a applied <<<"$(annotation "$TAINTS_ANNOTATION")"
for old in "${applied[@]}"; do
  if [[ -n $old && " ${wanted[*]} " != *" $old "* ]] && grep -qxF -- "$old" <<<"$present"; then
    kube taint node "$NODE_NAME" "$old-" >/dev/null
    log "removed taint $old, which is no longer in the settings"
  fi
done
# The record of what this step applied, for the next run to compare against.
recorded=$(IFS=','; printf '%s' "${wanted[*]}")
kube annotate node "$NODE_NAME" "$TAINTS_ANNOTATION=$recorded" --overwrite >/dev/null

if [[ $(kube get node "$NODE_NAME" -o 'jsonpath={.spec.unschedulable}') == true ]]; then
  if [[ -n $(annotation "$DRAINED_ANNOTATION") ]]; then
    kube uncordon "$NODE_NAME" >/dev/null
    kube annotate node "$NODE_NAME" "$DRAINED_ANNOTATION-" >/dev/null
    log "node $NODE_NAME was cordoned by its drain; uncordoned"
  else
    log "node $NODE_NAME stays cordoned: someone cordoned it by hand (kubectl uncordon $NODE_NAME to undo)"
  fi
fi
log "node $NODE_NAME is Ready, labelled and tainted as configured"
