"""``molar export``: a trained model's item and user embeddings, with raw ids, out of the training loop.

From a checkpoint, loaded as ``molar predict --ckpt_path`` loads it
(:class:`~molar_lightning.serving.live_model.LiveModel`), it writes one folder:

* ``items.safetensors``: ``embeddings [N + 1, D]``, the items as evaluation scores them (row 0 padding);
  cold-start items (``--items new_items.jsonl``) follow the catalogue's ``N`` rows;
* ``users.safetensors``: ``embeddings [U, D]`` of the data set's users (their whole history, as ``molar
  predict`` reads it; ``--data_set_users false`` leaves them out) and of the histories given with
  ``--histories``, and ``seen_offsets [U + 1]`` /
  ``seen_items`` (user ``u`` has seen ``seen_items[seen_offsets[u]:seen_offsets[u + 1]]``);
* ``items.json`` and ``users.json``: the raw id of each row (``items.json[i]`` is row ``i + 1``);
* ``manifest.json``: task class and hyper-parameters, checkpoint, config, the prepared data set (its digest),
  sizes, and the run's test metrics (``results.json`` beside the checkpoint's run, when there is one).

A user's score for an item is the dot product of their rows: ``molar recommend`` and ``molar serve`` rank
with nothing else. The folder is built beside its destination and renamed into place, so a reader never
sees half an export.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from molar_lightning.data.raw import json_lines, line_error
from molar_lightning.serving.cold_start import NewItemCatalog, read_new_items
from molar_lightning.serving.live_model import LiveModel, ServingError
from molar_lightning.serving.options import flag, split_options, usage
from molar_lightning.user_error import MissingInputError

EXPORT_FORMAT = 1
MANIFEST = "manifest.json"
DESCRIPTION = "a checkpoint's item and user embeddings (safetensors), raw id maps and a manifest, for serving"
OPTIONS = {
    "--ckpt_path": "checkpoint written by molar fit (required)",
    "--out": "export folder to write (required); an earlier export there is replaced",
    "--config": "the experiment YAML (default: the config.yaml saved with the checkpoint's run)",
    "--histories": "JSON lines {\"id\": ..., \"items\": [raw item ids, oldest first]}: more users to embed",
    "--items": "JSON lines of new items (id, title, description, attributes, image): cold start",
    "--data_set_users": "false: embed only the --histories users, not every user of the data set (large data)",
}


def check_destination(out: Path) -> None:
    """An export replaces an earlier export, never another folder."""
    if out.exists() and not (out / MANIFEST).is_file():
        raise ServingError(f"--out {out} exists and is not an export; name a new folder")


def write_export(out: Path, items: torch.Tensor, item_ids: Sequence[str], users: torch.Tensor,
                 user_ids: Sequence[str], seen: Sequence[Sequence[int]], manifest: dict[str, Any]) -> Path:
    """Write an export folder atomically (built beside ``out``, renamed into place, an earlier export replaced)."""
    out = Path(out)
    check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        lengths = torch.tensor([len(row) for row in seen], dtype=torch.long)
        save_file({"embeddings": items.float().contiguous()}, str(staging / "items.safetensors"))
        save_file({"embeddings": users.float().contiguous(),
                   "seen_offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                   "seen_items": torch.tensor([item for row in seen for item in row], dtype=torch.long)},
                  str(staging / "users.safetensors"))
        (staging / "items.json").write_text(json.dumps(list(item_ids)))
        (staging / "users.json").write_text(json.dumps(list(user_ids)))
        manifest = {"format": EXPORT_FORMAT, "dim": int(items.shape[1]), "num_users": len(user_ids),
                    "num_items": len(item_ids), **manifest}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        previous = None
        if out.exists():
            previous = out.with_name(f".{out.name}-replaced-{os.getpid()}")
            os.rename(out, previous)
        os.rename(staging, out)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def read_histories(path: str, item_rows: dict[str, int]) -> tuple[list[str], list[list[int]]]:
    """``(raw user ids, item-row histories)`` from a JSON-lines file; unknown items are refused by id."""
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(f"--histories {path} does not exist; it holds one JSON object per user")
    ids, histories = [], []
    for number, line, record in json_lines(file):
        if not (isinstance(record, dict) and isinstance(record.get("id"), (str, int))
                and isinstance(record.get("items"), list) and record["items"]):
            raise line_error(file, number, line, 'each line must be {"id": <user id>, "items": [<raw item id>, ...]} '
                                                 'with at least one item')
        unknown = [item for item in record["items"] if str(item) not in item_rows]
        if unknown:
            raise line_error(file, number, line, f"unknown item ids {unknown}: not in the trained catalogue")
        ids.append(str(record["id"]))
        histories.append([item_rows[str(item)] for item in record["items"]])
    return ids, histories


def test_metrics(checkpoint: Path) -> Optional[dict]:
    """The run's test results (``results.json`` beside ``checkpoints/``), or None."""
    results = checkpoint.resolve().parent.parent / "results.json"
    return json.loads(results.read_text()) if results.is_file() else None


def export(ckpt_path: str, out: str, config: Optional[str] = None, histories: Optional[str] = None,
           items: Optional[str] = None, overrides: Sequence[str] = (), data_set_users: bool = True) -> Path:
    """Write the export of ``ckpt_path`` to ``out`` (see the module docstring); returns the folder."""
    check_destination(Path(out))
    if not data_set_users and not histories:
        raise ServingError("--data_set_users false leaves no user to export; give --histories")
    live = LiveModel(ckpt_path, config, overrides)
    dataset = live.dataset
    item_ids = list(dataset.items["raw_id"])
    table = live.item_table()
    user_ids, seen, users = [], [], torch.zeros(0, table.shape[1])
    if data_set_users:
        user_ids = list(dataset.sequences["raw_user_id"])
        offsets, flat = dataset.flat_sequences
        seen = [flat[offsets[user]:offsets[user + 1]].tolist() for user in range(len(offsets) - 1)]
        users = torch.cat([live.user_embeddings(batch) for batch in live.datamodule.predict_dataloader()])
    new_items = 0
    if histories:
        extra_ids, extra = read_histories(histories, {raw: row for row, raw in enumerate(item_ids, start=1)})
        clash = sorted(set(extra_ids) & set(user_ids))
        if clash:
            raise ServingError(f"--histories {histories} names user ids of the data set ({clash[:10]}); give the new "
                               f"histories ids of their own")
        users = torch.cat([users, live.encode_histories([np.asarray(row) for row in extra])])
        user_ids, seen = user_ids + extra_ids, seen + extra
    if items:
        rows = read_new_items(items, set(item_ids))
        table = torch.cat([table, live.embed_new_items(NewItemCatalog(rows))])
        item_ids += [row["raw_id"] for row in rows]
        new_items = len(rows)
    manifest = {"task": f"{type(live.task).__module__}.{type(live.task).__qualname__}",
                "hyper_parameters": dict(live.task.hparams), "checkpoint": str(live.checkpoint.resolve()),
                "config": str(live.config_path.resolve()), "overrides": list(overrides),
                "dataset": dataset.path.name, "num_trained_items": dataset.num_items, "num_new_items": new_items,
                "num_data_set_users": dataset.num_users, "test_metrics": test_metrics(live.checkpoint),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return write_export(Path(out), table, item_ids, users, user_ids, seen, manifest)


def main(args: list[str]) -> Optional[Path]:
    """``molar export``."""
    synopsis = "molar export --ckpt_path CKPT --out DIR [options] [--data...|--trainer... overrides]"
    if "-h" in args or "--help" in args:
        print(usage(synopsis, DESCRIPTION, OPTIONS))
        return None
    own, overrides = split_options(args, OPTIONS)
    missing = [name for name in ("ckpt_path", "out") if name not in own]
    if missing:
        raise ServingError(f"molar export needs {' and '.join('--' + name for name in missing)}\n"
                           f"{usage(synopsis, DESCRIPTION, OPTIONS)}")
    folder = export(own["ckpt_path"], own["out"], own.get("config"), own.get("histories"), own.get("items"),
                    overrides, flag(own.get("data_set_users", "true"), "data_set_users"))
    manifest = json.loads((folder / MANIFEST).read_text())
    print(f"{manifest['num_items']:,} items ({manifest['num_new_items']} new) and {manifest['num_users']:,} "
          f"users, {manifest['dim']} dimensions, in {folder}", file=sys.stdout)
    return folder
