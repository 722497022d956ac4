"""One module per experiment; each registers its builders with ``register_recipe`` (imported by the registry)."""
