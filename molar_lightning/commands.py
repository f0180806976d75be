"""The ``molar`` command: the Trainer commands of :class:`~molar_lightning.cli.MolarCLI` and the others.

LightningCLI's subcommands can only be Trainer methods, so ``prepare``, ``data fetch-images``, ``embed`` and
``quickstart`` are dispatched here, before it, and ``molar --help`` lists them all. A mistake of the user's
(:class:`~molar_lightning.user_error.UserError`) ends in one message and exit status 2, a run stopped by SIGTERM
in exit status 143 (:mod:`molar_lightning.callbacks.sigterm`).
"""

import os
import sys
from typing import Callable, Optional

import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import ArgsType
from lightning.pytorch.utilities.exceptions import SIGTERMException

from molar_lightning import quickstart
from molar_lightning.cli import build_cli
from molar_lightning.config_keys import config_problem, given_config
from molar_lightning.data import image_fetch
from molar_lightning.data.datamodule import SequentialDataModule
from molar_lightning.embed import DESCRIPTION as EMBED_DESCRIPTION
from molar_lightning.embed import embed
from molar_lightning.reproduce import command as reproduce
from molar_lightning.serving import export, recommend, server
from molar_lightning.user_error import DEBUG_VARIABLE, MissingInputError, UserError, debug_requested, reported

PREPARE_DESCRIPTION = "raw files -> canonical data set; prints the statistics table"
SIGTERM_EXIT_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


def data_section(path: str) -> dict:
    """The ``data:`` section of the experiment YAML at ``path``."""
    try:
        with open(path) as handle:
            experiment = yaml.safe_load(handle)
    except FileNotFoundError:
        raise MissingInputError(f"--config {path}: no such file; give the path of an experiment YAML "
                                f"(configs/<data>/<experiment>.yaml)") from None
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"--config {path} cannot be read as YAML: {error}") from None
    if not isinstance(experiment, dict) or "data" not in experiment:
        raise UserError(f"--config {path} has no data: section; molar prepare reads only that section")
    return experiment["data"]


def prepare(args: list[str]) -> None:
    """``molar prepare``: build the DataModule from ``--data ...`` or the ``data:`` part of an experiment config."""
    parser = ArgumentParser(prog="molar prepare", description=PREPARE_DESCRIPTION)
    parser.add_argument("--config", help="an experiment YAML; only its data: section is read")
    parser.add_subclass_arguments(SequentialDataModule, "data")
    args = list(args)
    if "--config" in args[:-1]:  # swap the experiment file for its data: section, keep later --data.x overrides
        position = args.index("--config")
        args[position:position + 2] = ["--data", yaml.safe_dump(data_section(args[position + 1]))]
    problem = config_problem(given_config(args), {})
    if problem:
        raise UserError(problem)
    datamodule = parser.instantiate(parser.parse_args(args)).data
    datamodule.print_statistics()


TRAINER_COMMANDS = {
    "fit": "train (then test the best checkpoint): molar fit --config configs/<data>/<experiment>.yaml",
    "validate": "evaluate a checkpoint on the validation users (--ckpt_path)",
    "test": "evaluate a checkpoint on the test users (--ckpt_path)",
    "predict": "write each user's top-k unseen items in raw ids to recommendations.jsonl (--ckpt_path)",
}
OTHER_COMMANDS: dict[str, tuple[str, Callable[[list[str]], object]]] = {
    "prepare": (PREPARE_DESCRIPTION, prepare),
    "data fetch-images": ("download the item images named in Amazon metadata (resumable)", image_fetch.main),
    "embed": (EMBED_DESCRIPTION, embed),
    "quickstart": ("the whole Molar pipeline on the built-in shop data, on CPU, with a report", quickstart.main),
    "export": (export.DESCRIPTION, export.main),
    "recommend": (recommend.DESCRIPTION, recommend.main),
    "serve": (server.DESCRIPTION, server.main),
    "reproduce": (reproduce.DESCRIPTION, reproduce.main),
}


def overview() -> str:
    """``molar --help``: every command, one line each."""
    rows = {**TRAINER_COMMANDS, **{name: text for name, (text, _) in OTHER_COMMANDS.items()}}
    width = max(map(len, rows))
    lines = [f"  {name:<{width}}  {text}" for name, text in rows.items()]
    return "\n".join(["usage: molar <command> [options]   (molar <command> --help for its options)", "",
                      "commands:", *lines])


def command(argv: list[str]) -> Optional[tuple[str, list[str]]]:
    """The non-Trainer command that ``argv`` starts with and its own arguments, or None."""
    for name in OTHER_COMMANDS:
        words = name.split()
        if argv[:len(words)] == words:
            return name, argv[len(words):]
    return None


def main(args: ArgsType = None) -> None:
    """Entry point of the ``molar`` console script; tests call ``main([...])``."""
    debug, argv = debug_requested([str(arg) for arg in (sys.argv[1:] if args is None else args)])
    if args is None:  # the console script: LightningCLI reads sys.argv and starts further DDP ranks with it
        sys.argv[1:] = argv
        if debug:
            os.environ[DEBUG_VARIABLE] = "1"  # ... so they learn --debug from the environment
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return
    found = command(argv)
    with reported(debug):
        try:
            if found is None:
                build_cli(None if args is None else argv, description=overview())
            else:
                OTHER_COMMANDS[found[0]][1](found[1])
        except SIGTERMException:
            print(f"stopped by SIGTERM (exit status {SIGTERM_EXIT_STATUS}); nothing after the interrupted run has "
                  f"run", file=sys.stderr)
            sys.exit(SIGTERM_EXIT_STATUS)


if __name__ == "__main__":
    main()
