"""jointist_jax.train."""
