"""Flax NNX modules: recognizer, transcriber, separator and their composition."""
