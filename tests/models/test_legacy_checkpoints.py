"""Checkpoints written before the transformer body moved to ``models/transformer.py`` still load, strictly.

``tests/fixtures/checkpoints/*.ckpt`` were written by that older code (``make_fixtures.py``). Each model is built
from the config its checkpoint records, loads the old weights strictly, and must hold every one of them under
its new name; its outputs are then checked against the model's own other path (``encode_sequence`` against
``sequence_states(...)[:, -1]``, the item table against the checkpoint's). That the old checkpoints also give
their recorded test metrics is the CLI's test (``expected.json``).
"""

import importlib
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

CHECKPOINTS = Path(__file__).parents[1] / "fixtures" / "checkpoints"
SASREC_RENAMES = {"position_embedding.": "transformer.position_embedding.",
                  "embedding_norm.": "transformer.embedding_norm.", "blocks.": "transformer.blocks."}
# row -> (the task's attribute holding the model, old key prefix -> new key prefix)
ROWS = {
    "sasrec": ("encoder", SASREC_RENAMES),
    "duorec": ("encoder", SASREC_RENAMES),
    "gru4rec": ("encoder", {}),
    "fpmc": ("encoder", {}),
    "sasrec_bert": ("user_encoder", {"sasrec.item_embedding.": "input_projection.", "sasrec.": "transformer."}),
}


def new_name(old: str, renames: dict[str, str]) -> str:
    prefix = next((prefix for prefix in renames if old.startswith(prefix)), None)
    return old if prefix is None else renames[prefix] + old[len(prefix):]


def load(row: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model built from ``row``'s recorded config, and its old weights (keys relative to the model)."""
    checkpoint = torch.load(CHECKPOINTS / f"{row}.ckpt", map_location="cpu", weights_only=True)
    attribute, _ = ROWS[row]
    spec = checkpoint["hyper_parameters"][attribute]
    module_name, _, class_name = spec["class_path"].rpartition(".")
    model = getattr(importlib.import_module(module_name), class_name)(**spec["init_args"])
    prefix = f"{attribute}."
    old = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    return model, old


@pytest.mark.parametrize("row", list(ROWS))
def test_every_old_weight_lands_under_its_new_name(row: str) -> None:
    model, old = load(row)
    result = model.load_state_dict(dict(old), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    renames = ROWS[row][1]
    now = model.state_dict()
    assert sorted(now) == sorted(new_name(key, renames) for key in old)
    for key, value in old.items():
        assert torch.equal(now[new_name(key, renames)], value), key
    if renames:
        assert not any(key.startswith(tuple(renames)) for key in now)  # the new names are not the old ones
    assert not model.load_state_dict(now, strict=True).missing_keys  # new checkpoints load untouched


@pytest.mark.parametrize("row", ["sasrec", "duorec", "gru4rec", "fpmc"])
def test_id_models_from_old_checkpoints_rank_with_the_old_item_table(row: str) -> None:
    model, old = load(row)
    model.load_state_dict(old)
    model.eval()
    item_seq = torch.tensor([[0, 0, 3, 4, 5, 1], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])
    user_ids = torch.tensor([0, 5, 11])
    with torch.no_grad():
        states = model.sequence_states(item_seq, item_seq != 0, user_ids)
        user = model.encode_sequence(item_seq, item_seq != 0, user_ids)
    torch.testing.assert_close(user, states[:, -1], rtol=1e-5, atol=1e-5)
    tables = [old[key] for key in ("item_embedding.weight", "item_user_factors.weight", "item_last_factors.weight")
              if key in old]
    assert torch.equal(model.item_embeddings(), torch.cat(tables, dim=-1))


def test_sasrec_user_encoder_from_an_old_checkpoint_encodes_like_its_states() -> None:
    model, old = load("sasrec_bert")
    model.load_state_dict(old)
    model.eval()
    torch.manual_seed(0)
    item_embs = torch.randn(3, 6, model.input_size)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6, [False] * 5 + [True]])
    with torch.no_grad():
        states = model.sequence_states(item_embs, mask)
        user = model.encode_sequence(item_embs, mask)
    assert states.shape == (3, 6, model.input_size)
    torch.testing.assert_close(user, states[:, -1], rtol=1e-5, atol=1e-5)


def test_models_with_the_renaming_hook_still_pickle_and_load_old_checkpoints() -> None:
    """DDP spawn pickles the task with its models; the unpickled copy still renames old keys."""
    model, old = load("sasrec")
    copy = pickle.loads(pickle.dumps(model))
    copy.load_state_dict(old)
    assert torch.equal(copy.transformer.position_embedding.weight, old["position_embedding.weight"])
