"""The image check: it agrees with decoding (complete files of each format and JPEGs with trailing bytes pass;
truncated, corrupted and header-only files are named), reads are bounded (a FIFO and /dev/zero are refused at
once, a 90-megapixel PNG is refused from its header), and preparation, which uses it, does not load the
downloader."""

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.data.image_check import MISSING, image_problem
from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.raw import RawDataError
from molar_lightning.data.sources.movielens import MovieLens


def encoded(image_format: str, mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> bytes:
    buffer = io.BytesIO()
    picture = Image.effect_noise(size, 60).convert("RGB") if mode == "RGB" else Image.new(mode, size, 1)
    picture.save(buffer, image_format)
    return buffer.getvalue()


JPEG = encoded("JPEG")
PNG = encoded("PNG")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG declaring ``width x height`` (all black) with its first ``rows`` rows (default: all),
    compressed row by row: 90 megapixels take under 100 KB and are never held in memory uncompressed."""
    compressor, row, body = zlib.compressobj(9), bytes(1 + width), []  # filter byte 0 + one byte per pixel
    for _ in range(height if rows is None else rows):
        body.append(compressor.compress(row))
    body.append(compressor.flush())
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", b"".join(body)) + png_chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """The test JPEG with its frame header (SOF0) rewritten to declare ``width x height``."""
    data = bytearray(JPEG)
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def corrupted_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"\xff" * 200 + data[middle + 200:]


def decodes(path: Path) -> bool:
    """The reference: Pillow decodes the whole image at full size, as the catalog would."""
    try:
        with Image.open(path) as opened:
            opened.convert("RGB")
        return True
    except Exception:
        return False


CASES = {  # name: (content, the start of the expected problem; None: usable)
    "jpeg": (JPEG, None),
    "png": (PNG, None),
    "gif": (encoded("GIF", "P"), None),
    "webp": (encoded("WEBP"), None),
    "bmp": (encoded("BMP"), None),
    "jpeg-trailing-bytes": (JPEG + b"\x00" * 7 + b"appended by an uploader", None),
    "jpeg-trailing-second-image": (JPEG + JPEG, None),
    "png-without-iend": (PNG[:-12], None),  # every pixel is there: decoders accept it, so do we
    "truncated-jpeg": (JPEG[: len(JPEG) // 2], "truncated JPEG"),
    "jpeg-without-end-marker": (JPEG[:-2], "truncated JPEG"),
    "truncated-png": (PNG[: len(PNG) // 2], "truncated PNG"),
    "jpeg-markers-only": (b"\xff\xd8\xff\xd9", "truncated JPEG (incomplete or corrupt header)"),
    "jpeg-corrupted-middle": (corrupted_middle(JPEG), "does not decode as JPEG"),
    "png-corrupted-middle": (corrupted_middle(PNG), "does not decode as PNG"),
    "jpeg-huge-dimensions": (jpeg_with_size(60_000, 60_000), "too many pixels"),
    "png-huge-dimensions": (png_bomb(100_000, 100_000, rows=2), "too many pixels"),
    "png-cut-after-its-header": (PNG[:40], "truncated PNG"),
    "html": (b"<html><body>Service Unavailable</body></html>", "not an image"),
    "empty": (b"", "empty file"),
}


@pytest.mark.parametrize("content, problem", CASES.values(), ids=CASES.keys())
def test_image_problem_agrees_with_decoding(tmp_path: Path, content: bytes, problem) -> None:
    path = tmp_path / "image.jpg"
    path.write_bytes(content)
    found = image_problem(path)
    assert (found is None) if problem is None else found.startswith(problem), found
    assert (found is None) == decodes(path)


def test_image_problem_of_a_missing_file(tmp_path: Path) -> None:
    assert image_problem(tmp_path / "nothing.jpg") == MISSING
    assert image_problem(tmp_path / "no_folder" / "nothing.jpg") == MISSING


def test_the_byte_and_pixel_caps_are_arguments(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(PNG)
    assert image_problem(path) is None
    cap = len(PNG) - 1
    assert image_problem(path, max_bytes=cap) == f"larger than the {cap:,}-byte cap ({len(PNG):,} bytes)"
    assert image_problem(path, max_pixels=48 * 32 - 1) == f"too many pixels (48 x 32, over {48 * 32 - 1:,})"


def test_a_directory_is_not_an_image(tmp_path: Path) -> None:
    assert image_problem(tmp_path) == "not a regular file (a directory)"


CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a runaway read fails here instead of filling memory
from molar_lightning.data.image_check import image_problem
start = time.perf_counter()
problem = image_problem(sys.argv[1])
# VmHWM: this process's own peak (ru_maxrss would count the parent's pages from before the exec).
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"problem": problem, "seconds": time.perf_counter() - start, "peak_mb": peak_kb / 1024}))
"""


def check_in_a_bounded_process(path: Path | str) -> dict:
    """``image_problem(path)`` in a child process capped at 1 GiB of address space and 30 s."""
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"image_problem({path}) was still running after 30 s")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


needs_posix = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                 reason="needs FIFOs, /dev/zero, resource limits and /proc (Linux)")


@needs_posix
def test_dev_zero_is_refused_without_reading_it() -> None:
    result = check_in_a_bounded_process("/dev/zero")
    assert result["problem"] == "not a regular file (a character device)"
    assert result["seconds"] < 5 and result["peak_mb"] < 200  # loose: the machine may be busy


@needs_posix
def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "poster.jpg"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait for one forever
    result = check_in_a_bounded_process(fifo)
    assert result["problem"] == "not a regular file (a FIFO)"
    assert result["seconds"] < 5


@needs_posix
def test_a_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "poster.jpg"
    link.symlink_to("/dev/zero")
    assert check_in_a_bounded_process(link)["problem"] == "not a regular file (a character device)"


@needs_posix
def test_a_90_megapixel_png_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(9_500, 9_500))
    assert path.stat().st_size < 200_000  # small on disk, 90 MB of pixels once decoded
    result = check_in_a_bounded_process(path)
    assert result["problem"] == "too many pixels (9,500 x 9,500, over 50,000,000)"
    assert result["seconds"] < 5 and result["peak_mb"] < 200  # loose: the machine may be busy


def test_image_policy_error_refuses_posters_that_do_not_decode(ml1m_dir: Path, tmp_path: Path) -> None:
    posters = ml1m_dir / "posters"
    posters.mkdir()
    movies = [line.split("::")[0] for line in (ml1m_dir / "movies.dat").read_text("latin-1").splitlines()]
    for movie in movies:
        (posters / f"{movie}.jpg").write_bytes(JPEG + b"trailing bytes")  # usable
    (posters / f"{movies[0]}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    (posters / f"{movies[1]}.jpg").write_bytes(corrupted_middle(JPEG))
    source = MovieLens(str(ml1m_dir), show_progress=False)
    with pytest.raises(RawDataError) as refused:
        prepare_dataset(source, str(tmp_path / "cache"), PrepareParams(image_policy="error", min_user_interactions=0,
                                                                        min_item_interactions=0))
    message = str(refused.value)
    assert "2 of 10 items have no usable image (0 missing, 2 corrupt)" in message, message
    assert f"{movies[0]}.jpg: truncated JPEG" in message and f"{movies[1]}.jpg: does not decode as JPEG" in message


def test_preparation_does_not_import_the_downloader() -> None:
    code = "import sys, molar_lightning.data.prepare; print('molar_lightning.data.image_fetch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
