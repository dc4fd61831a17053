"""Training-time input pipeline: record scanner, index and reader, the input spec, crop sampling,
recognizer labels, instrument sampler, examples, tf.data, global jax.Arrays."""
