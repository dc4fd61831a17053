"""Signal front ends in JAX: log-mel, STFT magnitude and inverse STFT."""
