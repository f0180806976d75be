"""Reading Amazon Reviews in the 2023, 2018 and 2014 layouts, and refusing bad lines with file and line."""

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from molar_lightning.data.raw import RawDataError
from molar_lightning.data.sources.amazon import Amazon

CATEGORY = "Clothing_Shoes_and_Jewelry"
REVIEWS_2018 = f"{CATEGORY}_5.json.gz"  # the fixture is the 5-core file's layout


def source(folder: Path, release: int, **kwargs) -> Amazon:
    if release == 2018:
        kwargs.setdefault("reviews_file", REVIEWS_2018)
    return Amazon(str(folder / str(release)), release=release, show_progress=False, **kwargs)


def as_rows(raw) -> set[tuple[str, str, int, float]]:
    users = np.asarray(raw.user_raw_ids)[raw.user_codes]
    items = np.asarray(raw.item_raw_ids)[raw.item_codes]
    return set(zip(users, items, raw.timestamps.tolist(), raw.ratings.tolist()))


@pytest.mark.filterwarnings("ignore:.*repeat an earlier line exactly")
def test_three_releases_give_the_same_interactions(amazon_dir: Path) -> None:
    new, mid, old = (source(amazon_dir, release).read() for release in (2023, 2018, 2014))
    assert len(new.user_codes) == len(mid.user_codes) == len(old.user_codes) == 75
    assert len(new.user_raw_ids) == 12 and len(new.item_raw_ids) == 10
    assert as_rows(new) == as_rows(mid) == as_rows(old)  # 2023's milliseconds became seconds
    assert new.timestamps.min() >= 1_500_000_000 and new.timestamps.max() < 1_600_000_000


def test_2023_metadata_fields(amazon_dir: Path) -> None:
    items = source(amazon_dir, 2023).read().items
    shirt = items["B000000001"]
    assert shirt.title == "Café Linen Shirt" and shirt.description == "A café linen shirt for every day."
    assert shirt.attributes == {"store": "Acme", "categories": "Clothing, Shoes & Jewelry > Men > Clothing > Shirts",
                                "features": "Café Linen Shirt feature one; Machine wash", "Department": "mens",
                                "Material": "Cotton"}
    assert shirt.image_path == os.path.join(os.path.abspath(amazon_dir / "2023" / "images"), "B000000001.jpg")
    assert items["B000000003"].description == ""  # an empty description list
    assert items["B000000010"].title == "" and items["B000000010"].image_path.endswith("B000000010.jpg")  # no metadata
    assert "B099999999" not in items  # metadata line of an item nobody reviewed


@pytest.mark.filterwarnings("ignore:.*repeat an earlier line exactly")
def test_2018_and_2014_metadata_fields(amazon_dir: Path) -> None:
    mid, old = source(amazon_dir, 2018).read().items, source(amazon_dir, 2014).read().items
    assert mid["B000000001"].attributes["brand"] == "Acme"
    assert mid["B000000001"].attributes["Department"] == "mens"  # 2018 writes "Department:"
    assert old["B000000001"].attributes["categories"] == ("Clothing, Shoes & Jewelry > Men > Clothing > Shirts; "
                                                          "Clothing, Shoes & Jewelry > Novelty")
    belt = old["B000000006"]  # a Python-literal line that needs double quotes
    assert belt.title == "Men's Leather Belt" and belt.description == "A men's leather belt for every day."
    assert set(mid) == set(old) == {f"B0000000{n:02d}" for n in range(1, 11)}
    assert mid["B000000010"].title == old["B000000010"].title == ""  # reviewed, but no metadata line


def test_an_exact_duplicate_metadata_line_is_skipped_with_a_warning(amazon_dir: Path) -> None:
    with pytest.warns(UserWarning, match=r"meta_Clothing_Shoes_and_Jewelry\.json\.gz: skipped 1 metadata lines"):
        items = source(amazon_dir, 2018).read().items
    assert items["B000000002"].title == "Trail Running Shoe"


@pytest.mark.filterwarnings("ignore:.*repeat an earlier line exactly")
@pytest.mark.parametrize("release, first_urls", [
    (2023, ["https://m.media-amazon.com/images/I/B000000001._SL1500_.jpg",
            "https://m.media-amazon.com/images/I/B000000001.jpg"]),  # the MAIN variant, not the first listed
    (2018, ["https://m.media-amazon.com/images/I/B000000001._SL1500_.jpg",
            "https://m.media-amazon.com/images/I/B000000001._SS40_.jpg"]),
    (2014, ["https://m.media-amazon.com/images/I/B000000001._SY300_.jpg"]),
], ids=["2023", "2018", "2014"])
def test_image_urls_of_reviewed_items(amazon_dir: Path, release: int, first_urls: list[str]) -> None:
    urls = dict(source(amazon_dir, release).image_urls())
    assert urls["B000000001"] == first_urls
    assert set(urls) == {f"B0000000{n:02d}" for n in (1, 2, 3, 4, 6, 7, 8, 9)}  # item 5 has no image


def test_gzip_and_plain_files_read_alike(amazon_dir: Path) -> None:
    folder = amazon_dir / "2023"
    for name in (f"{CATEGORY}.jsonl", f"meta_{CATEGORY}.jsonl"):
        with gzip.open(folder / f"{name}.gz") as packed:
            (folder / name).write_bytes(packed.read())
        (folder / f"{name}.gz").unlink()
    raw = source(amazon_dir, 2023).read()
    assert len(raw.user_codes) == 75 and raw.items["B000000001"].title == "Café Linen Shirt"


def test_adding_images_changes_the_fingerprint(amazon_dir: Path) -> None:
    amazon = source(amazon_dir, 2023)
    before = amazon.fingerprint()
    (amazon_dir / "2023" / "images" / "B000000009.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    os.utime(amazon_dir / "2023" / "images", ns=(1, 1))  # a different folder mtime, whatever the clock's grain
    assert amazon.fingerprint() != before


def test_malformed_review_line_names_file_line_and_text(amazon_dir: Path, rewrite_gz) -> None:
    path = amazon_dir / "2023" / f"{CATEGORY}.jsonl.gz"
    rewrite_gz(path, lambda lines: lines[:6] + ['{"rating": 5.0, "user_id": "AX", "parent_asin"'] + lines[6:])
    with pytest.raises(RawDataError, match=r"Clothing_Shoes_and_Jewelry\.jsonl\.gz:7: not valid JSON .*'\{\"rating"):
        source(amazon_dir, 2023).read()


def test_missing_required_field_is_refused(amazon_dir: Path, rewrite_gz) -> None:
    path = amazon_dir / "2023" / f"{CATEGORY}.jsonl.gz"

    def drop_user(lines: list[str]) -> list[str]:
        entry = json.loads(lines[40])
        del entry["user_id"]
        return lines[:40] + [json.dumps(entry)] + lines[41:]

    rewrite_gz(path, drop_user)
    with pytest.raises(RawDataError, match=r"\.jsonl\.gz:41: missing required field 'user_id'"):
        source(amazon_dir, 2023).read()


def test_wrong_release_for_the_file_says_so(amazon_dir: Path) -> None:
    (amazon_dir / "2023" / f"{CATEGORY}.jsonl.gz").rename(amazon_dir / "2023" / "reviews.jsonl.gz")
    with pytest.raises(RawDataError, match=r"reviews\.jsonl\.gz:1: missing required field 'reviewerID'.*release"):
        Amazon(str(amazon_dir / "2023"), release=2018, reviews_file="reviews.jsonl.gz", show_progress=False).read()


def test_timestamp_of_the_wrong_type_is_refused(amazon_dir: Path, rewrite_gz) -> None:
    path = amazon_dir / "2018" / REVIEWS_2018
    rewrite_gz(path, lambda lines: lines[:2] + [re.sub(r'"unixReviewTime": (\d+)', r'"unixReviewTime": "\1"', lines[2])]
               + lines[3:])
    with pytest.raises(RawDataError, match=r"_5\.json\.gz:3: field 'unixReviewTime' is not an integer"):
        source(amazon_dir, 2018).read()


def test_malformed_metadata_line_is_refused(amazon_dir: Path, rewrite_gz) -> None:
    path = amazon_dir / "2023" / f"meta_{CATEGORY}.jsonl.gz"
    rewrite_gz(path, lambda lines: lines[:3] + [lines[3][:-1]] + lines[4:])  # the closing brace is gone
    with pytest.raises(RawDataError, match=r"meta_Clothing_Shoes_and_Jewelry\.jsonl\.gz:4: not valid JSON"):
        source(amazon_dir, 2023).read()


def test_2014_metadata_is_a_literal_never_code(amazon_dir: Path, rewrite_gz, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = amazon_dir / "2014" / f"meta_{CATEGORY}.json.gz"
    payload = f"{{'asin': 'B000000002', 'title': open({str(marker)!r}, 'w').write('x')}}"
    rewrite_gz(path, lambda lines: lines[:1] + [payload] + lines[2:])
    with pytest.raises(RawDataError, match=r"meta_Clothing_Shoes_and_Jewelry\.json\.gz:2: not a Python literal"):
        source(amazon_dir, 2014).read()
    assert not marker.exists()


def test_metadata_line_without_an_id_is_refused(amazon_dir: Path, rewrite_gz) -> None:
    path = amazon_dir / "2023" / f"meta_{CATEGORY}.jsonl.gz"
    rewrite_gz(path, lambda lines: lines + ['{"title": "No id here", "images": []}'])
    with pytest.raises(RawDataError, match=r"\.jsonl\.gz:11: missing required field 'parent_asin'"):
        source(amazon_dir, 2023).read()


def test_conflicting_duplicate_item_names_both_lines(amazon_dir: Path, rewrite_gz) -> None:
    path = amazon_dir / "2023" / f"meta_{CATEGORY}.jsonl.gz"
    rewrite_gz(path, lambda lines: lines + [lines[1].replace("Trail Running Shoe", "Road Shoe", 1)])
    with pytest.raises(RawDataError, match=r":11: duplicate parent_asin 'B000000002', first listed at line 2"):
        source(amazon_dir, 2023).read()


def test_missing_reviews_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Clothing_Shoes_and_Jewelry\.jsonl.*reviews_file"):
        Amazon(str(tmp_path), show_progress=False).read()
