"""The one error type of the synthetic dataset renderer."""


class SynthError(Exception):
    """A problem the user can fix (bad argument, missing tool, unreadable input); says which."""
