"""The quickstart's built-in shop: a seeded generator of multimodal items and users, in PixelRec's raw layout.

Every item is one combination of a category (drawn as a shape), a colour on a colour wheel, a pattern and a
size; its cover is drawn with Pillow and its title, tag and description say the same in words. Users walk
through the shop the way content predicts: each keeps to a category for a while, moves one way round the
colour wheel (their own direction) and prefers one pattern and one size. Some items also have a "bundle
partner", an unrelated item that often comes next: a pair only co-occurrence reveals, which an ID model
learns and content cannot. A user's first item is drawn by long-tailed popularity. With many items and few
interactions each, a model that reads content learns one rule for all of them, where ID embeddings have
little to learn from.

The output is what :class:`~molar_lightning.data.sources.pixelrec.PixelRec` reads: ``interaction.csv``
(``item_id,user_id,timestamp``), ``item_info.csv`` and ``cover/<item_id>.jpg``. Run
``python -m molar_lightning.data.sources.quickstart --out DIR`` (``molar quickstart`` calls it).
"""

import argparse
import csv
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("mug", "lamp", "vase", "clock", "bag", "hat", "kite", "cushion")
COLOURS = {  # in colour-wheel order: neighbours look alike
    "red": (220, 40, 40), "orange": (240, 130, 30), "amber": (245, 180, 20), "yellow": (235, 225, 40),
    "lime": (160, 210, 50), "green": (50, 160, 60), "teal": (30, 150, 140), "cyan": (40, 200, 220),
    "blue": (40, 80, 220), "indigo": (75, 40, 150), "purple": (150, 60, 190), "pink": (235, 120, 180),
}
PATTERNS = ("plain", "striped", "dotted", "checked")
SIZES = ("small", "medium", "large")
ENGAGEMENT_COLUMNS = ("view_number", "comment_number", "thumbup_number", "share_number", "coin_number",
                      "favorite_number", "barrage_number")


@dataclass(frozen=True)
class ShopItem:
    category: int
    colour: int
    pattern: int
    size: int

    @property
    def words(self) -> tuple[str, str, str, str]:
        return SIZES[self.size], PATTERNS[self.pattern], list(COLOURS)[self.colour], CATEGORIES[self.category]

    def text(self) -> dict[str, str]:
        """PixelRec's item text: title, tag and description."""
        size, pattern, colour, category = self.words
        return {"title": f"{size.capitalize()} {pattern} {colour} {category}",
                "tag": f"{category}, {colour}, {pattern}, {size}",
                "description": f"A {size} {category} in {colour}, {pattern}."}


def draw_cover(item: ShopItem, size: int = 64) -> Image.Image:
    """The item's shape (category) in its colour and pattern, large or small, on a light background."""
    image = Image.new("RGB", (size, size), (245, 245, 240))
    mask = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(mask)
    margin = (size // 4, size // 6, size // 12)[item.size]
    box = (margin, margin, size - margin, size - margin)
    left, top, right, bottom = box
    middle_x, middle_y = (left + right) // 2, (top + bottom) // 2
    shapes = {
        "mug": lambda: pen.rectangle(box, fill=255),
        "lamp": lambda: pen.polygon([(middle_x, top), (right, bottom), (left, bottom)], fill=255),
        "vase": lambda: pen.ellipse((left + (right - left) // 4, top, right - (right - left) // 4, bottom), fill=255),
        "clock": lambda: pen.ellipse(box, fill=255),
        "bag": lambda: pen.rounded_rectangle((left, middle_y - (bottom - top) // 4, right, bottom), 6, fill=255),
        "hat": lambda: pen.pieslice(box, 180, 360, fill=255),
        "kite": lambda: pen.polygon([(middle_x, top), (right, middle_y), (middle_x, bottom), (left, middle_y)],
                                    fill=255),
        "cushion": lambda: pen.rectangle((left, middle_y - (bottom - top) // 3, right, middle_y + (bottom - top) // 3),
                                         fill=255),
    }
    shapes[CATEGORIES[item.category]]()
    colour = list(COLOURS.values())[item.colour]
    fill = Image.new("RGB", (size, size), colour)
    pattern = ImageDraw.Draw(fill)
    dark = tuple(value // 2 for value in colour)
    step = max(size // 8, 4)
    for offset in range(0, size, step):
        if PATTERNS[item.pattern] == "striped":
            pattern.rectangle((0, offset, size, offset + step // 2 - 1), fill=dark)
        elif PATTERNS[item.pattern] == "dotted":
            for column in range(0, size, step):
                pattern.ellipse((column + 1, offset + 1, column + step // 2, offset + step // 2), fill=dark)
        elif PATTERNS[item.pattern] == "checked" and (offset // step) % 2 == 0:
            for column in range(0, size, 2 * step):
                pattern.rectangle((column, offset, column + step - 1, offset + step - 1), fill=dark)
    image.paste(fill, (0, 0), mask)
    return image


@dataclass
class ShopParams:
    """How big the shop is and how its users behave (``molar quickstart`` writes 600 users, ``--num-users 600``;
    the other defaults are its own)."""

    num_users: int = 1500
    min_length: int = 8
    max_length: int = 24
    bundle_share: float = 0.5     # share of items with a bundle partner
    bundle_follow: float = 0.35   # chance that an item with a partner is followed by it
    stay_category: float = 0.85   # chance that the next item keeps the category
    keep_pattern: float = 0.75    # chance that the next item has the user's pattern
    keep_size: float = 0.8        # chance that the next item has the user's size
    popularity_exponent: float = 1.0
    seed: int = 0


def _sequences(items: list[ShopItem], params: ShopParams, rng: np.random.Generator) -> list[list[int]]:
    index = {item: number for number, item in enumerate(items)}
    popularity = 1.0 / np.arange(1, len(items) + 1) ** params.popularity_exponent
    popularity = popularity[rng.permutation(len(items))]
    order = rng.permutation(len(items))
    partners = {}
    for first, second in zip(order[0::2], order[1::2]):
        if rng.random() < params.bundle_share:
            partners[int(first)], partners[int(second)] = int(second), int(first)
    sequences = []
    for _ in range(params.num_users):
        direction = rng.choice((-1, 1))
        liked_pattern, liked_size = int(rng.integers(len(PATTERNS))), int(rng.integers(len(SIZES)))
        current = int(rng.choice(len(items), p=popularity / popularity.sum()))
        sequence = [current]
        for _ in range(int(rng.integers(params.min_length, params.max_length + 1)) - 1):
            if current in partners and rng.random() < params.bundle_follow:
                current = partners[current]
            else:
                item = items[current]
                category = item.category if rng.random() < params.stay_category else int(rng.integers(len(CATEGORIES)))
                colour = (item.colour + direction) % len(COLOURS)
                pattern = liked_pattern if rng.random() < params.keep_pattern else int(rng.integers(len(PATTERNS)))
                size = liked_size if rng.random() < params.keep_size else int(rng.integers(len(SIZES)))
                current = index[ShopItem(category, colour, pattern, size)]
            sequence.append(current)
        sequences.append(sequence)
    return sequences


def write_shop(out_dir: str, params: ShopParams = ShopParams(), image_size: int = 64) -> Path:
    """Write ``interaction.csv``, ``item_info.csv`` and ``cover/`` into ``out_dir``, atomically, and return it.

    The shop is written to a staging folder first and renamed into place, so an interrupted run never leaves
    a folder that looks whole; an existing complete folder is replaced.
    """
    rng = np.random.default_rng(params.seed)
    items = [ShopItem(*combination) for combination in itertools.product(
        range(len(CATEGORIES)), range(len(COLOURS)), range(len(PATTERNS)), range(len(SIZES)))]
    sequences = _sequences(items, params, rng)
    target = Path(out_dir)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "cover").mkdir(parents=True)
    with open(staging / "item_info.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", *ENGAGEMENT_COLUMNS, "title", "tag", "description"])
        for number, item in enumerate(items, start=1):
            text = item.text()
            writer.writerow([f"i{number}", *rng.integers(0, 5000, len(ENGAGEMENT_COLUMNS)),
                             text["title"], text["tag"], text["description"]])
            draw_cover(item, image_size).save(staging / "cover" / f"i{number}.jpg", quality=90)
    start = 1_600_000_000
    with open(staging / "interaction.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "user_id", "timestamp"])
        for user, sequence in enumerate(sequences, start=1):
            for step, item in enumerate(sequence):
                writer.writerow([f"i{item + 1}", f"u{user}", start + user * 1000 + step * 60])
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the shop into (replaced if present)")
    parser.add_argument("--num-users", type=int, default=ShopParams.num_users)
    parser.add_argument("--seed", type=int, default=ShopParams.seed)
    args = parser.parse_args()
    folder = write_shop(args.out, ShopParams(num_users=args.num_users, seed=args.seed))
    print(f"wrote the quickstart shop to {folder}")


if __name__ == "__main__":
    main()
