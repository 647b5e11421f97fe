"""sophia-infra: settings → K3s cluster → Kubernetes provider → platform → Sophia workloads."""

import pulumi

from components.settings import load_settings, stack_config

settings = load_settings(pulumi.get_stack(), *stack_config())

pulumi.export("apiEndpoint", settings.cluster.api_endpoint)
pulumi.export("nodes", [n.name for n in settings.cluster.nodes])
