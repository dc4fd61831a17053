"""Flax NNX modules: recognizer, transcriber, separator and their composition."""

from jointist_jax.models.gru import BiGRU
from jointist_jax.models.jointist import Jointist, select_instruments, straight_through_binarise
from jointist_jax.models.recognizer import Recognizer
from jointist_jax.models.separator import Separator
from jointist_jax.models.transcriber import Transcriber

__all__ = ["BiGRU", "Jointist", "Recognizer", "Separator", "Transcriber", "select_instruments",
           "straight_through_binarise"]
