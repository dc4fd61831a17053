"""jointist-jax: Jointist (instrument recognition, transcription, separation) in JAX/Flax.

Importing the package chooses the bucket client before orbax loads (see storage.py). The CPU XLA
flags (xla_flags.py) are a program's own choice: each entry point's ``main()`` applies them
before it imports jax.
"""

from jointist_jax import storage as _storage  # noqa: F401

__version__ = "0.1.0"
