"""``SequentialDataModule``: one class that prepares, splits and batches any source; named subclasses
(``MovieLensDataModule``, ...) only choose the source and its defaults.

They are dataclasses: a subclass declares its source's fields and the shared defaults it changes, builds its
``source`` in ``__post_init__``, and the generated ``__init__`` lists every argument, so ``--help`` shows
them all with their docstrings (the shared ones from ``SequentialDataModule``'s) with neither a ``**kwargs``
pass-through nor a copied argument list.

``num_items`` and ``num_users`` are known right after construction (the canonical data set is prepared, or
read from the cache, on first access), so the CLI can link them into the model's constructor.
Validation and test loaders never count a user twice: under DDP and FSDP each rank gets a disjoint shard, all
of one length (a short one padded with a marked repeat, :mod:`molar_lightning.data.even_shards`), and the
ranking metrics count every user exactly once.
"""

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Literal, Optional

import lightning.pytorch as pl
import torch.distributed as dist
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from molar_lightning.data.collate import collate_eval, collate_train
from molar_lightning.data.even_shards import EvenShardSampler, PaddedEvalDataset
from molar_lightning.data.prepare import CanonicalDataset, PrepareParams, prepare_dataset
from molar_lightning.data.raw import InteractionSource, OnBadLine
from molar_lightning.data.sequence_datasets import LeaveOneOutDataset, TrainWindowDataset
from molar_lightning.data.sources.amazon import Amazon
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.data.sources.pixelrec import PixelRec
from molar_lightning.user_error import SettingError


@dataclass(kw_only=True, eq=False)
class SequentialDataModule(pl.LightningDataModule):
    """Leave-one-out sequential recommendation data from any raw source; its arguments are keyword-only.

    Args:
        source: the raw data set to read (a class from ``molar_lightning.data.sources``).
        cache_dir: where prepared data sets are cached, one folder per raw files + parameters.
        rating_threshold: keep interactions rated at least this much; null keeps every interaction.
        min_user_interactions: k-core threshold for users (leave-one-out needs 3 in any case).
        min_item_interactions: k-core threshold for items.
        image_policy: items whose image is missing, truncated or not an image: ``text_only`` keeps them
            without an image, ``drop_item`` removes them before k-core, ``error`` refuses the data set.
            Counted in the statistics table either way.
        on_bad_line: a malformed raw line (a bad number, an empty id, a line that is not JSON ...): ``error``
            refuses the data set naming the file and line; ``skip`` prepares without it, and the statistics
            table and ``meta.json`` count the skipped lines and quote the first few.
        max_seq_len: most recent items a model sees; training windows hold at most this many inputs.
        batch_size: training windows per batch.
        eval_batch_size: users per validation/test/predict batch.
        num_workers: DataLoader worker processes.
        same_target_positives: add to each training window, for each of its positions (``all``) or for its
            last (``last``), a training prefix with the same target drawn from all the data (DuoRec's supervised
            views, for its ``positives: data``); ``null`` adds none.
    """

    source: InteractionSource
    cache_dir: str = ".molar_cache"
    rating_threshold: Optional[float] = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    image_policy: Literal["text_only", "drop_item", "error"] = "text_only"
    on_bad_line: OnBadLine = "error"
    max_seq_len: int = 50
    batch_size: int = 128
    eval_batch_size: int = 512
    num_workers: int = 0
    same_target_positives: Optional[Literal["all", "last"]] = None

    def __post_init__(self) -> None:
        super().__init__()
        if self.max_seq_len < 1:
            raise SettingError(f"max_seq_len must be at least 1, got {self.max_seq_len}")
        self.params = PrepareParams(self.rating_threshold, self.min_user_interactions, self.min_item_interactions,
                                    self.image_policy, self.on_bad_line)
        # What turns training windows into a TrainBatch; end-to-end Molar swaps in one that also builds the item
        # encoder's inputs (molar_lightning.data.item_inputs.StepItemsCollate, set by ItemInputsCallback).
        self.train_collate: Callable = collate_train

    @cached_property
    def dataset(self) -> CanonicalDataset:
        """The canonical data set, prepared on first access and cached on disk."""
        return prepare_dataset(self.source, self.cache_dir, self.params)

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @property
    def num_users(self) -> int:
        return self.dataset.num_users

    def prepare_data(self) -> None:
        self.dataset  # noqa: B018 - prepares (once, on one process per node) before setup() runs

    def print_statistics(self, console: Optional[Console] = None) -> None:
        """Print the users / items / interactions table, and the first raw lines ``on_bad_line: skip`` left out."""
        table = Table(title=f"{self.source.name}: {self.dataset.path}")
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for name, value in self.dataset.statistics_rows():
            table.add_row(name, value)
        console = console or Console()
        console.print(table)
        if self.dataset.skipped_lines:
            console.print("first skipped lines:", markup=False)
            for line in self.dataset.skipped_lines:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)

    def _windows(self) -> TrainWindowDataset:
        offsets, items = self.dataset.flat_sequences
        return TrainWindowDataset(offsets, items, self.max_seq_len, self.same_target_positives)

    def _held_out(self, split: str) -> LeaveOneOutDataset:
        offsets, items = self.dataset.flat_sequences
        return LeaveOneOutDataset(offsets, items, self.max_seq_len, split)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        sampler = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dataset = PaddedEvalDataset(dataset)
            sampler = EvenShardSampler(dataset, dist.get_world_size(), dist.get_rank())
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, collate_fn=collate_eval,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._windows(), batch_size=self.batch_size, shuffle=True, collate_fn=self.train_collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._held_out("valid"))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._held_out("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self._held_out("predict"))


@dataclass(eq=False)
class MovieLensDataModule(SequentialDataModule):
    """MovieLens (ML-1M or ML-100K layout) with every rating kept as an implicit interaction, as Molar does.

    Args:
        data_dir: folder with ``ratings.dat`` + ``movies.dat`` or ``u.data`` + ``u.item``.
        download: fetch the GroupLens archive into ``data_dir`` when its files are missing (needs internet).
        variant: archive to download: ``ml-1m`` or ``ml-100k``.
    """

    data_dir: str
    download: bool = False
    variant: str = "ml-1m"
    source: InteractionSource = field(init=False)

    def __post_init__(self) -> None:
        self.source = MovieLens(self.data_dir, download=self.download, variant=self.variant)
        super().__post_init__()


@dataclass(eq=False)
class AmazonDataModule(SequentialDataModule):
    """One category of Amazon Reviews (2014, 2018 or 2023 release) with item text and images, 5-core by default.

    Every rating counts as an interaction unless ``rating_threshold`` is set.

    Args:
        data_dir: folder with the category's reviews file and metadata file.
        category: category name as in the file names (Molar's "Amazon cloth": ``Clothing_Shoes_and_Jewelry``).
        release: Amazon Reviews release: 2014, 2018 or 2023; decides the file and field names.
        reviews_file: reviews file inside data_dir when not the release's default name (e.g. a 5-core file).
        meta_file: metadata file inside data_dir when not the release's default name.
        image_dir: folder of ``<item id>.jpg`` (``molar data fetch-images`` fills it), relative to data_dir
            unless absolute; null for no images.
        min_user_interactions: k-core threshold for users (5, the usual Amazon 5-core).
        min_item_interactions: k-core threshold for items (5, the usual Amazon 5-core).
    """

    data_dir: str
    category: str = "Clothing_Shoes_and_Jewelry"
    release: Literal[2014, 2018, 2023] = 2023
    reviews_file: Optional[str] = None
    meta_file: Optional[str] = None
    image_dir: Optional[str] = "images"
    min_user_interactions: int = field(default=5, kw_only=True)
    min_item_interactions: int = field(default=5, kw_only=True)
    source: InteractionSource = field(init=False)

    def __post_init__(self) -> None:
        self.source = Amazon(self.data_dir, category=self.category, release=self.release,
                             reviews_file=self.reviews_file, meta_file=self.meta_file, image_dir=self.image_dir)
        super().__post_init__()


@dataclass(eq=False)
class PixelRecDataModule(SequentialDataModule):
    """PixelRec (the PixelRec50K sample by default, as Molar uses it) with item text and cover images.

    Args:
        data_dir: folder with the interactions CSV, the item information CSV and the cover folder.
        interactions_file: interactions CSV inside data_dir: ``interaction.csv`` (PixelRec50K) or e.g.
            ``dataset/Pixel200K.csv``.
        items_file: item information CSV inside data_dir: ``item_info.csv`` (PixelRec50K) or e.g.
            ``information/Pixel200K.csv``.
        image_dir: folder of covers ``<item_id>.jpg``, relative to data_dir unless absolute; null for no images.
    """

    data_dir: str
    interactions_file: str = "interaction.csv"
    items_file: str = "item_info.csv"
    image_dir: Optional[str] = "cover"
    source: InteractionSource = field(init=False)

    def __post_init__(self) -> None:
        self.source = PixelRec(self.data_dir, interactions_file=self.interactions_file, items_file=self.items_file,
                               image_dir=self.image_dir)
        super().__post_init__()
