"""The structural image check: complete files of each format pass, truncated ones, HTML error pages, empty and
missing files are named; and preparation, which uses it, does not load the downloader."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.data.image_check import MISSING, image_problem


def encoded(image_format: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (12, 8), "red" if mode == "RGB" else 1).save(buffer, image_format)
    return buffer.getvalue()


JPEG = encoded("JPEG")


@pytest.mark.parametrize("content, problem", [
    (JPEG, None),
    (encoded("PNG"), None),
    (encoded("GIF", "P"), None),
    (encoded("WEBP"), None),
    (encoded("BMP"), None),  # no end marker to check: accepted because Pillow recognises the header
    (JPEG[: len(JPEG) // 2], "truncated JPEG"),
    (encoded("PNG")[:-20], "truncated PNG"),
    (b"<html><body>Service Unavailable</body></html>", "not an image"),
    (b"", "empty file"),
], ids=["jpeg", "png", "gif", "webp", "bmp", "truncated-jpeg", "truncated-png", "html", "empty"])
def test_image_problem(tmp_path: Path, content: bytes, problem) -> None:
    path = tmp_path / "image.jpg"
    path.write_bytes(content)
    found = image_problem(path)
    assert (found is None) if problem is None else found.startswith(problem)


def test_image_problem_of_a_missing_file(tmp_path: Path) -> None:
    assert image_problem(tmp_path / "nothing.jpg") == MISSING
    assert image_problem(tmp_path / "no_folder" / "nothing.jpg") == MISSING


def test_preparation_does_not_import_the_downloader() -> None:
    code = "import sys, molar_lightning.data.prepare; print('molar_lightning.data.image_fetch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
