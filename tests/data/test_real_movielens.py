"""The real MovieLens files, when this checkout sits beside the project's shared data (CI does; a fresh
clone elsewhere skips). ML-1M's ratings.dat is user-supplied: point MOLAR_ML1M_DIR at it to check Table 1."""

import os
from pathlib import Path

import pytest

from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.sources.movielens import MovieLens

SHARED = Path(__file__).parents[3] / "shared" / "data"
ML100K = SHARED / "movielens-100k"
ML1M = Path(os.environ.get("MOLAR_ML1M_DIR", SHARED / "movielens-1m"))


@pytest.mark.skipif(not (ML100K / "ratings.dat").is_file(), reason="shared MovieLens-100K data not present")
def test_movielens_100k_statistics(tmp_path: Path) -> None:
    dataset = prepare_dataset(MovieLens(str(ML100K), show_progress=False), str(tmp_path), PrepareParams())
    assert (dataset.num_users, dataset.num_items, dataset.meta["statistics"]["interactions"]) == (943, 1682, 100_000)
    items = dataset.items
    assert items[49]["title"] == "Star Wars (1977)" and items[49]["image_path"].endswith("posters/50.jpg")


@pytest.mark.slow
@pytest.mark.skipif(not (ML1M / "ratings.dat").is_file(), reason="ML-1M ratings.dat not available")
def test_movielens_1m_matches_the_papers_table_1(tmp_path: Path) -> None:
    dataset = prepare_dataset(MovieLens(str(ML1M), show_progress=False), str(tmp_path), PrepareParams())
    assert (dataset.num_users, dataset.num_items) == (6040, 3706)
    assert dataset.meta["statistics"]["interactions"] == 1_000_209
