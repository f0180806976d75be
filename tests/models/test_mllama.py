"""Llama-3.2-Vision (Mllama) as the item encoder, on a tiny random-weight model: the ``<|image|>`` prompt and
the cross-attention inputs equal what the real ``MllamaProcessor`` builds, the embedding is the model's own
hidden state, an item gives the same vector alone and in padded batches (with and without images beside it),
the modality switch removes the image or the text, and LoRA trains only adapters."""

from pathlib import Path

import pytest
import torch

from molar_lightning.data.item_inputs import collate_items
from molar_lightning.models.mirm import ITEM_TOKEN, MultimodalItemEncoder
from tests.models.conftest import HIDDEN_SIZE, IMAGE_SIZE, poster
from tests.models.test_mirm import ITEMS, encode


def image_tensors(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in inputs.items() if key != "input_ids"}


@pytest.fixture(scope="module")
def encoder(tiny_mllama_dir: Path) -> MultimodalItemEncoder:
    return MultimodalItemEncoder(backbone=str(tiny_mllama_dir), image_size=IMAGE_SIZE).eval()


def test_prompt_and_cross_attention_inputs_equal_the_real_processor(encoder: MultimodalItemEncoder) -> None:
    from transformers import MllamaProcessor

    image = poster("red", (IMAGE_SIZE, IMAGE_SIZE))
    ours = encoder.item_inputs("\ntitle: Jumanji (1995)", image)
    text = encoder.processor.tokenizer.decode(ours["input_ids"])
    assert text == ("<|image|><|begin_of_text|>Compress the text and image into embedding.\ntitle: Jumanji (1995)"
                    f"{ITEM_TOKEN}")
    ours = encoder.processor.encode([image, "Describe it."])
    processor = MllamaProcessor(encoder.processor.image_processor, encoder.processor.tokenizer)
    theirs = processor(images=[[image]], text=["<|image|>Describe it."], return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"][0].tolist()
    for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"):
        assert torch.equal(ours[key], theirs[key]), key
    kwargs = encoder.backbone.image_kwargs(ours["input_ids"][None], image_tensors(ours))
    assert torch.equal(kwargs["cross_attention_mask"], theirs["cross_attention_mask"])


def test_the_embedding_is_the_models_hidden_state_at_the_item_token(encoder: MultimodalItemEncoder) -> None:
    inputs = encoder.item_inputs(*ITEMS[0])
    kwargs = encoder.backbone.image_kwargs(inputs["input_ids"][None], image_tensors(inputs))
    with torch.no_grad():  # the model's own path: pixel_values through its vision tower and projector
        reference = encoder.backbone.model(
            input_ids=inputs["input_ids"][None], pixel_values=inputs["pixel_values"],
            aspect_ratio_ids=inputs["aspect_ratio_ids"], aspect_ratio_mask=inputs["aspect_ratio_mask"],
            cross_attention_mask=kwargs["cross_attention_mask"], output_hidden_states=True, use_cache=False)
    position = int((inputs["input_ids"] == encoder.item_token_id).nonzero())
    embedding = encode(encoder, [ITEMS[0]])[0]
    torch.testing.assert_close(embedding, reference.hidden_states[-1][0, position], atol=1e-5, rtol=0)
    other_image = encode(encoder, [(ITEMS[0][0], poster("blue"))])[0]
    assert (embedding - other_image).abs().max() > 1e-3  # the cross-attention layer does see the image


@pytest.mark.parametrize("side", ["right", "left"])
def test_embedding_does_not_depend_on_the_batch(encoder: MultimodalItemEncoder, side: str) -> None:
    alone = torch.cat([encode(encoder, [item]) for item in ITEMS])  # ITEMS[1] has no image
    together = encode(encoder, ITEMS, side=side)
    assert together.shape == (4, HIDDEN_SIZE)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(encoder, ITEMS[::-1], side=side), alone.flip(0), atol=1e-5, rtol=0)
    assert (alone[0] - alone[3]).abs().max() > 1e-3


@pytest.mark.parametrize("modality", ["image", "text"])
def test_modality_switch_removes_the_image_or_the_text(tiny_mllama_dir: Path, modality: str) -> None:
    encoder = MultimodalItemEncoder(backbone=str(tiny_mllama_dir), image_size=IMAGE_SIZE, modality=modality)
    inputs = encoder.item_inputs(*ITEMS[0])
    text = encoder.processor.tokenizer.decode(inputs["input_ids"])
    if modality == "image":
        assert "pixel_values" in inputs and "Toy Story" not in text and text.startswith("<|image|>")
    else:
        assert "pixel_values" not in inputs and "<|image|>" not in text and "Toy Story" in text
    assert text.endswith(ITEM_TOKEN)


def test_packing_is_refused(tiny_mllama_dir: Path) -> None:
    with pytest.raises(ValueError, match="cross-attend to the other items' images"):
        MultimodalItemEncoder(backbone=str(tiny_mllama_dir), image_size=IMAGE_SIZE, pack_sequences=True)


def test_lora_trains_only_adapters(tiny_mllama_dir: Path) -> None:
    torch.manual_seed(0)
    encoder = MultimodalItemEncoder(backbone=str(tiny_mllama_dir), image_size=IMAGE_SIZE, finetuning="lora",
                                    lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name == "item_token_embedding" for name in trainable)
    assert any("cross_attn." in name for name in trainable)  # the layers that read the image adapt too
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    direction = torch.randn(len(ITEMS), HIDDEN_SIZE)
    for _ in range(2):  # lora_B starts at zero, so lora_A only moves from the second step on
        optimizer.zero_grad()
        (encode_with_grad(encoder) * direction).sum().backward()
        optimizer.step()
    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    assert changed <= trainable  # no frozen weight moved
    # Every adapter of the language model moved (the vision tower's reach the output through gates that start
    # near zero, so some of their steps vanish in float32).
    assert {name for name in trainable if "vision_model" not in name} <= changed


def encode_with_grad(encoder: MultimodalItemEncoder) -> torch.Tensor:
    batch = collate_items([(i, encoder.item_inputs(*item)) for i, item in enumerate(ITEMS)],
                          encoder.prompts.pad_token_id)
    return encoder(batch.input_ids, batch.attention_mask, batch.lengths, batch.mm_token_type_ids, batch.image_inputs)
