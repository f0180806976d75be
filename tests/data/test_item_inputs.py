"""Item batches: padded either side or packed, images concatenated in item order, batches sorted by length,
every item with nothing to embed reported at once (before any model work), and the encoder's input builder
(``encoder.prompts``, never the encoder) given each item's catalog text (tokenized here as the reference)."""

import re
from pathlib import Path
from typing import Optional

import pytest
import torch
from PIL import Image

from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.datamodule import PixelRecDataModule
from molar_lightning.data.item_inputs import LengthSortedBatches, collate_items, item_loader
from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.models.mirm import MultimodalItemEncoder
from tests.models.conftest import IMAGE_SIZE, qwen_tokenizer_dir, tiny_qwen2_vl_dir  # noqa: F401 - fixtures


def sample(ids: list[int], image: bool) -> dict[str, torch.Tensor]:
    out = {"input_ids": torch.tensor(ids), "mm_token_type_ids": torch.tensor([1 if i == 9 else 0 for i in ids])}
    if image:
        out["pixel_values"] = torch.full((4, 3), float(ids[0]))
        out["image_grid_thw"] = torch.tensor([[1, 2, 2]])
    return out


SAMPLES = [(7, sample([1, 9, 2, 3], True)), (8, sample([4, 5], False)), (9, sample([6, 9, 7], True))]


def test_padding_right_and_left() -> None:
    right = collate_items(SAMPLES, pad_token_id=0)
    assert right.input_ids.tolist() == [[1, 9, 2, 3], [4, 5, 0, 0], [6, 9, 7, 0]]
    assert right.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    left = collate_items(SAMPLES, pad_token_id=0, padding_side="left")
    assert left.input_ids.tolist() == [[1, 9, 2, 3], [0, 0, 4, 5], [0, 6, 9, 7]]
    assert left.mm_token_type_ids.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert right.item_ids.tolist() == [7, 8, 9] and right.lengths.tolist() == [4, 2, 3]
    # images of items 7 and 9, in item order; item 8 has none
    assert right.image_inputs["pixel_values"][:, 0].tolist() == [1.0] * 4 + [6.0] * 4
    assert right.image_inputs["image_grid_thw"].shape == (2, 3)


def test_packing_concatenates_without_padding() -> None:
    packed = collate_items(SAMPLES, pad_token_id=0, pack=True)
    assert packed.input_ids.tolist() == [[1, 9, 2, 3, 4, 5, 6, 9, 7]]
    assert packed.attention_mask is None and packed.lengths.tolist() == [4, 2, 3]


def test_batches_are_sorted_longest_first() -> None:
    batches = list(LengthSortedBatches([3, 9, 1, 7, 5], batch_size=2))
    assert batches == [[1, 3], [4, 0], [2]]


@pytest.mark.parametrize("world", [2, 4])
def test_shards_of_batches_are_equal_in_number_and_cover_every_index(world: int, monkeypatch) -> None:
    """3 batches over 2 or 4 processes: each gets 2 (or 1), the first batches again where they run out."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
    shares = []
    for rank in range(world):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        shares.append(list(LengthSortedBatches([3, 9, 1, 7, 5], batch_size=2)))
    assert {len(share) for share in shares} == {-(-3 // world)}
    assert {index for share in shares for batch in share for index in batch} == {0, 1, 2, 3, 4}
    assert shares[0][0] == [1, 3]


class WordBuilder:
    """Stands in for the encoder: one token per word of the text, and an image token when there is one; it
    records how many items each build call gets and how many it tokenizes, and refuses texts in ``refused``."""

    pack_sequences = False
    pad_token_id = 0
    image_size = 28
    uses_images = True

    def __init__(self, refused: tuple[str, ...] = ()) -> None:
        self.calls: list[int] = []
        self.tokenized = 0
        self.refused = refused

    def item_text_ids(self, texts: list[str]) -> list[list[int]]:
        self.tokenized += len(texts)
        return [list(range(len(text.split()))) for text in texts]

    def item_lengths(self, items: list[tuple[str, bool]], text_ids=None) -> list[int]:
        if any(not text.strip() and not has_image for text, has_image in items):
            raise ValueError("no text or readable image")
        text_ids = text_ids if text_ids is not None else self.item_text_ids([text for text, _ in items])
        return [len(ids) + has_image for ids, (_, has_image) in zip(text_ids, items)]

    def items_inputs(self, items: list[tuple[str, Optional[Image.Image]]],
                     text_ids=None) -> list[dict[str, torch.Tensor]]:
        self.calls.append(len(items))
        if any(text in self.refused for text, _ in items):
            raise ValueError("refused")
        lengths = self.item_lengths([(text, image is not None) for text, image in items], text_ids)
        return [{"input_ids": torch.arange(1, length + 1)} for length in lengths]


@pytest.fixture
def catalog(ml1m_dir: Path, tmp_path: Path) -> ItemCatalog:
    movies = ml1m_dir / "movies.dat"
    lines = movies.read_text(encoding="latin-1").splitlines()
    lines[1] = "2:: ::"  # items 2 and 5 keep no text
    lines[4] = "5:: ::"
    movies.write_text("\n".join(lines) + "\n", encoding="latin-1")
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path / "cache"), PrepareParams())
    return ItemCatalog(dataset)


def test_items_with_nothing_to_embed_are_all_reported_before_any_work(catalog: ItemCatalog) -> None:
    with pytest.raises(ValueError, match=r"2 item\(s\) have nothing to embed: 2, 5\. First: item 2"):
        item_loader(catalog, WordBuilder())


def test_the_loader_serves_every_requested_item_once(catalog: ItemCatalog) -> None:
    loader = item_loader(catalog, WordBuilder(), item_ids=[1, 3, 4, 6, 7], batch_size=2)
    served = [item for batch in loader for item in batch.item_ids.tolist()]
    assert sorted(served) == [1, 3, 4, 6, 7]
    lengths = [batch.lengths.max().item() for batch in loader]
    assert lengths == sorted(lengths, reverse=True)


def test_each_batch_is_built_in_one_call(catalog: ItemCatalog) -> None:
    builder = WordBuilder()
    batches = list(item_loader(catalog, builder, item_ids=[1, 3, 4, 6, 7], batch_size=2))
    assert builder.calls == [2, 2, 1] and [len(batch.item_ids) for batch in batches] == [2, 2, 1]
    assert builder.tokenized == 5  # once, in the length pass; the batches reuse those token ids


def test_an_item_the_builder_refuses_is_named(catalog: ItemCatalog) -> None:
    title = catalog.fields(4)["title"]
    builder = WordBuilder(refused=(catalog.text(4),))
    with pytest.raises(ValueError, match=rf"item 4 \({re.escape(title)}, image None\): refused"):
        list(item_loader(catalog, builder, item_ids=[1, 3, 4, 6], batch_size=4))
    assert builder.calls[0] == 4  # the batch first, then one by one to find the item


def test_a_builder_that_takes_no_images_never_decodes_one(catalog: ItemCatalog, monkeypatch) -> None:
    monkeypatch.setattr(catalog, "image", lambda *args, **kwargs: pytest.fail("decoded an image"))
    builder = WordBuilder()
    builder.uses_images = False  # as MultimodalItemEncoder under modality: text
    assert [sorted(batch.item_ids.tolist()) for batch in item_loader(catalog, builder, item_ids=[1, 3])] == [[1, 3]]


def test_the_encoder_gets_each_items_fields_as_lines(pixelrec_dir: Path, tiny_qwen2_vl_dir: Path,
                                                     tmp_path: Path) -> None:
    """Through the length-sorted loader, every PixelRec item's token ids are its image's placeholders, the
    instruction, its fields as ``"\\n{key}: {value}"`` lines tokenized whole and cut at the budget (20 tokens cuts
    items 1, 2 and 6), and the item token; items 7 and 8 have no image."""
    catalog = ItemCatalog(PixelRecDataModule(str(pixelrec_dir), cache_dir=str(tmp_path)).dataset)
    encoder = MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE, max_text_tokens=20)
    tokenizer = encoder.processor.tokenizer

    def expected(item_id: int) -> list[int]:
        image = catalog.image(item_id, max_size=IMAGE_SIZE)
        lines = "".join(f"\n{key}: {value}" for key, value in catalog.fields(item_id).items())
        return ((encoder.processor.image_inputs([image])[0][0] if image is not None else [])
                + tokenizer(encoder.instruction, add_special_tokens=False)["input_ids"]
                + tokenizer(lines, add_special_tokens=False)["input_ids"][:20] + [encoder.item_token_id])

    served = {item_id: ids[:length].tolist() for batch in item_loader(catalog, encoder.prompts, batch_size=3)
              for item_id, ids, length in zip(batch.item_ids.tolist(), batch.input_ids, batch.lengths)}
    assert served == {item_id: expected(item_id) for item_id in range(1, len(catalog) + 1)}
    with pytest.raises(TypeError, match=r"MultimodalItemEncoder \(a model\): pass .*MultimodalItemEncoder\.prompts"):
        item_loader(catalog, encoder)  # its weights would travel to every DataLoader worker
