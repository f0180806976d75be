"""The quickstart shop: deterministic, read by the real PixelRec reader, and shaped as its docstring says."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from molar_lightning.data.sources.pixelrec import PixelRec
from molar_lightning.data.sources.quickstart import CATEGORIES, COLOURS, PATTERNS, SIZES, ShopParams, write_shop

NUM_ITEMS = len(CATEGORIES) * len(COLOURS) * len(PATTERNS) * len(SIZES)


def digest(folder: Path) -> str:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return hashlib.sha256(b"".join(path.name.encode() + path.read_bytes() for path in files)).hexdigest()


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return write_shop(str(tmp_path_factory.mktemp("shop") / "shop"), ShopParams(num_users=200))


def test_same_seed_same_bytes_other_seed_other_shop(shop: Path, tmp_path: Path) -> None:
    again = write_shop(str(tmp_path / "again"), ShopParams(num_users=200))
    other = write_shop(str(tmp_path / "other"), ShopParams(num_users=200, seed=1))
    assert digest(again) == digest(shop)
    assert digest(other) != digest(shop)


def test_pixelrec_reader_reads_every_item_with_text_and_cover(shop: Path) -> None:
    raw = PixelRec(str(shop), show_progress=False).read()
    assert len(raw.user_raw_ids) == 200 and len(raw.items) == len(set(raw.item_codes)) <= NUM_ITEMS
    record = raw.items[raw.item_raw_ids[0]]
    size, pattern, colour, category = record.title.lower().split()
    assert record.attributes["tag"] == f"{category}, {colour}, {pattern}, {size}"
    assert Path(record.image_path).is_file()
    assert not list(shop.parent.glob("*.partial"))  # written atomically: no staging folder left behind


def test_sequences_follow_content_except_bundle_pairs(shop: Path) -> None:
    """Consecutive items move one step round the colour wheel, unless the pair is a fixed bundle."""
    raw = PixelRec(str(shop), show_progress=False).read()
    colour_of = {raw_id: list(COLOURS).index(raw.items[raw_id].title.split()[2]) for raw_id in raw.item_raw_ids}
    order = np.lexsort((raw.timestamps, raw.user_codes))
    users, items = raw.user_codes[order], np.asarray(raw.item_raw_ids)[raw.item_codes[order]]
    same_user = users[1:] == users[:-1]
    steps = np.array([(colour_of[b] - colour_of[a]) % len(COLOURS) for a, b in zip(items[:-1], items[1:])])[same_user]
    pairs = list(zip(items[:-1][same_user], items[1:][same_user]))
    wheel_steps = np.isin(steps, (1, len(COLOURS) - 1)).mean()
    assert 0.7 < wheel_steps < 0.95  # content explains most moves, bundle partners the rest
    off_wheel = [pair for pair, step in zip(pairs, steps) if step not in (1, len(COLOURS) - 1)]
    partner = {}
    for first, second in off_wheel:  # every off-wheel move goes to that item's one partner
        assert partner.setdefault(first, second) == second
