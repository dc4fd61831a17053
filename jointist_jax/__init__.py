"""jointist-jax: Jointist (instrument recognition, transcription, separation) in JAX/Flax."""

__version__ = "0.1.0"
