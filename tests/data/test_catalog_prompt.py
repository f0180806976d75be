"""PromptRenderer: field choice and order, word and token budgets, whole fields first then a cut one; and
the catalogue surviving an image that passes the structural check but does not decode."""

import re
from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.data.catalog import ItemCatalog, PromptRenderer
from molar_lightning.data.image_fetch import image_problem
from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.data.sources.movielens import MovieLens

FIELDS = {"title": "Toy Story (1995)", "genres": "Animation, Comedy",
          "description": "Toys come alive when nobody looks."}


def tokens(text: str) -> list[str]:
    """A tokenizer-like callable: words and punctuation marks are separate tokens."""
    return re.findall(r"\w+|[^\w\s]", text)


def test_every_field_in_catalog_order_without_a_budget() -> None:
    assert PromptRenderer()(FIELDS) == ("\ntitle: Toy Story (1995)\ngenres: Animation, Comedy"
                                        "\ndescription: Toys come alive when nobody looks.")


def test_chosen_fields_in_the_chosen_order_and_absent_ones_skipped() -> None:
    renderer = PromptRenderer(fields=["description", "brand", "title"])
    assert renderer(FIELDS) == "\ndescription: Toys come alive when nobody looks.\ntitle: Toy Story (1995)"


@pytest.mark.parametrize("budget, expected", [
    (8, "\ntitle: Toy Story (1995)\ngenres: Animation, Comedy"),  # 4 + 3 words; "description: Toys" is 2 more
    (11, "\ntitle: Toy Story (1995)\ngenres: Animation, Comedy\ndescription: Toys come alive"),
    (3, "\ntitle: Toy Story"),  # the first field is cut too
    (1, ""),  # not even the key and one word fit
], ids=["key-alone-does-not-fit", "cut-last-field", "cut-first-field", "nothing-fits"])
def test_word_budget(budget: int, expected: str) -> None:
    text = PromptRenderer(max_length=budget)(FIELDS)
    assert text == expected and len(text.split()) <= budget


def test_token_budget_counts_with_the_tokenizer() -> None:
    renderer = PromptRenderer(max_length=16, tokenizer=tokens)
    text = renderer(FIELDS)
    # title line: title : Toy Story ( 1995 ) = 7 tokens; genres line: genres : Animation , Comedy = 5 tokens;
    # 4 tokens remain: "description : Toys come" -> 4.
    assert text == "\ntitle: Toy Story (1995)\ngenres: Animation, Comedy\ndescription: Toys come"
    assert len(tokens(text)) == 16
    assert PromptRenderer(max_length=16)(FIELDS) != text  # a word budget cuts elsewhere


def test_a_hugging_face_style_tokenizer_output_is_counted_by_its_input_ids() -> None:
    def encode(text: str) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(tokens(text)))), "attention_mask": [1] * len(tokens(text))}

    assert PromptRenderer(max_length=16, tokenizer=encode)(FIELDS) == PromptRenderer(max_length=16, tokenizer=tokens)(
        FIELDS)


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        PromptRenderer(max_length=0)


def test_an_image_that_passes_the_check_but_does_not_decode_gives_none(ml1m_dir: Path, tmp_path: Path) -> None:
    posters = ml1m_dir / "posters"
    posters.mkdir()
    Image.new("RGB", (10, 10), "blue").save(posters / "1.jpg")
    (posters / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20 + b"\xff\xd9")  # markers, no image
    assert image_problem(posters / "2.jpg") is None  # looks complete from outside
    dataset = prepare_dataset(MovieLens(str(ml1m_dir), show_progress=False), str(tmp_path), PrepareParams())
    catalog = ItemCatalog(dataset)
    assert catalog.image_path(2) is not None and catalog.image(2) is None
    assert catalog.image(1).size == (10, 10)
    assert catalog.prompt(1) == catalog.text(1)  # the default renderer renders everything
