"""Member implementations; each module registers its kind with :func:`ensembles.registry.register_member`."""
