#!/usr/bin/env bash
# Uninstall (the delete of the prepare step): runs after the node was drained (its admit step's
# delete) and before its Node object is removed from the cluster (its claim step's delete).
#
# It does itself what K3s's k3s-killall.sh and k3s-uninstall.sh do (k3s-io/k3s install.sh,
# create_killall and create_uninstall): stop and disable the service, kill the containers K3s
# started (the containerd shims and everything under them: the unit's KillMode=process leaves them
# running when K3s stops), unmount what K3s and the kubelet mounted, delete the CNI network
# namespaces, the flannel/CNI interfaces and their packet filter rules, then remove the unit, the
# binary and its links and K3s's directories. The installer's own scripts are not run, on a machine it installed either:
# they bound nothing (a `systemctl stop` that hangs holds the step for ever), and this one script
# handles both kinds of machine; their files are removed with the rest.
#
# Safe to re-run: every part skips what is already gone, and a machine without K3s is already
# uninstalled. Every command is from Ubuntu's base system (systemd, procps, util-linux, iproute2,
# coreutils) and bounded.
set -euo pipefail
: "${NODE_NAME:?}" "${K3S_SERVICE:?}" "${TOKEN_FILE:?}" "${MARKER_FILE:?}" "${K3S_UNIT_FILE:?}" "${DATA_DIR:?}"

# K3s's mounts: containerd's state and the pods' sandboxes (/run/k3s), the pods' volumes and the
# CSI plugins (/var/lib/kubelet), the CNI network namespaces (/run/netns/cni-*), and anything under
# the data directory.
MOUNT_PREFIXES=("$ROOT/run/k3s/" "$ROOT/var/lib/kubelet/" "$ROOT/run/netns/cni-" "$ROOT$DATA_DIR/")
# The interfaces flannel and the CNI bridge make (k3s-killall.sh remove_interfaces); the pods' veth
# ends are the ones with `master cni0`.
INTERFACES=(cni0 flannel.1 flannel-v6.1 kube-ipvs0 flannel-wg flannel-wg-v6)
LINKED_COMMANDS=(kubectl crictl ctr)
STOP_TIMEOUT=150

# descendants PID...: the PIDs and every process under them.
descendants() {
  local table pid ppid child
  table=$(ps -e -o ppid= -o pid=)
  local -a queue=("$@")
  while ((${#queue[@]})); do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    printf '%s\n' "$pid"
    while read -r ppid child; do
      if [[ $ppid == "$pid" ]]; then
        queue+=("$child")
      fi
    done <<<"$table"
  done
}

# mounted_under: K3s's mount points, deepest first (an outer one cannot be unmounted before the inner).
mounted_under() {
  local _device path _rest prefix
  [[ -r $ROOT/proc/self/mounts ]] || return 0
  while read -r _device path _rest; do
    path=$(printf '%b' "$path") # /proc/mounts writes a space in a path as \040
    for prefix in "${MOUNT_PREFIXES[@]}"; do
      if [[ $path/ == "$prefix"* ]]; then
        printf '%s\n' "$path"
        break
      fi
    done
  done <"$ROOT/proc/self/mounts" | sort -r
}

had_k3s=false
if as_root test -e "$ROOT$K3S_UNIT_FILE" -o -e "$K3S_BIN" -o -e "$ROOT$DATA_DIR"; then
  had_k3s=true
  log "uninstalling K3s from $NODE_NAME"
fi

if as_root test -e "$ROOT$K3S_UNIT_FILE"; then
  # TERM to K3s, then systemd's own stop timeout; bounded in any case.
  if ! as_root timeout "$STOP_TIMEOUT" systemctl stop "$K3S_SERVICE"; then
    log "$K3S_SERVICE did not stop within ${STOP_TIMEOUT}s; killing what is left of it"
    as_root timeout 30 systemctl kill --signal=SIGKILL "$K3S_SERVICE" || true
  fi
  as_root systemctl disable "$K3S_SERVICE" >/dev/null 2>&1 || true
fi

# The containers: each containerd shim and every process under it, as k3s-killall.sh does.
mapfile -t shims < <(pgrep -f "$ROOT$DATA_DIR/data/[^/]+/bin/containerd-shim" || true)
if ((${#shims[@]})); then
  mapfile -t doomed < <(descendants "${shims[@]}")
  log "stopping ${#shims[@]} container shim(s) and the ${#doomed[@]} process(es) they hold"
  as_root kill -9 "${doomed[@]}" 2>/dev/null || true
fi

mapfile -t mounts < <(mounted_under)
for path in "${mounts[@]}"; do
  as_root timeout 30 umount -f "$path" 2>/dev/null || as_root timeout 30 umount -l "$path" ||
    die "could not unmount $path; nothing under it was removed"
done
# Never remove a directory that still has something mounted in it: rm would delete what is mounted.
mapfile -t left < <(mounted_under)
if ((${#left[@]})); then
  die "still mounted after unmounting: ${left[*]}; nothing under them was removed"
fi

while read -r name _; do
  if [[ $name == cni-* ]]; then
    as_root ip netns delete "$name" || true
  fi
done < <(ip netns list 2>/dev/null || true)

while read -r _ name rest; do
  name=${name%:}
  name=${name%%@*}
  if [[ " ${INTERFACES[*]} " == *" $name "* || " $rest " == *" master cni0 "* ]]; then
    as_root ip link delete "$name" || true
  fi
done < <(ip -o link show 2>/dev/null || true)

# The packet filter rules kube-proxy, flannel and the CNI plugins added, as k3s-killall.sh removes
# them: the rest of the rules (ufw's) are restored unchanged. Ubuntu's iptables package (ufw
# depends on it) provides both commands; a machine without them has no such rules to remove.
for tool in iptables ip6tables; do
  rules=$(as_root timeout 30 "$tool-save" 2>/dev/null) || continue
  if grep -q -e KUBE- -e CNI- -e '[Ff]lannel' -e FLANNEL <<<"$rules"; then
    grep -v -e KUBE- -e CNI- <<<"$rules" | grep -iv flannel | as_root timeout 30 "$tool-restore" ||
      die "$tool-restore did not take the rules without K3s's; the machine keeps them until it reboots"
  fi
done

for cmd in "${LINKED_COMMANDS[@]}"; do
  if [[ $(as_root readlink "$ROOT/usr/local/bin/$cmd" 2>/dev/null || true) == k3s ]]; then
    as_root rm -f "$ROOT/usr/local/bin/$cmd"
  fi
done
as_root rm -f "$ROOT$K3S_UNIT_FILE" "$ROOT$K3S_UNIT_FILE.env" "$K3S_BIN" \
  "$ROOT/usr/local/bin/k3s-killall.sh" "$ROOT/usr/local/bin/$K3S_SERVICE-uninstall.sh" \
  "$ROOT$TOKEN_FILE" "$ROOT${AGENT_TOKEN_FILE:-$TOKEN_FILE}" "$ROOT$MARKER_FILE"
as_root rm -rf "$ROOT/etc/rancher/k3s" "$ROOT$DATA_DIR" "$ROOT/var/lib/kubelet" "$ROOT/var/lib/cni" \
  "$ROOT/run/k3s" "$ROOT/run/flannel"
if [[ $had_k3s == true ]]; then
  as_root systemctl daemon-reload
  as_root systemctl reset-failed "$K3S_SERVICE" >/dev/null 2>&1 || true
else
  log "K3s is not installed on $NODE_NAME"
fi
log "$NODE_NAME no longer runs K3s"
