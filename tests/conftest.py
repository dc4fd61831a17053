"""Test set-up: 8 simulated CPU devices and the project's CPU XLA flags, before jax loads."""

from jointist_jax import xla_flags

xla_flags.apply_cpu_flags(host_device_count=8)
