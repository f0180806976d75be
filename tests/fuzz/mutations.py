"""Seeded malformed variants of the real raw fixtures, one generator per reader, without a fuzzing library.

A case is ``(format, index)``: ``random.Random(f"{format}:{index}")`` picks one of the format's files and one
mutation, so every case can be rerun on its own (``MOLAR_FUZZ_CASE=amazon2023:417``). Mutations work on the
decompressed text (truncation, byte flips, bytes that are not UTF-8, lines dropped, repeated or repeated with
one field changed, a field replaced by a hostile value: empty, huge or Unicode-digit numbers, NaN and
infinities, values of the wrong JSON type, 100,000 levels of nesting, fields of 200,000 characters) and, for
``.gz`` files, on the compressed bytes too (cut short, flipped, trailing garbage, not gzip at all).
"""

import ast
import gzip
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from molar_lightning.data.raw import InteractionSource
from molar_lightning.data.sources.amazon import Amazon
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.data.sources.pixelrec import PixelRec

FIXTURES = Path(__file__).parents[1] / "fixtures"
NESTING = 100_000
GIANT = 200_000

# Hostile scalars for delimited files (as text) and for JSON fields (as JSON values; huge ones as raw text).
TEXT_VALUES = ["", " ", "NaN", "nan", "inf", "-inf", "1e309", "-1", "0", "99999999999999999999999", "١٢٣", "１２",
               "1_000", "0x10", "12.5", "true", "null", "a\tb", "a::b", "a|b", '"', "\x00", "x" * GIANT, "\u202e",
               "../../etc", "-9223372036854775809", "9223372036854775807"]
JSON_RAW_VALUES = ["5", '"5"', "-1", "1e400", "-1e400", "NaN", "Infinity", "null", "true", "[]", "{}", "[5]",
                   '{"a": 5}', '""', '" "', str(10 ** 30), '"١٢"', "[" * NESTING + "]" * NESTING,
                   '"' + "y" * GIANT + '"', '"a\\ud800b"', "[[5]]", '[{"hi_res": 5}]', '["a", 5, null]',
                   '{"Brand:": [1]}']
PYTHON_RAW_VALUES = ["5", "'5'", "-1", "1e400", "None", "True", "[]", "{}", "[5]", "{'a': 5}", "''", str(10 ** 30),
                     "'١٢'", "(" * NESTING + ")" * NESTING, "'" + "y" * GIANT + "'", "[[5]]", "['a', 5, None]",
                     "float('nan')", "{1, 2}", "b'bytes'"]


@dataclass(frozen=True)
class Format:
    """One reader: the fixture folder it starts from, the files to mutate and how to build the source."""

    fixture: Path
    files: tuple[str, ...]
    kind: dict[str, str]  # file -> "delimited:<sep>" | "json" | "python" | "csv"
    source: Callable[[Path], InteractionSource]


def _movielens_text(folder: Path) -> None:
    """The optional ``item_text.jsonl`` beside the ML-1M fixture (the fixture itself has none)."""
    lines = []
    for line in (folder / "movies.dat").read_text(encoding="latin-1").splitlines():
        movie_id, title, _ = line.split("::")
        lines.append(json.dumps({"movie_id": int(movie_id), "title": title, "description": f"About {title}.",
                                 "director": [f"Director {movie_id}"], "cast": ["Actor A", "Actor B"]}))
    (folder / "item_text.jsonl").write_text("\n".join(lines) + "\n")


FORMATS = {
    "movielens": Format(FIXTURES / "movielens" / "ml-1m", ("ratings.dat", "movies.dat", "item_text.jsonl"),
                        {"ratings.dat": "delimited:::", "movies.dat": "delimited:::", "item_text.jsonl": "json"},
                        lambda folder: MovieLens(str(folder), show_progress=False)),
    "movielens100k": Format(FIXTURES / "movielens" / "ml-100k", ("u.data", "u.item"),
                            {"u.data": "delimited:\t", "u.item": "delimited:|"},
                            lambda folder: MovieLens(str(folder), show_progress=False)),
    **{f"amazon{release}": Format(FIXTURES / "amazon" / str(release), (reviews, meta),
                                  {reviews: "json", meta: "python" if release == 2014 else "json"},
                                  lambda folder, release=release, reviews=reviews: Amazon(
                                      str(folder), release=release, reviews_file=reviews, image_dir=None,
                                      show_progress=False))
       for release, reviews, meta in (
           (2014, "reviews_Clothing_Shoes_and_Jewelry.json.gz", "meta_Clothing_Shoes_and_Jewelry.json.gz"),
           (2018, "Clothing_Shoes_and_Jewelry_5.json.gz", "meta_Clothing_Shoes_and_Jewelry.json.gz"),
           (2023, "Clothing_Shoes_and_Jewelry.jsonl.gz", "meta_Clothing_Shoes_and_Jewelry.jsonl.gz"))},
    "pixelrec": Format(FIXTURES / "pixelrec", ("interaction.csv", "item_info.csv"),
                       {"interaction.csv": "csv", "item_info.csv": "csv"},
                       lambda folder: PixelRec(str(folder), image_dir=None, show_progress=False)),
}


def base_folder(name: str, into: Path) -> Path:
    """A fresh copy of the format's fixture (with its extras) at ``into``."""
    folder = Path(shutil.copytree(FORMATS[name].fixture, into, ignore=shutil.ignore_patterns("*.py", "images",
                                                                                            "cover")))
    if name == "movielens":
        _movielens_text(folder)
    return folder


# ---- mutations of the decompressed bytes -------------------------------------------------------------------


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _separator(kind: str) -> str:
    return kind.split(":", 1)[1] if kind.startswith("delimited:") else ","


def truncate(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    cut = rng.randrange(len(data) + 1)
    return data[:cut], f"truncated at byte {cut}"


def flip_bytes(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if buffer:
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
    return bytes(buffer), "bytes flipped"


def not_utf8(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    at = rng.randrange(len(data) + 1)
    junk = rng.choice([b"\xff\xfe", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\x80\x80\x80"])
    return data[:at] + junk + data[at:], f"{junk!r} inserted at byte {at}"


def drop_line(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    return b"\n".join(lines[:index] + lines[index + 1:]), f"line {index + 1} dropped"


def repeat_line(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    return b"\n".join(lines[:index + 1] + lines[index:]), f"line {index + 1} repeated"


def empty_file(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    return rng.choice([b"", b"\n", b"\n\n  \n"]), "emptied"


def deep_line(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    lines[index] = (b"[" if kind != "python" else b"(") * NESTING
    return b"\n".join(lines), f"line {index + 1} nested {NESTING} deep"


def byte_order_mark_and_crlf(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"), "BOM and CRLF line ends"


def _replace_field(rng: random.Random, line: bytes, kind: str) -> tuple[bytes, str]:
    """``line`` with one field set to a hostile value, and what was done."""
    text = line.decode("utf-8", "replace") if kind != "delimited:::" else line.decode("latin-1")
    if kind in ("json", "python"):
        entry = json.loads(text) if kind == "json" else ast.literal_eval(text)
        key = rng.choice(list(entry))
        raw = rng.choice(JSON_RAW_VALUES if kind == "json" else PYTHON_RAW_VALUES)
        marker = "__HOSTILE__"
        entry[key] = marker
        dumped = json.dumps(entry) if kind == "json" else repr(entry)
        quoted = json.dumps(marker) if kind == "json" else repr(marker)
        return dumped.replace(quoted, raw).encode(), f"{key} = {raw[:40]!r}"
    separator = _separator(kind)
    fields = text.split(separator)
    index = rng.randrange(len(fields))
    value = rng.choice(TEXT_VALUES)
    fields[index] = value
    encoding = "latin-1" if kind == "delimited:::" and value.isascii() else "utf-8"
    return separator.join(fields).encode(encoding), f"field {index} = {value[:40]!r}"


def hostile_field(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    lines = _lines(data)
    candidates = [i for i, line in enumerate(lines) if line.strip() and not (kind == "csv" and i == 0)]
    if kind == "csv" and rng.random() < 0.15:
        candidates = [0]  # the header
    index = rng.choice(candidates)
    lines[index], what = _replace_field(rng, lines[index], kind)
    return b"\n".join(lines), f"line {index + 1}: {what}"


def conflicting_duplicate(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    lines = _lines(data)
    candidates = [i for i, line in enumerate(lines) if line.strip() and not (kind == "csv" and i == 0)]
    index = rng.choice(candidates)
    changed, what = _replace_field(rng, lines[index], kind)
    return b"\n".join(lines + [changed]), f"line {index + 1} repeated at the end with {what}"


def extra_separator(rng: random.Random, data: bytes, kind: str) -> tuple[bytes, str]:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    separator = _separator(kind).encode()
    cut = rng.randrange(len(lines[index]) + 1)
    lines[index] = lines[index][:cut] + separator + lines[index][cut:]
    return b"\n".join(lines), f"separator inserted in line {index + 1}"


TEXT_MUTATIONS = [truncate, flip_bytes, not_utf8, drop_line, repeat_line, empty_file, deep_line,
                  byte_order_mark_and_crlf, hostile_field, hostile_field, hostile_field, conflicting_duplicate,
                  conflicting_duplicate, extra_separator]

# ---- mutations of the compressed bytes ---------------------------------------------------------------------


def gz_cut(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    cut = rng.randrange(len(data))
    return data[:cut], f"gzip cut at byte {cut} of {len(data)}"


def gz_flip(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    buffer = bytearray(data)
    at = rng.randrange(len(buffer))
    buffer[at] ^= 1 << rng.randrange(8)
    return bytes(buffer), f"gzip bit flipped at byte {at}"


def gz_trailing(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    return data + rng.choice([b"\x00" * 10, b"garbage", b"\x1f\x8b\x08"]), "bytes after the gzip stream"


def gz_plain(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    return gzip.decompress(data), "not gzip-compressed at all"


GZ_MUTATIONS = [gz_cut, gz_flip, gz_trailing, gz_plain]


def mutate(name: str, index: int, folder: Path) -> str:
    """Apply case ``index`` of format ``name`` to the copy at ``folder``; return what was done."""
    rng = random.Random(f"{name}:{index}")
    form = FORMATS[name]
    file = rng.choice(form.files)
    path = folder / file
    compressed = path.suffix == ".gz"
    if compressed and rng.random() < 0.25:
        data, what = rng.choice(GZ_MUTATIONS)(rng, path.read_bytes())
        path.write_bytes(data)
        return f"{file}: {what}"
    raw = gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()
    data, what = rng.choice(TEXT_MUTATIONS)(rng, raw, form.kind[file])
    path.write_bytes(gzip.compress(data, mtime=0) if compressed else data)
    return f"{file}: {what}"
