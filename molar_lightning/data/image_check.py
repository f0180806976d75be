"""What counts as a usable image file: the one check shared by preparation (``image_policy``) and the downloader
(``molar data fetch-images``: resuming, truncated transfers).

A file is usable when :class:`~molar_lightning.data.catalog.ItemCatalog` can decode it, so the check decodes
it too, cheaply: JPEGs at 1/8 scale (``Image.draft``, what the catalog does for small model inputs), other
formats in full once their header has passed the pixel cap. Reads are bounded before anything is read:
only regular files (a FIFO or ``/dev/zero`` as a poster path would otherwise be read without end), at most
:data:`MAX_IMAGE_BYTES` bytes and :data:`MAX_IMAGE_PIXELS` pixels (a 90-megapixel PNG can be 87 KB on disk
and 511 MB decoded). Bytes after a JPEG's end marker are accepted, as decoders accept them.

It lives apart from the downloader so that preparing a data set does not import the download machinery.
"""

import os
import stat
from typing import Optional

from PIL import Image, UnidentifiedImageError

MISSING = "missing"
MAX_IMAGE_BYTES = 50 * 2**20  # far above any product photo or poster (Amazon hi-res: under 5 MB)
MAX_IMAGE_PIXELS = 50_000_000  # about 7,000 x 7,000; Pillow itself only warns from 89 megapixels
CHECK_SIZE = 64  # JPEGs are decoded at the smallest scale covering this: all the data is still read

SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"))
FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def image_problem(path: os.PathLike | str, max_bytes: int = MAX_IMAGE_BYTES,
                  max_pixels: int = MAX_IMAGE_PIXELS) -> Optional[str]:
    """Why the file at ``path`` is not a usable image (:data:`MISSING` when absent), or None when it is.

    Args:
        path: the image file.
        max_bytes: larger files are refused without being read.
        max_pixels: images whose header declares more pixels are refused without being decoded.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in FILE_KINDS if test(info.st_mode)), "a special file")
        return f"not a regular file ({kind})"
    if info.st_size == 0:
        return "empty file"
    if info.st_size > max_bytes:
        return f"larger than the {max_bytes:,}-byte cap ({info.st_size:,} bytes)"
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the stat, opening it still returns at once.
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return "not a regular file"
            return _decode_problem(handle, max_pixels)
    except OSError as error:
        return f"unreadable ({error.strerror or error})"


def _decode_problem(handle, max_pixels: int) -> Optional[str]:
    """Open the image from its header, refuse it over the pixel cap, then decode it."""
    try:
        image = Image.open(handle)
    except Image.DecompressionBombError:  # a header declaring over twice Pillow's own limit
        return f"too many pixels (over {max_pixels:,})"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        handle.seek(0)
        head = handle.read(16)
        signed = next((name for signature, name in SIGNATURES if head.startswith(signature)), None)
        return f"truncated {signed} (incomplete or corrupt header)" if signed else "not an image (unknown header)"
    with image:
        width, height = image.size
        if width * height > max_pixels:
            return f"too many pixels ({width:,} x {height:,}, over {max_pixels:,})"
        try:
            image.draft("RGB", (CHECK_SIZE, CHECK_SIZE))  # only JPEG acts on it
            image.load()
        except Exception as error:  # Pillow's plugins raise many types on corrupt data; each means "no image"
            kind = "truncated" if "truncated" in str(error) else "does not decode as"
            return f"{kind} {image.format} ({error})"
    return None
