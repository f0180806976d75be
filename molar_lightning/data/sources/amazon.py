"""Amazon Reviews in its three published releases (McAuley Lab, UCSD): 2014, 2018 and 2023.

Each category ships as a reviews file and an item metadata file, one object a line, gzipped or not:

* 2023: ``<Category>.jsonl`` (``user_id``, ``parent_asin``, ``rating``, ``timestamp`` in milliseconds, kept
  as seconds) and ``meta_<Category>.jsonl`` (``parent_asin``; ``title``, ``store``, ``categories``,
  ``features``, ``details``, ``description``; ``images[]`` with ``hi_res`` / ``large`` URLs).
* 2018: ``<Category>.json`` or the 5-core ``<Category>_5.json`` (``reviewerID``, ``asin``, ``overall``,
  ``unixReviewTime``) and ``meta_<Category>.json`` (``asin``; ``title``, ``brand``, ``category``,
  ``feature``, ``details``, ``description``; ``imageURLHighRes``, ``imageURL``).
* 2014: ``reviews_<Category>.json`` (fields as 2018) and ``meta_<Category>.json`` whose lines are Python
  literals, not JSON, read with ``ast.literal_eval`` (never ``eval``): ``asin``; ``title``, ``brand``,
  ``categories`` (a list of paths), ``description``; ``imUrl``.

Reviews are read with ``pyarrow.json`` in blocks of newline-delimited JSON, parsing only the four columns
needed (review text is skipped inside the C++ parser), so an 8.8M-review category is held as four Arrow
columns and then integer codes, never as Python objects. When a block fails to parse, or a required field
is missing, the file is scanned again line by line to name the first bad line. Metadata is streamed line by
line, and only the lines of items that appear in the reviews are parsed. Images are read from a local
folder of ``<item id>.jpg`` files (named by ``image_names.image_file_name``: an id that is not a plain
file name gets a safe name), which ``molar data fetch-images`` fills from the metadata's URLs.
"""

import ast
import gzip
import json
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from tqdm.auto import tqdm

from molar_lightning.data.image_names import image_file_name
from molar_lightning.data.raw import (
    BadLines,
    FirstSeen,
    InteractionSource,
    ItemRecord,
    RawDataError,
    RawInteractions,
    in_int64,
    unreadable,
)
from molar_lightning.user_error import MissingInputError, SettingError

BLOCK_BYTES = 32 << 20  # pyarrow.json block: a line longer than this cannot be parsed


def _line(text: str) -> str:
    """``text`` on one line with single spaces (a line break would break the prompt's one-line fields)."""
    if "\n" in text or "  " in text or "\t" in text or "\r" in text:
        return " ".join(text.split())
    return text.strip()


def _text(value: object, separator: str = " ") -> str:
    """A metadata value as one line of text: list items joined with ``separator``, None dropped."""
    if isinstance(value, str):
        return _line(value)
    if isinstance(value, list):
        parts = [_line(part) if isinstance(part, str) else _text(part) for part in value if part is not None]
        return separator.join(part for part in parts if part)
    return "" if value is None else _line(str(value))


def _details(details: object) -> dict[str, str]:
    """Scalar entries of a ``details`` dict, keys without their trailing colon (2018 writes ``"Brand:"``)."""
    if not isinstance(details, dict):
        return {}
    pairs = {}
    for key, value in details.items():
        if isinstance(value, (dict, list)):
            continue
        key, value = str(key).strip().rstrip(":").strip(), _text(value)
        if key and value:
            pairs[key] = value
    return pairs


def _listed(value: object) -> list:
    """A metadata field that should be a list, as one: anything else (a number, a string) lists nothing."""
    return value if isinstance(value, list) else []


def _urls(*values: object) -> list[str]:
    """The values that can be URLs (non-empty strings), in order; the fetcher checks the scheme."""
    return [value for value in values if isinstance(value, str) and value.strip()]


def _content_2023(entry: dict) -> tuple[ItemRecord, list[str]]:
    attributes = {"store": _text(entry.get("store")), "categories": _text(entry.get("categories"), " > "),
                  "features": _text(entry.get("features"), "; ")}
    attributes.update(_details(entry.get("details")))
    images = [image for image in _listed(entry.get("images")) if isinstance(image, dict)]
    main = next((image for image in images if image.get("variant") == "MAIN"), images[0] if images else {})
    urls = _urls(main.get("hi_res"), main.get("large"))
    return ItemRecord(title=_text(entry.get("title")), description=_text(entry.get("description")),
                      attributes={k: v for k, v in attributes.items() if v}), urls


def _content_2018(entry: dict) -> tuple[ItemRecord, list[str]]:
    attributes = {"brand": _text(entry.get("brand")), "categories": _text(entry.get("category"), " > "),
                  "features": _text(entry.get("feature"), "; ")}
    attributes.update(_details(entry.get("details")))
    firsts = [_listed(entry.get(name))[:1] for name in ("imageURLHighRes", "imageURL")]
    urls = _urls(*(listed[0] for listed in firsts if listed))
    return ItemRecord(title=_text(entry.get("title")), description=_text(entry.get("description")),
                      attributes={k: v for k, v in attributes.items() if v}), urls


def _content_2014(entry: dict) -> tuple[ItemRecord, list[str]]:
    categories = "; ".join(_text(path, " > ") for path in _listed(entry.get("categories")) if isinstance(path, list))
    attributes = {"brand": _text(entry.get("brand")), "categories": categories}
    urls = _urls(entry.get("imUrl"))
    return ItemRecord(title=_text(entry.get("title")), description=_text(entry.get("description")),
                      attributes={k: v for k, v in attributes.items() if v}), urls


def _review(line: bytes, required: list[str]) -> tuple[Optional[dict], Optional[str]]:
    """One reviews line as ``(entry, None)``, or ``(None, what is wrong with it)``; ``required`` names the user,
    item, time and rating fields."""
    user, item, time, rating = required
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError) as bad:
        return None, f"not valid JSON ({type(bad).__name__}: {bad})"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    for name in required:
        if entry.get(name) is None:
            return None, (f"missing required field {name!r}; every review line needs {', '.join(required)} (check "
                          f"that release matches the file)")
    for name in (user, item):
        if not isinstance(entry[name], str) or not entry[name].strip():
            return None, f"field {name!r} is not a non-empty string"
        try:
            entry[name].encode("utf-8")
        except UnicodeEncodeError:
            return None, f"field {name!r} holds a lone surrogate (a \\ud800-\\udfff escape), which is not text"
    if not in_int64(entry[time]):
        return None, f"field {time!r} is not an integer of at most 64 bits"
    value = entry[rating]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None, f"field {rating!r} is not a finite number"
    return entry, None


@dataclass(frozen=True)
class AmazonRelease:
    """How one release names its files and fields (the content is the same kind in all three)."""

    reviews_name: str
    meta_name: str
    user_field: str
    item_field: str
    time_field: str
    rating_field: str
    time_unit_per_second: int
    meta_item_field: str
    meta_is_python_literal: bool
    content: Callable[[dict], tuple[ItemRecord, list[str]]]


RELEASES = {
    2023: AmazonRelease("{category}.jsonl", "meta_{category}.jsonl", "user_id", "parent_asin", "timestamp",
                        "rating", 1000, "parent_asin", False, _content_2023),
    2018: AmazonRelease("{category}.json", "meta_{category}.json", "reviewerID", "asin", "unixReviewTime",
                        "overall", 1, "asin", False, _content_2018),
    2014: AmazonRelease("reviews_{category}.json", "meta_{category}.json", "reviewerID", "asin", "unixReviewTime",
                        "overall", 1, "asin", True, _content_2014),
}


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(path: Path, show_progress: bool) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, line)`` of the non-blank lines of a (gzipped) text file, streaming; a file that ends
    early or does not decompress is refused with the last line read."""
    number = 0
    try:
        with _open_binary(path) as handle:
            for number, line in enumerate(tqdm(handle, desc=f"reading {path.name}", unit=" lines", mininterval=1.0,
                                               disable=not show_progress), start=1):
                if line.strip():
                    yield number, line
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise unreadable(path, number, error) from None


class Amazon(InteractionSource):
    """One category of Amazon Reviews (2014, 2018 or 2023 release) from a local folder.

    Args:
        data_dir: folder holding the category's reviews file and (optionally) its metadata file.
        category: category name as in the file names, e.g. ``Clothing_Shoes_and_Jewelry``.
        release: Amazon Reviews release: 2014, 2018 or 2023; decides the default file names and the fields.
        reviews_file: reviews file inside data_dir when not the release's default ``<Category>.jsonl`` /
            ``<Category>.json`` / ``reviews_<Category>.json`` (``.gz`` is found on its own), e.g. the 5-core
            ``Clothing_Shoes_and_Jewelry_5.json.gz``.
        meta_file: metadata file inside data_dir when not the release's default ``meta_<Category>.json[l]``.
        image_dir: folder of ``<item id>.jpg`` images (``molar data fetch-images`` fills it), relative to
            data_dir unless absolute; null means the items have no images.
        show_progress: show progress bars while reading.
    """

    name = "amazon"

    def __init__(self, data_dir: str, category: str = "Clothing_Shoes_and_Jewelry",
                 release: Literal[2014, 2018, 2023] = 2023, reviews_file: Optional[str] = None,
                 meta_file: Optional[str] = None, image_dir: Optional[str] = "images",
                 show_progress: bool = True) -> None:
        if int(release) not in RELEASES:
            raise SettingError(f"unknown Amazon Reviews release {release!r}; choose one of {sorted(RELEASES)}")
        self.data_dir = Path(data_dir)
        self.category = category
        self.layout = RELEASES[int(release)]
        self.reviews_file = reviews_file
        self.meta_file = meta_file
        self.image_root = None if image_dir is None else os.path.abspath(self.data_dir / image_dir)
        self.show_progress = show_progress

    def _find(self, given: Optional[str], default: str) -> Path:
        if given is not None:
            return self.data_dir / given
        plain = self.data_dir / default.format(category=self.category)
        gzipped = plain.with_name(plain.name + ".gz")
        return gzipped if gzipped.is_file() and not plain.is_file() else plain

    @property
    def reviews_path(self) -> Path:
        return self._find(self.reviews_file, self.layout.reviews_name)

    @property
    def meta_path(self) -> Path:
        return self._find(self.meta_file, self.layout.meta_name)

    def raw_files(self) -> list[Path]:
        if not self.reviews_path.is_file():
            raise MissingInputError(
                f"no Amazon reviews file {self.reviews_path} (or .gz); point data_dir at the folder holding it, "
                f"set category/release to match its name, or name it with reviews_file"
            )
        return [self.reviews_path] + ([self.meta_path] if self.meta_path.is_file() else [])

    def read(self, bad_lines: Optional[BadLines] = None) -> RawInteractions:
        bad_lines = bad_lines or BadLines()
        self.raw_files()  # refuses a missing reviews file with the fix
        users, items, timestamps, ratings = self._read_reviews(self.reviews_path, bad_lines)
        user_raw_ids, item_raw_ids = pc.unique(users), pc.unique(items)
        item_raw_ids_list = item_raw_ids.to_pylist()
        records = {}
        if self.meta_path.is_file():
            records = {raw_id: record for raw_id, record, _ in self._read_meta(self.meta_path, set(item_raw_ids_list),
                                                                              bad_lines)}
        if self.image_root is not None:  # where fetch-images puts it, metadata or not
            for raw_id in item_raw_ids_list:
                records.setdefault(raw_id, ItemRecord()).image_path = os.path.join(self.image_root,
                                                                                   image_file_name(raw_id))
        return RawInteractions(
            user_codes=pc.index_in(users, value_set=user_raw_ids).to_numpy().astype(np.int64),
            item_codes=pc.index_in(items, value_set=item_raw_ids).to_numpy().astype(np.int64),
            timestamps=timestamps.to_numpy() // self.layout.time_unit_per_second,
            ratings=ratings.to_numpy().astype(np.float32),
            user_raw_ids=user_raw_ids.to_pylist(),
            item_raw_ids=item_raw_ids_list,
            items=records,
        )

    def image_urls(self) -> Iterator[tuple[str, list[str]]]:
        """``(item id, [url, fallback url])`` for every reviewed item whose metadata names an image."""
        if not self.meta_path.is_file():
            raise MissingInputError(f"no Amazon metadata file {self.meta_path}: it holds the image URLs; "
                                    f"name it with meta_file")
        _, items, _, _ = self._read_reviews(self.reviews_path, BadLines())
        for raw_id, _, urls in self._read_meta(self.meta_path, set(pc.unique(items).to_pylist()), BadLines()):
            if urls:
                yield raw_id, urls

    def _read_reviews(self, path: Path, bad_lines: BadLines) -> tuple[pa.ChunkedArray, ...]:
        """User ids, item ids, timestamps (source unit) and ratings, as Arrow columns."""
        layout = self.layout
        required = [layout.user_field, layout.item_field, layout.time_field, layout.rating_field]
        schema = pa.schema([(layout.user_field, pa.string()), (layout.item_field, pa.string()),
                            (layout.time_field, pa.int64()), (layout.rating_field, pa.float64())])
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        batches = []
        try:
            stream = pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)
            reader = pa_json.open_json(stream, read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES),
                                       parse_options=options)
            with tqdm(desc=f"reading {path.name}", unit=" reviews", unit_scale=True, mininterval=1.0,
                      disable=not self.show_progress) as progress:
                for batch in reader:
                    batches.append(batch)
                    progress.update(batch.num_rows)
            table = pa.Table.from_batches(batches, schema=schema)
            table.validate(full=True)  # the JSON parser lets bytes that are not UTF-8 into strings
        except (pa.ArrowInvalid, OSError) as error:
            return self._reviews_line_by_line(path, schema, bad_lines, error)
        if table.num_rows == 0:
            raise RawDataError(f"{path} holds no reviews")
        ids = [table.column(name) for name in required[:2]]
        if (any(table.column(name).null_count for name in required)
                or any(pc.any(pc.equal(pc.utf8_trim_whitespace(column), "")).as_py() for column in ids)
                or not pc.all(pc.is_finite(table.column(layout.rating_field))).as_py()):
            return self._reviews_line_by_line(path, schema, bad_lines, None)
        return tuple(table.column(name) for name in required)

    def _reviews_line_by_line(self, path: Path, schema: pa.Schema, bad_lines: BadLines,
                              error: Optional[Exception]) -> tuple[pa.ChunkedArray, ...]:
        """Read ``path`` again line by line where the fast reader could not take it whole: every bad line goes to
        ``bad_lines`` (under ``error`` the first one refuses the file), and the good ones come back as the fast
        reader gives them. A file in which no line is at fault cannot be parsed for another reason, and is
        refused under either policy."""
        values: list[list] = [[] for _ in schema.names]
        lines = 0
        for lines, (number, line) in enumerate(_lines(path, self.show_progress), start=1):
            entry, problem = _review(line, schema.names)
            if problem:
                bad_lines.report(path, number, line.decode("utf-8", "replace"), problem)
                continue
            for column, name in zip(values, schema.names):
                column.append(entry[name])
        if not lines:
            raise RawDataError(f"{path} holds no reviews")
        if not bad_lines.skipped_in(path):
            raise RawDataError(f"{path}: could not be parsed ({error}), though every line is a JSON object with "
                               f"{', '.join(schema.names)}; a line longer than {BLOCK_BYTES >> 20} MiB would do this")
        if not values[0]:
            raise RawDataError(f"{path} holds no reviews: all {lines:,} of its lines were bad and skipped")
        return tuple(pa.chunked_array([pa.array(column, field.type)]) for column, field in zip(values, schema))

    def _read_meta(self, path: Path, wanted: set[str],
                   bad_lines: BadLines) -> Iterator[tuple[str, ItemRecord, list[str]]]:
        """``(item id, record, image urls)`` for every metadata line of a wanted item.

        A line is parsed only when its id is wanted (found first by a plain substring search; a line written
        with other spacing is simply parsed), so lines of items nobody reviewed are never checked. An item
        listed twice is a bad line naming both line numbers unless the two lines are identical: real metadata
        files repeat some lines exactly, and those are skipped with one warning at the end.
        """
        layout, key = self.layout, self.layout.meta_item_field
        quote = "'" if layout.meta_is_python_literal else '"'
        marker = f"{quote}{key}{quote}: {quote}".encode()  # as json.dumps / repr write it
        first_seen = FirstSeen(path, key, bad_lines)
        for number, line in _lines(path, self.show_progress):
            start = line.find(marker)
            if start >= 0 and line.find(marker, start + 1) < 0:  # exactly one id-like field: read it unparsed
                start += len(marker)
                if line[start:line.find(quote.encode(), start)].decode("utf-8", "replace") not in wanted:
                    continue
            try:
                text = line.decode("utf-8")  # strict: json.loads(bytes) would let encoded surrogates through
            except UnicodeDecodeError as bad:
                bad_lines.report(path, number, line.decode("utf-8", "replace"), f"not UTF-8 ({bad.reason} at byte "
                                 f"{bad.start}); re-encode the file as UTF-8")
                continue
            try:
                entry = ast.literal_eval(text) if layout.meta_is_python_literal else json.loads(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as bad:
                kind = "a Python literal (the 2014 metadata format)" if layout.meta_is_python_literal else "valid JSON"
                bad_lines.report(path, number, text, f"not {kind} ({type(bad).__name__}: {bad})")
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get(key), str) or not entry[key].strip():
                bad_lines.report(path, number, text, f"missing required field {key!r} (the item id)")
                continue
            raw_id = entry[key]
            if raw_id not in wanted:
                continue
            try:
                record, urls = layout.content(entry)
            except RecursionError:
                bad_lines.report(path, number, text, "a field is nested too deeply to be read as text")
                continue
            if first_seen.repeats(raw_id, number, text):
                continue
            yield raw_id, record, urls
        if first_seen.identical:
            warnings.warn(f"{path}: skipped {first_seen.identical} metadata lines that repeat an earlier line "
                          f"exactly", stacklevel=2)
