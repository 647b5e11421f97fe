"""The K3s cluster on the configured machines, built over SSH."""

from components.cluster.cluster import K3sCluster, K3sClusterArgs, K3sNode, K3sNodeArgs

__all__ = ["K3sCluster", "K3sClusterArgs", "K3sNode", "K3sNodeArgs"]
