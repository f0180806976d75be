"""PixelRec (Cheng et al., SDM 2024, "An Image Dataset for Benchmarking Recommender Systems with Raw Pixels").

Published by westlake-repl/PixelRec as CSV files plus one cover image per item:

* interactions: ``item_id,user_id,timestamp`` (ids like ``i123`` / ``u456``, Unix seconds). The PixelRec50K
  sample Molar uses names it ``interaction.csv``; the full release's Interaction folder holds
  ``Pixel200K.csv``, ``Pixel1M.csv``, ``Pixel8M.csv`` (HLLM keeps them under ``dataset/``).
* item information: ``item_id``, engagement counts (``view_number``, ``comment_number``, ``thumbup_number``,
  ``share_number``, ``coin_number``, ``favorite_number``, ``barrage_number``), ``title``, ``tag``,
  ``description``. ``item_info.csv`` in PixelRec50K; the Item Information folder reuses the interaction
  files' names (``Pixel200K.csv`` ..., HLLM keeps them under ``information/``).
* covers: ``<item_id>.jpg``, one per item (``cover/`` once the archive is unpacked).

Interactions are read with ``pyarrow.csv`` in blocks (a Pixel8M file never sits in memory as Python
objects); on a parse error the file is scanned again with :mod:`csv` to name the bad line. Title, tag and
description become the item's text; the engagement counts are platform-lifetime totals, not
interactions, and are not used.
"""

import codecs
import csv
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from tqdm.auto import tqdm

from molar_lightning.data.raw import (
    BadLines,
    FirstSeen,
    InteractionSource,
    ItemRecord,
    RawDataError,
    RawInteractions,
    line_error,
    not_utf8,
    parse_integer,
)
from molar_lightning.user_error import MissingInputError

INTERACTION_COLUMNS = ("item_id", "user_id", "timestamp")


def _text_lines(path: Path, bad_lines: BadLines) -> Iterator[str]:
    """The lines of ``path`` as text, without a leading byte-order mark; a line that is not UTF-8 goes to
    ``bad_lines`` and reads as an empty line, so the csv module's line numbers stay those of the file."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                bad_lines.report(path, number, line.decode("utf-8", "replace"), not_utf8(error))
                yield "\n"


def _rows(path: Path, bad_lines: BadLines) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-empty rows of a UTF-8 CSV file; a line that is not UTF-8, or a row
    the csv module cannot take (a field over its 131,072-character limit), is a bad line."""
    reader = csv.reader(_text_lines(path, bad_lines))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # the module reads on from the next line
            bad_lines.report(path, reader.line_num, None, f"the row cannot be read as CSV ({error}); shorten the "
                             f"field or remove the row")
            continue
        if row:
            yield reader.line_num, row


def _header(path: Path) -> list[str]:
    """The first row, read under ``on_bad_line: error`` whatever the policy: a file without its header cannot
    be read."""
    return next((row for _, row in _rows(path, BadLines())), [])


def _require_header(path: Path, required: tuple[str, ...]) -> list[str]:
    header = _header(path)
    missing = [name for name in required if name not in header]
    if missing:
        raise line_error(path, 1, ",".join(header),
                         f"header lacks {', '.join(missing)}; a PixelRec file here needs the columns "
                         f"{', '.join(required)} (is this the right file, or the other of the two CSVs?)")
    return header


def _interaction_problem(row: list[str], header: list[str], position: list[int]) -> Optional[str]:
    """What is wrong with one interactions row, or None; ``position`` holds the columns of item_id, user_id and
    timestamp."""
    if len(row) != len(header):
        return f"expected {len(header)} fields ({','.join(header)}), got {len(row)}"
    for name, column in zip(INTERACTION_COLUMNS[:2], position):
        if not row[column].strip():
            return f"empty {name}"
    if parse_integer(row[position[2]]) is None:
        return "timestamp is not an integer of at most 64 bits (Unix seconds)"
    return None


class PixelRec(InteractionSource):
    """PixelRec50K or a larger PixelRec release from a local folder.

    Args:
        data_dir: folder holding the files below.
        interactions_file: interactions CSV inside data_dir: ``interaction.csv`` in PixelRec50K (Molar's
            set), or e.g. ``dataset/Pixel200K.csv`` / ``dataset/Pixel1M.csv`` for the full release.
        items_file: item information CSV inside data_dir: ``item_info.csv`` in PixelRec50K, or e.g.
            ``information/Pixel200K.csv``; read when present.
        image_dir: folder of covers ``<item_id>.jpg``, relative to data_dir unless absolute; null means
            the items have no images.
        show_progress: show a progress bar while reading.
    """

    name = "pixelrec"

    def __init__(self, data_dir: str, interactions_file: str = "interaction.csv", items_file: str = "item_info.csv",
                 image_dir: Optional[str] = "cover", show_progress: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.interactions_path = self.data_dir / interactions_file
        self.items_path = self.data_dir / items_file
        self.image_root = None if image_dir is None else os.path.abspath(self.data_dir / image_dir)
        self.show_progress = show_progress

    def raw_files(self) -> list[Path]:
        if not self.interactions_path.is_file():
            raise MissingInputError(
                f"no PixelRec interactions file {self.interactions_path}; point data_dir at the unpacked "
                f"PixelRec50K folder, or name the file with interactions_file (e.g. dataset/Pixel200K.csv)"
            )
        return [self.interactions_path] + ([self.items_path] if self.items_path.is_file() else [])

    def read(self, bad_lines: Optional[BadLines] = None) -> RawInteractions:
        bad_lines = bad_lines or BadLines()
        self.raw_files()
        items, users, timestamps = self._read_interactions(self.interactions_path, bad_lines)
        user_raw_ids, item_raw_ids = pc.unique(users), pc.unique(items)
        item_raw_ids_list = item_raw_ids.to_pylist()
        records = {}
        if self.items_path.is_file():
            records = self._read_items(self.items_path, set(item_raw_ids_list), bad_lines)
        if self.image_root is not None:
            for raw_id in item_raw_ids_list:
                records.setdefault(raw_id, ItemRecord()).image_path = os.path.join(self.image_root, f"{raw_id}.jpg")
        return RawInteractions(
            user_codes=pc.index_in(users, value_set=user_raw_ids).to_numpy().astype(np.int64),
            item_codes=pc.index_in(items, value_set=item_raw_ids).to_numpy().astype(np.int64),
            timestamps=timestamps.to_numpy().astype(np.int64),
            ratings=None,
            user_raw_ids=user_raw_ids.to_pylist(),
            item_raw_ids=item_raw_ids_list,
            items=records,
        )

    def _read_interactions(self, path: Path, bad_lines: BadLines) -> tuple[pa.ChunkedArray, ...]:
        _require_header(path, INTERACTION_COLUMNS)
        options = pa_csv.ConvertOptions(
            column_types={"item_id": pa.string(), "user_id": pa.string(), "timestamp": pa.int64()},
            include_columns=list(INTERACTION_COLUMNS),
        )
        batches = []
        try:
            reader = pa_csv.open_csv(str(path), read_options=pa_csv.ReadOptions(block_size=16 << 20),
                                     convert_options=options)
            with tqdm(desc=f"reading {path.name}", unit=" interactions", unit_scale=True, mininterval=1.0,
                      disable=not self.show_progress) as progress:
                for batch in reader:
                    batches.append(batch)
                    progress.update(batch.num_rows)
        except (pa.ArrowInvalid, OSError) as error:
            return self._interactions_row_by_row(path, bad_lines, error)
        table = pa.Table.from_batches(batches, schema=reader.schema)
        if table.num_rows == 0:
            raise RawDataError(f"{path} holds no interactions")
        columns = [table.column(name) for name in INTERACTION_COLUMNS]
        if columns[2].null_count or any(pc.any(pc.equal(pc.utf8_trim_whitespace(column), "")).as_py()
                                        for column in columns[:2]):
            return self._interactions_row_by_row(path, bad_lines, None)
        return tuple(columns)

    def _interactions_row_by_row(self, path: Path, bad_lines: BadLines,
                                 error: Optional[Exception]) -> tuple[pa.ChunkedArray, ...]:
        """Read the CSV again with :mod:`csv` where the fast reader could not take it whole: every bad row goes to
        ``bad_lines`` (under ``error`` the first one refuses the file), and the good ones come back as the fast
        reader gives them. A file in which no row is at fault cannot be parsed for another reason, and is
        refused under either policy."""
        rows = _rows(path, bad_lines)
        _, header = next(rows)
        position = [header.index(name) for name in INTERACTION_COLUMNS]
        items, users, timestamps = [], [], []
        for number, row in tqdm(rows, desc=f"reading {path.name} row by row", unit=" rows", mininterval=1.0,
                                disable=not self.show_progress):
            problem = _interaction_problem(row, header, position)
            if problem:
                bad_lines.report(path, number, ",".join(row), problem)
                continue
            items.append(row[position[0]])
            users.append(row[position[1]])
            timestamps.append(parse_integer(row[position[2]]))
        if not bad_lines.skipped_in(path):
            raise RawDataError(f"{path}: could not be parsed ({error}), though every row has item_id, user_id and "
                               f"an integer timestamp")
        if not items:
            raise RawDataError(f"{path} holds no interactions: all {bad_lines.skipped_in(path):,} of its rows were "
                               f"bad and skipped")
        return (pa.chunked_array([pa.array(items, pa.string())]), pa.chunked_array([pa.array(users, pa.string())]),
                pa.chunked_array([pa.array(timestamps, pa.int64())]))

    def _read_items(self, path: Path, wanted: set[str], bad_lines: BadLines) -> dict[str, ItemRecord]:
        """Title, tag and description of the wanted items; a conflicting duplicate item row is a bad line."""
        header = _require_header(path, ("item_id",))
        records: dict[str, ItemRecord] = {}
        first_seen = FirstSeen(path, "item_id", bad_lines)
        rows = _rows(path, bad_lines)
        next(rows)
        for number, fields in rows:
            text = ",".join(fields)
            if len(fields) != len(header):
                bad_lines.report(path, number, text, f"expected {len(header)} fields ({','.join(header)})")
                continue
            row = dict(zip(header, fields))
            item_id = row["item_id"].strip()
            if item_id not in wanted:
                continue
            # Whitespace collapsed: a line break inside a field would break the prompt's one-line-per-field form.
            content = tuple(" ".join(row.get(name, "").split()) for name in ("title", "tag", "description"))
            if first_seen.repeats(item_id, number, text, content):
                continue
            title, tag, description = content
            records[item_id] = ItemRecord(title=title, description=description, attributes={"tag": tag} if tag else {})
        return records
