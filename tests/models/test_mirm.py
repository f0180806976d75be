"""MultimodalItemEncoder on tiny real-architecture backbones: the prompt (built by its weights-free
``prompts``, which a processor loaded without any weights reproduces), the modality switch, pooling against
the backbone's own hidden states, batch- and padding-independence (packed too), LoRA trainability, save/load
round trips and refusal of items with nothing to embed."""

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

from molar_lightning.data.item_inputs import collate_items
from molar_lightning.models.backbones import BackboneProcessor
from molar_lightning.models.item_prompt import ItemPromptProcessor
from molar_lightning.models.mirm import ITEM_TOKEN, ItemContentError, MultimodalItemEncoder
from tests.models.conftest import IMAGE_SIZE, poster

# (text, image) as ItemCatalog.text renders items' fields
ITEMS = [
    ("\ntitle: Toy Story (1995)\ngenres: Animation\ndescription: Toys come alive.", poster("red")),
    ("\ntitle: Heat (1995)\ndescription: " + "A long heist story. " * 12, None),
    ("\ntitle: Jumanji (1995)", poster("blue", (60, 30))),
    ("\ntitle: Casino (1995)\ngenres: Drama, Thriller", poster("green")),
]


def encode(encoder: MultimodalItemEncoder, items, pack: bool = False, side: str = "right") -> torch.Tensor:
    batch = collate_items([(i, encoder.item_inputs(*item)) for i, item in enumerate(items)],
                          encoder.prompts.pad_token_id, pack, side)
    with torch.no_grad():
        return encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                       batch.image_inputs)


@pytest.fixture(scope="module")
def encoder(tiny_qwen2_vl_dir: Path) -> MultimodalItemEncoder:
    return MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE).eval()


def test_prompt_is_image_instruction_text_item_token(encoder: MultimodalItemEncoder) -> None:
    inputs = encoder.item_inputs(*ITEMS[2])
    text = encoder.processor.tokenizer.decode(inputs["input_ids"])
    assert text == ("<|vision_start|><|image_pad|><|vision_end|>Compress the text and image into embedding."
                    f"\ntitle: Jumanji (1995){ITEM_TOKEN}")  # 28 px -> one visual token
    assert inputs["mm_token_type_ids"].tolist() == (inputs["input_ids"] == 151655).long().tolist()
    assert inputs["image_grid_thw"].tolist() == [[1, 2, 2]]


def test_text_is_capped_at_the_token_budget(encoder: MultimodalItemEncoder) -> None:
    ids = encoder.item_inputs("\ntitle: Heat\ndescription: " + "word " * 500, None)["input_ids"].tolist()
    instruction = encoder.processor.text_ids(encoder.instruction)
    assert ids[: len(instruction)] == instruction and ids[-1] == encoder.item_token_id
    assert len(ids) - len(instruction) - 1 == encoder.max_text_tokens == 200


def test_a_batch_of_inputs_equals_inputs_built_one_by_one(encoder: MultimodalItemEncoder) -> None:
    together = encoder.prompts.items_inputs(ITEMS)  # one tokenizer and one image-processor call, cut per item
    for item, batched in zip(ITEMS, together):
        alone = encoder.item_inputs(*item)
        assert batched.keys() == alone.keys()
        for key in alone:
            assert torch.equal(batched[key], alone[key]), key
    lengths = encoder.prompts.item_lengths([(text, image is not None) for text, image in ITEMS])
    assert lengths == [len(inputs["input_ids"]) for inputs in together]


def test_a_processor_loaded_without_weights_builds_the_encoders_inputs(encoder: MultimodalItemEncoder,
                                                                       tiny_qwen2_vl_dir: Path) -> None:
    """``encoder.prompts`` needs the tokenizer (with ``[Cur_Item]``), the image processor, the config and the
    settings, nothing of the model: built from the checkpoint folder's files alone, it gives the same inputs."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_qwen2_vl_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [ITEM_TOKEN]}, replace_extra_special_tokens=False)
    processor = BackboneProcessor(tokenizer, AutoImageProcessor.from_pretrained(str(tiny_qwen2_vl_dir)),
                                  AutoConfig.from_pretrained(str(tiny_qwen2_vl_dir)), IMAGE_SIZE)
    prompts = ItemPromptProcessor(processor, image_size=IMAGE_SIZE,
                                  item_token_id=tokenizer.convert_tokens_to_ids(ITEM_TOKEN))
    assert prompts.item_token_id == encoder.item_token_id and prompts.pad_token_id == encoder.prompts.pad_token_id
    for ours, theirs in zip(prompts.items_inputs(ITEMS), encoder.prompts.items_inputs(ITEMS)):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    items = [(text, image is not None) for text, image in ITEMS]
    assert prompts.item_lengths(items) == encoder.prompts.item_lengths(items)


@pytest.mark.parametrize("pack, side", [(False, "right"), (False, "left"), (True, "right")],
                         ids=["padded-right", "padded-left", "packed"])
def test_embedding_does_not_depend_on_the_batch(encoder: MultimodalItemEncoder, pack: bool, side: str) -> None:
    alone = torch.cat([encode(encoder, [item]) for item in ITEMS])
    together = encode(encoder, ITEMS, pack, side)
    assert together.shape == (4, 32)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(encoder, ITEMS[::-1], pack, side), alone.flip(0), atol=1e-5, rtol=0)
    assert torch.equal(encode(encoder, ITEMS, pack, side), together)  # deterministic in eval mode
    assert (alone[0] - alone[3]).abs().max() > 1e-3  # and items do differ


def test_item_token_state_is_the_backbones_last_hidden_state_there(encoder: MultimodalItemEncoder) -> None:
    inputs = encoder.item_inputs(*ITEMS[0])
    with torch.no_grad():
        reference = encoder.backbone.model(
            input_ids=inputs["input_ids"][None], pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"], mm_token_type_ids=inputs["mm_token_type_ids"][None],
            output_hidden_states=True, use_cache=False)
    hidden = reference.hidden_states[-1]  # the last layer's output after the final norm
    position = int((inputs["input_ids"] == encoder.item_token_id).nonzero())
    torch.testing.assert_close(encode(encoder, [ITEMS[0]])[0], hidden[0, position], atol=1e-5, rtol=0)


def test_the_item_token_is_the_learnable_vector(encoder: MultimodalItemEncoder) -> None:
    before = encode(encoder, [ITEMS[0]])
    saved = encoder.item_token_embedding.data.clone()
    try:
        encoder.item_token_embedding.data += 1.0
        assert (encode(encoder, [ITEMS[0]]) - before).abs().max() > 1e-3
    finally:
        encoder.item_token_embedding.data.copy_(saved)


@pytest.fixture(scope="module")
def image_only(tiny_qwen2_vl_dir: Path) -> MultimodalItemEncoder:
    return MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE, modality="image").eval()


@pytest.mark.parametrize("modality", ["image", "text"])
def test_modality_switch_removes_the_image_or_the_text(tiny_qwen2_vl_dir: Path, image_only, modality: str) -> None:
    encoder = image_only if modality == "image" else MultimodalItemEncoder(
        backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE, modality=modality)
    inputs = encoder.item_inputs(*ITEMS[0])
    text = encoder.processor.tokenizer.decode(inputs["input_ids"])
    if modality == "image":
        assert "pixel_values" in inputs and "Toy Story" not in text and "<|image_pad|>" in text
    else:
        assert "pixel_values" not in inputs and "<|image_pad|>" not in text and "Toy Story" in text
    assert text.endswith(ITEM_TOKEN)


def test_an_item_with_nothing_to_embed_is_refused(encoder: MultimodalItemEncoder, image_only) -> None:
    with pytest.raises(ItemContentError, match="no text or readable image"):
        encoder.item_inputs("", None)
    with pytest.raises(ItemContentError, match="no text or readable image"):
        encoder.prompts.item_lengths([("\ntitle: Heat", False), ("\n  ", False)])
    with pytest.raises(ItemContentError, match=r"no readable image under modality 'image' \(it has text and no"):
        image_only.item_inputs("\ntitle: Heat", None)


def test_lora_trains_only_adapters_and_round_trips(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE, finetuning="lora",
                                    lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name == "item_token_embedding" for name in trainable)
    assert any(".visual." in name for name in trainable) is False  # Qwen2-VL's vision tower names its layers qkv/fc1
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    batch = collate_items([(i, encoder.item_inputs(*item)) for i, item in enumerate(ITEMS)],
                          encoder.prompts.pad_token_id)
    direction = torch.randn(4, 32)
    for _ in range(2):  # lora_B starts at zero, so lora_A only moves from the second step on
        optimizer.zero_grad()
        embeddings = encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids,
                             batch.image_inputs)
        (embeddings * direction).sum().backward()
        optimizer.step()
    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable
    encoder.eval()
    expected = encode(encoder, ITEMS)
    encoder.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE,
                                   adapter_path=str(tmp_path / "adapter")).eval()
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(encode(loaded, ITEMS), expected, atol=1e-6, rtol=0)


def test_full_fine_tuning_round_trips_through_a_backbone_folder(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    encoder = MultimodalItemEncoder(backbone=str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE, finetuning="full")
    assert all(p.requires_grad for p in encoder.parameters())
    with torch.no_grad():
        encoder.backbone.model.model.language_model.layers[0].mlp.up_proj.weight.mul_(1.5)
        encoder.item_token_embedding.add_(0.25)
    encoder.eval()
    expected = encode(encoder, ITEMS)
    encoder.save_pretrained(str(tmp_path / "full"))
    loaded = MultimodalItemEncoder(backbone=str(tmp_path / "full"), image_size=IMAGE_SIZE).eval()
    torch.testing.assert_close(encode(loaded, ITEMS), expected, atol=1e-6, rtol=0)


def test_text_only_decoder_packs_like_it_pads(tiny_qwen2_dir: Path) -> None:
    encoder = MultimodalItemEncoder(backbone=str(tiny_qwen2_dir), modality="text", pooling="mean").eval()
    items = [(text, None) for text, _ in ITEMS]
    alone = torch.cat([encode(encoder, [item]) for item in items])
    torch.testing.assert_close(encode(encoder, items, pack=True), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(encoder, items, side="left"), alone, atol=1e-5, rtol=0)
    inputs = encoder.item_inputs(*items[0])
    assert encoder.item_token_id is None and ITEM_TOKEN not in encoder.processor.tokenizer.decode(inputs["input_ids"])
    with torch.no_grad():  # mean pooling against the backbone's own last hidden state
        hidden = encoder.backbone.base(input_ids=inputs["input_ids"][None]).last_hidden_state
    torch.testing.assert_close(alone[0], hidden[0].mean(0), atol=1e-5, rtol=0)


def test_text_only_encoder_pads_either_side(tiny_bert_dir: Path) -> None:
    encoder = MultimodalItemEncoder(backbone=str(tiny_bert_dir), modality="text", pooling="last_token").eval()
    items = [(text, None) for text, _ in ITEMS]
    right, left = encode(encoder, items), encode(encoder, items, side="left")
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(encoder, items[1:2]), right[1:2], atol=1e-5, rtol=0)
