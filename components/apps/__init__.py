"""The Sophia AI workloads: the components that emit the services of `components.settings.catalogue`."""
