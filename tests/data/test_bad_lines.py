"""``on_bad_line`` (issue 12): under ``error`` the first malformed raw line refuses the data set naming file and
line; under ``skip`` the data set is what the file without those lines gives, and the skipped lines are counted
in ``meta.json``, the statistics table and ``molar prepare``'s output. The policy is part of the cache key."""

import gzip
import json
from pathlib import Path
from typing import Callable

import pytest

from molar_lightning.commands import main
from molar_lightning.data.prepare import CanonicalDataset, PrepareParams, cache_key, prepare_dataset
from molar_lightning.data.raw import InteractionSource, RawDataError
from molar_lightning.data.sources.amazon import Amazon
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.data.sources.pixelrec import PixelRec
from molar_lightning.user_error import SettingError

CATEGORY = "Clothing_Shoes_and_Jewelry"


def read_lines(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.rstrip(b"\n").split(b"\n")


def write_lines(path: Path, lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def insert_bad_lines(path: Path, bad: dict[int, bytes]) -> list[bytes]:
    """Put ``bad[n]`` at line ``n`` (1-based, in increasing order) of ``path``; return the file's lines before."""
    clean = read_lines(path)
    lines = list(clean)
    for number, line in sorted(bad.items()):
        lines.insert(number - 1, line)
    write_lines(path, lines)
    return clean


class Case:
    """A raw format, the file that gets three bad lines, and the lines (one per kind of fault)."""

    def __init__(self, name: str, folder: str, file: str, source: Callable[[Path], InteractionSource],
                 bad: dict[int, bytes]) -> None:
        self.name, self.folder, self.file, self.source, self.bad = name, folder, file, source, bad


CASES = [
    Case("movielens", "ml1m", "ratings.dat", lambda folder: MovieLens(str(folder), show_progress=False),
         {3: b"1::3::five::978301000", 10: b"::3::4::978301000", 40: b"1::3::4"}),
    Case("amazon", "amazon2023", f"{CATEGORY}.jsonl.gz",
         lambda folder: Amazon(str(folder), image_dir=None, show_progress=False),
         {2: b'{"user_id": "A1", "parent_asin": "B000000001", "rating": NaN, "timestamp": 1}',
          6: b"{not json", 9: b'{"user_id": "", "parent_asin": "B000000001", "rating": 5, "timestamp": 1}'}),
    Case("pixelrec", "pixelrec", "interaction.csv",
         lambda folder: PixelRec(str(folder), image_dir=None, show_progress=False),
         {4: b"i1,u1,soon", 7: "i1,u1,1\xe9".encode("latin-1"), 20: b"i1,,1600000000"}),
]


@pytest.fixture
def raw_folder(request, ml1m_dir: Path, amazon_dir: Path, pixelrec_dir: Path) -> Path:
    return {"ml1m": ml1m_dir, "amazon2023": amazon_dir / "2023", "pixelrec": pixelrec_dir}[request.param]


def sequences_of(dataset: CanonicalDataset) -> dict[str, list]:
    """What a prepared data set holds, by raw id (independent of the cache folder)."""
    items = dict(zip(dataset.items["item_id"], dataset.items["raw_id"]))
    return {user: ([items[item] for item in sequence], times) for user, sequence, times in
            zip(dataset.sequences["raw_user_id"], dataset.sequences["item_ids"], dataset.sequences["timestamps"])}


@pytest.mark.parametrize("case, raw_folder", [(case, case.folder) for case in CASES], indirect=["raw_folder"],
                         ids=[case.name for case in CASES])
def test_three_bad_lines_are_refused_under_error_and_left_out_under_skip(case: Case, raw_folder: Path,
                                                                          tmp_path: Path) -> None:
    path = raw_folder / case.file
    clean = insert_bad_lines(path, case.bad)
    first = min(case.bad)
    with pytest.raises(RawDataError, match=rf"^{path}:{first}: "):
        prepare_dataset(case.source(raw_folder), str(tmp_path / "error"), PrepareParams())
    assert not any((tmp_path / "error").iterdir())

    with pytest.warns(UserWarning, match=rf"left out 3 bad raw lines \(3 in {path}\)"):
        skipped = prepare_dataset(case.source(raw_folder), str(tmp_path / "skip"), PrepareParams(on_bad_line="skip"))
    report = skipped.meta["bad_lines"]
    assert report["policy"] == "skip" and report["skipped"] == 3 and report["by_file"] == {str(path): 3}
    assert [example.split(": ")[0] for example in report["examples"]] == [f"{path}:{number}" for number in case.bad]
    assert dict(skipped.statistics_rows())["bad raw lines skipped (on_bad_line: skip)"] == "3"

    write_lines(path, clean)  # the same file without the bad lines, under the default policy
    expected = prepare_dataset(case.source(raw_folder), str(tmp_path / "clean"), PrepareParams())
    assert sequences_of(skipped) == sequences_of(expected)
    assert skipped.meta["statistics"] == expected.meta["statistics"]
    assert expected.meta["bad_lines"] == {"policy": "error", "skipped": 0, "by_file": {}, "examples": []}


def test_metadata_bad_lines_are_skipped_and_a_conflicting_duplicate_keeps_the_first(ml1m_dir: Path,
                                                                                    tmp_path: Path) -> None:
    movies = ml1m_dir / "movies.dat"
    lines = read_lines(movies)
    write_lines(movies, lines[:2] + [b"no separators here"] + lines[2:] + [b"1::Toy Story 2 (1999)::Comedy"])
    (ml1m_dir / "item_text.jsonl").write_text('{"movie_id": 2, "description": "Jumanji."}\n{"movie_id": 3, "cast": '
                                              '[{"name": "A"}]}\n')
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path),
                              PrepareParams(on_bad_line="skip"))
    report = dataset.meta["bad_lines"]
    assert report["by_file"] == {str(movies): 2, str(ml1m_dir / "item_text.jsonl"): 1}
    assert report["examples"][0].startswith(f"{movies}:3: expected 3 fields")
    assert report["examples"][1].startswith(f"{movies}:12: duplicate MovieID '1', first listed at line 1")
    titles = dict(zip(dataset.items["raw_id"], dataset.items["title"]))
    assert titles["1"] == "Toy Story (1995)"  # the first listing
    descriptions = dict(zip(dataset.items["raw_id"], dataset.items["description"]))
    assert descriptions["2"] == "Jumanji." and descriptions["3"] == ""


def test_a_csv_field_over_the_limit_is_a_skippable_line(pixelrec_dir: Path, tmp_path: Path) -> None:
    info = pixelrec_dir / "item_info.csv"
    source = PixelRec(str(pixelrec_dir), image_dir=None, show_progress=False)
    clean = prepare_dataset(source, str(tmp_path), PrepareParams())
    insert_bad_lines(info, {3: b"i1,1,1,1,1,1,1,1,t,x," + b"d" * 200_000})
    with pytest.raises(RawDataError, match=r"item_info\.csv:3: the row cannot be read as CSV \(field larger"):
        PixelRec(str(pixelrec_dir), show_progress=False).read()
    dataset = prepare_dataset(source, str(tmp_path), PrepareParams(on_bad_line="skip"))
    assert dataset.meta["bad_lines"]["by_file"] == {str(info): 1}
    assert dataset.items.to_dict() == clean.items.to_dict()  # the rows after the long one are read too


def test_every_line_bad_is_refused_under_skip_too(ml1m_dir: Path, tmp_path: Path) -> None:
    ratings = ml1m_dir / "ratings.dat"
    write_lines(ratings, [b"1::3::x::1", b"2::4::y::2"])
    with pytest.raises(RawDataError, match=rf"{ratings} holds no ratings: all 2 of its lines were bad and skipped"):
        prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path),
                        PrepareParams(on_bad_line="skip"))


def test_the_policy_is_part_of_the_cache_key_and_checked(ml1m_dir: Path) -> None:
    source = MovieLens(str(ml1m_dir), show_progress=False)
    assert cache_key(source, PrepareParams(on_bad_line="skip")) != cache_key(source, PrepareParams())
    with pytest.raises(SettingError, match="on_bad_line='ignore' is not one of error, skip"):
        PrepareParams(on_bad_line="ignore")


def test_molar_prepare_skip_prints_the_count_and_the_first_lines(ml1m_dir: Path, tmp_path: Path, capsys) -> None:
    ratings = ml1m_dir / "ratings.dat"
    insert_bad_lines(ratings, {5: b"1::3::five::978301000"})
    arguments = ["prepare", "--data", "MovieLensDataModule", "--data.data_dir", str(ml1m_dir),
                 "--data.cache_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert f"\nerror: {ratings}:5: rating is not a finite decimal number" in capsys.readouterr().err  # after tqdm
    with pytest.warns(UserWarning, match="left out 1 bad raw lines"):
        main(arguments + ["--data.on_bad_line", "skip"])
    out = capsys.readouterr().out
    assert "bad raw lines skipped (on_bad_line: skip)" in out
    assert f"  {ratings}:5: rating is not a finite decimal number: '1::3::five::978301000'" in out.splitlines()
    assert json.loads(next(tmp_path.glob("movielens-*/meta.json")).read_text())["params"]["on_bad_line"] == "skip"
