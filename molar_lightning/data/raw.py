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
from typing import Hashable, Iterator, Literal, Optional

import numpy as np

from molar_lightning.user_error import UserError


class RawDataError(UserError, ValueError):
    """A raw input file is malformed; the message names the file, the line and the fix."""


def line_error(path: Path, line_number: int, line: Optional[str], problem: str) -> RawDataError:
    """Build the error for one bad line, quoting the offending text (shortened) unless it is None."""
    if line is None:
        return RawDataError(f"{path}:{line_number}: {problem}")
    text = line.rstrip("\n")
    if len(text) > 200:
        text = text[:200] + "..."
    return RawDataError(f"{path}:{line_number}: {problem}: {text!r}")


OnBadLine = Literal["error", "skip"]
ON_BAD_LINE = ("error", "skip")


class BadLines:
    """What the readers do with a line they cannot use, and the count of those they left out.

    Under ``error`` (the default) the first bad line refuses the data set, naming the file and the line; under
    ``skip`` each bad line is left out and counted, so preparation can report how many, in which files, and
    the first few with their reasons. Only a line's own fault is skippable: a file that cannot be read at all
    (cut short, not gzip, the wrong header) is refused under either policy.

    Args:
        policy: ``error`` or ``skip`` (:class:`~molar_lightning.data.prepare.PrepareParams` checks it).
    """

    EXAMPLES = 5  # bad lines quoted in the report

    def __init__(self, policy: OnBadLine = "error") -> None:
        self.policy = policy
        self.by_file: dict[str, int] = {}
        self.examples: list[str] = []

    @property
    def skipped(self) -> int:
        return sum(self.by_file.values())

    def skipped_in(self, path: Path) -> int:
        return self.by_file.get(str(path), 0)

    def report(self, path: Path, line_number: int, line: Optional[str], problem: str) -> None:
        """Raise the error naming the line under ``error``; under ``skip`` count it and return, and the reader
        goes on without the line."""
        error = line_error(path, line_number, line, problem)
        if self.policy == "error":
            raise error
        self.by_file[str(path)] = self.by_file.get(str(path), 0) + 1
        if len(self.examples) < self.EXAMPLES:
            self.examples.append(str(error))

    def summary(self) -> dict:
        """What ``meta.json`` records: the policy, the count, the count per file and the first few lines."""
        return {"policy": self.policy, "skipped": self.skipped, "by_file": self.by_file, "examples": self.examples}


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


def not_utf8(error: UnicodeDecodeError) -> str:
    """What is wrong with a line that is not UTF-8, and the fix."""
    return (f"not UTF-8 ({error.reason} at byte {error.start}); re-encode the file as UTF-8 (e.g. iconv -f <its "
            f"encoding> -t utf-8)")


class FirstSeen:
    """Where each id of a metadata file was first listed, so that a second listing is skipped when it repeats the
    first exactly (real dumps do this) and is a bad line, naming both lines, when it says something else.

    Args:
        path: the file being read.
        field: the id's name in that format, for the message.
        bad_lines: what a conflicting second listing is: refused, or skipped (the first listing is kept).
    """

    def __init__(self, path: Path, field: str, bad_lines: BadLines) -> None:
        self.path, self.field, self.bad_lines = path, field, bad_lines
        self.first: dict[str, tuple[int, int]] = {}  # id -> (line number, hash of the content)
        self.identical = 0

    def repeats(self, raw_id: str, number: int, line: str, content: Hashable = None) -> bool:
        """Whether ``raw_id`` was listed before, so that this line is to be skipped: with the same ``content``
        (default: the stripped line), or with other content under ``on_bad_line: skip``."""
        digest = hash(line.strip() if content is None else content)
        if raw_id not in self.first:
            self.first[raw_id] = (number, digest)
            return False
        first_line, first_digest = self.first[raw_id]
        if first_digest != digest:
            self.bad_lines.report(self.path, number, line, f"duplicate {self.field} {raw_id!r}, first listed at "
                                  f"line {first_line} with different content; keep one of the two lines")
        else:
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
    def read(self, bad_lines: Optional[BadLines] = None) -> RawInteractions:
        """Stream the raw files into codes; give each bad line to ``bad_lines`` (default: refuse it, raising
        :class:`RawDataError` naming file and line)."""

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
