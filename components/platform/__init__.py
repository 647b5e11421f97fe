"""The platform add-ons: MetalLB, NVIDIA device plugin and DCGM exporter, cert-manager, Argo CD, monitoring.

Modules here import only what they use; `components.platform.platform.Platform` composes them.
`components.platform.charts` (versions) and the `NAMESPACE` constants carry no Pulumi resources, so
settings may read them.
"""
