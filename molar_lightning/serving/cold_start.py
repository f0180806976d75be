"""Cold-start items: items added after training (text and image, no interactions), read from a JSON-lines file.

Each line is one item: ``{"id": "new-7", "title": "...", "description": "...", "attributes": {"tag": "..."},
"image": "covers/new-7.jpg"}`` (``id`` and one of title, description, attributes or image required; an
image path is relative to the file). :class:`NewItemCatalog` holds them in the shape of a prepared data set's
item table, so :class:`~molar_lightning.data.catalog.ItemCatalog` renders their text and opens their images
exactly as it does for the catalogue, and :func:`~molar_lightning.data.item_inputs.item_loader` builds the
trained MIRM's inputs for them in the same way (``molar export --items``).
"""

from functools import cached_property
from pathlib import Path
from typing import Any

from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.raw import json_lines, line_error
from molar_lightning.user_error import MissingInputError, UserError

TEXT_FIELDS = ("title", "description")


def _row(path: Path, number: int, line: str, record: Any) -> dict:
    """One line's item as an item-table row; refuses what it cannot use, naming the file and line."""
    if not isinstance(record, dict):
        raise line_error(path, number, line, "each line must be a JSON object with an id")
    unknown = set(record) - {"id", "image", "attributes", *TEXT_FIELDS}
    if unknown:
        raise line_error(path, number, line, f"unknown field(s) {', '.join(sorted(unknown))}; the fields are id, "
                                             f"title, description, attributes (an object of strings) and image")
    if not isinstance(record.get("id"), (str, int)) or isinstance(record.get("id"), bool) or record["id"] == "":
        raise line_error(path, number, line, "id must be a non-empty string (the raw item id recommendations use)")
    attributes = record.get("attributes") or {}
    texts = [record.get(name) for name in TEXT_FIELDS]
    if not isinstance(attributes, dict) or not all(isinstance(value, str) for value in attributes.values()) \
            or not all(text is None or isinstance(text, str) for text in texts):
        raise line_error(path, number, line, "title and description must be strings and attributes an object of "
                                             "strings")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise line_error(path, number, line, "image must be a file path (relative to this file) or absent")
    image_path = str((path.parent / image).resolve()) if image else None
    if image_path and not Path(image_path).is_file():
        raise line_error(path, number, line, f"image {image_path} does not exist")
    if not (any(texts) or attributes or image_path):
        raise line_error(path, number, line, "the item has no title, description, attributes or image to embed")
    return {"raw_id": str(record["id"]), "title": texts[0] or "", "description": texts[1] or "",
            "attributes": [{"key": key, "value": value} for key, value in attributes.items()],
            "image_path": image_path}


def read_new_items(path: str, known_raw_ids: set[str]) -> list[dict]:
    """The item-table rows of ``path`` (JSON lines), in file order; an id already in the catalogue or given
    twice is refused."""
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(f"--items {path} does not exist; it holds one JSON object per new item")
    rows, seen = [], {}
    for number, line, record in json_lines(file):
        row = _row(file, number, line, record)
        if row["raw_id"] in known_raw_ids:
            raise line_error(file, number, line, f"item {row['raw_id']!r} is already in the catalogue; new items "
                                                 f"need ids of their own")
        if row["raw_id"] in seen:
            raise line_error(file, number, line, f"item {row['raw_id']!r} is also on line {seen[row['raw_id']]}")
        seen[row["raw_id"]] = number
        rows.append(row)
    if not rows:
        raise UserError(f"--items {path} holds no items")
    return rows


class NewItemCatalog(ItemCatalog):
    """New items as an :class:`ItemCatalog` (ids ``1..K`` in file order) with no prepared data set behind it.

    Args:
        rows: item-table rows from :func:`read_new_items`.
        max_image_size: longest image side in pixels after loading.
    """

    def __init__(self, rows: list[dict], max_image_size: int = 448) -> None:
        super().__init__(dataset=None, max_image_size=max_image_size)
        self.rows = rows

    @cached_property
    def _rows(self) -> list[dict]:
        return self.rows
