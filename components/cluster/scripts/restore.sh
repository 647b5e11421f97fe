#!/usr/bin/env bash
# sophia-etcd-restore: brings the cluster back from an etcd snapshot in the backup bucket. Not a
# Pulumi step: the install step of every server puts it at /usr/local/sbin/sophia-etcd-restore,
# and an operator runs it during an incident (README, "Backups and restore"):
#
#   sophia-etcd-restore list                     S3 snapshots the cluster knows of, oldest first
#   sophia-etcd-restore restore <name|latest>    on the first server, after K3s was stopped on the others;
#                                                the bucket's keys on standard input, two lines
#   sophia-etcd-restore rejoin <name>            then on every other server
#
# `restore` resets etcd to the snapshot with K3s's own `--cluster-reset --cluster-reset-restore-path`
# and the S3 settings as flags: during a cluster reset K3s cannot read its S3 config Secret (there is
# no API yet), so the keys travel in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, which K3s reads for
# etcd-s3-access-key/-secret-key; never in an argument. `rejoin` moves the server's old etcd data
# aside (never deletes it) so that it joins the restored cluster afresh. Both record what they did
# and do nothing when run again for the same snapshot.
set -euo pipefail
: "${NODE_NAME:?}" "${K3S_SERVICE:?}" "${KUBECONFIG_PATH:?}" "${READY_TIMEOUT:?}" "${DATA_DIR:?}"
: "${S3_ENDPOINT:?}" "${S3_BUCKET:?}" "${S3_REGION:?}" "${S3_FOLDER:?}" "${FIRST_SERVER:?}"

marker=$ROOT$DATA_DIR/sophia-restored

usage() {
  printf 'usage: sophia-etcd-restore list | restore <snapshot name|latest> | rejoin <snapshot name>\n' >&2
  exit 2
}

# The S3 snapshots the cluster knows of (K3s's ETCDSnapshotFile objects), ready to use, oldest
# first, as `name|created`. Fails when the API does not answer (explicitly: its callers test it,
# which turns `set -e` off inside).
snapshots() {
  local listing
  listing=$(kube get etcdsnapshotfiles -o 'jsonpath={range .items[?(@.spec.nodeName=="s3")]}{.spec.snapshotName}{"|"}{.status.creationTime}{"|"}{.status.readyToUse}{"\n"}{end}') || return 1
  awk -F'|' '$1 != "" && $3 == "true" { print $1 "|" $2 }' <<<"$listing" | sort -t'|' -k2,2
}

snapshot_name() {
  [[ $1 =~ ^[A-Za-z0-9._-]+$ ]] || die "'$1' is not a snapshot name (letters, digits, '.', '_', '-')"
}

start_and_wait() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  if ! as_root timeout "$READY_TIMEOUT" systemctl start "$K3S_SERVICE"; then
    die "$K3S_SERVICE on $NODE_NAME did not start within ${READY_TIMEOUT}s; its log: $(service_log)"
  fi
  wait_until "$deadline" api_ready || die "the API server on $NODE_NAME did not answer /readyz within ${READY_TIMEOUT}s"
  wait_until "$deadline" node_ready || die "node $NODE_NAME did not become Ready within ${READY_TIMEOUT}s"
}

command=${1:-}
case $command in
list)
  listing=$(snapshots) || die "the API does not answer; list the bucket itself: s3://$S3_BUCKET/$S3_FOLDER/"
  printf '%s\n' "${listing:-no snapshot in s3://$S3_BUCKET/$S3_FOLDER yet}"
  ;;
restore)
  [[ $# -eq 2 ]] || usage
  name=$2
  if [[ $name == latest ]]; then
    listing=$(snapshots) || die "the API does not answer, so 'latest' cannot be looked up; name the snapshot (the newest object in s3://$S3_BUCKET/$S3_FOLDER/)"
    name=$(tail -n 1 <<<"$listing" | cut -d'|' -f1)
    [[ -n $name ]] || die "no S3 snapshot is ready to use; name one from s3://$S3_BUCKET/$S3_FOLDER/"
    log "the latest snapshot is $name"
  fi
  snapshot_name "$name"
  if [[ $(as_root cat "$marker" 2>/dev/null || true) == "restored $name" ]] && service_active; then
    log "$NODE_NAME was already restored from $name and runs; nothing to do"
    exit 0
  fi
  # Root, so that the keys stay in this process's own environment and K3s's, readable by root only.
  ((USER_ID == 0)) || die "run it as root (sudo sophia-etcd-restore ...), the bucket's keys on standard input"
  IFS= read -r AWS_ACCESS_KEY_ID || true
  IFS= read -r AWS_SECRET_ACCESS_KEY || true
  [[ -n $AWS_ACCESS_KEY_ID && -n $AWS_SECRET_ACCESS_KEY ]] ||
    die "the bucket's access key and secret key must come on standard input, one a line"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  log "stopping $K3S_SERVICE on $NODE_NAME and restoring etcd from s3://$S3_BUCKET/$S3_FOLDER/$name"
  as_root systemctl stop "$K3S_SERVICE"
  if ! as_root timeout "$READY_TIMEOUT" "$K3S_BIN" server --cluster-reset --cluster-reset-restore-path="$name" \
    --etcd-s3 --etcd-s3-endpoint="$S3_ENDPOINT" --etcd-s3-bucket="$S3_BUCKET" --etcd-s3-region="$S3_REGION" \
    --etcd-s3-folder="$S3_FOLDER"; then
    die "K3s could not restore $name (its output is above); K3s is stopped on $NODE_NAME: start it again (systemctl start $K3S_SERVICE) to go back to where it was"
  fi
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  printf 'restored %s\n' "$name" | put_file "$marker" 0600 || true
  start_and_wait
  log "etcd of $NODE_NAME is snapshot $name; now run 'sudo sophia-etcd-restore rejoin $name' on every other server"
  ;;
rejoin)
  [[ $# -eq 2 ]] || usage
  name=$2
  snapshot_name "$name"
  # The first server's config.yaml says cluster-init: with no etcd data it would start a new, empty
  # cluster beside the restored one. It is where the restore runs instead.
  if [[ $FIRST_SERVER == true ]]; then
    die "$NODE_NAME is the first server (cluster-init); run 'sophia-etcd-restore restore $name' here, then rejoin the others"
  fi
  if [[ $(as_root cat "$marker" 2>/dev/null || true) == "rejoined $name" ]] && service_active; then
    log "$NODE_NAME already rejoined the cluster restored from $name; nothing to do"
    exit 0
  fi
  as_root systemctl stop "$K3S_SERVICE"
  db=$ROOT$DATA_DIR/server/db
  if as_root test -d "$db"; then
    aside="$db.before-$name"
    as_root test -e "$aside" || as_root mv "$db" "$aside"
    log "moved the old etcd data of $NODE_NAME to $DATA_DIR/server/db.before-$name (delete it once the cluster is healthy)"
  fi
  printf 'rejoined %s\n' "$name" | put_file "$marker" 0600 || true
  start_and_wait
  log "$NODE_NAME rejoined the cluster restored from $name"
  ;;
*)
  usage
  ;;
esac
