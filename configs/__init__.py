"""One ml_collections config per training stage; ``--config=NAME`` resolves to ``configs/NAME.py``.

The command-line front of the programs that take a stage config (``jointist-train``,
``jointist-eval``) is :mod:`jointist_jax.cli_support`.
"""

from __future__ import annotations

import importlib
import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_STAGES = ("__init__.py", "defaults.py")


def known_configs() -> list[str]:
    """The names ``--config=NAME`` accepts."""
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f not in _NOT_STAGES)


def config_arguments(name: str) -> list[str]:
    """The ``:ARGS`` forms stage ``name`` takes, e.g. ``["runlocal", "variant=narrow|wide"]``."""
    from configs import defaults

    args = importlib.import_module(f"configs.{name}").ARGS
    return [key if isinstance(value, bool) else f"{key}={'|'.join(defaults.ARG_CHOICES.get(key, (str(value),)))}"
            for key, value in sorted(args.items())]
