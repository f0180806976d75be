"""Item content -> batches for the multimodal item encoder (MIRM): a data set over an ``ItemCatalog``,
length-sorted batches, and padded or packed collation.

The prompt itself is built by an :class:`ItemInputBuilder`: the encoder's ``prompts``
(``molar_lightning.models.item_prompt.ItemPromptProcessor``: items' text and PIL images -> inputs, from the
backbone's tokenizer and image processor). This module only reads the catalog (the text is
:meth:`ItemCatalog.text`, the same rendering as the alignment prompts'), calls the builder in DataLoader workers
and batches the results, so ``data/`` stays free of model code. The builder is never the encoder itself: the
data sets, loaders and collates here are pickled into every DataLoader worker under the ``spawn`` and
``forkserver`` start methods, and would carry the model's weights with them. A batch's inputs are built
together (``__getitems__``: one tokenizer and one image-processor call per batch, not per item). Batches are
sorted by token length (longest first, so a batch that does not fit in memory fails at once), and under DDP
each process takes every ``world_size``-th batch: every item is embedded exactly once.
"""

import os
from array import array
from functools import partial
from typing import Optional, Protocol, Sequence

import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from molar_lightning.batch import ItemBatch, TrainBatch
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.collate import collate_train

# The keys of a processor's output that run along the tokens (padded or packed); the others are image tensors.
TOKEN_KEYS = ("input_ids", "mm_token_type_ids")


class ItemInputBuilder(Protocol):
    """What the loader needs to build an item encoder's inputs: ``MultimodalItemEncoder.prompts`` (an
    ``ItemPromptProcessor``) is one. Weights-free and picklable, since DataLoader workers get a copy."""

    pack_sequences: bool
    image_size: int  # longest image side the model looks at; images are decoded no larger
    uses_images: bool  # False: images are not even decoded (modality text)

    @property
    def pad_token_id(self) -> int: ...

    def item_text_ids(self, texts: Sequence[str]) -> list[list[int]]: ...

    def item_lengths(self, items: Sequence[tuple[str, bool]],
                     text_ids: Optional[Sequence[Sequence[int]]] = None) -> list[int]: ...

    def items_inputs(self, items: Sequence[tuple[str, Optional[Image.Image]]],
                     text_ids: Optional[Sequence[Sequence[int]]] = None) -> list[dict[str, torch.Tensor]]: ...


def pad_rows(rows: Sequence[torch.Tensor], value: int, side: str) -> torch.Tensor:
    """``[len(rows), longest]`` with each row flush ``side`` and ``value`` elsewhere."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        if side == "left":
            out[index, width - len(row):] = row
        else:
            out[index, : len(row)] = row
    return out


def collate_items(samples: Sequence[tuple[int, dict[str, torch.Tensor]]], pad_token_id: int, pack: bool = False,
                  padding_side: str = "right") -> ItemBatch:
    """``(item_id, inputs)`` pairs -> :class:`ItemBatch`, packed into one row or padded on ``padding_side``."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
    item_ids, inputs = zip(*samples)
    lengths = torch.tensor([len(sample["input_ids"]) for sample in inputs])
    tokens: dict[str, Optional[torch.Tensor]] = {}
    for key in TOKEN_KEYS:
        rows = [sample[key] for sample in inputs if key in sample]
        if not rows:
            tokens[key] = None
        elif pack:
            tokens[key] = torch.cat(rows)[None]
        else:
            tokens[key] = pad_rows(rows, pad_token_id if key == "input_ids" else 0, padding_side)
    attention_mask = None
    if not pack:
        attention_mask = pad_rows([torch.ones(int(n), dtype=torch.long) for n in lengths], 0, padding_side)
    image_keys = sorted({key for sample in inputs for key in sample if key not in TOKEN_KEYS})
    image_inputs = {key: torch.cat([sample[key] for sample in inputs if key in sample]) for key in image_keys}
    return ItemBatch(item_ids=torch.tensor(item_ids), input_ids=tokens["input_ids"], attention_mask=attention_mask,
                     lengths=lengths, mm_token_type_ids=tokens["mm_token_type_ids"], image_inputs=image_inputs)


class ItemContentDataset(Dataset):
    """The items of a catalog as encoder inputs; index ``i`` is ``item_ids[i]``.

    Args:
        catalog: where items' text (:meth:`ItemCatalog.text`) and images come from.
        builder: turns text + image into model inputs (the item encoder's ``prompts``, not the encoder).
        item_ids: the items to serve, by catalog id.
    """

    def __init__(self, catalog: ItemCatalog, builder: ItemInputBuilder, item_ids: Sequence[int]) -> None:
        if isinstance(builder, nn.Module):
            raise TypeError(f"the item inputs' builder is a {type(builder).__name__} (a model): pass its weights-free "
                            f"input builder (MultimodalItemEncoder.prompts), so that DataLoader workers do not "
                            f"each get a copy of the model")
        self.catalog = catalog
        self.builder = builder
        self.item_ids = list(item_ids)
        # Token ids of each item's text, kept from lengths() so that batches are not tokenized again; 4 bytes a
        # token (array) rather than a Python int's 28.
        self.text_ids: Optional[list[array]] = None

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, index: int) -> tuple[int, dict[str, torch.Tensor]]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[int, dict[str, torch.Tensor]]]:
        """The items at ``indices``, built together (the DataLoader asks for a whole batch this way)."""
        item_ids = [self.item_ids[index] for index in indices]
        items = [(self.catalog.text(item_id), self.catalog.image(item_id, max_size=self.builder.image_size)
                  if self.builder.uses_images else None) for item_id in item_ids]
        text_ids = None if self.text_ids is None else [self.text_ids[index] for index in indices]
        try:
            return list(zip(item_ids, self.builder.items_inputs(items, text_ids)))
        except ValueError as error:
            if len(indices) > 1:
                return [self[index] for index in indices]  # again one by one, so that the error names its item
            title = self.catalog.fields(item_ids[0]).get("title", "untitled")
            raise ValueError(f"item {item_ids[0]} ({title}, image {self.catalog.image_path(item_ids[0])}): "
                             f"{error}") from error

    def lengths(self, chunk: int = 4096) -> list[int]:
        """Prompt token counts (``chunk`` items per tokenizer call); raises one error that lists every item
        with nothing to embed."""
        items = [(self.catalog.text(item_id), self.catalog.image_path(item_id) is not None)
                 for item_id in self.item_ids]
        text_ids = [ids for start in range(0, len(items), chunk)
                    for ids in self.builder.item_text_ids([text for text, _ in items[start:start + chunk]])]
        try:
            lengths = self.builder.item_lengths(items, text_ids)
        except ValueError:
            raise self._nothing_to_embed(items) from None
        self.text_ids = [array("i", ids) for ids in text_ids]
        return lengths

    def _nothing_to_embed(self, items: list[tuple[str, bool]]) -> ValueError:
        """One error that lists every item the builder refuses (asked item by item)."""
        empty = []
        for item_id, item in zip(self.item_ids, items):
            try:
                self.builder.item_lengths([item])
            except ValueError as error:
                empty.append((item_id, error))
        listed = ", ".join(str(item_id) for item_id, _ in empty[:20]) + (" ..." if len(empty) > 20 else "")
        return ValueError(f"{len(empty)} item(s) have nothing to embed: {listed}. First: item {empty[0][0]}: "
                          f"{empty[0][1]}")


class LengthSortedBatches(Sampler[list[int]]):
    """Batches of indices of similar length, longest first; with ``shard``, each DDP process takes every
    world-th batch.

    Sharded, every process gets the same number of batches: the last round is filled up with the first
    batches again. A sharded model's forward is a collective, so a process with one batch fewer would leave
    the others waiting for ever; the repeated items are embedded twice, to the same rows.

    Args:
        lengths: length of each index.
        batch_size: indices per batch.
        shard: split the batches between DDP processes; off, every process gets them all.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shard: bool = True) -> None:
        order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
        self.batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        self.shard = shard

    def _mine(self) -> list[list[int]]:
        if self.shard and dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            rounds = -(-len(self.batches) // world)
            filled = [self.batches[index % len(self.batches)] for index in range(rounds * world)]
            return filled[dist.get_rank()::world]
        return self.batches

    def __iter__(self):
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


def item_loader(catalog: ItemCatalog, builder: ItemInputBuilder, item_ids: Optional[Sequence[int]] = None,
                batch_size: int = 32, num_workers: int = 0, padding_side: str = "right",
                shard: bool = True) -> DataLoader:
    """A DataLoader of :class:`ItemBatch` over ``item_ids`` (all items by default), sorted by length; under DDP
    each process gets its share of the batches, or all of them when ``shard`` is off.

    Every item is checked first, so items with nothing to embed are all reported before any work is done.
    """
    dataset = ItemContentDataset(catalog, builder, item_ids if item_ids is not None else range(1, len(catalog) + 1))
    batches = LengthSortedBatches(dataset.lengths(), batch_size, shard)
    if num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are forked after the first tokenizer call
    collate = partial(collate_items, pad_token_id=builder.pad_token_id, pack=builder.pack_sequences,
                      padding_side=padding_side)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers)


def step_item_ids(batch: TrainBatch, num_items: int, negatives: int) -> torch.Tensor:
    """Ascending ids of the items a training step embeds: the batch's inputs and targets plus ``negatives``
    random items of the ``num_items`` catalog (the pool the content loss draws negatives from)."""
    random = torch.randint(1, num_items + 1, (negatives,), device=batch.item_seq.device)
    ids = torch.cat([batch.item_seq.flatten(), batch.target_seq.flatten(), random]).unique()
    return ids[ids != 0]


class StepItemsCollate:
    """``collate_train``, plus the item encoder's inputs for the step's items (:func:`step_item_ids`), so that
    DataLoader workers read images and tokenize while the model trains (end-to-end Molar). It holds the items'
    data set and its input builder, not the encoder: a worker's copy has a tokenizer, not the weights.

    Args:
        items: the catalog's items as the encoder reads them (row ``i`` is item ``i + 1``).
        num_items: catalog size, for the random negatives.
        negatives: random items embedded each step beside the batch's own.
    """

    def __init__(self, items: ItemContentDataset, num_items: int, negatives: int) -> None:
        self.items, self.num_items, self.negatives = items, num_items, negatives

    def __call__(self, samples) -> TrainBatch:
        batch = collate_train(samples)
        ids = step_item_ids(batch, self.num_items, self.negatives)
        batch.step_items = collate_items(self.items.__getitems__((ids - 1).tolist()), self.items.builder.pad_token_id,
                                         pack=self.items.builder.pack_sequences)
        return batch
