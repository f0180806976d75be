"""Private copies of the Amazon and PixelRec raw fixtures (tests may corrupt them), and a way to edit a
gzipped JSON-lines file in place."""

import gzip
import shutil
from pathlib import Path
from typing import Callable

import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def amazon_dir(tmp_path: Path) -> Path:
    """A copy of the three Amazon release folders: ``2023/``, ``2018/``, ``2014/``."""
    return Path(shutil.copytree(FIXTURES / "amazon", tmp_path / "amazon", ignore=shutil.ignore_patterns("*.py")))


@pytest.fixture
def pixelrec_dir(tmp_path: Path) -> Path:
    """A copy of the PixelRec50K-layout fixture."""
    return Path(shutil.copytree(FIXTURES / "pixelrec", tmp_path / "pixelrec", ignore=shutil.ignore_patterns("*.py")))


@pytest.fixture
def rewrite_gz() -> Callable[[Path, Callable[[list[str]], list[str]]], None]:
    """``rewrite_gz(path, edit)`` replaces the lines of a gzipped text file with ``edit(lines)``."""

    def rewrite(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in edit(lines)))

    return rewrite
