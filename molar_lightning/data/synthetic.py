"""A small, learnable MovieLens-format data set for the quickstart and for tests.

Items fall into genres and have a "sequel"; a user mostly moves to the sequel of the last movie, else to
another movie of the same genre, else anywhere (popularity-weighted). A sequential model can learn this,
a popularity ranking cannot, so training that works shows up clearly in NDCG.
Run ``python -m molar_lightning.data.synthetic --out DIR`` to write ``ratings.dat`` and ``movies.dat``.
"""

import argparse
from pathlib import Path

import numpy as np

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Western")


def write_movielens(out_dir: str, num_users: int = 600, num_items: int = 200, mean_length: int = 30,
                    seed: int = 0) -> Path:
    """Write ``ratings.dat`` and ``movies.dat`` (ML-1M layout) into ``out_dir`` and return it."""
    rng = np.random.default_rng(seed)
    genre_of = rng.integers(len(GENRES), size=num_items)
    sequel = rng.permutation(num_items)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity = popularity[rng.permutation(num_items)]
    popularity /= popularity.sum()
    lines = []
    for user in range(num_users):
        length = int(np.clip(rng.poisson(mean_length), 5, num_items // 2))
        item = int(rng.choice(num_items, p=popularity))
        seen = {item}
        sequence = [item]
        while len(sequence) < length:
            draw = rng.random()
            if draw < 0.7:
                candidates = [int(sequel[item])]
            elif draw < 0.9:
                candidates = np.flatnonzero(genre_of == genre_of[item]).tolist()
            else:
                candidates = [int(rng.choice(num_items, p=popularity))]
            candidates = [c for c in candidates if c not in seen]
            if not candidates:
                candidates = [c for c in range(num_items) if c not in seen]
            item = int(rng.choice(candidates))
            seen.add(item)
            sequence.append(item)
        clock = 978300000 + user * 10_000
        for position, item in enumerate(sequence):
            lines.append(f"{user + 1}::{item + 1}::{int(rng.integers(1, 6))}::{clock + 60 * position}\n")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ratings.dat").write_text("".join(lines))
    (out / "movies.dat").write_text("".join(
        f"{item + 1}::Movie {item + 1} (2000)::{GENRES[genre_of[item]]}\n" for item in range(num_items)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write ratings.dat and movies.dat into")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {write_movielens(args.out, args.users, args.items, seed=args.seed)}")


if __name__ == "__main__":
    main()
