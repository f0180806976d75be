"""User encoders over item embeddings: causal, blind to left padding, and (DUEG) equal to the HF decoder run
by hand on the unpadded sequence."""

from pathlib import Path

import pytest
import torch

from molar_lightning.models.dueg import GRU4RecUserEncoder, LLMUserEncoder, SASRecUserEncoder
from molar_lightning.models.protocol import ContentSequenceEncoder

WIDTH = 16


def build(kind: str, tiny_qwen2_dir: Path, **options):
    torch.manual_seed(0)
    if kind == "llm":
        return LLMUserEncoder(str(tiny_qwen2_dir), input_size=WIDTH, **options)
    if kind == "sasrec":
        return SASRecUserEncoder(WIDTH, max_seq_len=8, hidden_size=16, num_heads=2, inner_size=32)
    return GRU4RecUserEncoder(WIDTH, hidden_size=24)


def left_padded(embs: torch.Tensor, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    padded = torch.cat([torch.zeros(len(embs), padding, embs.shape[-1]), embs], dim=1)
    mask = torch.ones(padded.shape[:2], dtype=torch.bool)
    mask[:, :padding] = False
    return padded, mask


@pytest.mark.parametrize("kind", ["llm", "sasrec", "gru4rec"])
def test_states_are_causal_and_blind_to_left_padding(kind: str, tiny_qwen2_dir: Path) -> None:
    encoder = build(kind, tiny_qwen2_dir).eval()
    assert isinstance(encoder, ContentSequenceEncoder)
    embs = torch.randn(2, 5, WIDTH)
    with torch.no_grad():
        plain = encoder.sequence_states(*left_padded(embs, 0))
        padded = encoder.sequence_states(*left_padded(embs, 3))
        changed = embs.clone()
        changed[:, -1] += 1.0
        later_changed = encoder.sequence_states(*left_padded(changed, 0))
        last = encoder.encode_sequence(*left_padded(embs, 3))
    assert plain.shape == (2, 5, WIDTH)
    torch.testing.assert_close(padded[:, 3:], plain, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(later_changed[:, :-1], plain[:, :-1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(later_changed[:, -1], plain[:, -1])
    torch.testing.assert_close(last, plain[:, -1], atol=1e-5, rtol=1e-4)


def test_dueg_equals_the_decoder_run_by_hand(tiny_qwen2_dir: Path) -> None:
    encoder = build("llm", tiny_qwen2_dir).eval()
    embs = torch.randn(1, 4, WIDTH)
    with torch.no_grad():
        ours = encoder.sequence_states(*left_padded(embs, 2))[:, 2:]
        hidden = encoder.decoder(inputs_embeds=encoder.input_projection(embs)).last_hidden_state
        reference = encoder.output_projection(hidden)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_user_token_changes_only_the_last_state(tiny_qwen2_dir: Path) -> None:
    plain = build("llm", tiny_qwen2_dir).eval()
    with_token = build("llm", tiny_qwen2_dir, user_token=True).eval()
    embs = torch.randn(2, 4, WIDTH)
    with torch.no_grad():
        without, with_ = (model.sequence_states(*left_padded(embs, 1)) for model in (plain, with_token))
    torch.testing.assert_close(with_[:, :-1], without[:, :-1])
    assert not torch.allclose(with_[:, -1], without[:, -1])


@pytest.mark.parametrize("finetuning", ["frozen", "lora", "full"])
def test_finetuning_decides_what_trains(finetuning: str, tiny_qwen2_dir: Path) -> None:
    encoder = build("llm", tiny_qwen2_dir, finetuning=finetuning)
    trainable = {name for name, parameter in encoder.named_parameters() if parameter.requires_grad}
    backbone = {name for name in trainable if name.startswith("decoder.")}
    assert {"input_projection.weight", "output_projection.weight"} <= trainable
    assert not any("embed_tokens" in name for name in trainable)  # inputs_embeds only: word embeddings never train
    if finetuning == "frozen":
        assert not backbone
    elif finetuning == "lora":
        assert backbone and all("lora_" in name for name in backbone)
    else:
        assert any(name.endswith("q_proj.weight") for name in backbone)
