"""jointist-jax: Jointist (instrument recognition, transcription, separation) in JAX/Flax."""

# Chooses the bucket client before anything (orbax, TFDS) opens a path: see storage.py.
from jointist_jax import storage as _storage  # noqa: F401

__version__ = "0.1.0"
