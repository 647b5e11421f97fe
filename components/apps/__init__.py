"""The Sophia AI workloads: the catalogue of services and the components that emit them.

Deliberately empty of imports: the settings reader imports `components.apps.catalogue` to check the
`apps` section against the catalogue, and must not pull the Pulumi components in with it.
"""
