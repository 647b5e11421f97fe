#!/usr/bin/env bash
# Token (runs on the first server once it is Ready): prints one of the join tokens K3s wrote, in its
# secure format `K10<sha256 of the cluster CA>::<user>:<password>`. A node that joins with it checks
# the CA the server presents against that hash before it sends its credentials; a short token would
# trust whatever CA answered (K3s docs, cli/token). The output is a secret: Pulumi keeps it encrypted,
# the step does not log it, and it reaches the joining machines on standard input only.
set -euo pipefail
: "${NODE_NAME:?}" "${TOKEN_PATH:?}"

if ! as_root test -s "$ROOT$TOKEN_PATH"; then
  die "$TOKEN_PATH does not exist on $NODE_NAME; K3s has not written it"
fi
token=$(as_root cat "$ROOT$TOKEN_PATH")
if [[ $token != K10*::*:* ]]; then
  die "$TOKEN_PATH on $NODE_NAME is not a secure K10 token; refusing to hand out a token that pins no CA"
fi
printf '%s\n' "$token"
