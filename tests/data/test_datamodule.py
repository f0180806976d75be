"""Windows, leave-one-out batches and the DataModule's loaders on the MovieLens fixture; every DataModule's
signature lists all of its arguments (no ``**kwargs``), and construction still refuses bad values."""

import inspect
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from molar_lightning.data import datamodule
from molar_lightning.data.collate import collate_train
from molar_lightning.data.alignment import MIRMAlignmentDataModule
from molar_lightning.data.datamodule import MovieLensDataModule, SequentialDataModule
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.data.sequence_datasets import LeaveOneOutDataset, TrainWindowDataset

# Two users: user 0 has 9 items, user 1 has 4 (items are just their positions, to read the cuts easily).
OFFSETS = np.array([0, 9, 13])
ITEMS = np.array([11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24])


def test_windows_cover_every_training_target_once() -> None:
    windows = TrainWindowDataset(OFFSETS, ITEMS, max_seq_len=3)
    # user 0 trains on 11..17 (18 is validation, 19 test): targets 12..17 in windows of 3 cut from the end.
    samples = [windows[i] for i in range(len(windows))]
    cuts = [(inputs.tolist(), targets.tolist(), user) for inputs, targets, user, _ in samples]
    assert cuts == [([14, 15, 16], [15, 16, 17], 0), ([11, 12, 13], [12, 13, 14], 0), ([21], [22], 1)]
    targets = Counter(t for _, target_list, _ in cuts for t in target_list)
    assert sorted(targets) == [12, 13, 14, 15, 16, 17, 22] and set(targets.values()) == {1}


def test_held_out_items_never_reach_training() -> None:
    windows = TrainWindowDataset(OFFSETS, ITEMS, max_seq_len=50)
    seen = {item for i in range(len(windows)) for part in windows[i][:2] for item in part.tolist()}
    assert not seen & {18, 19, 23, 24}


@pytest.mark.parametrize("split, target, history", [
    ("valid", [18, 23], [[11, 12, 13, 14, 15, 16, 17], [21, 22]]),
    ("test", [19, 24], [[11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23]]),
    ("predict", [0, 0], [[11, 12, 13, 14, 15, 16, 17, 18, 19], [21, 22, 23, 24]]),
], ids=["valid", "test", "predict"])
def test_leave_one_out_rows(split: str, target: list[int], history: list[list[int]]) -> None:
    rows = LeaveOneOutDataset(OFFSETS, ITEMS, max_seq_len=3, split=split)
    assert [rows[u][1] for u in range(2)] == target
    assert [rows[u][3].tolist() for u in range(2)] == history
    assert [rows[u][0].tolist() for u in range(2)] == [h[-3:] for h in history]


def test_same_target_positives_share_the_last_target() -> None:
    offsets = np.array([0, 5, 10, 15])
    items = np.array([1, 2, 7, 8, 9, 3, 4, 7, 8, 9, 5, 6, 2, 8, 9])  # users 0 and 1 both train towards 7
    windows = TrainWindowDataset(offsets, items, max_seq_len=10, same_target_positives="last")
    inputs0, targets0, _, positives0 = windows[0]
    assert targets0[-1] == 7 and [p.tolist() for p in positives0] == [[3, 4]]  # user 1's window, never its own
    _, targets2, _, positives2 = windows[2]
    assert targets2[-1] == 2 and [p.tolist() for p in positives2] == [windows[2][0].tolist()]  # alone: itself


# Three users whose training parts (all but the last two items) share targets 3 (twice) and 4 (three times).
SHARED_OFFSETS = np.array([0, 6, 11, 15])
SHARED_ITEMS = np.array([1, 2, 3, 4, 90, 91, 5, 3, 4, 92, 93, 6, 4, 94, 95])
# Each training position's prefix (its window's items up to it, max_seq_len 10: one window a user) and target.
PREFIX_TARGETS = {(1,): 2, (1, 2): 3, (1, 2, 3): 4, (5,): 3, (5, 3): 4, (6,): 4}


def test_every_position_gets_a_same_target_prefix_drawn_uniformly_from_the_data() -> None:
    """positions all: one positive per position, in window order; each a training prefix with the position's
    target, never the position's own unless it is alone with it (target 2); the others drawn uniformly."""
    windows = TrainWindowDataset(SHARED_OFFSETS, SHARED_ITEMS, max_seq_len=10, same_target_positives="all")
    torch.manual_seed(0)
    draws = Counter()
    for _ in range(600):
        for index in range(len(windows)):
            inputs, targets, _, positives = windows[index]
            assert len(positives) == len(targets)
            for position, (target, positive) in enumerate(zip(targets.tolist(), positives)):
                assert PREFIX_TARGETS[tuple(positive.tolist())] == target
                draws[(tuple(inputs[:position + 1].tolist()), tuple(positive.tolist()))] += 1
    assert draws[((1,), (1,))] == 600  # target 2 is the first user's alone: its own prefix
    assert draws[((1, 2), (5,))] == draws[((5,), (1, 2))] == 600  # target 3: the other one
    for own, others in (((1, 2, 3), ((5, 3), (6,))), ((5, 3), ((1, 2, 3), (6,))), ((6,), ((1, 2, 3), (5, 3)))):
        assert draws[(own, own)] == 0 and all(240 < draws[(own, other)] < 360 for other in others)


def test_positive_prefixes_stack_one_row_per_position_in_the_batch() -> None:
    windows = TrainWindowDataset(SHARED_OFFSETS, SHARED_ITEMS, max_seq_len=10, same_target_positives="all")
    batch = collate_train([windows[index] for index in range(len(windows))])
    targets = batch.target_seq[batch.target_seq != 0].tolist()
    rows = [tuple(int(item) for item in row if item) for row in batch.positive_seq]
    assert len(batch.positive_seq) == 6 and [PREFIX_TARGETS[row] for row in rows] == targets


def test_datamodule_batches(ml1m_dir: Path, tmp_path: Path) -> None:
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path), max_seq_len=4, batch_size=3,
                               eval_batch_size=5)
    assert (data.num_items, data.num_users) == (10, 12)
    train = next(iter(data.train_dataloader()))
    assert train.item_seq.shape == train.target_seq.shape and train.item_seq.shape[1] <= 4
    real = train.item_seq != 0
    assert ((train.target_seq != 0) == real).all()  # every real input has a next item
    assert (real[:, -1]).all()  # left padding: the last column is always a real item
    batches = list(data.val_dataloader())
    assert sum(len(b.target) for b in batches) == 12
    first = batches[0]
    assert first.item_seq.shape[0] == 5 and (first.history != 0).sum(1).min() >= 1
    for batch in batches:  # the validation target is never in the input window (no repeats in the fixture)
        assert not (batch.item_seq == batch.target[:, None]).any()


DATAMODULES = [cls for cls in vars(datamodule).values() if isinstance(cls, type)
               and issubclass(cls, pl.LightningDataModule) and cls.__module__ == datamodule.__name__]
SHARED = [name for name in inspect.signature(SequentialDataModule).parameters if name != "source"]


@pytest.mark.parametrize("cls", DATAMODULES + [MIRMAlignmentDataModule], ids=lambda cls: cls.__name__)
def test_every_argument_is_in_the_signature(cls: type) -> None:
    parameters = inspect.signature(cls).parameters
    assert not any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    assert set(SHARED) <= set(parameters)


def test_named_datamodules_build_their_source_and_keep_train_collate_swappable(ml1m_dir: Path,
                                                                               tmp_path: Path) -> None:
    data = MovieLensDataModule(str(ml1m_dir), cache_dir=str(tmp_path))
    assert "source" not in inspect.signature(MovieLensDataModule).parameters
    assert isinstance(data.source, MovieLens) and data.source.data_dir == ml1m_dir
    data.train_collate = collate = lambda samples: samples  # what end-to-end Molar does
    assert data.train_dataloader().collate_fn is collate


@pytest.mark.parametrize("build, message", [
    (lambda folder: MovieLensDataModule(folder, max_seq_len=0), "max_seq_len must be at least 1, got 0"),
    (lambda folder: MovieLensDataModule(folder, image_policy="drop"), "image_policy='drop' is not one of"),
    (lambda folder: MIRMAlignmentDataModule(source=MovieLens(folder), image_text=False, structured_attributes=False,
                                            user_behaviour=False), "every mixture is switched off"),
], ids=["max-seq-len", "image-policy", "no-mixture"])
def test_bad_values_are_refused_at_construction(build, message: str, ml1m_dir: Path) -> None:
    with pytest.raises(ValueError, match=message):
        build(str(ml1m_dir))
