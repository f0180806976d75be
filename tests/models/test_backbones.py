"""Backbone loading: hub-style folders and config dicts take the same path, trainability follows the
fine-tuning mode, inputs match the real processor where torchvision exists, and unsupported models are
refused with the supported families named."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from molar_lightning.commands import main
from molar_lightning.models.backbones import UnsupportedBackboneError, load_backbone
from molar_lightning.user_error import MissingInputError
from molar_lightning.models.mirm import MultimodalItemEncoder
from tests.models.conftest import IMAGE_SIZE, TINY_QWEN2, TINY_QWEN2_VL, poster


def test_a_folder_loads_like_a_hub_checkpoint_and_a_config_builds_the_same_model(tiny_qwen2_vl_dir: Path) -> None:
    from_folder = load_backbone(str(tiny_qwen2_vl_dir), image_size=IMAGE_SIZE)
    assert from_folder.kind == "vision_language" and from_folder.hidden_size == 32
    assert type(from_folder.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(from_folder.processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert from_folder.processor.image_token_id == 151655  # the hub tokenizer's <|image_pad|>
    assert not any(p.requires_grad for p in from_folder.model.parameters())  # frozen by default
    from_config = load_backbone(str(tiny_qwen2_vl_dir), config=TINY_QWEN2_VL, finetuning="full")
    shapes = {name: p.shape for name, p in from_config.model.named_parameters()}
    assert shapes == {name: p.shape for name, p in from_folder.model.named_parameters()}
    assert all(p.requires_grad for p in from_config.model.parameters())
    assert not torch.equal(from_config.model.lm_head.weight, from_folder.model.lm_head.weight)  # random weights


def test_inputs_equal_the_real_qwen2_vl_processor(tiny_qwen2_vl_dir: Path) -> None:
    pytest.importorskip("torchvision", reason="Qwen2VLProcessor needs torchvision for its video processor")
    from transformers import AutoProcessor

    backbone = load_backbone(str(tiny_qwen2_vl_dir), image_size=56)
    image = poster("red", (56, 56))
    ours = backbone.processor.encode([image, "Describe it."])
    processor = AutoProcessor.from_pretrained(str(tiny_qwen2_vl_dir))
    theirs = processor(text=["<|vision_start|><|image_pad|><|vision_end|>Describe it."], images=[image],
                       images_kwargs={"size": {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}},
                       return_tensors="pt")
    for key in ("input_ids", "mm_token_type_ids"):
        assert ours[key].tolist() == theirs[key][0].tolist()
    for key in ("pixel_values", "image_grid_thw"):
        torch.testing.assert_close(ours[key], theirs[key])


@pytest.mark.parametrize("config, named", [
    ({"model_type": "vit"}, "neither an image-text-to-text model nor a text model"),
    ({"model_type": "llava"}, "image-text-to-text model whose image tokens MIRM does not know"),
], ids=["vision-only", "unsupported-vlm"])
def test_unsupported_backbones_are_refused_with_the_supported_families(config: dict, named: str) -> None:
    with pytest.raises(UnsupportedBackboneError) as error:
        MultimodalItemEncoder(backbone="any/checkpoint", backbone_config=config)
    message = str(error.value)
    assert named in message
    for family in ("Qwen2-VL", "Qwen2.5-VL", "InternVL2.5", "DeepSeek-VL", "Llama-3.2-Vision"):
        assert family in message


def test_a_text_only_backbone_is_refused_images(tiny_qwen2_dir: Path) -> None:
    with pytest.raises(ValueError, match="text-only decoder model; it cannot see images.*modality: text"):
        MultimodalItemEncoder(backbone=str(tiny_qwen2_dir), modality="image+text")


def test_flash_attention_without_flash_attn_says_how_to_get_it() -> None:
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
        pytest.skip("flash-attn is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install flash-attn"):
        load_backbone("any/checkpoint", attn_implementation="flash_attention_2")


def test_a_backbone_folder_that_is_not_there_is_one_message_on_the_cli(ml1m_dir: Path, tmp_path: Path,
                                                                       capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/movielens/molar.yaml", "--data.init_args.data_dir", str(ml1m_dir),
              "--data.init_args.cache_dir", str(tmp_path / "cache"), "--trainer.default_root_dir", str(tmp_path),
              "--model.init_args.user_encoder.init_args.backbone", "/no/such/folder"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert ("error: backbone '/no/such/folder': no such folder (and a hub name has at most one '/'); give a hub "
            "name (e.g. Qwen/Qwen2-VL-2B-Instruct) or a folder written by save_pretrained") in error


def test_a_backbone_folder_without_config_json_is_refused(qwen_tokenizer_dir: Path) -> None:
    assert not (qwen_tokenizer_dir / "config.json").exists()  # a tokenizer alone
    with pytest.raises(MissingInputError, match=rf"backbone '{qwen_tokenizer_dir}': the folder holds no config.json"):
        load_backbone(str(qwen_tokenizer_dir))
    built = load_backbone(str(qwen_tokenizer_dir), config=TINY_QWEN2)  # with config= only the tokenizer is read
    assert built.hidden_size == TINY_QWEN2["hidden_size"]


@pytest.mark.slow  # a fresh interpreter: the hub library reads HF_HUB_OFFLINE when it is imported
def test_a_hub_name_goes_to_the_hub_and_its_refusal_is_one_message() -> None:
    """Offline (no network here), the hub's cache is asked and has no such model: the library's reason, worded."""
    script = ("from molar_lightning.models.backbones import load_backbone\n"
              "try:\n    load_backbone('nobody-here/no-such-model')\n"
              "except Exception as error:\n    print(type(error).__name__, error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.stdout.startswith("MissingInputError backbone 'nobody-here/no-such-model' is no local folder, and "
                                    "the hub cannot give it (")
    assert "check the name and the network" in result.stdout
