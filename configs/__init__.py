"""One ml_collections config per training stage; ``--config=NAME`` resolves to ``configs/NAME.py``."""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_STAGES = ("__init__.py", "defaults.py")


def known_configs() -> list[str]:
    """The names ``--config=NAME`` accepts."""
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f not in _NOT_STAGES)


def resolve_config_argument(argv: list[str]) -> list[str]:
    """Rewrites ``--config=NAME[:ARGS]`` to ``--config=configs/NAME.py[:ARGS]`` for known names."""
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            value = arg[len("--config="):]
            name, sep, rest = value.partition(":")
            if not name.endswith(".py") and "/" not in name:
                path = os.path.join(CONFIG_DIR, name + ".py")
                if not os.path.isfile(path):
                    raise SystemExit(f"--config={value}: no config {name!r}; known: {', '.join(known_configs())}")
                arg = "--config=" + path + sep + rest
        out.append(arg)
    return out


def program_name(argv: list[str], default: str) -> str:
    """The name a command was started as (``train.py``, ``jointist-eval``), or ``default`` under
    ``python -m`` (whose ``argv[0]`` is the module's ``cli.py``): error messages start with it."""
    if argv and argv[0] and not argv[0].endswith("cli.py"):
        return os.path.basename(argv[0])
    return default


def run_stage_cli(main, argv: list[str]) -> None:
    """Runs an absl ``main`` that needs ``--config`` (a stage config, resolved by name) and
    ``--workdir``."""
    from absl import app, flags

    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, argv=resolve_config_argument(argv))
