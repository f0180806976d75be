"""The malformed-input classes that once ended in a library traceback or were taken silently (issue 12): each
is now refused naming the file and line, or accepted as docs/data.md says; killed preparations' staging
folders are removed by the next one; ``drop_item`` that empties the data set says so."""

import gzip
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.raw import RawDataError
from molar_lightning.data.sources.amazon import Amazon
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.data.sources.pixelrec import PixelRec

CATEGORY = "Clothing_Shoes_and_Jewelry"
Rewrite = Callable[[Path, Callable[[list[str]], list[str]]], None]


def amazon(folder: Path, release: int = 2023, **kwargs) -> Amazon:
    if release == 2018:
        kwargs.setdefault("reviews_file", f"{CATEGORY}_5.json.gz")
    return Amazon(str(folder / str(release)), release=release, show_progress=False, **kwargs)


def append(path: Path, text: str, encoding: str = "latin-1") -> None:
    with open(path, "a", encoding=encoding) as handle:
        handle.write(text)


def edit_json_line(rewrite: Rewrite, path: Path, index: int, **fields) -> None:
    """Set ``fields`` in line ``index`` (0-based) of a gzipped JSON-lines file; values are raw JSON text."""
    def edit(lines: list[str]) -> list[str]:
        entry = json.loads(lines[index])
        for key in fields:
            entry[key] = f"@{key}@"
        text = json.dumps(entry)
        for key, raw in fields.items():
            text = text.replace(json.dumps(f"@{key}@"), raw)
        return lines[:index] + [text] + lines[index + 1:]

    rewrite(path, edit)


# ---- gzip, encodings, nesting, field sizes -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["cut", "flipped", "not gzip"])
def test_a_cut_or_corrupt_gz_is_refused_naming_the_file(damage: str, amazon_dir: Path) -> None:
    meta = amazon_dir / "2023" / f"meta_{CATEGORY}.jsonl.gz"
    data = meta.read_bytes()
    if damage == "cut":
        data = data[:len(data) * 3 // 4]
    elif damage == "flipped":
        data = data[:-12] + bytes([data[-12] ^ 0xFF]) + data[-11:]
    else:
        data = gzip.decompress(data)
    meta.write_bytes(data)
    with pytest.raises(RawDataError, match=rf"{meta.name}: cannot be read past line \d+ .*download it again"):
        amazon(amazon_dir).read()


def test_a_cut_reviews_gz_is_refused(amazon_dir: Path) -> None:
    reviews = amazon_dir / "2018" / f"{CATEGORY}_5.json.gz"
    reviews.write_bytes(reviews.read_bytes()[:300])
    with pytest.raises(RawDataError, match=rf"{reviews.name}: cannot be read past line"):
        amazon(amazon_dir, 2018).read()


@pytest.mark.parametrize("file", ["interaction.csv", "item_info.csv"])
def test_a_pixelrec_csv_that_is_not_utf8_is_refused_naming_the_line(file: str, pixelrec_dir: Path) -> None:
    path = pixelrec_dir / file
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b",", b"\xe9,", 1)  # a latin-1 'é'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(RawDataError, match=rf"{file}:5: not UTF-8 .*re-encode the file as UTF-8"):
        PixelRec(str(pixelrec_dir), show_progress=False).read()


def test_a_control_character_in_a_pixelrec_timestamp_is_refused_naming_the_line(pixelrec_dir: Path) -> None:
    """Found by the 10,000-case fuzz run: regex white space took the separator \\x1e, which int() refuses."""
    path = pixelrec_dir / "interaction.csv"
    lines = path.read_text().split("\n")
    item, user, timestamp = lines[2].split(",")
    lines[2] = f"{item},{user},\x1e{timestamp}"
    path.write_text("\n".join(lines))
    with pytest.raises(RawDataError, match=r"interaction\.csv:3: "):
        PixelRec(str(pixelrec_dir), show_progress=False).read()


def test_a_csv_field_over_the_csv_limit_is_refused_naming_the_line(pixelrec_dir: Path) -> None:
    append(pixelrec_dir / "item_info.csv", "i1,1,1,1,1,1,1,1,t,x," + "d" * 200_000 + "\n", "utf-8")
    with pytest.raises(RawDataError, match=r"item_info\.csv:13: the row cannot be read as CSV \(field larger"):
        PixelRec(str(pixelrec_dir), show_progress=False).read()


@pytest.mark.parametrize("where", ["reviews", "metadata"])
def test_json_nested_100000_levels_is_refused_naming_the_line(where: str, amazon_dir: Path, rewrite_gz) -> None:
    name = f"{CATEGORY}.jsonl.gz" if where == "reviews" else f"meta_{CATEGORY}.jsonl.gz"
    rewrite_gz(amazon_dir / "2023" / name, lambda lines: lines[:2] + ['{"parent_asin": "B000000001", "x": '
                                                                      + "[" * 100_000] + lines[2:])
    with pytest.raises(RawDataError, match=rf"{name}:3: not valid JSON \(RecursionError"):
        amazon(amazon_dir).read()


def test_metadata_that_is_not_utf8_is_refused_and_a_surrogate_escape_is_stored(amazon_dir: Path, rewrite_gz,
                                                                               tmp_path: Path) -> None:
    meta = amazon_dir / "2023" / f"meta_{CATEGORY}.jsonl.gz"
    edit_json_line(rewrite_gz, meta, 0, title='"Caf\\ud800 Shirt"')  # valid JSON for a lone surrogate
    dataset = prepare_dataset(amazon(amazon_dir, image_dir=None), str(tmp_path / "cache"), PrepareParams())
    assert dict(zip(dataset.items["raw_id"], dataset.items["title"]))["B000000001"] == "Caf? Shirt"
    lines = gzip.decompress(meta.read_bytes()).split(b"\n")
    lines[1] = lines[1].replace(b"Trail", b"Tr\xed\xa0\x80ail")  # the surrogate itself, encoded: not UTF-8
    meta.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(RawDataError, match=rf"{meta.name}:2: not UTF-8"):
        amazon(amazon_dir).read()


# ---- numbers: int64, Unicode digits, NaN and infinities ------------------------------------------------------


@pytest.mark.parametrize("line, problem", [
    ("1::3::4::99999999999999999999\n", "timestamp is not an integer of at most 64 bits"),
    ("1::3::4::١٢٣\n", "timestamp is not an integer"),
    ("1::3::1e309::978301000\n", "rating is not a finite decimal number"),
    ("1::3::nan::978301000\n", "rating is not a finite decimal number"),
    ("::3::4::978301000\n", "empty UserID"),
    ("1:: ::4::978301000\n", "empty MovieID"),
], ids=["timestamp beyond int64", "Unicode-digit timestamp", "1e309 rating", "NaN rating", "empty user", "empty movie"])
def test_movielens_ratings_refuse_bad_numbers_and_empty_ids(line: str, problem: str, ml1m_dir: Path) -> None:
    append(ml1m_dir / "ratings.dat", line, "utf-8")
    with pytest.raises(RawDataError, match=rf"ratings\.dat:81: {problem}"):
        MovieLens(str(ml1m_dir), show_progress=False).read()


@pytest.mark.parametrize("movie_id", ["99999999999999999999", "١٢"], ids=["beyond int64", "Unicode digits"])
def test_ids_that_are_not_int64_numbers_are_ordered_as_text(movie_id: str, ml1m_dir: Path, tmp_path: Path) -> None:
    append(ml1m_dir / "ratings.dat", "".join(f"{user}::{movie_id}::4::97830{user:04d}\n" for user in (1, 2, 3)),
           "utf-8")
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    raw_ids = dataset.items["raw_id"]
    assert raw_ids == sorted(raw_ids) and movie_id in raw_ids and len(raw_ids) == 11  # as strings: "1", "10", ...


@pytest.mark.parametrize("field, value, problem", [
    ("rating", "NaN", "field 'rating' is not a finite number"),
    ("rating", "1e400", "field 'rating' is not a finite number"),
    ("timestamp", str(10 ** 20), "field 'timestamp' is not an integer of at most 64 bits"),
    ("user_id", '""', "field 'user_id' is not a non-empty string"),
    ("parent_asin", '"  "', "field 'parent_asin' is not a non-empty string"),
], ids=["NaN rating", "infinite rating", "timestamp beyond int64", "empty user", "blank item"])
def test_amazon_reviews_refuse_bad_numbers_and_empty_ids(field: str, value: str, problem: str, amazon_dir: Path,
                                                         rewrite_gz) -> None:
    edit_json_line(rewrite_gz, amazon_dir / "2023" / f"{CATEGORY}.jsonl.gz", 4, **{field: value})
    with pytest.raises(RawDataError, match=rf"{CATEGORY}\.jsonl\.gz:5: {problem}"):
        amazon(amazon_dir).read()


def test_an_empty_reviews_file_says_so(amazon_dir: Path) -> None:
    reviews = amazon_dir / "2023" / f"{CATEGORY}.jsonl.gz"
    reviews.write_bytes(gzip.compress(b""))
    with pytest.raises(RawDataError, match=rf"{reviews}: holds no reviews|{reviews} holds no reviews"):
        amazon(amazon_dir).read()


# ---- metadata of the wrong type, duplicates ------------------------------------------------------------------


def test_metadata_lists_of_the_wrong_type_list_nothing(amazon_dir: Path, rewrite_gz) -> None:
    edit_json_line(rewrite_gz, amazon_dir / "2023" / f"meta_{CATEGORY}.jsonl.gz", 0, images="5", categories="5")
    items = amazon(amazon_dir, image_dir=None).read().items
    assert items["B000000001"].attributes["categories"] == "5"  # a scalar is still text
    urls = dict(amazon(amazon_dir, image_dir=None).image_urls())
    assert "B000000001" not in urls and "B000000002" in urls  # images: 5 names no URL


def test_2014_categories_that_are_not_a_list_are_ignored(amazon_dir: Path) -> None:
    meta = amazon_dir / "2014" / f"meta_{CATEGORY}.json.gz"
    lines = gzip.decompress(meta.read_bytes()).decode().splitlines()
    lines[0] = lines[0].replace("'categories': [['Clothing, Shoes & Jewelry', 'Men', 'Clothing', 'Shirts'], "
                                "['Clothing, Shoes & Jewelry', 'Novelty']]", "'categories': 5")
    meta.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    items = amazon(amazon_dir, 2014, image_dir=None).read().items
    assert "categories" not in items["B000000001"].attributes and items["B000000001"].title == "Café Linen Shirt"


def write_item_text(folder: Path, *entries: dict) -> None:
    (folder / "item_text.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def test_item_text_numbers_are_text_and_other_types_are_refused(ml1m_dir: Path) -> None:
    write_item_text(ml1m_dir, {"movie_id": 1, "cast": ["Tom Hanks", 5], "director": 7})
    items = MovieLens(str(ml1m_dir), show_progress=False).read().items
    assert items["1"].attributes["cast"] == "Tom Hanks, 5" and items["1"].attributes["director"] == "7"
    write_item_text(ml1m_dir, {"movie_id": 1}, {"movie_id": 2, "cast": [{"name": "Tom Hanks"}]})
    with pytest.raises(RawDataError, match=r"item_text\.jsonl:2: cast: expected text or a list of texts"):
        MovieLens(str(ml1m_dir), show_progress=False).read()


def test_conflicting_movies_lines_are_refused_and_identical_ones_skipped(ml1m_dir: Path) -> None:
    movies = ml1m_dir / "movies.dat"
    first = movies.read_text(encoding="latin-1").splitlines()[0]
    append(movies, first + "\n")
    assert MovieLens(str(ml1m_dir), show_progress=False).read().items["1"].title == "Toy Story (1995)"
    append(movies, "1::Toy Story 2 (1999)::Comedy\n")
    with pytest.raises(RawDataError, match=r"movies\.dat:12: duplicate MovieID '1', first listed at line 1"):
        MovieLens(str(ml1m_dir), show_progress=False).read()


# ---- faults: staging folders; what drop_item did -------------------------------------------------------------


def dead_pid() -> int:
    """A process id that runs nothing now (a child that has exited)."""
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return child


def test_the_next_prepare_removes_what_a_killed_one_left(ml1m_dir: Path, tmp_path: Path) -> None:
    source, params, cache = MovieLens(str(ml1m_dir), show_progress=False), PrepareParams(), tmp_path / "cache"
    final = prepare_dataset(source, str(cache), params).path
    key = final.name
    assert list(cache.iterdir()) == [final]
    os.rename(final, tmp_path / "prepared")  # a cache miss from here on
    host = socket.gethostname()
    killed = cache / f".staging-{key}-{dead_pid()}@{host}-abc123"
    running = cache / f".staging-{key}-{os.getpid()}@{host}-def456"  # a live writer (this process)
    elsewhere = cache / f".staging-{key}-4242@another-host-ghi789"  # another machine's, recent
    abandoned = cache / f".staging-{key}-4242@another-host-jkl012"  # another machine's, two days old
    other_key = cache / f".staging-movielens-0000000000000000-{dead_pid()}@{host}-mno345"
    for folder in (killed, running, elsewhere, abandoned, other_key):
        (folder / "sequences").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(abandoned, (two_days_ago, two_days_ago))
    prepare_dataset(source, str(cache), params)
    left = {path.name for path in cache.iterdir()}
    assert killed.name not in left and abandoned.name not in left
    assert {running.name, elsewhere.name, other_key.name, key} <= left


def test_drop_item_that_empties_the_data_set_says_so(amazon_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "no-images").mkdir()
    source = amazon(amazon_dir, image_dir=str(tmp_path / "no-images"))
    with pytest.raises(RawDataError, match=r"image_policy 'drop_item' removed the 10 of 10 items without a usable "
                                           r"image \(10 missing, 0 corrupt\).*set image_policy to 'text_only'"):
        prepare_dataset(source, str(tmp_path / "cache"), PrepareParams(image_policy="drop_item"))
