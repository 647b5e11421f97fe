"""The namespaces the platform deploys into, and Kubernetes' own: none of them is ever Argo CD's."""

from __future__ import annotations

from typing import Final

METALLB: Final = "metallb-system"
CERT_MANAGER: Final = "cert-manager"
ARGOCD: Final = "argocd"
MONITORING: Final = "monitoring"
NVIDIA: Final = "nvidia"
CNPG: Final = "cnpg-system"

KUBERNETES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
"""Kubernetes' and K3s's own (Traefik, CoreDNS, local-path-provisioner live in kube-system)."""

PLATFORM: Final = (METALLB, CERT_MANAGER, ARGOCD, MONITORING, NVIDIA, CNPG)
