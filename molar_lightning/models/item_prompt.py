"""``ItemPromptProcessor``: an item's text and image -> the MIRM's inputs, without the model.

The MIRM prompt (Molar, arXiv 2412.18176, Section 3.2) is the item's image, an instruction, the item's text
fields capped at a token budget, then the item token ``[Cur_Item]``. Building it needs the backbone's tokenizer
and image processor (:class:`~molar_lightning.models.backbones.BackboneProcessor`) and the encoder's prompt
settings, never its weights; so this class holds exactly those, and it is what the data side holds
(``molar_lightning.data.item_inputs``: the item loader of ``molar embed`` and of evaluation, and the training
collate of end-to-end Molar). DataLoader workers then carry a tokenizer and an image processor, not a copy of
the model, which under the ``spawn`` and ``forkserver`` start methods would be pickled into every worker.

``MultimodalItemEncoder`` builds one from its own settings and exposes it as ``encoder.prompts``.
"""

from typing import Literal, Optional, Sequence

import torch
from PIL import Image

from molar_lightning.models.backbones import BackboneProcessor

Modality = Literal["image+text", "image", "text"]
MODALITIES = ("image+text", "image", "text")


class ItemContentError(ValueError):
    """An item has nothing to embed under the chosen modality."""


def check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be image+text, image or text, got {modality!r}")


class ItemPromptProcessor:
    """Items' text and PIL images -> MIRM inputs (``input_ids``, ``mm_token_type_ids``, image tensors); weights-free
    and picklable.

    Args:
        processor: the backbone's tokenizer and image processor.
        modality: what of the item the model sees: ``image+text``, ``image`` or ``text``.
        instruction: the text between the image and the item's fields.
        max_text_tokens: the item's fields are cut after this many tokens.
        image_size: side in pixels item images are resized to (also the largest side the loader decodes).
        item_token_id: the ``[Cur_Item]`` token appended to every prompt; None appends none (pooling other
            than ``item_token``).
        pack_sequences: batches of these inputs are packed into one row instead of padded.
    """

    def __init__(self, processor: BackboneProcessor, modality: Modality = "image+text",
                 instruction: str = "Compress the text and image into embedding.", max_text_tokens: int = 200,
                 image_size: int = 224, item_token_id: Optional[int] = None, pack_sequences: bool = False) -> None:
        check_modality(modality)
        self.processor = processor
        self.modality = modality
        self.instruction = instruction
        self.max_text_tokens = max_text_tokens
        self.image_size = image_size
        self.item_token_id = item_token_id
        self.pack_sequences = pack_sequences
        self.instruction_ids = processor.text_ids(instruction)
        self._image_token_count: Optional[int] = None

    @property
    def pad_token_id(self) -> int:
        return self.processor.pad_token_id

    @property
    def uses_images(self) -> bool:
        """Whether item images reach the model (the loader does not decode them otherwise)."""
        return self.modality != "text"

    def _segments(self, text_ids: list[int], image: Optional[Image.Image]) -> list:
        """The prompt as segments: image, instruction, capped text ids, item token (as the modality allows)."""
        segments: list = [image] if image is not None and self.uses_images else []
        segments += [self.instruction_ids, text_ids]
        if self.item_token_id is not None:
            segments.append([self.item_token_id])
        return segments

    def _check_content(self, text: str, has_image: bool) -> None:
        has_text = self.modality != "image" and bool(text.strip())
        if not (has_text or (has_image and self.uses_images)):
            wanted = {"image": "readable image", "text": "text"}.get(self.modality, "text or readable image")
            raise ItemContentError(
                f"no {wanted} under modality {self.modality!r} (it has {'text' if text.strip() else 'no text'} and "
                f"{'an' if has_image else 'no'} image); it would be embedded from the instruction alone. Fix its "
                f"data, or choose another modality"
            )

    def item_text_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Capped token ids of items' texts (none under modality ``image``), in one tokenizer call; the cap
        applies after tokenizing, as in the authors' code."""
        return self.processor.texts_ids([text if self.modality != "image" else "" for text in texts],
                                        self.max_text_tokens)

    def item_inputs(self, text: str, image: Optional[Image.Image]) -> dict[str, torch.Tensor]:
        """Model inputs of one item (``input_ids [n]``, and image tensors); refuses an item with no content.

        ``text`` is the item's fields as ``"\\n{key}: {value}"`` lines (``ItemCatalog.text``); modality
        ``image`` ignores it.
        """
        return self.items_inputs([(text, image)])[0]

    def items_inputs(self, items: Sequence[tuple[str, Optional[Image.Image]]],
                     text_ids: Optional[Sequence[Sequence[int]]] = None) -> list[dict[str, torch.Tensor]]:
        """:meth:`item_inputs` of many items with one tokenizer and one image-processor call, which is most of
        the saving of batched extraction when the model is small next to its input pipeline. ``text_ids``:
        the items' :meth:`item_text_ids` when already known (the loader keeps them from its length pass)."""
        for text, image in items:
            self._check_content(text, image is not None)
        if text_ids is None:
            text_ids = self.item_text_ids([text for text, _ in items])
        return self.processor.encode_batch([self._segments(list(ids), image)
                                            for ids, (_, image) in zip(text_ids, items)])

    def item_lengths(self, items: Sequence[tuple[str, bool]],
                     text_ids: Optional[Sequence[Sequence[int]]] = None) -> list[int]:
        """Token counts of items' prompts from their text and whether they have an image, without building
        image tensors (for length-sorted batches); refuses an item with no content, as :meth:`item_inputs` does."""
        for text, has_image in items:
            self._check_content(text, has_image)
        if text_ids is None:
            text_ids = self.item_text_ids([text for text, _ in items])
        if self._image_token_count is None and self.processor.accepts_images:
            blank = Image.new("RGB", (self.image_size, self.image_size))
            self._image_token_count = len(self.processor.image_inputs([blank])[0][0])
        fixed = len(self.instruction_ids) + (self.item_token_id is not None)
        return [fixed + len(ids) + (self._image_token_count if has_image and self.uses_images else 0)
                for ids, (_, has_image) in zip(text_ids, items)]
