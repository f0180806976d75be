"""Fixtures shared across the suite: copies of the raw MovieLens fixtures that a test may corrupt."""

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    """A private copy of the ML-1M-layout fixture."""
    return Path(shutil.copytree(FIXTURES / "movielens" / "ml-1m", tmp_path / "ml-1m"))


@pytest.fixture
def ml100k_dir(tmp_path: Path) -> Path:
    """A private copy of the ML-100K-layout fixture."""
    return Path(shutil.copytree(FIXTURES / "movielens" / "ml-100k", tmp_path / "ml-100k"))
