"""Configurations that cannot work end in one message (exit 2) before any process starts or data is prepared:
the data folder here does not exist, so reaching the data at all would fail with another error."""

from pathlib import Path

import pytest

from molar_lightning.commands import main

ROOT = Path(__file__).parents[1]
NO_DATA = ["--data.init_args.data_dir", "/nonexistent/ml-1m"]
FSDP_CPU = ["--config", str(ROOT / "configs/trainer/fsdp_cpu.yaml")]


def refusal(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, *NO_DATA])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_fsdp_on_fewer_processes_than_its_mesh_is_refused(capsys) -> None:
    error = refusal(["--config", str(ROOT / "configs/movielens/hllm.yaml"), *FSDP_CPU, "--trainer.devices", "1"],
                    capsys)
    assert "data_parallel_size is 2 but the trainer starts 1 process(es)" in error
    assert "data_parallel_size: 1 and tensor_parallel_size: 1" in error


def test_fsdp_with_a_tensor_parallel_mesh_is_refused(capsys) -> None:
    error = refusal(["--config", str(ROOT / "configs/movielens/hllm.yaml"), *FSDP_CPU,
                     "--trainer.strategy.init_args.tensor_parallel_size", "2"], capsys)
    assert "data-parallel only" in error and "tensor_parallel_size: 1" in error


def test_fsdp_for_a_task_without_language_models_points_to_ddp(capsys) -> None:
    error = refusal(["--config", str(ROOT / "configs/movielens/sasrec.yaml"), *FSDP_CPU], capsys)
    assert "SequentialRecModule holds none here: use configs/trainer/ddp.yaml" in error


def test_a_strategy_argument_that_does_not_exist_is_refused(capsys) -> None:
    error = refusal(["--config", str(ROOT / "configs/movielens/hllm.yaml"), *FSDP_CPU,
                     "--trainer.strategy.init_args.data_paralel_size", "2"], capsys)
    assert "'trainer.strategy.init_args.data_paralel_size' is not an argument" in error
    assert "Did you mean 'data_parallel_size'?" in error


def test_end_to_end_molar_without_item_contents_is_refused(capsys) -> None:
    error = refusal(["--config", str(ROOT / "configs/movielens/hllm.yaml"), "--trainer.callbacks", "[]"], capsys)
    assert "needs the items' contents: add {class_path: molar_lightning.callbacks.item_inputs.ItemInputsCallback}" \
        in error


def test_the_item_inputs_callback_appended_on_the_command_line_counts(capsys) -> None:
    """``--trainer.callbacks+=...ItemInputsCallback`` is a valid way to add it: the check passes, and what is
    refused next is building a backbone from a folder that is not there."""
    absent = ["--model.init_args.item_encoder.init_args.backbone=/nonexistent/mirm",
              "--model.init_args.user_encoder.init_args.backbone=/nonexistent/dueg"]
    with pytest.raises(SystemExit) as raised:
        main(["fit", "--config", str(ROOT / "configs/movielens/hllm.yaml"), "--trainer.callbacks", "[]",
              "--trainer.callbacks+=molar_lightning.callbacks.item_inputs.ItemInputsCallback", *NO_DATA,
              "--trainer.logger=false", *absent])
    error = capsys.readouterr().err
    assert "needs the items' contents" not in error
    assert raised.value.code == 2 and "/nonexistent/" in error
