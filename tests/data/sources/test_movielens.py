"""Reading MovieLens in both GroupLens layouts, and refusing malformed files with file and line."""

from pathlib import Path

import numpy as np
import pytest

from molar_lightning.data.raw import RawDataError
from molar_lightning.data.sources.movielens import MovieLens


def read(folder: Path):
    return MovieLens(str(folder), show_progress=False).read()


def as_rows(raw) -> set[tuple[str, str, int]]:
    users = np.asarray(raw.user_raw_ids)[raw.user_codes]
    items = np.asarray(raw.item_raw_ids)[raw.item_codes]
    return set(zip(users, items, raw.timestamps.tolist()))


def test_both_layouts_give_the_same_interactions(ml1m_dir: Path, ml100k_dir: Path) -> None:
    one_m, hundred_k = read(ml1m_dir), read(ml100k_dir)
    assert len(one_m.user_codes) == 80
    assert as_rows(one_m) == as_rows(hundred_k)
    assert np.allclose(np.sort(one_m.ratings), np.sort(hundred_k.ratings))


def test_movies_are_read_as_latin1_with_genres(ml1m_dir: Path, ml100k_dir: Path) -> None:
    for folder in (ml1m_dir, ml100k_dir):
        items = read(folder).items
        assert items["3"].title == "Café au lait (1993)"
        assert items["1"].attributes["genres"] == "Animation, Children's, Comedy"


def test_malformed_rating_line_names_file_line_and_text(ml1m_dir: Path) -> None:
    path = ml1m_dir / "ratings.dat"
    lines = path.read_text().splitlines()
    lines[4] = "12::3::five::978301000"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RawDataError, match=r"ratings\.dat:5: .*'12::3::five::978301000'"):
        read(ml1m_dir)


def test_wrong_field_count_is_refused(ml100k_dir: Path) -> None:
    path = ml100k_dir / "u.data"
    path.write_text(path.read_text() + "1\t2\t3\n")
    with pytest.raises(RawDataError, match=r"u\.data:81: expected 4 fields"):
        read(ml100k_dir)


def test_missing_folder_says_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither ratings.dat"):
        read(tmp_path)


def test_posters_and_item_text_are_attached(ml1m_dir: Path) -> None:
    (ml1m_dir / "posters").mkdir()
    (ml1m_dir / "posters" / "2.jpg").write_bytes(b"\xff\xd8\xff")
    (ml1m_dir / "item_text.jsonl").write_text(
        '{"movie_id": 2, "description": "A board game comes alive.", "director": ["Joe Johnston"], "cast": ["nan"]}\n'
    )
    items = read(ml1m_dir).items
    assert items["2"].image_path.endswith("posters/2.jpg")
    assert items["1"].image_path is None
    assert items["2"].description == "A board game comes alive."
    assert items["2"].attributes["director"] == "Joe Johnston"
    assert "cast" not in items["2"].attributes  # the scrape's "nan" placeholder is dropped
