#!/usr/bin/env bash
# Preflight: checks that the machine is the one the configuration describes, before any change.
# Every failure names what was expected and what was found. It writes nothing.
set -euo pipefail
: "${NODE_NAME:?}" "${EXPECTED_MACHINE:?}" "${SUPPORTED_OS:?}" "${REQUIRED_PORTS:?}" "${GPU_COUNT:?}"

problems=()

# sudo first: every later step needs it, and without it nothing else can be checked properly.
if ((USER_ID != 0)) && ! sudo -n true 2>/dev/null; then
  die "user $(id -un) cannot run sudo without a password on $NODE_NAME; K3s needs root"
fi

# shellcheck disable=SC1091 # os-release is the machine's, read at run time
os=$(. "$ROOT/etc/os-release" && printf '%s %s' "${ID:-unknown}" "${VERSION_ID:-unknown}")
supported=false
for candidate in $SUPPORTED_OS; do
  if [[ $os == "${candidate/:/ }" ]]; then
    supported=true
  fi
done
if [[ $supported != true ]]; then
  problems+=("operating system is '$os'; supported: ${SUPPORTED_OS//:/ }")
fi

machine=$(uname -m)
if [[ $machine != "$EXPECTED_MACHINE" ]]; then
  problems+=("CPU architecture is $machine, but the configuration says $EXPECTED_ARCH ($EXPECTED_MACHINE)")
fi

# A port is free when nothing listens on it, or when K3s itself does (a re-run on an installed node):
# its processes, and on a node where K3s runs, the kernel's flannel sockets (VXLAN, WireGuard),
# which have no process.
k3s_running=false
if service_active; then
  k3s_running=true
fi
listeners=$(as_root ss -Hlntup 2>/dev/null || true)
for port in $REQUIRED_PORTS; do
  proto=${port%%/*}
  number=${port#*/}
  holder=$(awk -v p=":$number" -v proto="$proto" '$1 == proto && substr($5, length($5) - length(p) + 1) == p' <<<"$listeners")
  if [[ -z $holder || $holder == *k3s* ]]; then
    continue
  fi
  if [[ $k3s_running == true && $holder != *users:* ]]; then
    continue
  fi
  problems+=("$proto port $number is in use by another program: $holder")
done

if ((GPU_COUNT > 0)); then
  if ! command -v nvidia-smi >/dev/null; then
    problems+=("nvidia-smi not found; the NVIDIA driver (Lambda Stack) is missing")
  else
    names=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1) || problems+=("nvidia-smi failed: $names")
    count=0
    while IFS= read -r name; do
      [[ -z $name ]] && continue
      count=$((count + 1))
      # Drivers differ in whether they put "NVIDIA " before the name ("Quadro RTX 6000"). And
      # "NVIDIA A10" must not match an "NVIDIA A100-SXM4-40GB": the product name ends the GPU name or
      # is followed by a non-alphanumeric character.
      got=${name#NVIDIA }
      want=${GPU_PRODUCT#NVIDIA }
      if [[ $got != "$want" && ! $got =~ ^"$want"[^[:alnum:]] ]]; then
        problems+=("GPU '$name' is not a $GPU_PRODUCT")
      fi
    done <<<"$names"
    if ((count != GPU_COUNT)); then
      problems+=("nvidia-smi sees $count GPU(s), the configuration says $GPU_COUNT")
    fi
  fi
  if [[ ! -x $ROOT/usr/bin/nvidia-container-runtime ]]; then
    problems+=("/usr/bin/nvidia-container-runtime is missing: K3s would not register the nvidia runtime")
  fi
fi

# The address K3s gives the node must be one of the machine's own. NODE_IP (on a private network)
# is written as `node-ip`, so it must be on an interface. Without a private network, PUBLIC_IP is
# `node-external-ip` and K3s takes the interface address as node-ip: say which case this machine is.
addresses=" $(ip -o addr show 2>/dev/null | awk '{ sub(/\/.*/, "", $4); printf "%s ", $4 }')"
address_note=""
if [[ -n ${NODE_IP:-} && $addresses != *" $NODE_IP "* ]]; then
  problems+=("privateIp $NODE_IP is not an address of this machine (it has:${addresses% }); K3s could not use it as node-ip")
fi
if [[ -n ${PUBLIC_IP:-} ]]; then
  if [[ $addresses == *" $PUBLIC_IP "* ]]; then
    address_note=", $PUBLIC_IP on an interface"
  else
    address_note=", $PUBLIC_IP not on an interface (NAT): node-ip is the interface address, $PUBLIC_IP the node-external-ip"
  fi
fi

# The host firewall, as k3s-ansible's prereq role checks it: with ufw active, every port the
# machines use between themselves (FIREWALL_PORTS, `proto/port` or `proto/first:last`) needs a rule,
# or joins, etcd, pod traffic, MetalLB and node-exporter fail in ways that only show much later.
ufw_status=$(as_root ufw status 2>/dev/null || true)
if [[ $ufw_status == *"Status: active"* ]]; then
  missing=()
  for port in ${FIREWALL_PORTS:-}; do
    proto=${port%%/*}
    number=${port#*/}
    # A rule of ufw's table (ufw 0.36 src/backend_iptables.py get_status: "%-26s %-12s%-26s", To, Action,
    # From): the action is "ALLOW" for an incoming rule ("ALLOW IN" in `status verbose`), "ALLOW OUT"
    # and "ALLOW FWD" for outgoing and routed ones, which let no peer in; DENY, REJECT and LIMIT (which
    # refuses a peer after six connections in 30 s, ufw(8)) neither. So ALLOW, then the column's padding.
    if ! grep -Eq "^${number}(/${proto})?[[:space:]]+ALLOW( IN)?[[:space:]]{2,}" <<<"$ufw_status"; then
      missing+=("$proto $number")
    fi
  done
  if ((${#missing[@]} > 0)); then
    problems+=("ufw is active and allows none of: ${missing[*]}; for each, from the address of every other machine (its privateIp, or its host): sudo ufw allow from <address> to any port <port> proto <tcp|udp>; and pod and service traffic: sudo ufw allow from 10.42.0.0/16; sudo ufw allow from 10.43.0.0/16")
  fi
fi

if [[ ${FLANNEL_BACKEND:-} == wireguard-native ]] && ! modinfo wireguard >/dev/null 2>&1; then
  problems+=("the wireguard kernel module is missing; pod traffic between nodes without private addresses needs it")
fi

if ((${#problems[@]} > 0)); then
  printf '[%s] FAILED on %s:\n' "$STEP" "$NODE_NAME" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
log "$NODE_NAME: $os, $machine, sudo, ports free, $GPU_COUNT GPU(s) as configured$address_note"
