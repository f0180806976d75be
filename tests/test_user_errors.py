"""A user's mistake ends in one message naming what to change and exit status 2, on the real command line;
``--debug`` or ``MOLAR_DEBUG=1`` shows the traceback; an internal error keeps its traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from molar_lightning import commands
from molar_lightning.commands import main
from molar_lightning.user_error import UserError

ROOT = Path(__file__).parents[1]


def molar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m molar_lightning ARGS`` as a user would, from the repository root."""
    environment = {key: value for key, value in os.environ.items() if key != "MOLAR_DEBUG"}
    environment.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "molar_lightning", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_prepare_with_a_missing_data_directory_prints_one_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    result = molar("prepare", "--config", "configs/movielens/sasrec.yaml", "--data.init_args.data_dir", str(missing),
                   "--data.init_args.cache_dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0] == (f"error: {missing} holds neither ratings.dat (ML-1M layout) nor u.data (ML-100K layout); "
                        f"point data_dir at an extracted MovieLens folder or pass download=True")
    assert lines[1:] == ["(run with --debug or MOLAR_DEBUG=1 for the traceback)"]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("debug", [["--debug"], pytest.param([], marks=pytest.mark.slow)],  # a subprocess each
                         ids=["--debug", "MOLAR_DEBUG=1"])
def test_debug_shows_the_traceback(debug: list[str], tmp_path: Path) -> None:
    result = molar("prepare", *debug, "--config", str(tmp_path / "missing.yaml"),
                   env=None if debug else {"MOLAR_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "MissingInputError: --config" in result.stderr


def test_a_missing_config_file_is_one_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--config", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: --config {tmp_path / 'missing.yaml'}: no such file")


def test_prepare_names_the_valid_keys_of_a_misspelt_one(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dri", "x"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert ("'data.init_args.data_dri' is not an argument of molar_lightning.data.datamodule.MovieLensDataModule"
            in error)
    assert "Valid keys here: data_dir, download" in error and "Did you mean 'data_dir'?" in error


def test_fit_with_a_missing_data_directory_is_one_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"),
              "--data.init_args.data_dir", str(tmp_path / "absent"), "--data.init_args.cache_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"error: {tmp_path / 'absent'} holds neither ratings.dat") for line in lines)
    assert not any("Traceback" in line for line in lines)


def test_a_trainer_setting_that_lightning_refuses_is_one_message(ml1m_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:  # two progress bars
        main(["fit", "--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dir",
              str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path),
              "--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar",
              "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: You added multiple progress bar callbacks to the Trainer" in error and "Traceback" not in error


def test_a_user_error_that_jsonargparse_wraps_is_still_one_message(ml1m_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:  # raised in the DataModule's constructor, inside jsonargparse
        main(["prepare", "--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--data.init_args.data_dir",
              str(ml1m_dir), "--data.init_args.cache_dir", str(tmp_path), "--data.init_args.max_seq_len", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: max_seq_len must be at least 1, got 0\n")


def test_an_internal_error_keeps_its_traceback(monkeypatch) -> None:
    def broken(args: list[str]) -> None:
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setitem(commands.OTHER_COMMANDS, "prepare", ("", broken))
    with pytest.raises(KeyError, match="a bug"):
        main(["prepare"])


def test_an_error_raised_while_handling_a_user_error_keeps_its_traceback(monkeypatch) -> None:
    def broken(args: list[str]) -> None:
        try:
            raise UserError("a user's mistake")
        except UserError:
            raise KeyError("a bug in the handler")

    monkeypatch.setitem(commands.OTHER_COMMANDS, "prepare", ("", broken))
    with pytest.raises(KeyError, match="a bug in the handler"):
        main(["prepare"])


def test_a_setting_that_cannot_work_is_one_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--data", "PixelRecDataModule", "--data.data_dir", str(ROOT / "tests/fixtures/pixelrec"),
              "--data.cache_dir", str(tmp_path), "--data.rating_threshold", "4"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "\nerror: rating_threshold is 4.0 but this source has no ratings; set it to null\n" in error
