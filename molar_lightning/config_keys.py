"""Unknown configuration keys, refused before parsing with the keys that would have been accepted.

jsonargparse reports a misspelt key deep inside a nested error about every type it tried. This check reads
what the user gave (the ``--config`` files and ``--a.b.c value`` overrides, merged in order) and compares
every ``init_args`` key of every ``class_path`` with that class's constructor signature, and the ``trainer:``,
``checkpoint:`` and ``evaluation:`` sections with theirs, so the message is one line with the valid keys.
"""

import difflib
import importlib
from typing import Any, Optional

import yaml
from jsonargparse import ArgumentParser

NODE_KEYS = ("class_path", "init_args", "dict_kwargs")


def given_config(args: list[str]) -> dict:
    """The ``--config`` files and ``--dotted.key value`` overrides in ``args``, merged in their order; a
    ``--dotted.key+=value`` appends to the list there (``--trainer.callbacks+=X``)."""
    config: dict = {}
    position = 0
    while position < len(args):
        arg = args[position]
        key, has_value, value = arg[2:].partition("=")
        if not arg.startswith("--"):
            position += 1
            continue
        if not has_value and position + 1 < len(args) and not args[position + 1].startswith("--"):
            value, position = args[position + 1], position + 1
        position += 1
        if key == "config":
            merge(config, read_yaml_file(value))
        elif key.endswith("+"):
            append(config, key[:-1].split("."), read_yaml_value(value))
        elif "." in key or key in ("trainer", "model", "data"):
            nested: Any = read_yaml_value(value) if value else None
            for part in reversed(key.split(".")):
                nested = {part: nested}
            merge(config, nested)
    return config


def append(config: dict, path: list[str], value: Any) -> None:
    """Add ``value`` to the list at ``path`` in ``config`` (a single value there becomes the list's first)."""
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    current = node.get(path[-1])
    node[path[-1]] = (current if isinstance(current, list) else [] if current is None else [current]) + [value]


def read_yaml_file(path: str) -> dict:
    """A ``--config`` file's mapping; empty when it cannot be read, which jsonargparse then reports itself."""
    try:
        with open(path) as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def read_yaml_value(value: str) -> Any:
    """An override's value as jsonargparse would read it: YAML, else the string itself."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def merge(into: dict, update: dict) -> None:
    """Deep-merge ``update`` into ``into``; a class name given as a string becomes ``{class_path: name}``."""
    for key, value in update.items():
        current = into.get(key)
        if isinstance(current, str) and isinstance(value, dict):
            current = into[key] = {"class_path": current}
        if isinstance(current, dict) and isinstance(value, dict):
            merge(current, value)
        else:
            into[key] = value


def accepted(cls: Any) -> Optional[list[str]]:
    """Constructor arguments of ``cls`` as jsonargparse resolves them (``**kwargs`` forwarded to a parent
    included); None when it cannot tell."""
    parser = ArgumentParser(exit_on_error=False)
    try:
        parser.add_class_arguments(cls, fail_untyped=False)
    except (ValueError, TypeError):
        return None
    return list(dict.fromkeys(key.split(".")[0] for key in parser.get_defaults().keys()))


def resolve(class_path: Any) -> Any:
    """The class named by a full import path; None for short names and anything else."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # jsonargparse reports an unknown class itself


def unknown_key(node: Any, where: str, cls: Any = None) -> Optional[str]:
    """The first unknown key under ``node`` (at ``where``) as a message, or None."""
    if isinstance(node, list):
        return next(filter(None, (unknown_key(item, f"{where}[{i}]") for i, item in enumerate(node))), None)
    if not isinstance(node, dict):
        return None
    if cls is None and "class_path" in node:
        cls = resolve(node["class_path"])
        if cls is None:
            return None
        arguments = {**{k: v for k, v in node.items() if k not in NODE_KEYS}, **(node.get("init_args") or {})}
        where = f"{where}.init_args"
    else:
        arguments = node
    valid = accepted(cls) if cls is not None else None
    for key, value in arguments.items():
        if valid is not None and key not in valid:
            closest = difflib.get_close_matches(key, valid, n=1)
            return (f"'{where}.{key}' is not an argument of {cls.__module__}.{cls.__qualname__}.\n"
                    f"Valid keys here: {', '.join(valid)}" + (f"\nDid you mean '{closest[0]}'?" if closest else ""))
        problem = unknown_key(value, f"{where}.{key}")
        if problem:
            return problem
    return None


def asks_for_help(args: list[str]) -> bool:
    """Whether ``args`` only ask for help or the resolved config, which need no complete configuration."""
    return any(arg in ("-h", "--help") or ".help" in arg or arg.startswith("--print_config") for arg in args)


def config_problem(config: dict, sections: dict[str, Any]) -> Optional[str]:
    """The first unknown key in ``config`` (:func:`given_config`), or None. ``sections`` maps top-level keys with
    a fixed class (``trainer`` -> ``Trainer``) to it; the other sections are checked through their ``class_path``."""
    for section, value in config.items():
        problem = unknown_key(value, section, sections.get(section)) if isinstance(value, dict) else None
        if problem:
            return problem
    return None
