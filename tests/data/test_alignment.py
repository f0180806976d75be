"""Alignment mixtures: each switch removes its mixture, counts are capped, UB never sees a validation or test
item, prompts carry the image (IT) or hide the answer (SA), and only answer tokens are labelled."""

from pathlib import Path

import numpy as np
import pytest

from molar_lightning.data.alignment import (
    IGNORE_INDEX,
    SA_INSTRUCTION,
    AlignmentDataset,
    build_examples,
    collate_alignment,
)
from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.sources.movielens import MovieLens
from molar_lightning.models.backbones import load_backbone
from tests.models.conftest import (  # noqa: F401 - fixtures
    IMAGE_SIZE,
    add_posters_and_plots,
    qwen_tokenizer_dir,
    tiny_qwen2_vl_dir,
)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> ItemCatalog:
    folder = tmp_path_factory.mktemp("ml-1m")
    for path in (Path(__file__).parents[1] / "fixtures" / "movielens" / "ml-1m").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    add_posters_and_plots(folder)
    return ItemCatalog(prepare_dataset(MovieLens(str(folder), show_progress=False), str(folder / "cache"),
                                       PrepareParams()))


def examples(catalog: ItemCatalog, **switches):
    offsets, items = catalog.dataset.flat_sequences
    options = {"image_text": True, "structured_attributes": True, "user_behaviour": True, **switches}
    return build_examples(catalog, offsets, items, **options, examples_per_mixture=5, ub_history=3, ub_targets=2,
                          seed=0)


def test_switches_and_counts(catalog: ItemCatalog) -> None:
    counts = {mixture: sum(e.mixture == mixture for e in examples(catalog)) for mixture in ("it", "sa", "ub")}
    assert counts == {"it": 5, "sa": 5, "ub": 5}
    assert {e.mixture for e in examples(catalog, image_text=False)} == {"sa", "ub"}
    assert {e.mixture for e in examples(catalog, user_behaviour=False, structured_attributes=False)} == {"it"}
    it = [e for e in examples(catalog) if e.mixture == "it"]
    assert all(catalog.image_path(e.items[0]) is not None and "description" in catalog.fields(e.items[0]) for e in it)
    assert examples(catalog) == examples(catalog)  # seeded


def test_user_behaviour_uses_training_items_only(catalog: ItemCatalog) -> None:
    offsets, items = catalog.dataset.flat_sequences
    training_parts = [items[offsets[u]:offsets[u + 1] - 2].tolist() for u in range(len(offsets) - 1)]
    ub = build_examples(catalog, offsets, items, False, False, True, examples_per_mixture=10_000, ub_history=3,
                        ub_targets=2, seed=1)
    assert len(ub) == sum(max(len(part) - 1, 0) for part in training_parts)  # every position, when asked for more
    for example in ub:
        run = list(example.items + example.targets)
        assert 1 <= len(example.items) <= 3 and 1 <= len(example.targets) <= 2
        assert any(part[i:i + len(run)] == run for part in training_parts for i in range(len(part))), run


def test_rendering_and_answer_only_labels(catalog: ItemCatalog, tiny_qwen2_vl_dir: Path) -> None:
    processor = load_backbone(str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE).processor
    chosen = {e.mixture: e for e in examples(catalog)}
    dataset = AlignmentDataset(catalog, [chosen["it"], chosen["sa"], chosen["ub"]], processor, item_text_tokens=16,
                               max_answer_tokens=8)
    decode = processor.tokenizer.decode
    it, sa, ub = (dataset[i] for i in range(3))
    assert it["image_grid_thw"].shape == (1, 3) and "<|image_pad|>" in decode(it["input_ids"])
    description = catalog.fields(chosen["sa"].items[0])["description"]
    prompt = decode(sa["input_ids"][sa["labels"] == IGNORE_INDEX])
    assert prompt.startswith(SA_INSTRUCTION) and description not in prompt and "title:" in prompt
    answer = decode(sa["labels"][sa["labels"] != IGNORE_INDEX])
    assert answer.endswith("<|im_end|>") and len(sa["labels"][sa["labels"] != IGNORE_INDEX]) == 8 + 1
    assert decode(ub["labels"][ub["labels"] != IGNORE_INDEX]).strip().startswith(
        catalog.fields(chosen["ub"].targets[0])["title"][:5])
    batch = collate_alignment([it, sa, ub], processor.pad_token_id)
    assert batch.labels.shape == batch.input_ids.shape and (batch.labels[batch.attention_mask == 0] == -100).all()
    assert np.isin(batch.input_ids[batch.mm_token_type_ids == 1].unique().numpy(), [151655]).all()


def test_the_item_token_follows_every_item_in_every_prompt(catalog: ItemCatalog, tiny_qwen2_vl_dir: Path) -> None:
    """With the encoder's ``[Cur_Item]`` id, each item of a prompt ends with it (after its image and text, as in
    the encoder's own prompt), and it is never part of an answer; without, no prompt holds it."""
    processor = load_backbone(str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE).processor
    chosen = {e.mixture: e for e in examples(catalog)}
    token = processor.pad_token_id + 1  # any id: the dataset only places it
    rows = [chosen["it"], chosen["sa"], chosen["ub"]]
    with_token = AlignmentDataset(catalog, rows, processor, item_text_tokens=16, max_answer_tokens=8,
                                  item_token_id=token)
    without = AlignmentDataset(catalog, rows, processor, item_text_tokens=16, max_answer_tokens=8)
    for index, example in enumerate(rows):
        sample, plain = with_token[index], without[index]
        prompt = sample["input_ids"][sample["labels"] == IGNORE_INDEX]
        assert int((prompt == token).sum()) == len(example.items)
        assert not (sample["labels"] == token).any() and not (plain["input_ids"] == token).any()
        assert len(sample["input_ids"]) == len(plain["input_ids"]) + len(example.items)
    ub = with_token[2]["input_ids"].tolist()
    last_item_text = processor.text_ids(catalog.text(chosen["ub"].items[-1]), 16)
    end = max(position for position, token_id in enumerate(ub) if token_id == token)
    assert ub[end - len(last_item_text):end] == last_item_text  # the token comes right after the item's text
