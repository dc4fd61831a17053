"""jointist-jax: Jointist (instrument recognition, transcription, separation) in JAX/Flax.

Importing the package first does two things before jax or orbax load: it chooses the bucket
client (see storage.py) and adds the CPU XLA flags (see xla_flags.py; a no-op once jax is
imported, on a machine with an accelerator, or with ``JOINTIST_CPU_FLAGS=0``). Entry points
therefore import a ``jointist_jax`` module before ``jax``.
"""

from jointist_jax import storage as _storage  # noqa: F401
from jointist_jax import xla_flags as _xla_flags

_xla_flags.apply_cpu_flags()

__version__ = "0.1.0"
