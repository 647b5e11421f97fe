"""The CrossGuard policy pack: DESIGN.md's invariants, enforced on `pulumi preview` and `pulumi up`."""
