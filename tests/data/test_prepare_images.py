"""The image policy: missing and corrupt images counted, and kept text-only, dropped or refused; never a
half-written cache; the policy and the image folder are part of the cache key."""

import os
from pathlib import Path

import pytest

from molar_lightning.data.prepare import CanonicalDataset, PrepareParams, cache_key, prepare_dataset
from molar_lightning.data.raw import RawDataError
from molar_lightning.data.sources.amazon import Amazon
from molar_lightning.data.sources.pixelrec import PixelRec

# The Amazon 2023 fixture: items 1-6 have a JPEG, 7's is truncated, 8's is an HTML page, 9 has no file and
# 10 no metadata at all.
USABLE, BROKEN = [f"B0000000{n:02d}" for n in range(1, 7)], [f"B0000000{n:02d}" for n in range(7, 11)]


def prepare(folder: Path, cache: Path, policy: str, **kwargs) -> CanonicalDataset:
    return prepare_dataset(Amazon(str(folder), show_progress=False, **kwargs), str(cache),
                           PrepareParams(image_policy=policy))


def test_text_only_keeps_every_item_and_clears_unusable_images(amazon_dir: Path, tmp_path: Path) -> None:
    dataset = prepare(amazon_dir / "2023", tmp_path / "cache", "text_only")
    stats = dataset.meta["statistics"]
    assert (stats["items"], stats["interactions"]) == (10, 75)
    assert (stats["images_usable"], stats["images_missing"], stats["images_corrupt"]) == (6, 2, 2)
    paths = dict(zip(dataset.items["raw_id"], dataset.items["image_path"]))
    assert all(paths[item].endswith(f"images/{item}.jpg") for item in USABLE)
    assert all(paths[item] is None for item in BROKEN)
    rows = dict(dataset.statistics_rows())
    assert rows["items with a usable image"] == "6" and rows["items with a corrupt image"] == "2"
    assert rows["image policy"] == "text_only"


def test_drop_item_removes_them_and_filters_again(amazon_dir: Path, tmp_path: Path) -> None:
    dataset = prepare(amazon_dir / "2023", tmp_path / "cache", "drop_item")
    stats = dataset.meta["statistics"]
    assert sorted(dataset.items["raw_id"]) == USABLE
    assert all(path is not None for path in dataset.items["image_path"])
    assert stats["items_dropped_for_images"] == 4
    # Every interaction is accounted for: kept, dropped with its item, or removed by k-core afterwards
    # (users left with fewer than 3 interactions).
    assert stats["interactions"] + stats["interactions_dropped_for_images"] + stats["removed_by_k_core"] == 75
    assert stats["removed_by_k_core"] > 0
    offsets, items = dataset.flat_sequences
    assert (offsets[1:] - offsets[:-1]).min() >= 3 and items.max() == 6
    assert dict(dataset.statistics_rows())["dropped for their image (items / interactions)"] == (
        f"4 / {stats['interactions_dropped_for_images']}")


def test_error_refuses_naming_the_files_and_leaves_no_cache(amazon_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RawDataError) as refused:
        prepare(amazon_dir / "2023", tmp_path / "cache", "error")
    message = str(refused.value)
    assert "4 of 10 items have no usable image (2 missing, 2 corrupt)" in message
    assert f"{amazon_dir / '2023' / 'images' / 'B000000007.jpg'}: truncated JPEG" in message
    assert "B000000008.jpg: not an image" in message
    assert "molar data fetch-images" in message and "drop_item" in message
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_error_names_a_missing_image_folder(pixelrec_dir: Path, tmp_path: Path) -> None:
    source = PixelRec(str(pixelrec_dir), image_dir="covers_not_unpacked", show_progress=False)
    with pytest.raises(RawDataError, match=r"the image folder .*covers_not_unpacked does not exist"):
        prepare_dataset(source, str(tmp_path / "cache"), PrepareParams(image_policy="error"))
    counted = prepare_dataset(source, str(tmp_path / "cache"), PrepareParams())  # text_only: counted instead
    assert counted.meta["statistics"]["images_missing"] == counted.num_items == 8


def test_every_image_usable_passes_error(pixelrec_dir: Path, tmp_path: Path) -> None:
    (pixelrec_dir / "cover" / "i7.jpg").write_bytes((pixelrec_dir / "cover" / "i1.jpg").read_bytes())
    (pixelrec_dir / "cover" / "i8.jpg").write_bytes((pixelrec_dir / "cover" / "i1.jpg").read_bytes())
    dataset = prepare_dataset(PixelRec(str(pixelrec_dir), show_progress=False), str(tmp_path),
                              PrepareParams(image_policy="error"))
    assert dataset.meta["statistics"]["images_usable"] == dataset.num_items == 8


def test_policy_and_image_folder_are_part_of_the_cache_key(amazon_dir: Path) -> None:
    source = Amazon(str(amazon_dir / "2023"), show_progress=False)
    keys = {cache_key(source, PrepareParams(image_policy=policy)) for policy in ("text_only", "drop_item", "error")}
    assert len(keys) == 3
    before = cache_key(source, PrepareParams())
    (amazon_dir / "2023" / "images" / "B000000009.jpg").write_bytes(
        (amazon_dir / "2023" / "images" / "B000000002.jpg").read_bytes())
    os.utime(amazon_dir / "2023" / "images", ns=(1, 1))
    assert cache_key(source, PrepareParams()) != before


def test_fetched_images_are_picked_up_by_a_new_preparation(amazon_dir: Path, tmp_path: Path) -> None:
    first = prepare(amazon_dir / "2023", tmp_path / "cache", "text_only")
    (amazon_dir / "2023" / "images" / "B000000009.jpg").write_bytes(
        (amazon_dir / "2023" / "images" / "B000000002.jpg").read_bytes())
    os.utime(amazon_dir / "2023" / "images", ns=(1, 1))
    second = prepare(amazon_dir / "2023", tmp_path / "cache", "text_only")
    assert second.path != first.path
    assert second.meta["statistics"]["images_usable"] == 7


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="image_policy='skip' is not one of text_only, drop_item, error"):
        PrepareParams(image_policy="skip")


@pytest.mark.parametrize("dataset", ["amazon", "pixelrec"])
def test_bad_raw_input_leaves_no_cache(dataset: str, amazon_dir: Path, pixelrec_dir: Path, rewrite_gz,
                                       tmp_path: Path) -> None:
    if dataset == "amazon":
        rewrite_gz(amazon_dir / "2023" / "Clothing_Shoes_and_Jewelry.jsonl.gz", lambda lines: lines + ["{oops"])
        source = Amazon(str(amazon_dir / "2023"), show_progress=False)
    else:
        path = pixelrec_dir / "interaction.csv"
        path.write_text(path.read_text() + "i1,u101\n")
        source = PixelRec(str(pixelrec_dir), show_progress=False)
    with pytest.raises(RawDataError, match=r":(76|53): "):  # the appended line
        prepare_dataset(source, str(tmp_path / "cache"), PrepareParams())
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
