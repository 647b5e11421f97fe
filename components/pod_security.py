"""Pod Security Standards as namespace labels: what a namespace enforces, and what it reports."""

from __future__ import annotations

from enum import StrEnum


class PodSecurity(StrEnum):
    """Pod Security Standard levels (the `pod-security.kubernetes.io/*` namespace labels)."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


def pod_security_labels(enforce: PodSecurity) -> dict[str, str]:
    """Enforce `enforce`; warn and audit against `restricted` so any drift from it is visible."""
    return {
        "pod-security.kubernetes.io/enforce": enforce.value,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": PodSecurity.RESTRICTED.value,
        "pod-security.kubernetes.io/audit": PodSecurity.RESTRICTED.value,
    }
