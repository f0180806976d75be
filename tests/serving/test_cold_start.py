"""Cold start: new items (text and image, no interactions) are embedded by the trained MIRM as the catalogue's
items are, and rank for a user as an item of the same content does; a bad items file is refused by line."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from molar_lightning.data.catalog import ItemCatalog
from molar_lightning.data.prepare import CanonicalDataset
from molar_lightning.serving.cold_start import read_new_items
from molar_lightning.serving.export import export
from molar_lightning.serving.live_model import ServingError
from molar_lightning.serving.recommend import Recommender
from molar_lightning.user_error import UserError


def write_items(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "n1", "title": ', "not valid JSON"),
    ('["n1"]', "each line must be a JSON object"),
    ({"title": "a mug"}, "id must be a non-empty string"),
    ({"id": "n1"}, "no title, description, attributes or image"),
    ({"id": "n1", "title": "a", "colour": "red"}, r"unknown field\(s\) colour"),
    ({"id": "n1", "attributes": {"size": 3}}, "attributes an object of strings"),
    ({"id": "n1", "image": "missing.jpg"}, "missing.jpg does not exist"),
    ({"id": "i1", "title": "a"}, "'i1' is already in the catalogue"),
    ({"id": "n0", "title": "again"}, "'n0' is also on line 1"),
], ids=["json", "not-object", "no-id", "empty", "unknown-field", "attribute-type", "no-image", "known-id", "twice"])
def test_a_bad_items_file_is_refused_naming_file_and_line(tmp_path: Path, line, message) -> None:
    items = write_items(tmp_path / "new.jsonl", [{"id": "n0", "title": "first"}, line])
    with pytest.raises(UserError, match=message) as refused:
        read_new_items(str(items), {"i1"})
    assert str(refused.value).startswith(f"{items}:2: ")


def test_rows_keep_the_catalogue_shape(tmp_path: Path) -> None:
    (tmp_path / "covers").mkdir()
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "pixelrec" / "cover" / "i1.jpg", tmp_path / "covers" / "a.jpg")
    items = write_items(tmp_path / "new.jsonl", [{"id": "a", "title": "Red mug", "attributes": {"tag": "mug"},
                                                  "image": "covers/a.jpg"}])
    (row,) = read_new_items(str(items), set())
    assert row == {"raw_id": "a", "title": "Red mug", "description": "", "attributes": [{"key": "tag", "value": "mug"}],
                   "image_path": str((tmp_path / "covers" / "a.jpg").resolve())}


def test_a_model_without_its_item_encoder_refuses_new_items(sasrec_run, tmp_path: Path) -> None:
    items = write_items(tmp_path / "new.jsonl", [{"id": "new", "title": "Toy Story 5"}])
    with pytest.raises(ServingError, match="of item ids: new items have no content model"):
        export(str(sasrec_run["checkpoint"]), str(tmp_path / "export"), items=str(items))


@pytest.mark.slow
@pytest.mark.parametrize("run", ["molar_run", "molar_cached_run"], ids=["end-to-end", "cached"])
def test_new_items_embed_as_catalogue_items_and_rank_for_their_user(run: str, request, tmp_path: Path) -> None:
    """Copies of three catalogue items (text fields and cover) get the items' rows, from the end-to-end MIRM or
    the one molar embed used; a copy of a user's best-scoring seen item ranks, unseen, above every unseen item
    that scores below the original."""
    molar_run = request.getfixturevalue(run)
    (prepared,) = molar_run["cache"].glob("pixelrec-*")
    catalog = ItemCatalog(CanonicalDataset(prepared))
    originals = [1, 2, 3]
    lines = [{"id": f"copy-of-{item}", "title": catalog.fields(item)["title"],
              "description": catalog.fields(item).get("description", ""), "attributes": catalog.attributes(item),
              "image": str(catalog.image_path(item))} for item in originals]
    trained = export(str(molar_run["checkpoint"]), str(tmp_path / "trained"))
    user = "u1"
    recommender = Recommender(str(trained))
    row = recommender.user_rows[user]
    seen = recommender.seen(row)
    scores = recommender.items @ recommender.users[row]
    best_seen = max(seen, key=lambda item: float(scores[item]))
    lines.append({"id": "copy-of-best", "title": catalog.fields(best_seen)["title"],
                  "description": catalog.fields(best_seen).get("description", ""),
                  "attributes": catalog.attributes(best_seen), "image": str(catalog.image_path(best_seen))})
    items = write_items(tmp_path / "new.jsonl", lines)
    extended = Recommender(str(export(str(molar_run["checkpoint"]), str(tmp_path / "with-new"), items=str(items))))
    assert extended.manifest["num_new_items"] == 4 and extended.item_ids[-4:] == [line["id"] for line in lines]
    for offset, item in enumerate([*originals, best_seen]):
        assert torch.allclose(extended.items[len(catalog) + 1 + offset], extended.items[item], atol=1e-4), item
        assert (extended.items[len(catalog) + 1 + offset] - extended.items[item % len(catalog) + 1]).abs().max() > 1e-2
    answer = extended.recommend({"user": user, "k": len(extended.item_ids)})
    above = sum(float(scores[item]) > float(scores[best_seen]) + 1e-4 for item in range(1, len(catalog) + 1)
                if item not in seen)
    position = answer["items"].index("copy-of-best")
    assert position <= above + 3  # only items scoring above the original (and the other copies) come first
    assert answer["scores"][position] == pytest.approx(float(scores[best_seen]), abs=1e-4)
