"""The parts of ``benchmarks/recbole_side_by_side.py`` that need no RecBole: the atomic file it writes gives
RecBole's leave-one-out the same per-user order and held-out items as this project's split, RecBole's scores are
ranked under this project's ids, and the time-to-quality figures read the curves as they should."""

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import recbole_side_by_side as side_by_side  # noqa: E402
from molar_lightning.data.datamodule import MovieLensDataModule  # noqa: E402

BASE = 978_299_968  # a multiple of 64: float32 holds Unix times this large only to 64 s
# UserID, MovieID, timestamp in file order. User 7's 30 and 40 are an exact tie (file order decides: 30 first);
# user 9's 12 comes first in the file but 5 s after 11, inside one float32 step, so only the real time orders them.
RATINGS = [
    (7, 10, BASE + 100), (7, 30, BASE + 300), (7, 40, BASE + 300), (7, 20, BASE + 200), (7, 50, BASE + 400),
    (9, 12, BASE + 10), (9, 11, BASE + 5), (9, 10, BASE + 900), (9, 40, BASE + 1000),
    (8, 20, BASE), (8, 10, BASE + 60), (8, 50, BASE + 7000),
]
CHRONOLOGICAL = {"7": ["10", "20", "30", "40", "50"], "9": ["11", "12", "10", "40"], "8": ["20", "10", "50"]}


def recbole_sequences(inter_path: Path) -> dict[str, list[str]]:
    """Each user's items as RecBole 1.2.1 orders an ``.inter`` file under ``order: TO``: the timestamps become a
    float32 tensor (``Dataset._dataframe_to_interaction``), rows are sorted on it with ``np.argsort(kind="stable")``
    (``Interaction.sort``), and leave-one-out takes each user's rows in that order."""
    header, *lines = inter_path.read_text().splitlines()
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    rows = [line.split("\t") for line in lines]
    stamps = np.array([float(stamp) for _, _, stamp in rows], dtype=np.float32)
    sequences = defaultdict(list)
    for index in np.argsort(stamps, kind="stable"):
        sequences[rows[index][0]].append(rows[index][1])
    return dict(sequences)


@pytest.fixture
def datamodule(tmp_path: Path) -> MovieLensDataModule:
    raw = tmp_path / "ml"
    raw.mkdir()
    (raw / "ratings.dat").write_text("".join(f"{user}::{item}::4::{stamp}\n" for user, item, stamp in RATINGS))
    return MovieLensDataModule(data_dir=str(raw), cache_dir=str(tmp_path / "cache"), eval_batch_size=2)


def test_recbole_reads_the_atomic_file_in_this_projects_chronological_order(datamodule, tmp_path) -> None:
    inter = side_by_side.write_atomic_inter(datamodule.dataset, tmp_path / "atomic", "tiny")
    assert inter == tmp_path / "atomic" / "tiny" / "tiny.inter"
    assert recbole_sequences(inter) == CHRONOLOGICAL
    # The same rows in raw-file order would put user 9's 12 before 11: the near-tie is a real test of the order.
    raw_order = tmp_path / "raw_order.inter"
    raw_order.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                         + "".join(f"{user}\t{item}\t{stamp}\n" for user, item, stamp in RATINGS))
    assert recbole_sequences(raw_order)["9"][:2] == ["12", "11"]


def test_held_out_items_and_their_agreement(datamodule) -> None:
    test_items = side_by_side.held_out_items(datamodule.dataset, from_end=1)
    valid_items = side_by_side.held_out_items(datamodule.dataset, from_end=2)
    assert test_items == {user: items[-1] for user, items in CHRONOLOGICAL.items()}
    assert valid_items == {user: items[-2] for user, items in CHRONOLOGICAL.items()}
    assert side_by_side.agreeing_users(test_items, dict(test_items)) == 3
    assert side_by_side.agreeing_users(test_items, {"7": "50", "9": "12"}) == 1  # user 8 missing, 9 wrong


def test_recbole_scores_are_ranked_under_this_projects_ids(datamodule) -> None:
    # RecBole's item columns come in its own order, [PAD] first; its users in its own order too.
    item_tokens = np.array(["[PAD]", "50", "10", "40", "12", "20", "30", "11"])
    scores = np.zeros((3, len(item_tokens)), dtype=np.float32)
    column = {token: index for index, token in enumerate(item_tokens)}
    scores[0, column["20"]], scores[0, column["50"]] = 2.0, 1.0  # user 8, test 50: one item (20, seen) above
    scores[1, column["50"]] = 3.0  # user 7, test 50: first
    for rank, token in enumerate(["50", "20", "30", "12", "11", "10", "40"]):  # user 9, test 40: last of 7
        scores[2, column[token]] = 7.0 - rank
    scores[:, 0] = 99.0  # padding is never ranked
    recbole = {"users": np.array(["8", "7", "9"]), "item_tokens": item_tokens, "scores": scores}
    ranked_too = side_by_side.rank_recbole_scores(recbole, datamodule, exclude_history=False)
    excluded = side_by_side.rank_recbole_scores(recbole, datamodule, exclude_history=True)
    # History ranked too: ranks 2, 1 and 7 (0-based 1, 0, 6); user 9's history (11, 12, 10) holds 3 of the 6 above.
    assert ranked_too["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 + 1 / math.log2(8)) / 3)
    assert excluded["ndcg@10"] == pytest.approx((1 + 1 + 1 / math.log2(5)) / 3)
    assert ranked_too["recall@10"] == excluded["recall@10"] == 1.0


def test_time_to_quality_reads_the_first_crossing() -> None:
    curve = [(10.0, 0.01), (20.0, 0.05), (30.0, 0.04), (40.0, 0.06)]
    assert side_by_side.seconds_to_reach(curve, 0.05) == 20.0  # reaching the bar exactly counts
    assert side_by_side.seconds_to_reach(curve, 0.055) == 40.0  # the first crossing, not the dip after it
    assert side_by_side.seconds_to_reach(curve, 0.07) is None
    assert side_by_side.seconds_per_epoch(curve) == 10.0


def test_budget_entries_name_a_model_and_seconds() -> None:
    assert side_by_side.model_seconds("sasrec=720") == ("sasrec", 720.0)
    for wrong in ("sasrec", "duorec=10", "fpmc=-5", "gru4rec=ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            side_by_side.model_seconds(wrong)
