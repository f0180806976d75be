"""Item ids -> image file names that stay inside the image folder and never collide.

The downloader (``molar data fetch-images``) writes, and the Amazon reader looks for, ``<image_dir>/<name>``
where the name comes from :func:`image_file_name`. An id that is already a plain file name (letters, digits,
``.``, ``_``, ``-``, starting with a letter or digit, at most 100 characters: every ASIN) is used as it is,
so folders filled before this rule existed keep working. Any other id (``./../../x``, ``a/b``, a space, an
empty id) becomes a readable stem of its safe characters, a ``+`` and 16 hex digits of the id's SHA-256:
it cannot leave the folder, and since a plain name never holds a ``+``, it cannot take another id's name.
"""

import hashlib
import re

PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def image_file_name(raw_id: str) -> str:
    """The file name (no folder) of item ``raw_id``'s image."""
    if PLAIN_ID.fullmatch(raw_id):
        return f"{raw_id}.jpg"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", raw_id)[:40].lstrip(".")
    digest = hashlib.sha256(raw_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{stem}+{digest}.jpg"
