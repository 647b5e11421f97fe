#!/usr/bin/env bash
# Kubeconfig: prints the first server's admin kubeconfig with its server address rewritten from the
# loopback address to the API endpoint. The output is a secret: Pulumi keeps it encrypted and the
# step does not log it.
set -euo pipefail
: "${NODE_NAME:?}" "${KUBECONFIG_PATH:?}" "${API_SERVER_URL:?}"

if ! as_root test -s "$ROOT$KUBECONFIG_PATH"; then
  die "$KUBECONFIG_PATH does not exist on $NODE_NAME; K3s has not written it"
fi
config=$(as_root cat "$ROOT$KUBECONFIG_PATH")
if [[ $config != *"server: https://127.0.0.1:6443"* ]]; then
  die "$KUBECONFIG_PATH on $NODE_NAME does not point at https://127.0.0.1:6443; refusing to guess"
fi
printf '%s\n' "${config//server: https:\/\/127.0.0.1:6443/server: $API_SERVER_URL}"
