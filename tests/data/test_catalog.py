"""ItemCatalog: field order, empty fields skipped, the prompt text, images capped, bad images -> None (also one
that passes the structural image check but does not decode)."""

from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.image_check import image_problem
from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.sources.movielens import MovieLens


@pytest.fixture
def catalog(ml1m_dir: Path, tmp_path: Path) -> ItemCatalog:
    posters = ml1m_dir / "posters"
    posters.mkdir()
    Image.new("RGB", (600, 300), "red").save(posters / "1.jpg")
    (posters / "2.jpg").write_bytes(Image.new("L", (20, 20)).tobytes()[:50])  # not an image
    Image.new("L", (40, 80), 128).save(posters / "3.jpg")  # grayscale
    (ml1m_dir / "item_text.jsonl").write_text('{"movie_id": 1, "description": "Toys come alive.", "cast": []}\n')
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path / "cache"), PrepareParams())
    return ItemCatalog(dataset, max_image_size=100)


def test_fields_in_order_and_empty_ones_skipped(catalog: ItemCatalog) -> None:
    assert catalog.fields(1) == {"title": "Toy Story (1995)", "genres": "Animation, Children's, Comedy",
                                 "description": "Toys come alive."}
    assert "description" not in catalog.fields(2)
    assert catalog.text(1) == ("\ntitle: Toy Story (1995)\ngenres: Animation, Children's, Comedy"
                               "\ndescription: Toys come alive.")
    assert catalog.text(1, description=False) == "\ntitle: Toy Story (1995)\ngenres: Animation, Children's, Comedy"
    assert catalog.text(2, description=False) == catalog.text(2)  # no description to leave out


def test_images_are_rgb_and_capped(catalog: ItemCatalog) -> None:
    image = catalog.image(1)
    assert image.mode == "RGB" and image.size == (100, 50)
    assert catalog.image(3).mode == "RGB"


def test_missing_or_corrupt_images_give_none(catalog: ItemCatalog) -> None:
    assert catalog.image(2) is None  # unreadable file
    assert catalog.image(4) is None  # no poster


def test_an_image_that_no_longer_decodes_gives_none(ml1m_dir: Path, tmp_path: Path) -> None:
    posters = ml1m_dir / "posters"
    posters.mkdir()
    for name in ("1.jpg", "2.jpg"):
        Image.new("RGB", (10, 10), "blue").save(posters / name)
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    (posters / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20 + b"\xff\xd9")  # broken after preparing
    assert image_problem(posters / "2.jpg") is not None
    catalog = ItemCatalog(dataset)
    assert catalog.image_path(2) is not None and catalog.image(2) is None
    assert catalog.image(1).size == (10, 10)


def test_item_ids_are_checked(catalog: ItemCatalog) -> None:
    with pytest.raises(IndexError, match="outside 1..10"):
        catalog.fields(0)


def test_images_can_be_decoded_smaller(catalog: ItemCatalog) -> None:
    # A 600x300 JPEG asked for at most 20 px: decoded at a reduced scale, then capped exactly.
    image = catalog.image(1, max_size=20)
    assert image.size == (20, 10) and image.mode == "RGB"
    assert catalog.image(1, max_size=1000).size == (100, 50)  # never above the catalog's own cap
