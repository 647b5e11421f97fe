"""Stack configuration, parsed and validated once into frozen, typed settings.

`stack.load_settings` is the only reader of configuration in the program; each section has its own
module (cluster, network, images, gitops, apps, llm_gateway, platform, secrets). This package file
imports nothing, so that a module outside it (the apps catalogue, say) can use a section's types
without loading every section and their cross-checks.
"""
