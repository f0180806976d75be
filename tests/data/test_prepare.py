"""Preparation: k-core to a fixed point, id maps, chronology with a stable tie-break, caching, atomicity."""

from pathlib import Path

import numpy as np
import pytest

from molar_lightning.data import prepare as prepare_module
from molar_lightning.data.prepare import (
    PrepareParams,
    build_canonical_tables,
    cache_key,
    k_core_mask,
    prepare_dataset,
)
from molar_lightning.data.raw import RawDataError, RawInteractions
from molar_lightning.data.sources.movielens import MovieLens


def raw_from_rows(rows: list[tuple[str, str, int]], ratings: list[float] | None = None) -> RawInteractions:
    users = sorted({u for u, _, _ in rows}, key=lambda x: rows.index(next(r for r in rows if r[0] == x)))
    items = sorted({i for _, i, _ in rows}, key=lambda x: rows.index(next(r for r in rows if r[1] == x)))
    return RawInteractions(
        user_codes=np.array([users.index(u) for u, _, _ in rows]),
        item_codes=np.array([items.index(i) for _, i, _ in rows]),
        timestamps=np.array([t for _, _, t in rows]),
        ratings=None if ratings is None else np.array(ratings, dtype=np.float32),
        user_raw_ids=users, item_raw_ids=items, items={},
    )


def test_k_core_iterates_to_a_fixed_point() -> None:
    # users 0,1,2 ; items 0,1,2. Item 2 is seen once (by user 2); dropping it leaves user 2 with one
    # interaction, which drops user 2, which leaves item 1 with one interaction... one pass is not enough.
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 1, 2])
    assert k_core_mask(users, items, min_user=2, min_item=2).tolist() == [True, True, True, True, False, False]
    one_pass = (np.bincount(items)[items] >= 2) & (np.bincount(users)[users] >= 2)
    assert one_pass.tolist() != k_core_mask(users, items, 2, 2).tolist()
    # A threshold that nothing meets removes everything, user side first or not.
    assert not k_core_mask(users, items, min_user=3, min_item=2).any()


def test_k_core_cascade_to_the_fixed_point() -> None:
    # Chain: user 0 has items 0,1; user 1 has items 1,2; user 2 has items 2,3. With min 2 for both,
    # items 0 and 3 go first, then every user falls under 2, then everything.
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 1, 2, 2, 3])
    assert not k_core_mask(users, items, 2, 2).any()


def test_ids_are_contiguous_and_sequences_chronological_with_stable_ties() -> None:
    rows = [("u7", "b", 30), ("u7", "a", 10), ("u7", "c", 30), ("u3", "c", 5), ("u3", "a", 6), ("u3", "b", 5),
            ("u7", "d", 40)]
    sequences, items, stats = build_canonical_tables(raw_from_rows(rows), PrepareParams())
    assert items.column("raw_id").to_pylist() == ["a", "b", "c", "d"]  # raw-id order, from 1
    assert items.column("item_id").to_pylist() == [1, 2, 3, 4]
    assert sequences.column("raw_user_id").to_pylist() == ["u3", "u7"]
    # u3: c@5 and b@5 tie -> file order (c before b), then a@6. u7: a@10, b@30 then c@30 (file order), d@40.
    assert sequences.column("item_ids").to_pylist() == [[3, 2, 1], [1, 2, 3, 4]]
    assert sequences.column("timestamps").to_pylist() == [[5, 5, 6], [10, 30, 30, 40]]
    assert stats["users"] == 2 and stats["items"] == 4 and stats["interactions"] == 7


def test_users_need_three_interactions_for_leave_one_out() -> None:
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 1), ("u2", "b", 2)]
    sequences, items, stats = build_canonical_tables(raw_from_rows(rows), PrepareParams())
    assert sequences.column("raw_user_id").to_pylist() == ["u1"]
    assert stats["removed_by_k_core"] == 2


def test_rating_threshold_filters_before_k_core() -> None:
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4)]
    sequences, items, stats = build_canonical_tables(raw_from_rows(rows, [5, 1, 4, 4]), PrepareParams(4.0))
    assert items.column("raw_id").to_pylist() == ["a", "c", "d"]
    assert stats["after_rating_threshold"] == 3


def test_empty_after_k_core_is_refused_with_counts() -> None:
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3)]
    with pytest.raises(RawDataError, match=r"raw_interactions': 3\} -> 0 .*users >= 3 and items >= 2.*1 users"):
        build_canonical_tables(raw_from_rows(rows), PrepareParams(min_item_interactions=2))


def test_movielens_fixture_end_to_end_and_cache_hit(ml1m_dir: Path, tmp_path: Path, monkeypatch) -> None:
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    assert (dataset.num_users, dataset.num_items) == (12, 10)
    offsets, items = dataset.flat_sequences
    assert offsets[-1] == len(items) == 80
    assert items.min() == 1 and items.max() == 10
    monkeypatch.setattr(MovieLens, "read", lambda self: pytest.fail("a cache hit must not read the raw files"))
    again = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    assert again.path == dataset.path


def test_parameters_and_raw_files_are_part_of_the_cache_key(ml1m_dir: Path) -> None:
    source = MovieLens(str(ml1m_dir), show_progress=False)
    key = cache_key(source, PrepareParams())
    assert cache_key(source, PrepareParams(min_item_interactions=2)) != key
    with open(ml1m_dir / "ratings.dat", "a") as handle:
        handle.write("99::1::4::978399997\n99::2::4::978399998\n99::3::4::978399999\n")
    assert cache_key(source, PrepareParams()) != key


def test_new_raw_data_is_prepared_anew(ml1m_dir: Path, tmp_path: Path) -> None:
    first = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    with open(ml1m_dir / "ratings.dat", "a") as handle:
        handle.write("99::1::4::978399997\n99::2::4::978399998\n99::3::4::978399999\n")
    second = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    assert (first.num_users, second.num_users) == (12, 13)
    assert second.sequences[-1]["item_ids"] == [1, 2, 3]


def test_a_killed_preparation_leaves_no_cache(ml1m_dir: Path, tmp_path: Path, monkeypatch) -> None:
    def die_while_writing(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(prepare_module.datasets.Dataset, "save_to_disk", die_while_writing)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path / "cache"), PrepareParams())
    assert list((tmp_path / "cache").iterdir()) == []


def test_bad_input_leaves_no_cache(ml1m_dir: Path, tmp_path: Path) -> None:
    (ml1m_dir / "ratings.dat").write_text("1::2::3\n")
    with pytest.raises(RawDataError):
        prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path / "cache"), PrepareParams())
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
