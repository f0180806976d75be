"""MovieLens in its two published layouts (GroupLens; Harper and Konstan, ACM TiiS 2015).

* ML-1M layout: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genre|Genre``), latin-1 in the original release.
* ML-100K layout: ``u.data`` (tab separated ``user item rating timestamp``) and ``u.item``
  (``|`` separated, 19 genre flags), latin-1.

Optional multimodal extras in the same folder are picked up when present: ``posters/<MovieID>.jpg`` and
``item_text.jsonl`` (one JSON object per movie with ``movie_id``, ``description``, ``director``, ``cast``...).
"""

import hashlib
import json
import os
import shutil
from array import array
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm.auto import tqdm

from molar_lightning.data.download import DownloadError, download, extract_zip
from molar_lightning.data.raw import (
    BadLines,
    Codebook,
    FirstSeen,
    InteractionSource,
    ItemRecord,
    RawDataError,
    RawInteractions,
    parse_integer,
    parse_rating,
)
from molar_lightning.data.staging import make_staging, remove_abandoned_staging
from molar_lightning.user_error import MissingInputError, UserError

DOWNLOAD_URLS = {
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
}
# GroupLens publishes an MD5 digest beside each archive (<url>.md5) and no SHA-256; we could not fetch the
# archives to compute one. MD5 still resists forging a file for a given digest; switch to ("sha256", ...)
# once the digest is known.
ARCHIVE_DIGESTS = {
    "ml-1m": ("md5", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-100k": ("md5", "0e33842e24a9c977be4e0107933c0723"),
}
DOWNLOAD_TIMEOUT = 600.0  # seconds for one archive in all (ml-1m.zip is 6 MB)
DOWNLOAD_MAX_BYTES = 64 * 2**20  # each archive is under 6 MB and unpacks to under 30 MB
LAYOUT_FILES = ("ratings.dat", "u.data")  # what marks a folder as MovieLens: moved into place last

# The IMDb scrape behind item_text.jsonl writes these where it found nothing.
MISSING_TEXT = ("nan", "It looks like we don't have any Plot Summaries")

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def read_text_lines(path: Path, show_progress: bool = True) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` from a UTF-8 file, falling back to latin-1 (GroupLens' encoding)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    for number, line in enumerate(tqdm(lines, desc=f"reading {path.name}", unit=" lines", disable=not show_progress,
                                       mininterval=1.0), start=1):
        if line.strip():
            yield number, line


class MovieLens(InteractionSource):
    """MovieLens ratings and movies from a local folder in the ML-1M or ML-100K layout.

    Args:
        data_dir: folder holding ``ratings.dat`` + ``movies.dat`` (ML-1M layout) or ``u.data`` + ``u.item``.
        download: fetch the GroupLens archive named by ``variant`` into ``data_dir`` when its files are missing.
        variant: which archive ``download`` fetches: ``ml-1m`` or ``ml-100k``.
        show_progress: show progress bars while reading.
    """

    name = "movielens"

    def __init__(self, data_dir: str, download: bool = False, variant: str = "ml-1m",
                 show_progress: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.show_progress = show_progress
        self.image_root = str((self.data_dir / "posters").resolve())
        if download and not self._layout_files():
            download_movielens(variant, self.data_dir)

    def _layout_files(self) -> Optional[tuple[Path, Path, str]]:
        for ratings, movies, separator in (("ratings.dat", "movies.dat", "::"), ("u.data", "u.item", "\t")):
            if (self.data_dir / ratings).is_file():
                return self.data_dir / ratings, self.data_dir / movies, separator
        return None

    def _require_layout(self) -> tuple[Path, Path, str]:
        layout = self._layout_files()
        if layout is None:
            raise MissingInputError(
                f"{self.data_dir} holds neither ratings.dat (ML-1M layout) nor u.data (ML-100K layout); "
                f"point data_dir at an extracted MovieLens folder or pass download=True"
            )
        return layout

    def raw_files(self) -> list[Path]:
        ratings, movies, _ = self._require_layout()
        extras = [self.data_dir / "item_text.jsonl"]
        return [ratings] + [path for path in [movies, *extras] if path.is_file()]

    def read(self, bad_lines: Optional[BadLines] = None) -> RawInteractions:
        bad_lines = bad_lines or BadLines()
        ratings_path, movies_path, separator = self._require_layout()
        users, items = Codebook(), Codebook()
        user_codes, item_codes, timestamps = array("q"), array("q"), array("q")
        ratings = array("f")
        for number, line in read_text_lines(ratings_path, self.show_progress):
            fields = line.split(separator)
            if len(fields) != 4:
                bad_lines.report(ratings_path, number, line, f"expected 4 fields UserID{separator}MovieID"
                                 f"{separator}Rating{separator}Timestamp")
                continue
            user, item = fields[0].strip(), fields[1].strip()
            if not user or not item:
                bad_lines.report(ratings_path, number, line, f"empty {'UserID' if not user else 'MovieID'}")
                continue
            rating, timestamp = parse_rating(fields[2]), parse_integer(fields[3])
            if rating is None:
                bad_lines.report(ratings_path, number, line, "rating is not a finite decimal number")
                continue
            if timestamp is None:
                bad_lines.report(ratings_path, number, line, "timestamp is not an integer of at most 64 bits "
                                 "(Unix seconds, ASCII digits)")
                continue
            user_codes.append(users.code(user))
            item_codes.append(items.code(item))
            ratings.append(rating)
            timestamps.append(timestamp)
        if not user_codes:
            skipped = bad_lines.skipped_in(ratings_path)
            raise RawDataError(f"{ratings_path} holds no ratings"
                               + (f": all {skipped:,} of its lines were bad and skipped" if skipped else ""))
        records = self._read_movies(movies_path, bad_lines) if movies_path.is_file() else {}
        self._add_extras(records, bad_lines)
        return RawInteractions(
            user_codes=np.frombuffer(user_codes, dtype=np.int64),
            item_codes=np.frombuffer(item_codes, dtype=np.int64),
            timestamps=np.frombuffer(timestamps, dtype=np.int64),
            ratings=np.frombuffer(ratings, dtype=np.float32),
            user_raw_ids=users.raw_ids,
            item_raw_ids=items.raw_ids,
            items=records,
        )

    def _read_movies(self, path: Path, bad_lines: BadLines) -> dict[str, ItemRecord]:
        """Title and genres by movie id; a movie listed twice with different content is a bad line."""
        records: dict[str, ItemRecord] = {}
        first_seen = FirstSeen(path, "MovieID", bad_lines)
        for number, line in read_text_lines(path, show_progress=False):
            if path.name == "u.item":
                fields = line.split("|")
                if len(fields) != 5 + len(ML100K_GENRES):
                    bad_lines.report(path, number, line, f"expected {5 + len(ML100K_GENRES)} '|'-separated fields")
                    continue
                genres = [name for name, flag in zip(ML100K_GENRES, fields[5:]) if flag.strip() == "1"]
            else:
                fields = line.split("::")
                if len(fields) != 3:
                    bad_lines.report(path, number, line, "expected 3 fields MovieID::Title::Genres")
                    continue
                genres = [genre for genre in fields[2].split("|") if genre]
            movie_id = fields[0].strip()
            if not movie_id:
                bad_lines.report(path, number, line, "empty MovieID")
                continue
            if first_seen.repeats(movie_id, number, line):
                continue
            records[movie_id] = ItemRecord(title=fields[1].strip(), attributes={"genres": ", ".join(genres)})
        return records

    def _add_extras(self, records: dict[str, ItemRecord], bad_lines: BadLines) -> None:
        """Attach posters and scraped plot text when the folder has them."""
        posters = Path(self.image_root)
        if posters.is_dir():
            for movie_id, record in records.items():
                poster = posters / f"{movie_id}.jpg"
                if poster.is_file():
                    record.image_path = str(poster.resolve())
        text_path = self.data_dir / "item_text.jsonl"
        if not text_path.is_file():
            return
        first_seen = FirstSeen(text_path, "movie_id", bad_lines)
        for number, line in read_text_lines(text_path, show_progress=False):
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError) as error:
                bad_lines.report(text_path, number, line, f"not valid JSON ({type(error).__name__})")
                continue
            movie_id = entry.get("movie_id") if isinstance(entry, dict) else None
            if isinstance(movie_id, bool) or not isinstance(movie_id, (int, str)) or not str(movie_id).strip():
                bad_lines.report(text_path, number, line, "not a JSON object with a movie_id (a number or a string)")
                continue
            fields = {key: _text_field(entry.get(key)) for key in ("title", "description", "director", "cast")}
            wrong = [key for key, value in fields.items() if value is None]
            if wrong:
                bad_lines.report(text_path, number, line, f"{', '.join(wrong)}: expected text or a list of texts")
                continue
            if first_seen.repeats(str(movie_id).strip(), number, line):
                continue
            movie_id = str(movie_id).strip()
            record = records.setdefault(movie_id, ItemRecord(title=fields["title"]))
            record.description = fields["description"]
            for key in ("director", "cast"):
                if fields[key]:
                    record.attributes[key] = fields[key]


def _text_field(value: object) -> Optional[str]:
    """An ``item_text.jsonl`` field as text: a string or number, or a list of them joined with ", "; None (the
    field is refused) for anything else, "" for null or a scrape placeholder."""
    if isinstance(value, list):
        parts = [_text_field(part) for part in value if not isinstance(part, list)]
        if len(parts) < len(value) or None in parts:
            return None
        return ", ".join(part for part in parts if part)
    if value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return _present(value)
    return None


def _present(value: object) -> str:
    """The text, or "" where the scrape left a placeholder."""
    text = "" if value is None else str(value).strip()
    return "" if any(text.startswith(marker) for marker in MISSING_TEXT) else text


def download_movielens(variant: str, data_dir: Path, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download a GroupLens MovieLens archive, check its published digest and unpack it into ``data_dir``.

    The archive and its files go to a staging folder inside ``data_dir`` first and are moved into place one
    by one, the ratings file last, so a killed download never leaves a folder that reads as MovieLens (and the
    next download removes the staging folder a killed one left, :mod:`~molar_lightning.data.staging`). A
    wrong digest, a member that would land outside the folder (zip-slip), a body over the cap or a download
    slower than ``timeout`` seconds refuses the archive before any file is moved.
    """
    if variant not in DOWNLOAD_URLS:
        raise UserError(f"unknown MovieLens variant {variant!r}; choose one of {sorted(DOWNLOAD_URLS)}")
    url, (algorithm, expected) = DOWNLOAD_URLS[variant], ARCHIVE_DIGESTS[variant]
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(data_dir, "download")
    staging = make_staging(data_dir, "download")
    try:
        archive = staging / f"{variant}.zip"
        try:
            download(url, archive, timeout, DOWNLOAD_MAX_BYTES)
            digest = _file_digest(archive, algorithm)
            if digest != expected:
                raise DownloadError(f"its {algorithm} is {digest}, not the {expected} GroupLens publishes", True)
            files = extract_zip(archive, staging / "unpacked", max_bytes=8 * DOWNLOAD_MAX_BYTES)
        except DownloadError as error:
            raise UserError(f"could not download MovieLens {variant} from {url}: {error.reason}; run again, or "
                            f"download and unzip it into {data_dir} yourself") from None
        for path in sorted(files, key=lambda path: path.name in LAYOUT_FILES):
            os.replace(path, data_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()
