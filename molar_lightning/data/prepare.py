"""Raw interactions -> the canonical data set: filtering, k-core, id maps, chronology, leave-one-out.

The result is two Arrow tables written with ``datasets`` (one row per user with the chronological item
sequence, one row per item with its content) plus ``meta.json``. Everything is built in a temporary
folder and renamed into place in one step, so a killed run, or a second DDP rank preparing the same data,
never leaves a folder that reads as complete but is not. The folder name is a digest of the raw files and
the parameters (the image policy included), so changing either prepares anew and an unchanged call is a
cache hit.

Item images are checked here, once, for the items that survive filtering (:func:`image_problem`: a missing
file, or one that is truncated or not an image), and ``image_policy`` decides what happens to those items:
``text_only`` keeps them with no image, ``drop_item`` removes them (and filters again), ``error`` refuses
the data set naming the files. The counts go into the statistics table.

``on_bad_line`` decides what a malformed raw line does (:class:`~molar_lightning.data.raw.BadLines`): ``error``
refuses the data set naming the file and line, ``skip`` prepares without it; the skipped lines' count, files
and first few reasons go into ``meta.json`` and the statistics table, and the policy into the cache key.
"""

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
import pyarrow as pa

from molar_lightning.data.image_check import MISSING, image_problem
from molar_lightning.data.raw import ON_BAD_LINE, BadLines, InteractionSource, RawDataError, RawInteractions
from molar_lightning.data.staging import make_staging, remove_abandoned_staging
from molar_lightning.user_error import MissingInputError, SettingError

FORMAT_VERSION = 1
MIN_LEAVE_ONE_OUT_LENGTH = 3  # one training item, one validation item, one test item
IMAGE_POLICIES = ("text_only", "drop_item", "error")
MAX_INT64_DIGITS = 18  # every id of at most 18 digits fits int64


@dataclass(frozen=True)
class PrepareParams:
    """What preparation does to the raw interactions (part of the cache key).

    Attributes:
        rating_threshold: keep interactions rated at least this much; None keeps all (implicit feedback).
        min_user_interactions: k-core threshold for users (users always need 3 for leave-one-out).
        min_item_interactions: k-core threshold for items.
        image_policy: what to do with an item whose image is missing or unusable: ``text_only`` keeps it
            without an image, ``drop_item`` removes it, ``error`` refuses the data set.
        on_bad_line: what a malformed raw line does: ``error`` refuses the data set naming it, ``skip`` leaves
            it out and counts it.
    """

    rating_threshold: Optional[float] = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    image_policy: str = "text_only"
    on_bad_line: str = "error"

    def __post_init__(self) -> None:
        if self.image_policy not in IMAGE_POLICIES:
            raise SettingError(f"image_policy={self.image_policy!r} is not one of {', '.join(IMAGE_POLICIES)}")
        if self.on_bad_line not in ON_BAD_LINE:
            raise SettingError(f"on_bad_line={self.on_bad_line!r} is not one of {', '.join(ON_BAD_LINE)}")


def k_core_mask(user_codes: np.ndarray, item_codes: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of the interactions that survive iterated k-core filtering (a fixed point).

    Removing sparse items can push users under their threshold and the other way round, so both are
    filtered until nothing changes.
    """
    keep = np.ones(len(user_codes), dtype=bool)
    num_users = int(user_codes.max(initial=-1)) + 1
    num_items = int(item_codes.max(initial=-1)) + 1
    while True:
        user_counts = np.bincount(user_codes[keep], minlength=num_users)
        item_counts = np.bincount(item_codes[keep], minlength=num_items)
        still = keep & (user_counts[user_codes] >= min_user) & (item_counts[item_codes] >= min_item)
        if still.sum() == keep.sum():
            return keep
        keep = still


def _raw_id_order(raw_ids: np.ndarray) -> np.ndarray:
    """Order raw ids numerically when they are all non-negative int64 integers in ASCII digits, else as strings
    (stable, deterministic); ``str.isdigit`` alone also takes ``"١٢"`` and ids of any length."""
    if all(raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= MAX_INT64_DIGITS for raw_id in raw_ids):
        return np.argsort(raw_ids.astype(np.int64), kind="stable")
    return np.argsort(raw_ids.astype(str), kind="stable")


def _dense_ids(codes: np.ndarray, raw_ids: list[str], first_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map the codes still present to contiguous ids from ``first_id`` in raw-id order.

    Returns the new id of every interaction, and the raw id and the code of every new id.
    """
    present = np.unique(codes)
    present_raw = np.asarray(raw_ids, dtype=object)[present]
    present = present[_raw_id_order(present_raw)]
    new_of_code = np.full(len(raw_ids), -1, dtype=np.int64)
    new_of_code[present] = np.arange(first_id, first_id + len(present))
    return new_of_code[codes], np.asarray(raw_ids, dtype=object)[present], present


def _image_path(raw: RawInteractions, code: int) -> Optional[str]:
    record = raw.items.get(raw.item_raw_ids[code])
    return record.image_path if record else None


def _check_images(raw: RawInteractions, codes: np.ndarray) -> dict[int, str]:
    """The problem (:func:`image_problem`) of every item code in ``codes`` whose image is not usable."""
    problems = {}
    for code in codes.tolist():
        path = _image_path(raw, code)
        problem = MISSING if not path else image_problem(path)
        if problem is not None:
            problems[code] = problem
    return problems


def _image_error(raw: RawInteractions, problems: dict[int, str], checked: int) -> RawDataError:
    """The refusal under ``image_policy: error``: counts, the first offending files and the fixes."""
    missing = sum(problem == MISSING for problem in problems.values())
    lines = []
    for code, problem in sorted(problems.items(), key=lambda pair: raw.item_raw_ids[pair[0]])[:5]:
        path = _image_path(raw, code)
        lines.append(f"  {path or '(no image path)'}: {problem} (item {raw.item_raw_ids[code]!r})")
    folders = {os.path.dirname(path) for code in problems if (path := _image_path(raw, code))}
    absent = sorted(folder for folder in folders if not os.path.isdir(folder))
    return RawDataError(
        f"{len(problems):,} of {checked:,} items have no usable image ({missing:,} missing, "
        f"{len(problems) - missing:,} corrupt) and image_policy is 'error':\n" + "\n".join(lines)
        + (f"\nthe image folder {', '.join(absent)} does not exist" if absent else "")
        + "\nfetch or replace the images (Amazon: `molar data fetch-images`), or set image_policy to "
          "'text_only' (keep those items without an image) or 'drop_item' (remove them)"
    )


def _storable(text: str) -> str:
    """``text`` as Arrow can store it: a lone surrogate (what a JSON ``"\\ud800"`` escape decodes to) becomes ``?``."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _items_table(raw: RawInteractions, item_raw_ids: np.ndarray, usable_image: np.ndarray) -> pa.Table:
    records = [raw.items.get(raw_id) for raw_id in item_raw_ids]
    attribute_type = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    return pa.table({
        "item_id": pa.array(np.arange(1, len(item_raw_ids) + 1), pa.int32()),
        "raw_id": pa.array([str(raw_id) for raw_id in item_raw_ids], pa.string()),
        "title": pa.array([_storable(record.title) if record else "" for record in records], pa.string()),
        "description": pa.array([_storable(record.description) if record else "" for record in records],
                                pa.string()),
        "attributes": pa.array(
            [[{"key": _storable(k), "value": _storable(v)} for k, v in record.attributes.items()] if record else []
             for record in records],
            attribute_type,
        ),
        "image_path": pa.array([record.image_path if record and usable else None
                                for record, usable in zip(records, usable_image.tolist())], pa.string()),
    })


def build_canonical_tables(raw: RawInteractions, params: PrepareParams) -> tuple[pa.Table, pa.Table, dict]:
    """Filter, re-index and order the interactions; return (sequences, items, statistics)."""
    keep = np.ones(len(raw.user_codes), dtype=bool)
    counts = {"raw_interactions": int(len(keep))}
    if params.rating_threshold is not None:
        if raw.ratings is None:
            raise SettingError(f"rating_threshold is {params.rating_threshold} but this source has no ratings; "
                               f"set it to null")
        keep &= raw.ratings >= params.rating_threshold
        counts["after_rating_threshold"] = int(keep.sum())
    user_codes, item_codes = raw.user_codes[keep], raw.item_codes[keep]
    order_in_file = np.flatnonzero(keep)
    min_user = max(params.min_user_interactions, MIN_LEAVE_ONE_OUT_LENGTH)
    min_item = max(params.min_item_interactions, 1)
    core = k_core_mask(user_codes, item_codes, min_user, min_item)
    # Images are checked only for the items filtering keeps; dropping items can only shrink that set.
    checked = np.unique(item_codes[core])
    problems = _check_images(raw, checked)
    missing = sum(problem == MISSING for problem in problems.values())
    image_counts = {"images_usable": int(len(checked) - len(problems)), "images_missing": missing,
                    "images_corrupt": len(problems) - missing}
    if problems and params.image_policy == "error":
        raise _image_error(raw, problems, len(checked))
    if problems and params.image_policy == "drop_item":
        without_image = np.isin(item_codes, np.fromiter(problems, dtype=np.int64, count=len(problems)))
        image_counts["items_dropped_for_images"] = len(problems)
        image_counts["interactions_dropped_for_images"] = int((core & without_image).sum())
        kept = np.flatnonzero(~without_image)
        core = np.zeros(len(item_codes), dtype=bool)
        core[kept[k_core_mask(user_codes[kept], item_codes[kept], min_user, min_item)]] = True
    if not core.any() and "items_dropped_for_images" in image_counts:
        raise RawDataError(
            f"no interaction survives filtering: image_policy 'drop_item' removed the "
            f"{image_counts['items_dropped_for_images']:,} of {len(checked):,} items without a usable image "
            f"({missing:,} missing, {image_counts['images_corrupt']:,} corrupt), and k-core (users >= {min_user}, "
            f"items >= {min_item} interactions) then removed the rest; fetch the images (Amazon: `molar data "
            f"fetch-images`) or set image_policy to 'text_only'"
        )
    if not core.any():
        raise RawDataError(
            f"no interaction survives filtering: {counts} -> 0 after k-core with users >= "
            f"{min_user} and items >= {min_item} interactions "
            f"({len(np.unique(user_codes))} users and {len(np.unique(item_codes))} items before it); "
            f"lower min_user_interactions / min_item_interactions or the rating threshold"
        )
    user_codes, item_codes, order_in_file = user_codes[core], item_codes[core], order_in_file[core]
    timestamps = raw.timestamps[order_in_file]

    user_ids, user_raw_ids, _ = _dense_ids(user_codes, raw.user_raw_ids, first_id=0)
    item_ids, item_raw_ids, item_codes_by_id = _dense_ids(item_codes, raw.item_raw_ids, first_id=1)
    # Chronological per user; equal timestamps keep their order in the raw file (a stable tie-break).
    order = np.lexsort((order_in_file, timestamps, user_ids))
    item_ids, timestamps, user_ids = item_ids[order], timestamps[order], user_ids[order]
    lengths = np.bincount(user_ids, minlength=len(user_raw_ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    sequences = pa.table({
        "user_id": pa.array(np.arange(len(user_raw_ids)), pa.int32()),
        "raw_user_id": pa.array([str(raw_id) for raw_id in user_raw_ids], pa.string()),
        "item_ids": pa.ListArray.from_arrays(pa.array(offsets, pa.int64()).cast(pa.int32()),
                                             pa.array(item_ids, pa.int32())),
        "timestamps": pa.ListArray.from_arrays(pa.array(offsets, pa.int64()).cast(pa.int32()),
                                               pa.array(timestamps, pa.int64())),
    })
    counts.update({
        "users": len(user_raw_ids),
        "items": len(item_raw_ids),
        "interactions": int(len(item_ids)),
        "removed_by_k_core": int((~core).sum()) - image_counts.get("interactions_dropped_for_images", 0),
        **image_counts,
    })
    usable_image = ~np.isin(item_codes_by_id, np.fromiter(problems, dtype=np.int64, count=len(problems)))
    return sequences, _items_table(raw, item_raw_ids, usable_image), counts


class CanonicalDataset:
    """A prepared data set on disk: per-user chronological sequences and the item table.

    Args:
        path: the folder written by :func:`prepare_dataset`.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise MissingInputError(f"{self.path} is not a prepared data set (no meta.json); run `molar prepare`")
        self.meta = json.loads(meta_path.read_text())

    @property
    def num_users(self) -> int:
        return int(self.meta["statistics"]["users"])

    @property
    def num_items(self) -> int:
        return int(self.meta["statistics"]["items"])

    @cached_property
    def sequences(self) -> datasets.Dataset:
        return datasets.load_from_disk(str(self.path / "sequences"))

    @cached_property
    def items(self) -> datasets.Dataset:
        return datasets.load_from_disk(str(self.path / "items"))

    @cached_property
    def flat_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets [U + 1], item_ids [I])``: user ``u``'s sequence is ``item_ids[offsets[u]:offsets[u + 1]]``."""
        column = self.sequences.data.column("item_ids").combine_chunks()
        offsets = column.offsets.to_numpy().astype(np.int64)
        values = column.values.to_numpy().astype(np.int64)
        return offsets - offsets[0], values[offsets[0]:offsets[-1]]

    def statistics_rows(self) -> list[tuple[str, str]]:
        """The statistics table as (name, value) rows, including the leave-one-out split sizes."""
        stats = self.meta["statistics"]
        users, items, interactions = stats["users"], stats["items"], stats["interactions"]
        rows = [("users", f"{users:,}"), ("items", f"{items:,}"), ("interactions", f"{interactions:,}"),
                ("mean sequence length", f"{interactions / users:.2f}"),
                ("density", f"{interactions / (users * items):.4%}"),
                ("train / valid / test targets", f"{interactions - 3 * users:,} / {users:,} / {users:,}")]
        if "after_rating_threshold" in stats:
            rows.insert(0, ("after rating threshold", f"{stats['after_rating_threshold']:,}"))
        rows.insert(0, ("raw interactions", f"{stats['raw_interactions']:,}"))
        rows.append(("removed by k-core", f"{stats['removed_by_k_core']:,}"))
        if "images_usable" in stats:  # data sets prepared before the image policy existed lack these
            policy = self.meta["params"].get("image_policy", "text_only")
            rows += [("items with a usable image", f"{stats['images_usable']:,}"),
                     ("items with a missing image", f"{stats['images_missing']:,}"),
                     ("items with a corrupt image", f"{stats['images_corrupt']:,}"),
                     ("image policy", policy)]
            if "items_dropped_for_images" in stats:
                rows.append(("dropped for their image (items / interactions)",
                             f"{stats['items_dropped_for_images']:,} / {stats['interactions_dropped_for_images']:,}"))
        bad_lines = self.meta.get("bad_lines")
        if bad_lines and bad_lines["policy"] == "skip":
            rows.append(("bad raw lines skipped (on_bad_line: skip)", f"{bad_lines['skipped']:,}"))
        return rows

    @property
    def skipped_lines(self) -> list[str]:
        """The first few raw lines that ``on_bad_line: skip`` left out, as ``file:line: reason: text``."""
        return self.meta.get("bad_lines", {}).get("examples", [])


def cache_key(source: InteractionSource, params: PrepareParams) -> str:
    """Digest of the format version, the raw files and the preparation parameters.

    ``on_bad_line: error``, the default, is left out, so data sets prepared before the policy existed keep
    their key: a set prepared under ``skip`` may lack lines that one under ``error`` would have refused.
    """
    named = asdict(params)
    if named["on_bad_line"] == "error":
        del named["on_bad_line"]
    payload = json.dumps({"format": FORMAT_VERSION, "source": source.name, "files": source.fingerprint(),
                          "params": named}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_dataset(source: InteractionSource, cache_dir: str, params: PrepareParams) -> CanonicalDataset:
    """Return the canonical data set for ``source`` and ``params``, preparing it only on a cache miss.

    A miss first removes what an earlier, killed preparation of the same key left in the cache folder.
    """
    cache_root = Path(cache_dir)
    final = cache_root / f"{source.name}-{cache_key(source, params)}"
    if (final / "meta.json").is_file():
        return CanonicalDataset(final)
    cache_root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(cache_root, final.name)
    bad_lines = BadLines(params.on_bad_line)
    sequences, items, statistics = build_canonical_tables(source.read(bad_lines), params)
    if bad_lines.skipped:
        warnings.warn(f"on_bad_line: skip left out {bad_lines.skipped:,} bad raw lines ("
                      + ", ".join(f"{count:,} in {path}" for path, count in bad_lines.by_file.items())
                      + "); the first: " + bad_lines.examples[0], stacklevel=2)
    staging = make_staging(cache_root, final.name)
    try:
        datasets.disable_progress_bars()  # writing takes well under a second; its bars would only be noise
        datasets.Dataset(sequences).save_to_disk(str(staging / "sequences"))
        datasets.Dataset(items).save_to_disk(str(staging / "items"))
        meta = {"format": FORMAT_VERSION, "source": source.name, "params": asdict(params),
                "raw_files": [str(path) for path in source.raw_files()], "statistics": statistics,
                "bad_lines": bad_lines.summary()}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent writer that finished first
                raise
    finally:
        datasets.enable_progress_bars()
        shutil.rmtree(staging, ignore_errors=True)
    return CanonicalDataset(final)
