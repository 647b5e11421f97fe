"""How a service's pods are replaced on an update: the one place the rollout numbers live.

Deployments roll surge-first (invariant 6: never fewer ready pods than asked for), so for a moment
a Deployment runs `MAX_SURGE` pods more than its replicas, and each of them asks for its GPUs. A
StatefulSet replaces its pods one by one, the old one gone before the new one starts: no surge.
`components.settings.apps` counts GPUs with `pods_during_rollout`, the Workload sets the strategy
from the same constants, so the check and the cluster's behaviour cannot drift apart.
"""

from __future__ import annotations

from typing import Final

MAX_SURGE: Final = 1
"""Extra pods a Deployment may start above its replica count during a rollout."""
MAX_UNAVAILABLE: Final = 0
"""Ready pods a Deployment may lose during a rollout (invariant 6)."""


def surge(stateful: bool) -> int:
    """Pods above the replica count while a rollout runs."""
    return 0 if stateful else MAX_SURGE


def pods_during_rollout(replicas: int, stateful: bool) -> int:
    """The most pods of one service that exist at once while it rolls out."""
    return replicas + surge(stateful)
