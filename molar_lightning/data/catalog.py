"""``ItemCatalog``: what an item *is* for the content models: its text fields and its image.

MIRM reads items through this class only. Text fields come out in a fixed order (title, then the
structured attributes, then the description) with empty ones skipped, and :meth:`ItemCatalog.text` is the
one place they are rendered, as ``"\\n{key}: {value}"`` lines as in the Molar paper; it never cuts them,
since the token budget is applied by whoever tokenizes the text (the authors' code cuts after tokenizing).
Images are opened with Pillow, converted to RGB and capped in size. A missing or unreadable image yields
``None`` (the item is then text-only), never an exception in a training loop: preparation already cleared
the image path of items whose file failed the structural check (``image_policy``), and a file that passes
it but does not decode is caught here.
"""

from functools import cached_property
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from molar_lightning.data.prepare import CanonicalDataset


class ItemCatalog:
    """Text fields and images of the items of a prepared data set, by canonical item id (1..N).

    Args:
        dataset: the prepared data set whose ``items`` table is read.
        max_image_size: longest image side in pixels after loading; larger images are downscaled.
    """

    def __init__(self, dataset: CanonicalDataset, max_image_size: int = 448) -> None:
        self.dataset = dataset
        self.max_image_size = max_image_size

    @cached_property
    def _rows(self) -> list[dict]:
        return self.dataset.items.to_list()

    def __len__(self) -> int:
        return len(self._rows)

    def _row(self, item_id: int) -> dict:
        if not 1 <= item_id <= len(self._rows):
            raise IndexError(f"item id {item_id} is outside 1..{len(self._rows)} (0 is padding)")
        return self._rows[item_id - 1]

    def fields(self, item_id: int) -> dict[str, str]:
        """Non-empty text fields in display order: title, attributes (as the source lists them), description."""
        row = self._row(item_id)
        fields = {"title": row["title"]}
        fields.update((pair["key"], pair["value"]) for pair in row["attributes"])
        fields["description"] = row["description"]
        return {key: value.strip() for key, value in fields.items() if value and value.strip()}

    def attributes(self, item_id: int) -> dict[str, str]:
        """The structured key/value pairs alone (brand, categories, genres, tag, ...), as the source lists them."""
        return {pair["key"]: pair["value"] for pair in self._row(item_id)["attributes"]}

    def text(self, item_id: int, description: bool = True) -> str:
        """The item's fields as ``"\\n{key}: {value}"`` lines (the Molar prompt's text part), uncut.

        ``description=False`` leaves the description out, for prompts whose answer it is (the SA mixture).
        """
        fields = self.fields(item_id)
        if not description:
            fields.pop("description", None)
        return "".join(f"\n{key}: {value}" for key, value in fields.items())

    def image_path(self, item_id: int) -> Optional[Path]:
        """The local image file (absolute), or None when the item has no usable image."""
        path = self._row(item_id)["image_path"]
        return Path(path) if path else None

    def image(self, item_id: int, max_size: Optional[int] = None) -> Optional[Image.Image]:
        """The item's image as RGB, longest side at most ``max_size`` (default ``max_image_size``); None if
        missing or unreadable. JPEGs are decoded directly at the smallest scale that still covers the size
        (``Image.draft``), which is most of the cost saved when a model looks at small images."""
        size = min(max_size or self.max_image_size, self.max_image_size)
        path = self.image_path(item_id)
        if path is None or not path.is_file():
            return None
        try:
            with Image.open(path) as opened:
                opened.draft("RGB", (size, size))
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        image.thumbnail((size, size))
        return image
