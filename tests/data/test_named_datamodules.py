"""Amazon and PixelRec end to end: raw fixtures -> canonical data set (counts, id maps, chronology, split),
item catalogue (text fields, image paths, prompt text), the spine's models trained from the shipped configs, and
``--data.help`` listing each named DataModule's own and shared arguments with their docstrings."""

import csv
import gzip
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from molar_lightning.commands import main
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import AmazonDataModule, PixelRecDataModule

ROOT = Path(__file__).parents[2]
NO_K_CORE = {"min_user_interactions": 0, "min_item_interactions": 0}


def expected_sequences(rows: list[tuple[str, str, int]]) -> dict[str, list[str]]:
    """Per user, items by time; equal times keep file order (an independent reference for preparation)."""
    by_user = defaultdict(list)
    for position, (user, item, time) in enumerate(rows):
        by_user[user].append((time, position, item))
    return {user: [item for _, _, item in sorted(events)] for user, events in by_user.items()}


def canonical_sequences(data) -> dict[str, list[str]]:
    items = data.dataset.items["raw_id"]
    return {row["raw_user_id"]: [items[i - 1] for i in row["item_ids"]] for row in data.dataset.sequences}


def amazon_rows(path: Path) -> list[tuple[str, str, int]]:
    with gzip.open(path, "rt") as handle:
        entries = [json.loads(line) for line in handle]
    return [(e["user_id"], e["parent_asin"], e["timestamp"] // 1000) for e in entries]


@pytest.fixture
def amazon(amazon_dir: Path, tmp_path: Path) -> AmazonDataModule:
    return AmazonDataModule(str(amazon_dir / "2023"), cache_dir=str(tmp_path / "cache"), max_seq_len=5,
                            eval_batch_size=4, **NO_K_CORE)


def test_amazon_canonical_data_set(amazon: AmazonDataModule, amazon_dir: Path) -> None:
    assert (amazon.num_users, amazon.num_items) == (12, 10)
    items = amazon.dataset.items
    assert items["raw_id"] == [f"B0000000{n:02d}" for n in range(1, 11)] and items["item_id"] == list(range(1, 11))
    users = amazon.dataset.sequences["raw_user_id"]
    assert users == sorted(users)  # user ids 0..11 in raw-id order
    rows = amazon_rows(amazon_dir / "2023" / "Clothing_Shoes_and_Jewelry.jsonl.gz")
    assert canonical_sequences(amazon) == expected_sequences(rows)
    for row in amazon.dataset.sequences:
        assert row["timestamps"] == sorted(row["timestamps"]) and row["timestamps"][0] < 2_000_000_000  # seconds


def test_amazon_split_holds_out_the_last_two_items(amazon: AmazonDataModule) -> None:
    sequences = {row["user_id"]: row["item_ids"] for row in amazon.dataset.sequences}
    for split, position in (("val", -2), ("test", -1)):
        loader = getattr(amazon, f"{split}_dataloader")()
        seen = 0
        for batch in loader:
            for user, target, recent in zip(batch.user_ids.tolist(), batch.target.tolist(), batch.item_seq.tolist()):
                assert target == sequences[user][position]
                history = sequences[user][:position]
                assert [i for i in recent if i] == history[-5:]  # the most recent max_seq_len items
                seen += 1
        assert seen == 12


def test_default_amazon_5_core(amazon_dir: Path, tmp_path: Path) -> None:
    data = AmazonDataModule(str(amazon_dir / "2023"), cache_dir=str(tmp_path))
    offsets, items = data.dataset.flat_sequences
    assert (offsets[1:] - offsets[:-1]).min() >= 5
    assert min(sum(1 for i in items if i == item) for item in range(1, data.num_items + 1)) >= 5
    assert data.dataset.meta["statistics"]["removed_by_k_core"] > 0


@pytest.mark.filterwarnings("ignore:.*repeat an earlier line exactly")
def test_every_amazon_release_prepares_the_same_sequences(amazon: AmazonDataModule, amazon_dir: Path,
                                                          tmp_path: Path) -> None:
    for release, reviews_file in ((2018, "Clothing_Shoes_and_Jewelry_5.json.gz"), (2014, None)):
        other = AmazonDataModule(str(amazon_dir / str(release)), release=release, reviews_file=reviews_file,
                                 cache_dir=str(tmp_path / "cache"), **NO_K_CORE)
        assert canonical_sequences(other) == canonical_sequences(amazon)
        assert other.dataset.items["title"] == amazon.dataset.items["title"]


def test_amazon_catalog_fields_images_and_text(amazon: AmazonDataModule) -> None:
    catalog = ItemCatalog(amazon.dataset, max_image_size=64)
    assert list(catalog.fields(1)) == ["title", "store", "categories", "features", "Department", "Material",
                                       "description"]
    assert catalog.attributes(6)["store"] == "Tanner"
    assert catalog.fields(10) == {}  # reviewed, but no metadata
    assert catalog.image_path(1).is_absolute() and catalog.image_path(1).name == "B000000001.jpg"
    assert catalog.image(1).size == (64, 32) and catalog.image(1).mode == "RGB"
    assert catalog.image_path(7) is None and catalog.image(7) is None  # truncated: text-only
    assert catalog.text(3).startswith("\ntitle: Silver Hoop Earrings\nstore: Lumen")
    assert "description" not in catalog.fields(3) and catalog.text(3, description=False) == catalog.text(3)


def test_pixelrec_canonical_data_set_and_catalog(pixelrec_dir: Path, tmp_path: Path) -> None:
    data = PixelRecDataModule(str(pixelrec_dir), cache_dir=str(tmp_path))
    assert (data.num_users, data.num_items) == (10, 8)
    assert data.dataset.meta["statistics"]["interactions"] == 51
    assert data.dataset.items["raw_id"] == [f"i{n}" for n in range(1, 9)]
    with open(pixelrec_dir / "interaction.csv", newline="") as handle:
        rows = [(row["user_id"], row["item_id"], int(row["timestamp"])) for row in csv.DictReader(handle)]
    assert canonical_sequences(data) == expected_sequences(rows)
    stats = data.dataset.meta["statistics"]
    assert (stats["images_usable"], stats["images_missing"], stats["images_corrupt"]) == (6, 1, 1)
    catalog = ItemCatalog(data.dataset)
    assert catalog.text(2) == ('\ntitle: Cooking noodles\ntag: 美食'
                               '\ndescription: Line one, with "quotes" and a second line')
    assert catalog.image(7) is None and catalog.image(8) is None and catalog.image(1).size == (20, 12)


@pytest.mark.parametrize("dataset, model", [("amazon", "sasrec"), ("pixelrec", "gru4rec")],
                         ids=["amazon-sasrec", "pixelrec-gru4rec"])
def test_shipped_config_trains_on_the_fixture(dataset: str, model: str, amazon_dir: Path, pixelrec_dir: Path,
                                              tmp_path: Path) -> None:
    data_dir = amazon_dir / "2023" if dataset == "amazon" else pixelrec_dir
    overrides = ["--data.init_args.release", "2023", "--data.init_args.reviews_file", "null",
                 "--data.init_args.rating_threshold", "null", "--data.init_args.min_user_interactions", "0",
                 "--data.init_args.min_item_interactions", "0"] if dataset == "amazon" else []
    main(["fit", "--config", str(ROOT / f"configs/{dataset}/{model}.yaml"), "--data.init_args.data_dir", str(data_dir),
          "--data.init_args.cache_dir", str(tmp_path / "cache"), *overrides,
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1",
          "--trainer.enable_progress_bar", "false"])
    results = list((tmp_path / "run").rglob("results.json"))
    assert len(results) == 1
    values = json.loads(results[0].read_text())
    metrics = values.get("metrics", values)
    assert math.isfinite(float(metrics["ndcg@10"])) and 0 <= float(metrics["recall@10"]) <= 1


SHARED_ARGUMENTS = ("--data.cache_dir", "where prepared data sets are cached", "--data.max_seq_len",
                    "most recent items a model sees", "--data.image_policy", "items whose image is missing")


@pytest.mark.parametrize("datamodule, own_arguments", [
    ("MovieLensDataModule", ("--data.data_dir", "folder with ``ratings.dat``", "--data.variant")),
    ("molar_lightning.data.datamodule.AmazonDataModule",
     ("--data.release", "folder with the category's reviews file", "k-core threshold for users (5, the usual")),
    ("molar_lightning.data.datamodule.PixelRecDataModule",
     ("--data.interactions_file", "interactions CSV inside data_dir")),
    ("molar_lightning.data.alignment.MIRMAlignmentDataModule",
     ("--data.examples_per_mixture", "examples sampled from each mixture", "--data.source", "the raw data set")),
], ids=["movielens-short-name", "amazon", "pixelrec", "mirm-alignment"])
def test_help_shows_own_and_shared_arguments_with_their_docs(datamodule: str, own_arguments: tuple[str, ...],
                                                              capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.help", datamodule])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help wraps lines
    for expected in own_arguments + SHARED_ARGUMENTS:
        assert expected in text
