"""What counts as a usable image file: the one structural check shared by preparation (``image_policy``) and
the downloader (``molar data fetch-images``: resuming, truncated transfers).

It lives apart from the downloader so that preparing a data set does not import the download machinery.
:class:`~molar_lightning.data.catalog.ItemCatalog` still survives a file that passes the check but fails to
decode.
"""

import os
from typing import Optional

from PIL import Image, UnidentifiedImageError

MISSING = "missing"


def image_problem(path: os.PathLike | str) -> Optional[str]:
    """Why the file at ``path`` is not a usable image (:data:`MISSING` when absent), or None when it is.

    Checks structure, never pixels: the format's signature at the start and, for JPEG, PNG, GIF and WebP,
    the end marker that a complete file has (a download cut short lacks it). That costs one open and two
    small reads, so a 300k-item catalogue is checked in seconds. Other formats are accepted when Pillow
    recognises their header.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - 64, 0))
            tail = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if not head:
        return "empty file"
    if head.startswith(b"\xff\xd8\xff"):
        return None if tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") else "truncated JPEG (no end-of-image marker)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if tail.endswith(b"IEND\xaeB`\x82") else "truncated PNG (no IEND chunk)"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return None if tail.rstrip(b"\x00").endswith(b";") else "truncated GIF (no trailer)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return None if int.from_bytes(head[4:8], "little") + 8 <= size else "truncated WebP"
    try:
        with Image.open(path):
            return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "not an image (unknown file signature)"
