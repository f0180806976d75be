"""What every raw-format reader hands to preparation: interactions as integer codes plus item metadata.

Readers factorise raw user and item ids into dense codes while they stream the files, so even a
multi-million-line dump is held as a few numpy arrays, never as millions of Python objects.
"""

import hashlib
import json
import math
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Iterator, Optional

import numpy as np

from molar_lightning.user_error import UserError


class RawDataError(UserError, ValueError):
    """A raw input file is malformed; the message names the file, the line and the fix."""


def line_error(path: Path, line_number: int, line: str, problem: str) -> RawDataError:
    """Build the error for one bad line, quoting the offending text (shortened)."""
    text = line.rstrip("\n")
    if len(text) > 200:
        text = text[:200] + "..."
    return RawDataError(f"{path}:{line_number}: {problem}: {text!r}")


INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
# ASCII white space only around the number: regex \s also takes separators (\x1c-\x1f) that int() refuses.
SPACE = r"[ \t\n\r\x0b\x0c]*"
INTEGER = re.compile(rf"{SPACE}[-+]?[0-9]+{SPACE}")
DECIMAL = re.compile(rf"{SPACE}[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?{SPACE}")


def json_lines(path: Path) -> Iterator[tuple[int, str, object]]:
    """``(line number, line, parsed value)`` of each non-blank line of a small JSON-lines file; a line that is
    not JSON is refused naming it."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise line_error(path, number, line, f"not valid JSON ({error.msg} at column {error.colno})") from None
        yield number, line, record


def parse_integer(text: str) -> Optional[int]:
    """``text`` as an int64, or None: ASCII digits only (``int()`` also takes ``"١٢"``, ``"1_0"``), in range."""
    if not INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if INT64_RANGE[0] <= value <= INT64_RANGE[1] else None


def parse_rating(text: str) -> Optional[float]:
    """``text`` as a finite decimal number, or None (``float()`` also takes ``"nan"``, ``"inf"``, ``"1e309"``)."""
    if not DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def in_int64(value: object) -> bool:
    """Whether a parsed JSON value is an integer (not a bool) that fits int64."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64_RANGE[0] <= value <= INT64_RANGE[1]


def first_non_utf8_line(path: Path) -> Optional[RawDataError]:
    """The error for the first line of ``path`` that is not UTF-8, or None when every line is."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return line_error(path, number, line.decode("utf-8", "replace"),
                                  f"not UTF-8 ({error.reason} at byte {error.start}); re-encode the file as UTF-8 "
                                  f"(e.g. iconv -f <its encoding> -t utf-8)")
    return None


class FirstSeen:
    """Where each id of a metadata file was first listed, so that a second listing is skipped when it repeats the
    first exactly (real dumps do this) and refused, naming both lines, when it says something else.

    Args:
        path: the file being read.
        field: the id's name in that format, for the message.
    """

    def __init__(self, path: Path, field: str) -> None:
        self.path, self.field = path, field
        self.first: dict[str, tuple[int, int]] = {}  # id -> (line number, hash of the content)
        self.identical = 0

    def repeats(self, raw_id: str, number: int, line: str, content: Hashable = None) -> bool:
        """Whether ``raw_id`` was listed before with the same ``content`` (default: the stripped line)."""
        digest = hash(line.strip() if content is None else content)
        if raw_id not in self.first:
            self.first[raw_id] = (number, digest)
            return False
        first_line, first_digest = self.first[raw_id]
        if first_digest != digest:
            raise line_error(self.path, number, line, f"duplicate {self.field} {raw_id!r}, first listed at line "
                             f"{first_line} with different content; keep one of the two lines")
        self.identical += 1
        return True


def unreadable(path: Path, last_line: int, error: BaseException) -> RawDataError:
    """The error for a file whose bytes end early or do not decompress (a cut or corrupt download)."""
    return RawDataError(f"{path}: cannot be read past line {last_line} ({type(error).__name__}: {error}); the file "
                        f"is cut short or corrupt: download it again (a file that is not gzip-compressed must not be "
                        f"named .gz)")


@dataclass
class ItemRecord:
    """The content side of one item, as the raw files give it.

    Attributes:
        title: the item's name.
        description: free text; empty when the source has none.
        attributes: structured key/value pairs (genres, brand, tags, ...), in display order.
        image_path: a local image file, when the source has one.
    """

    title: str = ""
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    image_path: Optional[str] = None


@dataclass
class RawInteractions:
    """Interactions as dense codes into the raw-id lists, plus metadata keyed by raw item id.

    Attributes:
        user_codes: ``[I]`` int64 index into ``user_raw_ids``.
        item_codes: ``[I]`` int64 index into ``item_raw_ids``.
        timestamps: ``[I]`` int64 seconds (or any monotone clock of the source).
        ratings: ``[I]`` float32 explicit ratings, or None for implicit data.
        user_raw_ids: raw user ids, position = code.
        item_raw_ids: raw item ids, position = code.
        items: metadata by raw item id; items without an entry get an empty record.
    """

    user_codes: np.ndarray
    item_codes: np.ndarray
    timestamps: np.ndarray
    ratings: Optional[np.ndarray]
    user_raw_ids: list[str]
    item_raw_ids: list[str]
    items: dict[str, ItemRecord]


class InteractionSource(ABC):
    """A raw data set on disk in one published layout."""

    name: str = "source"

    @abstractmethod
    def raw_files(self) -> list[Path]:
        """The files whose contents determine the prepared data set (used for the cache key)."""

    @abstractmethod
    def read(self) -> RawInteractions:
        """Stream the raw files into codes; raise :class:`RawDataError` naming file and line on bad input."""

    #: A folder of item images whose contents feed preparation (the image policy), or None.
    image_root: Optional[str] = None

    def fingerprint(self) -> str:
        """A digest of the raw files: name, size, modification time and the bytes at both ends, plus the
        image folder's modification time (adding or fetching images prepares anew).

        Hashing whole multi-gigabyte dumps on every run would cost minutes; an edit that keeps size, mtime
        and both ends of a file unchanged is the one change this misses.
        """
        digest = hashlib.sha256(self.name.encode())
        for path in sorted(self.raw_files()):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(1 << 20))
                if stat.st_size > 1 << 20:
                    handle.seek(-(1 << 20), 2)
                    digest.update(handle.read())
        if self.image_root is not None:
            stamp = os.stat(self.image_root).st_mtime_ns if os.path.isdir(self.image_root) else "absent"
            digest.update(f"{self.image_root}:{stamp}".encode())
        return digest.hexdigest()


class Codebook:
    """Assigns dense codes to raw ids in order of first appearance."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.raw_ids: list[str] = []

    def code(self, raw_id: str) -> int:
        """The code of ``raw_id``, assigning the next one on first sight."""
        code = self.codes.get(raw_id)
        if code is None:
            code = len(self.raw_ids)
            self.codes[raw_id] = code
            self.raw_ids.append(raw_id)
        return code
