"""MolarModule's item side and post-alignment as parts: end to end, ``[Cur_Item]`` trains in stage 2 where
it is read; checkpoints written under the earlier attribute names load strictly."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from molar_lightning.callbacks.item_inputs import ItemInputsCallback
from molar_lightning.models.mirm import MultimodalItemEncoder
from molar_lightning.tasks.molar import MolarModule
from tests.models.conftest import qwen_tokenizer_dir, tiny_qwen2_dir  # noqa: F401 - fixtures
from tests.tasks.test_molar import content_molar, fixture_data, lora_mirm, trainer  # noqa: F401 - fixtures


class ItemTokenGradient(pl.Callback):
    def on_after_backward(self, trainer, pl_module: MolarModule) -> None:
        self.norm = float(pl_module.item_encoder.item_token_embedding.grad.norm())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # a bf16 MIRM beside float32 DUEG and losses (32-true)
def test_the_item_token_gets_gradient_in_stage_two(fixture_data, tiny_qwen2_dir: Path, dtype: str) -> None:
    torch.manual_seed(0)
    mirm = MultimodalItemEncoder(str(tiny_qwen2_dir), modality="text", finetuning="lora", dtype=dtype)
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm, negatives_per_step=3)
    gradient = ItemTokenGradient()
    trainer(1, limit_train_batches=1, limit_val_batches=0,
            callbacks=[ItemInputsCallback(), gradient]).fit(module, datamodule=fixture_data)
    assert gradient.norm > 0


def test_checkpoints_under_the_earlier_names_load_strictly(fixture_data, tiny_qwen2_dir: Path) -> None:
    """Before the item side and post-alignment were parts, the MIRM was ``item_encoder.*`` and the ID-to-content
    map ``align_projection.*``."""
    mirm = lora_mirm(tiny_qwen2_dir, seed=0)
    trained = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm)
    renamed = {"items.encoder.": "item_encoder.", "post_alignment.projection.": "align_projection."}
    earlier = {}
    for key, value in trained.state_dict().items():
        new = next((prefix for prefix in renamed if key.startswith(prefix)), None)
        earlier[renamed[new] + key[len(new):] if new else key] = value
    assert any(key.startswith("item_encoder.") for key in earlier)
    assert any(key.startswith("align_projection.") for key in earlier)
    fresh = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=lora_mirm(tiny_qwen2_dir, seed=1))
    fresh.load_state_dict(earlier, strict=True)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)


@pytest.mark.slow  # a training run and three catalog embeddings (~1 min); `make test-slow`
def test_the_end_to_end_mirm_is_exported_for_serving(fixture_data, tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    """What stage 2 fine-tuned loads back (``adapter_path``) and embeds items as the trained module does."""
    mirm = lora_mirm(tiny_qwen2_dir, seed=0)
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm, negatives_per_step=3,
                           export_dir=str(tmp_path / "mirm"), optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    trainer(1, limit_train_batches=2, limit_val_batches=0,
            callbacks=[ItemInputsCallback()]).fit(module, datamodule=fixture_data)
    served = MultimodalItemEncoder(str(tiny_qwen2_dir), adapter_path=str(tmp_path / "mirm"), modality="text").eval()
    fresh = lora_mirm(tiny_qwen2_dir, seed=0).eval()
    ids = torch.arange(1, fixture_data.num_items + 1)
    with torch.no_grad():
        trained = module.eval().items.embed(ids, module.to_device)
        module.items.encoder = served
        exported = module.items.embed(ids, module.to_device)
        module.items.encoder = fresh
        untrained = module.items.embed(ids, module.to_device)
    torch.testing.assert_close(exported, trained, atol=1e-5, rtol=0)
    assert not torch.allclose(untrained, trained, atol=1e-3)  # stage 2 moved it


class CatalogDuringValidation(pl.Callback):
    """Records whether the end-to-end catalog table exists during each validation batch."""

    def __init__(self) -> None:
        self.present: list[bool] = []

    def on_validation_batch_end(self, trainer, pl_module: MolarModule, *args) -> None:
        self.present.append(pl_module.items.table is not None)


def test_the_end_to_end_catalog_is_dropped_after_each_evaluation(fixture_data, tiny_qwen2_dir: Path) -> None:
    mirm = lora_mirm(tiny_qwen2_dir, seed=0)
    module = content_molar(mirm.hidden_size, fixture_data.num_items, item_encoder=mirm, negatives_per_step=3)
    seen = CatalogDuringValidation()
    fit = trainer(1, limit_train_batches=1, limit_val_batches=1, callbacks=[ItemInputsCallback(), seen])
    fit.fit(module, datamodule=fixture_data)
    assert seen.present and all(seen.present)  # embedded for the evaluation ...
    assert module.items.table is None  # ... and freed after it
    with torch.no_grad():  # outside an evaluation (serving a checkpoint), the table is embedded when asked for
        assert module.eval().item_table().shape[0] == fixture_data.num_items + 1
