"""jointist_jax.inference."""
