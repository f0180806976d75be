"""Raw files in the Amazon Reviews 2023 layout at any size (seeded), for scale tests and benchmarks.

``python -m molar_lightning.data.synthetic_amazon --out DIR`` writes ``<Category>.jsonl`` (reviews) and
``meta_<Category>.jsonl`` (item metadata) with the fields, id shapes and value types of the real release.
The defaults are the size of Molar's Amazon set (Table 1): 993,087 users, 301,312 items and 8,813,442
reviews. Every user and every item gets at least 5 reviews, so 5-core filtering keeps everything and a
prepared data set has exactly these counts. Reviews carry a title and a text of realistic length (about
500 bytes a line, as in the real release), because parsing them is most of what preparation costs.
Item popularity is Zipf-like and each user's reviews run forward in time. ``--images K`` also writes a
tiny JPEG for the first K items into ``DIR/images/``.
"""

import argparse
import gzip
import io
import json
from pathlib import Path

import numpy as np

WORDS = ("fits true to size comfortable soft fabric great quality color exactly as pictured runs small "
         "ordered a size up washed well no shrinking stitching came loose after wearing it twice love the "
         "material would buy again perfect for summer nice gift shipping was quick looks cheap in person "
         "returned it zipper broke pockets are deep lightweight and warm my daughter loves it").split()
CATEGORY_PATHS = (("Clothing, Shoes & Jewelry", "Women", "Clothing", "Dresses"),
                  ("Clothing, Shoes & Jewelry", "Men", "Shoes", "Sneakers"),
                  ("Clothing, Shoes & Jewelry", "Girls", "Jewelry", "Necklaces"),
                  ("Clothing, Shoes & Jewelry", "Men", "Accessories", "Belts"))


def user_ids(count: int) -> list[str]:
    """28-character upper-case ids shaped like the 2023 release's ``user_id`` (unique: an odd multiplier mod 2^108)."""
    return [f"A{(u + 1) * 0x9E3779B97F4A7C15F39CC0605 % (1 << 108):027X}" for u in range(count)]


def item_ids(count: int) -> list[str]:
    """10-character ASIN-shaped ids (unique: an odd multiplier mod 2^32)."""
    return [f"B0{(i + 1) * 0x9E3779B1 % (1 << 32):08X}" for i in range(count)]


def _sentences(rng: np.random.Generator, count: int, mean_words: float) -> list[str]:
    lengths = np.maximum(rng.geometric(1.0 / mean_words, size=count), 2)
    return [" ".join(rng.choice(WORDS, size=length)).capitalize() + "." for length in lengths]


def _open(path: Path, compress: bool):
    return gzip.open(path, "wt", encoding="utf-8", compresslevel=1) if compress else open(path, "w", encoding="utf-8")


def tiny_jpeg(seed: int) -> bytes:
    """An 8x8 JPEG of one colour (a few hundred bytes)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), ((seed * 53) % 256, (seed * 97) % 256, (seed * 193) % 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_amazon_2023(out_dir: str, num_users: int = 993_087, num_items: int = 301_312,
                      num_reviews: int = 8_813_442, category: str = "Clothing_Shoes_and_Jewelry", seed: int = 0,
                      compress: bool = False, num_images: int = 0) -> Path:
    """Write the reviews and metadata files of one category into ``out_dir`` and return it."""
    if num_reviews < 5 * max(num_users, num_items):
        raise ValueError(f"num_reviews={num_reviews} cannot give each of {num_users} users and {num_items} items "
                         f"5 reviews; raise it to at least {5 * max(num_users, num_items)}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if compress else ".jsonl"

    # Who reviews what: 5 each, the rest spread with a heavy tail over users and Zipf-like over items.
    extra = rng.multinomial(num_reviews - 5 * num_users, _normalised(rng.pareto(1.5, num_users) + 0.05))
    user_of = np.repeat(np.arange(num_users), 5 + extra)
    popularity = _normalised(1.0 / np.arange(1, num_items + 1) ** 0.9)[rng.permutation(num_items)]
    item_of = np.concatenate([np.repeat(np.arange(num_items), 5),
                              rng.choice(num_items, size=num_reviews - 5 * num_items, p=popularity)])
    item_of = item_of[rng.permutation(num_reviews)]
    # Each user's reviews move forward in time from a random start (milliseconds, as in the 2023 release).
    start = rng.integers(1_262_304_000_000, 1_672_531_200_000, size=num_users)
    gaps = rng.exponential(20 * 86_400_000, size=num_reviews).astype(np.int64) + 1000
    first = np.concatenate([[0], np.cumsum(5 + extra)[:-1]])
    clock = np.cumsum(gaps)
    timestamps = start[user_of] + clock - clock[first][user_of]
    ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=num_reviews, p=[0.06, 0.05, 0.09, 0.14, 0.66])
    order = rng.permutation(num_reviews)  # the file is not sorted by user

    titles, texts = _sentences(rng, 500, 4), _sentences(rng, 4000, 45)
    title_of, text_of = rng.integers(len(titles), size=num_reviews), rng.integers(len(texts), size=num_reviews)
    users, items = user_ids(num_users), item_ids(num_items)
    votes = rng.geometric(0.7, size=num_reviews) - 1
    with _open(out / f"{category}{suffix}", compress) as handle:
        for begin in range(0, num_reviews, 200_000):
            handle.write("".join(
                f'{{"rating": {ratings[r]}, "title": "{titles[title_of[r]]}", "text": "{texts[text_of[r]]}", '
                f'"images": [], "asin": "{items[item_of[r]]}", "parent_asin": "{items[item_of[r]]}", '
                f'"user_id": "{users[user_of[r]]}", "timestamp": {timestamps[r]}, "helpful_vote": {votes[r]}, '
                f'"verified_purchase": true}}\n'
                for r in order[begin:begin + 200_000].tolist()))

    descriptions, features = _sentences(rng, 2000, 60), _sentences(rng, 2000, 8)
    counts = np.bincount(item_of, minlength=num_items)
    with _open(out / f"meta_{category}{suffix}", compress) as handle:
        for i, asin in enumerate(items):
            picks = rng.integers(2000, size=4)
            entry = {
                "main_category": "AMAZON FASHION", "title": f"{titles[i % len(titles)].rstrip('.')} {asin[-4:]}",
                "average_rating": round(float(rng.uniform(3, 5)), 1), "rating_number": int(counts[i]),
                "features": [features[p] for p in picks[:3]], "description": [descriptions[picks[3]]],
                "price": None,
                "images": [{"thumb": f"https://m.media-amazon.com/images/I/{asin}._SS40_.jpg",
                            "large": f"https://m.media-amazon.com/images/I/{asin}.jpg", "variant": "MAIN",
                            "hi_res": f"https://m.media-amazon.com/images/I/{asin}._SL1500_.jpg"}],
                "videos": [], "store": f"Brand{i % 997}", "categories": list(CATEGORY_PATHS[i % len(CATEGORY_PATHS)]),
                "details": {"Department": "womens" if i % 2 else "mens", "Date First Available": "March 1, 2019"},
                "parent_asin": asin, "bought_together": None,
            }
            handle.write(json.dumps(entry) + "\n")

    if num_images:
        (out / "images").mkdir(exist_ok=True)
        for i, asin in enumerate(items[:num_images]):
            (out / "images" / f"{asin}.jpg").write_bytes(tiny_jpeg(i))
    return out


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the two files into")
    parser.add_argument("--users", type=int, default=993_087)
    parser.add_argument("--items", type=int, default=301_312)
    parser.add_argument("--reviews", type=int, default=8_813_442)
    parser.add_argument("--category", default="Clothing_Shoes_and_Jewelry")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz (compression level 1)")
    parser.add_argument("--images", type=int, default=0, help="also write tiny JPEGs for this many items")
    args = parser.parse_args()
    out = write_amazon_2023(args.out, args.users, args.items, args.reviews, args.category, args.seed, args.gzip,
                            args.images)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
