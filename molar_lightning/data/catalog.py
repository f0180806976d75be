"""``ItemCatalog``: what an item *is* for the content models: its text fields and its image.

MIRM reads items through this class only. Text fields come out in a fixed order (title, then the
structured attributes, then the description) with empty ones skipped, rendered as ``"\\n{key}: {value}"``
lines as in the Molar paper; :class:`PromptRenderer` chooses and orders the fields of the MLLM prompt's text
part and cuts it to a token budget. Images are opened with Pillow, converted to RGB and capped in size. A
missing or unreadable image yields ``None`` (the item is then text-only), never an exception in a training
loop: preparation already cleared the image path of items whose file failed the structural check
(``image_policy``), and a file that passes it but does not decode is caught here.
"""

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional, Sequence

from PIL import Image, UnidentifiedImageError

from molar_lightning.data.prepare import CanonicalDataset


class PromptRenderer:
    """The text part of an item's MLLM input: chosen fields as ``"\\n{key}: {value}"`` lines, cut to a budget.

    Fields are added whole, in order, while they fit; the first one that does not fit is cut to as many of
    its words as still fit (kept only when at least one does), and the rest are left out. With a tokenizer
    the budget counts the tokens of the whole text so far, so merges across field boundaries are counted
    as the model will see them.

    Args:
        fields: field names to render, in this order: ``title``, ``description`` or an attribute key
            (``genres``, ``brand``, ``tag``, ...); a field an item lacks is skipped. None renders every
            non-empty field in catalogue order.
        max_length: the budget: tokens when ``tokenizer`` is given, else whitespace-separated words (keys
            included); None never cuts.
        tokenizer: text -> token sequence, e.g. a Hugging Face tokenizer (its ``input_ids`` are counted) or
            its ``tokenize`` method; None counts words.
    """

    def __init__(self, fields: Optional[list[str]] = None, max_length: Optional[int] = None,
                 tokenizer: Optional[Callable[[str], Sequence]] = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1 (or None for no limit), got {max_length}")
        self.fields = fields
        self.max_length = max_length
        self.tokenizer = tokenizer

    def length(self, text: str) -> int:
        """Tokens (with a tokenizer) or words in ``text``."""
        if self.tokenizer is None:
            return len(text.split())
        tokens = self.tokenizer(text)
        return len(tokens["input_ids"] if isinstance(tokens, Mapping) else tokens)

    def __call__(self, fields: dict[str, str]) -> str:
        """Render ``fields`` (as :meth:`ItemCatalog.fields` gives them) within the budget."""
        keys = list(fields) if self.fields is None else [key for key in self.fields if fields.get(key)]
        text = ""
        for key in keys:
            line = f"\n{key}: {fields[key]}"
            if self.max_length is None or self.length(text + line) <= self.max_length:
                text += line
                continue
            words = fields[key].split()
            fitting, too_many = 0, len(words)  # binary search for the longest prefix of words that fits
            while fitting < too_many:
                middle = (fitting + too_many + 1) // 2
                if self.length(f"{text}\n{key}: {' '.join(words[:middle])}") <= self.max_length:
                    fitting = middle
                else:
                    too_many = middle - 1
            if fitting:
                text += f"\n{key}: {' '.join(words[:fitting])}"
            break
        return text


class ItemCatalog:
    """Text fields and images of the items of a prepared data set, by canonical item id (1..N).

    Args:
        dataset: the prepared data set whose ``items`` table is read.
        max_image_size: longest image side in pixels after loading; larger images are downscaled.
        prompt: renders :meth:`prompt`; None renders every field with no budget (the same text as :meth:`text`).
    """

    def __init__(self, dataset: CanonicalDataset, max_image_size: int = 448,
                 prompt: Optional[PromptRenderer] = None) -> None:
        self.dataset = dataset
        self.max_image_size = max_image_size
        self.prompt_renderer = prompt if prompt is not None else PromptRenderer()

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

    def text(self, item_id: int) -> str:
        """The item's fields as ``"\\n{key}: {value}"`` lines (the Molar prompt's text part), uncut."""
        return PromptRenderer()(self.fields(item_id))

    def prompt(self, item_id: int) -> str:
        """The text part of the item's MLLM input: the ``prompt`` renderer's fields, within its budget."""
        return self.prompt_renderer(self.fields(item_id))

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
