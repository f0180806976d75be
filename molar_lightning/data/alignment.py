"""Stage-1 alignment data for MIRM (Molar, arXiv 2412.18176, Section 3.2): three instruction mixtures built
from a prepared data set's item catalog and its *training* interactions.

* IT, image-text: the item's image -> its description.
* SA, structured attributes: title and structured fields (genres, director, brand, ...) -> description.
* UB, user behaviour: a user's recent items (text and images) -> the next item(s). Histories and targets
  come from each user's training part only (the last two items, validation and test, are never used).

Each mixture is switched on or off for the paper's Table 5 ablation and sampled to a fixed number of
examples (10,000 per data set in the paper) with a seed. Examples are rendered lazily, so the images are
read in DataLoader workers; the loss is on answer tokens only (prompt labels are -100), and batches hold
examples of similar length.
"""

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Optional, Protocol, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from molar_lightning.batch import IGNORE_INDEX, AlignmentBatch
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import SequentialDataModule
from molar_lightning.data.item_inputs import TOKEN_KEYS, pad_rows

IT_INSTRUCTION = "Describe this item in detail."
SA_INSTRUCTION = "Write the description of the item with these attributes."
UB_INSTRUCTION = "A user interacted with these items, in this order:"
UB_QUESTION = "Which item will the user interact with next?"


class AlignmentProcessor(Protocol):
    """What rendering needs from the backbone's processor (``BackboneProcessor`` is one)."""

    pad_token_id: int
    tokenizer: object

    def text_ids(self, text: str, max_tokens: Optional[int] = None) -> list[int]: ...

    def encode(self, segments: Sequence[Union[str, Image.Image, list[int]]]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class AlignmentExample:
    """One example, by item ids; rendered into text and images only when it is loaded.

    Attributes:
        mixture: ``it``, ``sa`` or ``ub``.
        items: the item (IT, SA) or the user's history in order (UB).
        targets: the next item(s) of a UB example.
    """

    mixture: str
    items: tuple[int, ...]
    targets: tuple[int, ...] = ()


def build_examples(catalog: ItemCatalog, offsets: np.ndarray, items: np.ndarray, image_text: bool,
                   structured_attributes: bool, user_behaviour: bool, examples_per_mixture: int, ub_history: int,
                   ub_targets: int, seed: int) -> list[AlignmentExample]:
    """Sample up to ``examples_per_mixture`` examples of every switched-on mixture.

    ``offsets``/``items`` are the flat per-user sequences; a user's last two items are held out.
    """
    rng = np.random.default_rng(seed)
    examples: list[AlignmentExample] = []
    item_ids = np.arange(1, len(catalog) + 1)
    described = [int(i) for i in item_ids if catalog.fields(int(i)).get("description")]
    if image_text:
        eligible = [i for i in described if catalog.image_path(i) is not None and catalog.image_path(i).is_file()]
        examples += [AlignmentExample("it", (i,)) for i in _sample(eligible, examples_per_mixture, rng)]
    if structured_attributes:
        eligible = [i for i in described if len(catalog.fields(i)) > 1]
        examples += [AlignmentExample("sa", (i,)) for i in _sample(eligible, examples_per_mixture, rng)]
    if user_behaviour:
        train_lengths = np.diff(offsets) - 2  # the training part of each sequence
        # positions t of a training part with at least one item before them: (user, t) pairs
        users = np.flatnonzero(train_lengths >= 2)
        counts = train_lengths[users] - 1
        if counts.sum() > 0:
            picks = rng.choice(int(counts.sum()), size=min(examples_per_mixture, int(counts.sum())), replace=False)
            cumulative = np.cumsum(counts)
            for pick in np.sort(picks):
                row = int(np.searchsorted(cumulative, pick, side="right"))
                user = users[row]
                t = 1 + int(pick - (cumulative[row] - counts[row]))
                start, train_end = offsets[user], offsets[user] + train_lengths[user]
                history = items[max(start, start + t - ub_history):start + t]
                targets = items[start + t:min(start + t + ub_targets, train_end)]
                examples.append(AlignmentExample("ub", tuple(int(i) for i in history), tuple(int(i) for i in targets)))
    return examples


def _sample(candidates: list[int], count: int, rng: np.random.Generator) -> list[int]:
    if len(candidates) <= count:
        return candidates
    return sorted(int(i) for i in rng.choice(candidates, size=count, replace=False))


class AlignmentDataset(Dataset):
    """Examples rendered into prompt + answer tokens by the backbone's processor.

    Args:
        catalog: item fields and images.
        examples: what to render.
        processor: the backbone's processor.
        item_text_tokens: each item's fields are cut after this many tokens in prompts.
        max_answer_tokens: answers are cut after this many tokens (before the end-of-sequence token).
        item_token_id: the encoder's ``[Cur_Item]`` token, placed after each item's image and text as the
            encoder places it, so that stage 1 trains its embedding where stage 2 reads the item embedding;
            None leaves it out.
    """

    def __init__(self, catalog: ItemCatalog, examples: Sequence[AlignmentExample], processor: AlignmentProcessor,
                 item_text_tokens: int, max_answer_tokens: int, item_token_id: Optional[int] = None) -> None:
        self.catalog = catalog
        self.examples = list(examples)
        self.processor = processor
        self.item_text_tokens = item_text_tokens
        self.max_answer_tokens = max_answer_tokens
        self.item_token = [] if item_token_id is None else [[item_token_id]]

    def __len__(self) -> int:
        return len(self.examples)

    def render(self, example: AlignmentExample) -> tuple[list, str]:
        """Prompt segments (text, images, token ids) and the answer text."""
        catalog, cap = self.catalog, self.item_text_tokens
        if example.mixture == "it":
            (item,) = example.items
            image = catalog.image(item)
            if image is None:
                raise ValueError(f"item {item}: image {catalog.image_path(item)} is not a readable image; the IT "
                                 f"mixture needs one (replace the file, or switch image_text off)")
            return [image, *self.item_token, IT_INSTRUCTION], catalog.fields(item)["description"]
        if example.mixture == "sa":
            (item,) = example.items
            text = self.processor.text_ids(catalog.text(item, description=False), cap)
            return [SA_INSTRUCTION, text, *self.item_token], catalog.fields(item)["description"]
        segments: list = [UB_INSTRUCTION]
        for position, item in enumerate(example.items, start=1):
            segments.append(f"\n{position}.")
            image = catalog.image(item)
            if image is not None:
                segments.append(image)
            segments += [self.processor.text_ids(catalog.text(item), cap), *self.item_token]
        segments.append("\n" + UB_QUESTION)
        answer = "\n".join(catalog.fields(item).get("title", f"item {item}") for item in example.targets)
        return segments, answer

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        segments, answer = self.render(self.examples[index])
        out = self.processor.encode(segments)
        eos = self.processor.tokenizer.eos_token_id
        answer_ids = self.processor.text_ids("\n" + answer, self.max_answer_tokens) + ([eos] if eos is not None else [])
        prompt_length = len(out["input_ids"])
        out["input_ids"] = torch.cat([out["input_ids"], torch.tensor(answer_ids, dtype=torch.long)])
        if "mm_token_type_ids" in out:
            answer_types = torch.zeros(len(answer_ids), dtype=torch.long)
            out["mm_token_type_ids"] = torch.cat([out["mm_token_type_ids"], answer_types])
        labels = out["input_ids"].clone()
        labels[:prompt_length] = IGNORE_INDEX
        out["labels"] = labels
        return out

    def approximate_length(self, index: int) -> int:
        """Characters of the example's text plus a fixed cost per image; enough to group similar lengths."""
        example = self.examples[index]
        return sum(len(self.catalog.text(item)) + 200 * (self.catalog.image_path(item) is not None)
                   for item in example.items + example.targets)


def collate_alignment(samples: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> AlignmentBatch:
    """Right-pad tokens and labels; concatenate image tensors in example order."""
    lengths = [len(sample["input_ids"]) for sample in samples]
    image_keys = sorted({key for sample in samples for key in sample if key not in (*TOKEN_KEYS, "labels")})
    has_types = "mm_token_type_ids" in samples[0]
    return AlignmentBatch(
        input_ids=pad_rows([sample["input_ids"] for sample in samples], pad_token_id, "right"),
        attention_mask=pad_rows([torch.ones(n, dtype=torch.long) for n in lengths], 0, "right"),
        labels=pad_rows([sample["labels"] for sample in samples], IGNORE_INDEX, "right"),
        mm_token_type_ids=(pad_rows([sample["mm_token_type_ids"] for sample in samples], 0, "right")
                           if has_types else None),
        image_inputs={key: torch.cat([sample[key] for sample in samples if key in sample]) for key in image_keys},
    )


class LengthBucketBatchSampler(BatchSampler):
    """Batches of similar length: the sampler's order is cut into buckets of ``bucket_batches`` batches, each
    bucket is sorted by length and split, and the batches of a bucket are shuffled with the sampler's order.

    Subclassing ``BatchSampler`` lets Lightning swap in a distributed sampler under DDP.

    Args:
        sampler: the order of indices (random for training).
        batch_size: examples per batch.
        drop_last: drop a last, smaller batch.
        lengths: approximate length of each index.
        bucket_batches: batches per bucket.
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool, lengths: Sequence[int], bucket_batches: int = 32):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.bucket_batches = bucket_batches

    def __iter__(self):
        order = list(self.sampler)
        bucket = self.batch_size * self.bucket_batches
        for start in range(0, len(order), bucket):
            chunk = sorted(order[start:start + bucket], key=lambda index: self.lengths[index])
            batches = [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            if self.drop_last and len(batches[-1]) < self.batch_size:
                batches.pop()
            # a permutation drawn from the same order, so the batch order is as random as the sampler's
            for rank in np.argsort(order[start:start + len(batches)], kind="stable"):
                yield batches[rank]


@dataclass(kw_only=True, eq=False)
class MIRMAlignmentDataModule(SequentialDataModule):
    """The IT / SA / UB mixtures of a prepared data set, for ``MIRMAlignmentModule``.

    The canonical data set is prepared and cached exactly as for the sequential models (same source,
    filters and cache), and ``batch_size`` counts examples, also for validation. The backbone's processor
    comes from the task: ``connect(processor)`` is called by ``MIRMAlignmentModule.setup`` before any loader
    is built.

    Args:
        image_text: use the IT mixture (item image -> description).
        structured_attributes: use the SA mixture (title + attributes -> description).
        user_behaviour: use the UB mixture (recent training items -> next item).
        examples_per_mixture: examples sampled from each mixture (10,000 in the paper).
        ub_history: most recent items in a UB prompt.
        ub_targets: next items a UB answer names.
        item_text_tokens: each item's fields are cut after this many tokens in prompts.
        max_answer_tokens: answers are cut after this many tokens.
        val_fraction: share of examples held out to compute ``val/loss`` and ``test/loss``.
        max_image_size: longest image side when reading images.
        seed: seed of the example sampling and the validation split.
    """

    image_text: bool = True
    structured_attributes: bool = True
    user_behaviour: bool = True
    examples_per_mixture: int = 10_000
    ub_history: int = 5
    ub_targets: int = 1
    item_text_tokens: int = 64
    max_answer_tokens: int = 128
    val_fraction: float = 0.02
    max_image_size: int = 448
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.image_text or self.structured_attributes or self.user_behaviour):
            raise ValueError("every mixture is switched off; keep at least one of image_text, structured_attributes, "
                             "user_behaviour (skipping stage 1 altogether is 'w/o ALL': do not run it)")
        self.processor: Optional[AlignmentProcessor] = None
        self.item_token_id: Optional[int] = None

    def connect(self, processor: AlignmentProcessor, item_token_id: Optional[int] = None) -> None:
        """Hand over the backbone's processor and the ``[Cur_Item]`` token to place after each item, or None
        (the task does this in its ``setup``). The processor (tokenizer and image processor) is what the data
        sets hand DataLoader workers, so it must not be the model."""
        if isinstance(processor, nn.Module):
            raise TypeError(f"connect() takes the backbone's processor (encoder.processor), not a "
                            f"{type(processor).__name__}: DataLoader workers would each get a copy of the model")
        self.processor = processor
        self.item_token_id = item_token_id

    @cached_property
    def catalog(self) -> ItemCatalog:
        return ItemCatalog(self.dataset, max_image_size=self.max_image_size)

    @cached_property
    def examples(self) -> dict[str, list[AlignmentExample]]:
        """``{"train": [...], "val": [...]}``: the sampled examples, split with the seed."""
        offsets, items = self.dataset.flat_sequences
        examples = build_examples(self.catalog, offsets, items, self.image_text, self.structured_attributes,
                                  self.user_behaviour, examples_per_mixture=self.examples_per_mixture,
                                  ub_history=self.ub_history, ub_targets=self.ub_targets, seed=self.seed)
        if not examples:
            raise ValueError(f"no alignment example could be built from {self.dataset.path}: IT and SA need items "
                             f"with a description (and an image for IT), UB users with 4+ interactions")
        order = np.random.default_rng(self.seed + 1).permutation(len(examples))
        held_out = max(1, int(round(self.val_fraction * len(examples)))) if self.val_fraction > 0 else 0
        return {"val": [examples[i] for i in sorted(order[:held_out])],
                "train": [examples[i] for i in sorted(order[held_out:])]}

    def _dataset(self, split: str) -> AlignmentDataset:
        if self.processor is None:
            raise RuntimeError("MIRMAlignmentDataModule has no processor: call connect(encoder.processor) first "
                               "(MIRMAlignmentModule.setup does)")
        return AlignmentDataset(self.catalog, self.examples[split], self.processor, self.item_text_tokens,
                                self.max_answer_tokens, self.item_token_id)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self._dataset(split)
        lengths = [dataset.approximate_length(i) for i in range(len(dataset))]
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        batches = LengthBucketBatchSampler(sampler, self.batch_size, False, lengths)
        collate = partial(collate_alignment, pad_token_id=self.processor.pad_token_id)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
