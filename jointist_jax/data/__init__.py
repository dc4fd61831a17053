"""Training-time input pipeline: targets, instrument sampler, tf.data, global jax.Arrays."""
