"""sophia-infra components: settings, cluster, platform and the Sophia AI workloads."""
