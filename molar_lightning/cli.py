"""The ``molar`` command.

``molar fit|validate|test|predict --config X.yaml`` is a LightningCLI (subcommands of a LightningCLI can only
be Trainer methods); ``molar prepare`` turns raw files into the canonical data set and prints its
statistics, ``molar data fetch-images`` downloads Amazon item images into the local image folder, and
``molar embed`` writes the item embeddings of an experiment's MIRM encoder into the embedding cache, and
``molar quickstart`` runs the whole pipeline on built-in data (:mod:`molar_lightning.quickstart`).
``fit`` ends by testing the best checkpoint, so every training run leaves its test table.
"""

import difflib
import importlib
import inspect
import re
import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn, Optional

import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.callbacks.item_embedding_cache import ItemEmbeddingCache, extract_item_embeddings
from molar_lightning.callbacks.recommendations import RecommendationWriter
from molar_lightning.callbacks.rng_state import RNGStateCallback
from molar_lightning.data import image_fetch
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import SequentialDataModule

COMMANDS = {"prepare": "raw files -> canonical data set; prints the statistics table",
            "data fetch-images": "download the item images named in Amazon metadata (resumable)",
            "embed": "item embeddings of an experiment's MIRM encoder into the on-disk cache (resumable)",
            "quickstart": "the whole Molar pipeline on the built-in shop data, on CPU, with a report"}


def accepted_arguments(cls: type) -> list[str]:
    """Constructor arguments of ``cls``, following ``**kwargs`` that are forwarded to a parent class.

    A parent's required arguments are left out: the subclass passes those itself.
    """
    names: list[str] = []
    for depth, klass in enumerate(k for k in cls.__mro__ if k is not object and "__init__" in vars(k)):
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names += [p.name for p in parameters
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names
                  and (depth == 0 or p.default is not p.empty)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


# DataModule attributes handed to the encoder's constructor after the DataModule is built.
LINKED_TO_ENCODER = ("num_items", "num_users", "max_seq_len")
SECTION_CLASSES = {"trainer": Trainer, "evaluation": RankingEvaluationCallback, "checkpoint": ModelCheckpoint}


def valid_keys_hint(message: str) -> str:
    """For an unknown-key error, the keys that would have been accepted (and the closest one)."""
    in_class = re.search(r"Option '([\w.]+)' is not accepted", message)
    owners = re.findall(r"class_path '([\w.]+)'", message)
    top_level = re.search(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", message)
    if in_class and owners:
        module, _, name = owners[-1].rpartition(".")
        key, owner = in_class.group(1), getattr(importlib.import_module(module), name)
    elif top_level:
        section, _, key = (top_level.group(1) or top_level.group(2)).rpartition(".")
        owner = SECTION_CLASSES.get(section)
    else:
        return ""
    if owner is None:
        return ""
    valid = accepted_arguments(owner)
    closest = difflib.get_close_matches(key, valid, n=1)
    return f"\nValid keys here: {', '.join(valid)}" + (f"\nDid you mean '{closest[0]}'?" if closest else "")


class MolarArgumentParser(LightningArgumentParser):
    """Lightning's parser, whose unknown-key errors also list the keys that are accepted."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        super().error(message + valid_keys_hint(message), ex)


@contextmanager
def encoder_links_dropped(parser: LightningArgumentParser, model_init_args) -> Iterator[None]:
    """Leave out the data -> encoder links while instantiating a task configured with ``encoder: null``.

    jsonargparse (4.53) means to skip a link whose target is absent, but its check looks inside the null
    encoder and raises, so the rows without an ID model (HLLM-, SASRec+BERT-style) could not be built.
    """
    links = getattr(getattr(parser, "_links_group", None), "_group_actions", None)
    if links is None or model_init_args is None or getattr(model_init_args, "encoder", True) is not None:
        yield
        return
    kept = list(links)
    links[:] = [link for link in kept if not link.target[0].startswith("model.init_args.encoder.")]
    try:
        yield
    finally:
        links[:] = kept


class MolarCLI(LightningCLI):
    """LightningCLI with the data/model links and the evaluation every run needs."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RankingEvaluationCallback, "evaluation")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/ndcg@10", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}"})
        for name in LINKED_TO_ENCODER:
            parser.link_arguments(f"data.{name}", f"model.init_args.encoder.init_args.{name}", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        """Instantiate, then record the injected parts' configs in the task's hyper-parameters.

        Tasks keep object arguments (modules, optimizer factories) out of ``save_hyperparameters``: a pickled
        object makes a checkpoint unloadable with ``weights_only=True``. Their configs, with the linked values
        each encoder accepts, are what ``Task.load_from_checkpoint(path)`` needs to rebuild the same model
        from a checkpoint alone.
        """
        model_config = self._get(self.config, "model")
        init_args = model_config.get("init_args") if model_config is not None else None
        with encoder_links_dropped(self._parser(self.subcommand), init_args):
            super().instantiate_classes()
        if init_args is None or not hasattr(self.model, "_hparams"):
            return
        for part, value in vars(init_args).items():
            if not hasattr(value, "class_path"):
                continue
            config = value.as_dict()
            if part == "encoder":
                module, _, name = config["class_path"].rpartition(".")
                accepted = accepted_arguments(getattr(importlib.import_module(module), name))
                config.setdefault("init_args", {}).update(
                    {key: getattr(self.datamodule, key) for key in LINKED_TO_ENCODER if key in accepted})
            self.model._hparams[part] = config
            self.model._hparams_initial[part] = config

    def fit(self, model: LightningModule, **kwargs) -> None:
        """Train, then test the best checkpoint (the last weights when checkpointing is off)."""
        self.trainer.fit(model, **kwargs)
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(model, datamodule=kwargs.get("datamodule"), ckpt_path=best or None)


def prepare(args: list[str]) -> None:
    """``molar prepare``: build the DataModule from ``--data ...`` or the ``data:`` part of an experiment config."""
    parser = ArgumentParser(prog="molar prepare", description=COMMANDS["prepare"])
    parser.add_argument("--config", help="an experiment YAML; only its data: section is read")
    parser.add_subclass_arguments(SequentialDataModule, "data")
    args = list(args)
    if "--config" in args:  # swap the experiment file for its data: section, keep later --data.x overrides
        position = args.index("--config")
        with open(args[position + 1]) as handle:
            experiment = yaml.safe_load(handle) or {}
        if "data" not in experiment:
            parser.error(f"{args[position + 1]} has no data: section")
        args[position:position + 2] = ["--data", yaml.safe_dump(experiment["data"])]
    datamodule = parser.instantiate(parser.parse_args(args)).data
    datamodule.print_statistics()


def embed(args: list[str]) -> Optional[ItemEmbeddingCache]:
    """``molar embed``: ``--embed.*`` options are embed's own; the rest build the experiment (``--config X.yaml``,
    ``--data...``, ``--model...``, ``--trainer...``) whose ``model.encoder`` embeds its data's items. Returns
    the finished cache (None for ``--help``)."""
    parser = ArgumentParser(prog="molar embed", description=COMMANDS["embed"] + ". " + (embed.__doc__ or ""))
    parser.add_function_arguments(extract_item_embeddings, "embed", skip={"trainer", "module", "catalog"})
    own = {i for i, arg in enumerate(args) if arg.startswith("--embed.")
           or (i and args[i - 1].startswith("--embed.") and "=" not in args[i - 1])}
    if "-h" in args or "--help" in args:
        parser.print_help()
        return None
    options = parser.parse_args([args[i] for i in sorted(own)]).embed
    experiment = [arg for i, arg in enumerate(args) if i not in own]
    # One process embeds each batch once: the item loader shards the batches, so no distributed sampler.
    cli = build_cli(["--trainer.use_distributed_sampler=false", "--trainer.logger=false", *experiment], run=False)
    catalog = getattr(cli.datamodule, "catalog", None) or ItemCatalog(cli.datamodule.dataset)
    cache = extract_item_embeddings(cli.trainer, cli.model, catalog, **vars(options))
    if cli.trainer.is_global_zero:
        print(f"{cache.num_items:,} item embeddings of size {cache.meta['dim']} in {cache.folder}")
    return cache


def build_cli(args: ArgsType = None, run: bool = True) -> MolarCLI:
    """The LightningCLI behind ``molar fit|validate|test|predict``; ``run=False`` only builds the objects."""
    return MolarCLI(
        LightningModule,
        SequentialDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_class=MolarArgumentParser,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RNGStateCallback(), RecommendationWriter()]},
        parser_kwargs={"description": "molar: " + "; ".join(f"{k}: {v}" for k, v in COMMANDS.items())},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Entry point of the ``molar`` console script; tests call ``main([...])``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "prepare":
        prepare(argv[1:])
    elif argv[:2] == ["data", "fetch-images"]:
        image_fetch.main(argv[2:])
    elif argv and argv[0] == "embed":
        embed(argv[1:])
    elif argv and argv[0] == "quickstart":
        from molar_lightning import quickstart  # imports this module: loaded only when asked for

        quickstart.main(argv[1:])
    else:
        build_cli(args)


if __name__ == "__main__":
    main()
