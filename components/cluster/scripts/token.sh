#!/usr/bin/env bash
# Token (runs on the first server once it is Ready): prints one of the join tokens K3s wrote, in its
# secure format `K10<sha256 of the cluster CA>::<user>:<password>`. A node that joins with it checks
# the CA the server presents against that hash before it sends its credentials; a short token would
# trust whatever CA answered (K3s docs, cli/token). The output is a secret: Pulumi keeps it encrypted,
# the step does not log it, and it reaches the joining machines on standard input only.
#
# K3s writes the file while it starts, before its API server is Ready, so it is normally there. A K3s
# that is (re)starting under this step writes it a moment later: the step waits for it, bounded by
# TOKEN_FILE_TIMEOUT, and fails naming the file and the machine when it never comes.
set -euo pipefail
: "${NODE_NAME:?}" "${TOKEN_PATH:?}" "${TOKEN_FILE_TIMEOUT:?}"

token_written() {
  as_root test -s "$ROOT$TOKEN_PATH"
}
if ! wait_until $((SECONDS + TOKEN_FILE_TIMEOUT)) token_written; then
  die "K3s did not write $TOKEN_PATH on $NODE_NAME within ${TOKEN_FILE_TIMEOUT}s (see docs/operations.md, \"A join token file is missing\")"
fi
token=$(as_root cat "$ROOT$TOKEN_PATH")
if [[ $token != K10*::*:* ]]; then
  die "$TOKEN_PATH on $NODE_NAME is not a secure K10 token; refusing to hand out a token that pins no CA"
fi
printf '%s\n' "$token"
