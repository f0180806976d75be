"""InternVL2.5 (HF format) and DeepSeek-VL as item encoders, on tiny random-weight models built from their real
``transformers`` configs and image processors (with stand-in tokenizers): the placeholder-token rule writes as
many image tokens as the model has image features (the model itself refuses a mismatch), the embedding is the
model's own hidden state at the item token, and an item gives the same vector alone and in padded or packed
batches."""

from pathlib import Path

import pytest
import torch

from molar_lightning.models.mirm import ITEM_TOKEN, MultimodalItemEncoder
from tests.models.conftest import IMAGE_SIZE, TINY_DEEPSEEK_VL, TINY_INTERNVL, poster, stand_in_backbone
from tests.models.test_mirm import ITEMS, encode

# What each family's processor writes for one 28 px image: InternVL one pixel-shuffled token between <img> and
# </img>, DeepSeek-VL one token per patch of its 2 x 2 grid.
IMAGE_TEXT = {"internvl": "<img><IMG_CONTEXT></img>", "deepseek_vl": "<image_placeholder>" * 4}


@pytest.fixture(scope="module", params=[TINY_INTERNVL, TINY_DEEPSEEK_VL], ids=["internvl", "deepseek_vl"])
def encoder(request, tmp_path_factory, qwen_tokenizer_dir: Path) -> MultimodalItemEncoder:
    folder = stand_in_backbone(tmp_path_factory, qwen_tokenizer_dir, request.param)
    return MultimodalItemEncoder(backbone=str(folder), image_size=IMAGE_SIZE).eval()


def test_the_image_becomes_the_familys_placeholder_tokens(encoder: MultimodalItemEncoder) -> None:
    inputs = encoder.item_inputs(*ITEMS[2])
    text = encoder.processor.tokenizer.decode(inputs["input_ids"])
    model_type = encoder.backbone.model.config.model_type
    assert text == (f"{IMAGE_TEXT[model_type]}Compress the text and image into embedding.\ntitle: Jumanji (1995)"
                    f"{ITEM_TOKEN}")
    assert inputs["pixel_values"].shape == (1, 3, 28, 28)
    with torch.no_grad():  # as many image tokens as image features, or the model raises
        features = encoder.backbone.base.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert int((inputs["input_ids"] == encoder.processor.image_token_id).sum()) == features.shape[0] * features.shape[1]


def test_the_embedding_is_the_models_hidden_state_at_the_item_token(encoder: MultimodalItemEncoder) -> None:
    inputs = encoder.item_inputs(*ITEMS[0])
    with torch.no_grad():
        reference = encoder.backbone.model(input_ids=inputs["input_ids"][None], pixel_values=inputs["pixel_values"],
                                           output_hidden_states=True, use_cache=False)
    position = int((inputs["input_ids"] == encoder.item_token_id).nonzero())
    embedding = encode(encoder, [ITEMS[0]])[0]
    torch.testing.assert_close(embedding, reference.hidden_states[-1][0, position], atol=1e-5, rtol=0)
    assert (embedding - encode(encoder, [(ITEMS[0][0], poster("blue"))])[0]).abs().max() > 1e-3  # it sees the image


@pytest.mark.parametrize("pack, side", [(False, "right"), (False, "left"), (True, "right")],
                         ids=["padded-right", "padded-left", "packed"])
def test_embedding_does_not_depend_on_the_batch(encoder: MultimodalItemEncoder, pack: bool, side: str) -> None:
    alone = torch.cat([encode(encoder, [item]) for item in ITEMS])
    torch.testing.assert_close(encode(encoder, ITEMS, pack, side), alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(encoder, ITEMS[::-1], pack, side), alone.flip(0), atol=1e-5, rtol=0)
    assert (alone[0] - alone[3]).abs().max() > 1e-3
