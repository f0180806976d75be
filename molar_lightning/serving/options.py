"""The command-line options of ``molar export``, ``recommend`` and ``serve``: ``--name value`` pairs and help.

Plain flags rather than a jsonargparse parser, since ``molar export`` hands every other argument on to the
experiment's LightningCLI (``--data...``, ``--trainer...``), as ``molar embed`` does.
"""

from typing import Sequence

from molar_lightning.user_error import UserError


def split_options(args: Sequence[str], options: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The ``--name value`` / ``--name=value`` pairs of ``options`` (keyed without ``--``), and the other args."""
    found, rest, position = {}, [], 0
    args = list(args)
    while position < len(args):
        name, has_value, value = args[position].partition("=")
        if name in options:
            if not has_value:
                if position + 1 >= len(args):
                    raise UserError(f"{name} needs a value")
                value, position = args[position + 1], position + 1
            found[name[2:]] = value
        else:
            rest.append(args[position])
        position += 1
    return found, rest


def parse_options(args: Sequence[str], options: dict[str, str]) -> dict[str, str]:
    """:func:`split_options` of a command that takes nothing else: another argument is refused with the list."""
    found, rest = split_options(args, options)
    if rest:
        raise UserError(f"unknown option {rest[0]!r}; the options are {', '.join(options)}")
    return found


def flag(value: str, name: str) -> bool:
    """``true`` or ``false``."""
    if value.lower() not in ("true", "false"):
        raise UserError(f"--{name} takes true or false, got {value!r}")
    return value.lower() == "true"


def usage(synopsis: str, description: str, options: dict[str, str]) -> str:
    width = max(map(len, options))
    return "\n".join([f"usage: {synopsis}", "", description, "",
                      *(f"  {name:<{width}}  {text}" for name, text in options.items())])
