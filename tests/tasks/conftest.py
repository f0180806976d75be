"""The task tests build Trainers with no ``default_root_dir``: Lightning then writes into the working folder
(and an end-to-end Molar its exported MIRM, ``<run dir>/mirm_encoder``), so each test runs in its own."""

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def in_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
