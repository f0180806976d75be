"""Fit and test one paper row for one seed, resumably, and read back what the run left.

Each (row, seed) has its own folder under ``<out>/runs/<run key>/seed<k>/``; the run key names the config and
the row's extra arguments, so rows that are the same run (Table 4's and Table 5's Molar, say) share it. A
finished run leaves ``outcome.json`` there, so a second ``molar reproduce`` reads it instead of training again,
and an interrupted one resumes from the newest of its ``last.ckpt`` and the ``interrupted.ckpt`` that SIGTERM
saves mid-epoch. The record keeps the run's arguments and a digest of each config file's settings, so that a
record made with other arguments or an edited config is refused, not mixed in.
"""

import hashlib
import json
import re
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from molar_lightning.callbacks.sigterm import INTERRUPTED_CHECKPOINT
from molar_lightning.cli import build_cli
from molar_lightning.reproduce.claims import CLAIM, claimed
from molar_lightning.reproduce.profiles import Profile
from molar_lightning.reproduce.tables import Row
from molar_lightning.user_error import SettingError, UserError
from molar_lightning.atomic_files import write_atomically

FAILURE_RECORD = "failed.json"  # a failed run's outcome, for the other processes of the same command
MONITORED = "ndcg@10"  # what the configs' checkpoints keep the best of (val/ndcg@10)


@dataclass
class Outcome:
    """One finished (or failed) run of a row for one seed, as its ``outcome.json`` holds it."""

    run: str
    seed: int
    status: str  # "done" or "failed"
    log_dir: str = ""
    best_checkpoint: str = ""
    best_epoch: Optional[int] = None
    seconds: float = 0.0
    test: Optional[dict[str, float]] = None
    error: str = ""
    arguments: tuple[str, ...] = ()  # the `molar fit` arguments of the run (paths included)
    configs: Optional[dict[str, str]] = None  # digest of each --config file's text when it ran, by path

    def per_user(self) -> dict[int, dict[str, float]]:
        """Each test user's metrics (``results_per_user.csv``), by user id."""
        header, *lines = (Path(self.log_dir) / "results_per_user.csv").read_text().splitlines()
        names = header.split(",")[1:]
        rows = (line.split(",") for line in lines)
        return {int(user): dict(zip(names, map(float, values))) for user, *values in rows}

    def validation(self) -> list[dict[str, float]]:
        """The per-epoch validation metrics (``validation_history.json``)."""
        return json.loads((Path(self.log_dir) / "validation_history.json").read_text())


def config_digests(arguments: list[str]) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of the settings of each file that ``arguments`` pass to ``--config``: of
    the parsed YAML, so that editing a comment does not make a finished run stale."""
    paths = [arguments[index + 1] for index, argument in enumerate(arguments[:-1]) if argument == "--config"]
    settings = {path: json.dumps(yaml.safe_load(Path(path).read_text()), sort_keys=True) for path in paths}
    return {path: hashlib.sha256(text.encode()).hexdigest()[:16] for path, text in settings.items()}


def run_key(row: Row) -> str:
    """The folder name of the row's run: its config, then its extra arguments in short (``molar-align_weight-0``)."""
    words = [re.sub(r"[^A-Za-z0-9_.]+", "_", arg.split(".")[-1].lstrip("-")) for arg in row.args]
    return "-".join([row.config, *words])


def best_epoch(history: list[dict[str, float]]) -> Optional[int]:
    """The epoch whose checkpoint the test used: the first with the highest validation ``MONITORED``."""
    if not history:
        return None
    return max(history, key=lambda entry: (entry[MONITORED], -entry["epoch"]))["epoch"]


def resume_checkpoint(folder: Path) -> Optional[Path]:
    """The newest checkpoint a stopped run in ``folder`` can resume from, None if it left none: the
    ``interrupted.ckpt`` that SIGTERM saved mid-epoch (:mod:`~molar_lightning.callbacks.sigterm`), or the
    ``last.ckpt`` of an epoch's end. A fit that finishes removes its ``interrupted.ckpt``, so a newer one holds
    training that no ``last.ckpt`` has."""
    candidates = [*folder.rglob("last.ckpt"), folder / INTERRUPTED_CHECKPOINT]
    saved = [path for path in candidates if path.exists()]
    return max(saved, key=lambda path: path.stat().st_mtime, default=None)


class Runner:
    """Runs rows on one data set under one profile into ``out``, each (row, seed) at most once.

    Args:
        data: data set name (``configs/<data>/``).
        data_dir: the raw data folder.
        out: output folder.
        profile: what stands in for the paper's parts.
        rows: every row, by key (an ID model a row aligns with is run first).
        fit_arguments: extra ``molar fit`` arguments for every run (e.g. ``--trainer.accelerator gpu``).
        say: prints a progress line.
    """

    def __init__(self, data: str, data_dir: str, out: Path, profile: Profile, rows: dict[str, Row],
                 fit_arguments: list[str], say: Callable[[str], None] = print) -> None:
        self.data, self.data_dir, self.out, self.profile = data, data_dir, out, profile
        self.rows, self.fit_arguments, self.say = rows, fit_arguments, say
        self.item_cache: Optional[str] = None
        self.outcomes: dict[tuple[str, int], Outcome] = {}  # fitted or read back by this process (a failed one is
        # not refitted, a record not read twice)
        self.started = time.time()  # a failure recorded since then is reported; an older one is tried again

    def outcome(self, row: Row, seed: int, wait: bool = True) -> Optional[Outcome]:
        """The row's run for ``seed``: read back when finished before, else fitted (its ID model first) and tested.

        A run that another process holds (:mod:`.claims`) is waited for, or with ``wait=False`` left to it: then
        the result is None."""
        if (run_key(row), seed) in self.outcomes:
            return self.outcomes[run_key(row), seed]
        folder = self.out / "runs" / run_key(row) / f"seed{seed}"
        record = folder / "outcome.json"
        arguments = self.profile.arguments(row, self.data, self._items(row))
        if row.id_model is not None:
            id_outcome = self.outcome(self.rows[row.id_model], seed, wait)
            if id_outcome is None:
                return None
            if id_outcome.status != "done":
                return Outcome(run_key(row), seed, "failed", error=f"its ID model ({row.id_model}) failed")
            arguments += ["--model.init_args.encoder_checkpoint", id_outcome.best_checkpoint]
        arguments += ["--data.init_args.data_dir", self.data_dir,
                      "--data.init_args.cache_dir", str(self.out / "data"),
                      "--trainer.default_root_dir", str(folder), "--seed_everything", str(seed),
                      "--evaluation.per_user", "true", "--trainer.enable_progress_bar", "false",
                      "--trainer.enable_model_summary", "false", *self.fit_arguments]
        if record.is_file():
            self.outcomes[run_key(row), seed] = self._finished(record, arguments)  # read and checked once
            return self.outcomes[run_key(row), seed]
        with claimed(folder) as mine:
            if mine:
                return self._held(row, seed, folder, record, arguments)
        if not wait:
            return None
        self.say(f"{row.name}, seed {seed}: waiting for the process that holds {folder / CLAIM}")
        with claimed(folder, block=True):
            return self._held(row, seed, folder, record, arguments)

    def _held(self, row: Row, seed: int, folder: Path, record: Path, arguments: list[str]) -> Outcome:
        """The run's outcome while this process holds its claim: finished by the process that held it before,
        failed in another process since this command started (not trained again), or fitted now."""
        if record.is_file():
            return self._finished(record, arguments)
        failure = folder / FAILURE_RECORD
        if failure.is_file() and failure.stat().st_mtime >= self.started:
            return Outcome(**json.loads(failure.read_text()))
        self.outcomes[run_key(row), seed] = self._fit(row, seed, folder, record, arguments)
        return self.outcomes[run_key(row), seed]

    def _fit(self, row: Row, seed: int, folder: Path, record: Path, arguments: list[str]) -> Outcome:
        """Fit and test the run in ``folder`` (resuming what a stopped one left) and write its ``record``."""
        checkpoint = resume_checkpoint(folder)
        resume = ["--ckpt_path", str(checkpoint)] if checkpoint else []
        self.say(f"{row.name}, seed {seed}: fitting {run_key(row)} into {folder}"
                 + (f", resumed from {checkpoint}" if checkpoint else ""))
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():  # LightningCLI warns that sys.argv (molar reproduce's) is not its own
                warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
                cli = build_cli(["fit", *arguments, *resume])
        except (UserError, SIGTERMException, KeyboardInterrupt):
            raise
        except Exception as error:  # one row's failure (a collapse, say) must not lose the others
            folder.mkdir(parents=True, exist_ok=True)
            write_atomically(folder / "error.txt", traceback.format_exc())
            outcome = Outcome(run_key(row), seed, "failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
            write_atomically(folder / FAILURE_RECORD, json.dumps(asdict(outcome), indent=2))
            self.say(f"{row.name}, seed {seed}: failed ({outcome.error}); traceback in {folder / 'error.txt'}")
            return outcome
        log_dir = Path(cli.trainer.log_dir)
        history = json.loads((log_dir / "validation_history.json").read_text())
        outcome = Outcome(run_key(row), seed, "done", log_dir=str(log_dir),
                          best_checkpoint=cli.trainer.checkpoint_callback.best_model_path,
                          best_epoch=best_epoch(history), seconds=time.perf_counter() - started,
                          test=json.loads((log_dir / "results.json").read_text()), arguments=tuple(arguments),
                          configs=config_digests(arguments))
        write_atomically(record, json.dumps(asdict(outcome), indent=2))
        self.say(f"{row.name}, seed {seed}: test NDCG@10 {outcome.test['ndcg@10']:.4f} "
                 f"(best epoch {outcome.best_epoch}, {outcome.seconds:.0f} s)")
        return outcome

    @staticmethod
    def _finished(record: Path, arguments: list[str]) -> Outcome:
        """The outcome ``record`` holds, if it was run with these ``arguments`` and config files as they are now:
        reading back a run made with another profile, epoch cap, data or config would mix two settings in one
        table."""
        outcome = Outcome(**json.loads(record.read_text()))
        outcome.arguments = tuple(outcome.arguments)
        if outcome.status != "done":
            return outcome
        if outcome.arguments != tuple(arguments):
            raise SettingError(f"{record.parent} was run with other settings ({' '.join(outcome.arguments)}); give "
                               f"another --out, or delete that folder to run it again with these")
        changed = [path for path, digest in config_digests(arguments).items()
                   if (outcome.configs or {}).get(path) != digest]
        if changed:
            raise SettingError(f"{record.parent} was run before {', '.join(changed)} changed (or by a version that "
                               f"did not record its configs); give another --out, or delete that folder to run it "
                               f"again with the config as it is")
        return outcome

    def _items(self, row: Row) -> Optional[str]:
        """The item cache folder a content row reads (embedded on first need), None for an ID row."""
        if row.items == "none":
            return None
        if self.item_cache is None:
            with claimed(self.out / "item_embeddings", block=True):  # one process embeds; the others read its cache
                self.say(f"embedding the items with {self.profile.text_encoder} (once)")
                self.item_cache = self.profile.item_cache(self.data, self.data_dir, str(self.out / "data"),
                                                          self.out / "item_embeddings")
        return self.item_cache
