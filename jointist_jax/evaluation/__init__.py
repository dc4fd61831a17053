"""jointist_jax.evaluation."""
