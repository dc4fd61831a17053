"""The command-line front shared by the programs: one-line ``--help`` formatting, the name a
command was started as, and, for the programs that take a stage config (``jointist-train``,
``jointist-eval``), ``--config=NAME[:ARGS]`` resolution (configs/), ``--help`` listing their own
flags, and one-line errors (exit status 2) for a config that names an unknown field, a bad
``:ARGS`` value or a value of the wrong type.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import os
import sys

from configs import CONFIG_DIR, config_arguments, known_configs

USAGE_ERROR = 2  # the exit status of a command-line mistake
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort")


class ConfigError(ValueError):
    """A mistake in ``--config`` or one of its ``--config.FIELD`` overrides."""


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


class OneLineHelpFormatter(argparse.HelpFormatter):
    """argparse ``--help`` with one line per flag: its name, its help and its default (when it has
    one), never wrapped."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=28, width=100_000)

    def _format_action_invocation(self, action):
        return ", ".join(action.option_strings) or action.dest

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.choices is not None and action.option_strings:
            help_text += f" (one of: {', '.join(map(str, action.choices))})"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings \
                and "default" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


def load_config(value: str):
    """The config ``--config=VALUE`` names (``NAME[:ARGS]`` or ``PATH[:ARGS]``), or a
    :class:`ConfigError` naming what is wrong."""
    name, _, arg = value.partition(":")
    if not name.endswith(".py") and "/" not in name:
        if name not in known_configs():
            raise ConfigError(f"--config={value}: no config {name!r}; known: {', '.join(known_configs())}")
        module = importlib.import_module(f"configs.{name}")
    else:
        if not os.path.isfile(name):
            raise ConfigError(f"--config={value}: no such file {name!r}")
        spec = importlib.util.spec_from_file_location("_user_config", name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    try:
        return module.get_config(arg or None)
    except ValueError as error:
        raise ConfigError(f"--config={value}: {error}") from error


def _field_names(node, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        out.append(prefix + key)
        if hasattr(value, "items"):
            out.extend(_field_names(value, prefix + key + "."))
    return out


def check_overrides(config, argv: list[str]) -> None:
    """Raises :class:`ConfigError` for a ``--config.FIELD=...`` that names no field of ``config``,
    naming the closest fields that exist."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        field = arg[len("--config."):].partition("=")[0]
        node, walked = config, []
        for key in field.split("."):
            if not hasattr(node, "items") or key not in node:
                where = ".".join(walked)
                siblings = list(node.keys()) if hasattr(node, "items") else []
                close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)
                close = close or difflib.get_close_matches(field, _field_names(config), n=3, cutoff=0.6)
                hint = f"; closest: {', '.join(close)}" if close else ""
                parent = f" in config.{where}" if where else ""
                raise ConfigError(f"--config.{field}: no field {key!r}{parent}{hint}")
            node = node[key]
            walked.append(key)


def _type_name(value) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a float", str: "a string",
            tuple: "a tuple", list: "a list"}.get(type(value), type(value).__name__)


def explain_flag_error(error: Exception, config, argv: list[str]) -> str:
    """One line for an absl flag-parsing ``error``; a bad ``--config.FIELD`` value names the
    field's type."""
    message = str(error).strip().splitlines()[0]
    if "must have a value other than None" in message:
        return f"{message.split('=')[0].removeprefix('flag ')} is required"
    for arg in argv:
        if arg.startswith("--config.") and f"flag {arg.partition('=')[0]}=" in message and config is not None:
            field, _, value = arg[len("--config."):].partition("=")
            node = config
            for key in field.split("."):
                node = node[key]
            return f"{arg}: expected {_type_name(node)}, got {value!r}"
    return message


def help_text(prog: str, summary: str, own_flags, *, config_required: bool = True) -> str:
    """``--help``: the program's own flags, one line each, and the stage configs with their ``:ARGS``."""
    stages = "; ".join(f"{name}[:{','.join(config_arguments(name))}]" for name in known_configs())
    config = "--config=NAME[:ARGS] " if config_required else "[--config=NAME[:ARGS]] "
    lines = [f"usage: {prog} {config}--workdir=DIR [--config.FIELD=VALUE ...] [flags]", "",
             summary, "",
             f"  --config=NAME[:ARGS]  stage config ({stages}); or PATH[:ARGS]",
             "  --config.FIELD=VALUE  override a config field, e.g. --config.optimizer.lr=3e-4"]
    for flag in sorted(own_flags, key=lambda f: (f.name != "workdir", f.name)):
        if flag.name == "config":
            continue
        default = "" if flag.default is None or flag.default is False or flag.default == "" \
            else f" (default {flag.default})"
        lines.append(f"  --{flag.name:<19} {' '.join(flag.help.split())}{default}")
    lines += ["", "absl, jax and orbax flags: --helpfull"]
    return "\n".join(lines)


def parse_stage_flags(argv: list[str], prog: str) -> list[str]:
    """Parses ``argv`` into absl's flags (``--config`` resolved by name and checked first); a mistake
    raises :class:`ConfigError` with a one-line message. Returns the remaining arguments."""
    from absl import flags

    config, values = None, [a.partition("=")[2] for a in argv if a.startswith("--config=")]
    if values:
        config = load_config(values[-1])
        check_overrides(config, argv)
    try:
        argv = resolve_config_argument(argv)
    except SystemExit as error:
        raise ConfigError(str(error)) from None
    try:
        remaining = flags.FLAGS(argv)
        flags.FLAGS.validate_all_flags()
    except flags.Error as error:
        raise ConfigError(explain_flag_error(error, config, argv)) from None
    return remaining


def run_stage_cli(main, argv: list[str], *, prog: str | None = None,
                  required: tuple[str, ...] = ("config", "workdir")) -> None:
    """Runs an absl ``main`` that takes ``--config`` (a stage config, resolved by name) and
    ``--workdir``; ``required`` names the flags it cannot do without. ``--help`` prints the flags of
    ``main``'s module; a command-line mistake is one line on stderr and exit status 2."""
    from absl import app, flags

    prog = prog or program_name(argv, "jointist")
    module = sys.modules[main.__module__]
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        summary = (module.__doc__ or "").strip().split("\n\n")[0].replace("``", "")
        print(help_text(prog, summary, flags.FLAGS.get_key_flags_for_module(module),
                        config_required="config" in required))
        raise SystemExit(0)
    flags.mark_flags_as_required(list(required))
    try:
        remaining = parse_stage_flags(argv, prog)
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
    app.run(main, argv=remaining, flags_parser=lambda args: args)
