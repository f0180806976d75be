"""``MolarCLI``: the LightningCLI behind ``molar fit|validate|test|predict --config X.yaml``.

It adds what every run needs: the ranking evaluation callback, a checkpoint on validation NDCG@10, and the
links that hand the data set's sizes to the ID model's constructor. ``fit`` ends by testing the best
checkpoint, so every training run leaves its test table. Tasks call ``save_hyperparameters()``, and
Lightning's instantiator records there the configs of the parts they are given, so a checkpoint alone
rebuilds its model (``Task.load_from_checkpoint(path)``, ``molar test --ckpt_path``). The other commands
(``prepare``, ``embed``, ...) are in :mod:`molar_lightning.commands`.
"""

import sys
from typing import Any, Optional, Sequence

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from molar_lightning.callbacks.evaluation import RankingEvaluationCallback
from molar_lightning.callbacks.prepared_data import PreparedDataCallback
from molar_lightning.callbacks.recommendations import RecommendationWriter
from molar_lightning.callbacks.rng_state import RNGStateCallback
from molar_lightning.callbacks.sigterm import SIGTERMCheckpointCallback
from molar_lightning.config_keys import accepted, asks_for_help, config_problem, given_config, resolve
from molar_lightning.data.datamodule import SequentialDataModule
from molar_lightning.launch_checks import launch_problem
from molar_lightning.resume import checkpoint_folder, real_folder
# Imported so that jsonargparse knows them by their short names too (`--model.help SequentialRecModule`).
from molar_lightning.models.id import duorec, fpmc, gru4rec, sasrec  # noqa: F401
from molar_lightning.tasks import mirm_alignment, molar, sequential  # noqa: F401

# DataModule attributes handed to the ID model's constructor (a model without such an argument ignores it).
LINKED_TO_ENCODER = ("num_items", "num_users", "max_seq_len")
SECTIONS = {"trainer": Trainer, "evaluation": RankingEvaluationCallback, "checkpoint": ModelCheckpoint}


class MolarCLI(LightningCLI):
    """LightningCLI with the evaluation, checkpointing and data -> model links every run needs.

    Args:
        encoder_links: the DataModule attributes linked into ``model.init_args.encoder``'s constructor: those
            the configured encoder accepts (see :func:`encoder_links`), none for ``encoder: null``.
        **kwargs: LightningCLI's arguments.
    """

    def __init__(self, *args: Any, encoder_links: Sequence[str] = LINKED_TO_ENCODER, **kwargs: Any) -> None:
        self.encoder_links = encoder_links
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RankingEvaluationCallback, "evaluation")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/ndcg@10", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}"})
        # Every logger (configs/logger/) writes into the run folder, as a real path (molar_lightning/resume.py).
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir",
                              compute_fn=real_folder)
        for name in self.encoder_links:
            parser.link_arguments(f"data.{name}", f"model.init_args.encoder.init_args.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """The run folder as a real path; a resumed fit's checkpoints where its run wrote them (resume.py)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config  # (no subcommand: run=False)
        if config.trainer.default_root_dir:
            config.trainer.default_root_dir = real_folder(config.trainer.default_root_dir)
        if self.subcommand == "fit" and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = checkpoint_folder(config.ckpt_path)

    def fit(self, model: LightningModule, **kwargs: Any) -> None:
        """Train, then test the best checkpoint (the last weights when checkpointing is off)."""
        self.trainer.fit(model, **kwargs)
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.strategy.optimizers = []  # testing restores no optimizer (a sharded checkpoint would try)
        self.trainer.test(model, datamodule=kwargs.get("datamodule"), ckpt_path=best or None)


def encoder_links(config: dict) -> tuple[str, ...]:
    """The :data:`LINKED_TO_ENCODER` attributes that the encoder in ``config`` (:func:`given_config`) takes.

    Only those are linked, so the task's recorded config (and a checkpoint's) names none the encoder refuses;
    none for ``encoder: null`` (rows without an ID model), where jsonargparse 4.53 fails on any link into it.
    """
    model = config.get("model")
    init_args = (model.get("init_args") or {}) if isinstance(model, dict) else {}
    encoder = init_args.get("encoder", {})
    if encoder is None:
        return ()
    cls = resolve(encoder.get("class_path")) if isinstance(encoder, dict) else None
    valid = accepted(cls) if cls is not None else None
    return tuple(name for name in LINKED_TO_ENCODER if valid is None or name in valid)


def build_cli(args: ArgsType = None, run: bool = True, description: Optional[str] = None) -> MolarCLI:
    """The LightningCLI behind ``molar fit|validate|test|predict``; ``run=False`` only builds the objects.

    An unknown configuration key is refused first, with the keys that are valid where it was given, then a
    configuration that cannot work (:mod:`molar_lightning.launch_checks`).
    """
    argv = [str(arg) for arg in (sys.argv[1:] if args is None else args)]
    config = given_config(argv)
    problem = None if asks_for_help(argv) else config_problem(config, SECTIONS) or launch_problem(config)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    return MolarCLI(
        LightningModule,
        SequentialDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RNGStateCallback(), RecommendationWriter(), SIGTERMCheckpointCallback(),
                                       PreparedDataCallback()]},
        parser_kwargs={"description": description} if description else None,
        encoder_links=encoder_links(config),
        args=args,
        run=run,
    )
