"""Reading PixelRec (PixelRec50K layout and the larger releases' file names), and refusing bad CSVs."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from molar_lightning.data.raw import RawDataError
from molar_lightning.data.sources.pixelrec import PixelRec


def read(folder: Path, **kwargs):
    return PixelRec(str(folder), show_progress=False, **kwargs).read()


def test_interactions_and_item_text(pixelrec_dir: Path) -> None:
    raw = read(pixelrec_dir)
    assert len(raw.user_codes) == 51 and len(raw.user_raw_ids) == 10 and len(raw.item_raw_ids) == 8
    assert raw.ratings is None  # implicit feedback
    first = (np.asarray(raw.item_raw_ids)[raw.item_codes[0]], np.asarray(raw.user_raw_ids)[raw.user_codes[0]],
             raw.timestamps[0])
    assert first == ("i6", "u101", 1600013631)  # the file's first row
    items = raw.items
    assert items["i1"].title == "猫咪合集" and items["i1"].attributes == {"tag": "动物"}
    assert items["i2"].description == 'Line one, with "quotes" and a second line'  # a quoted multi-line field
    assert items["i5"].attributes == {} and items["i5"].description == ""
    assert "i999" not in items  # described, never interacted with
    assert items["i8"].image_path == os.path.join(os.path.abspath(pixelrec_dir / "cover"), "i8.jpg")


def test_larger_release_file_names(pixelrec_dir: Path) -> None:
    (pixelrec_dir / "dataset").mkdir()
    (pixelrec_dir / "information").mkdir()
    shutil.move(pixelrec_dir / "interaction.csv", pixelrec_dir / "dataset" / "Pixel200K.csv")
    shutil.move(pixelrec_dir / "item_info.csv", pixelrec_dir / "information" / "Pixel200K.csv")
    raw = read(pixelrec_dir, interactions_file="dataset/Pixel200K.csv", items_file="information/Pixel200K.csv")
    assert len(raw.user_codes) == 51 and raw.items["i3"].title == "Speedrun any%"


def test_without_item_information_or_covers(pixelrec_dir: Path) -> None:
    (pixelrec_dir / "item_info.csv").unlink()
    raw = read(pixelrec_dir, image_dir=None)
    assert len(raw.user_codes) == 51 and raw.items == {}


def test_wrong_header_is_refused(pixelrec_dir: Path) -> None:
    path = pixelrec_dir / "interaction.csv"
    path.write_text(path.read_text().replace("item_id,user_id,timestamp", "item,user,time", 1))
    with pytest.raises(RawDataError, match=r"interaction\.csv:1: header lacks item_id, user_id, timestamp.*'item,user"):
        read(pixelrec_dir)


def test_item_file_given_as_interactions_is_refused(pixelrec_dir: Path) -> None:
    with pytest.raises(RawDataError, match=r"item_info\.csv:1: header lacks user_id, timestamp"):
        read(pixelrec_dir, interactions_file="item_info.csv")


@pytest.mark.parametrize("row, problem", [
    ("i1,u101,yesterday", "timestamp is not an integer"),
    ("i1,u101", "expected 3 fields"),
    (",u101,1600000000", "empty item_id"),
], ids=["timestamp", "field-count", "empty-id"])
def test_bad_interaction_row_names_the_line(pixelrec_dir: Path, row: str, problem: str) -> None:
    path = pixelrec_dir / "interaction.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:30] + [row] + lines[30:]) + "\n")
    with pytest.raises(RawDataError, match=rf"interaction\.csv:31: {problem}"):
        read(pixelrec_dir)


def test_conflicting_duplicate_item_row_is_refused(pixelrec_dir: Path) -> None:
    path = pixelrec_dir / "item_info.csv"
    path.write_text(path.read_text() + "i3,1,2,3,4,5,6,7,Another title,游戏,Other\n")
    with pytest.raises(RawDataError, match=r"item_info\.csv:13: duplicate item_id 'i3', first listed at line 5"):
        read(pixelrec_dir)


def test_missing_interactions_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"interaction\.csv.*interactions_file"):
        read(tmp_path)
