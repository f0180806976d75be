"""What the decoding image check costs: ``image_problem`` per file against reading the same file's bytes, same run.

Reading every byte is the floor of any check that looks at the whole file; the ratio says how much the
cheap decode (JPEG at 1/8 scale, other formats in full) adds to it. Without ``--folder`` it writes a few
synthetic images (a 1,500 x 1,500 photo-like JPEG, the same as PNG, a 300 x 450 poster-sized JPEG) to a
temporary folder; with it, it checks the ``*.jpg`` / ``*.png`` files there (e.g. ML-1M posters)::

    python benchmarks/image_check.py
    python benchmarks/image_check.py --folder ../shared/data/movielens-1m/posters

The last line is ``RESULT {json}`` with every figure, for scripts.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter

from molar_lightning.data.image_check import image_problem


def synthetic_images(folder: Path) -> list[Path]:
    """Photo-like content (smoothed noise): JPEG sizes close to real product photos, not to flat colour."""
    photo = Image.effect_noise((1500, 1500), 80).filter(ImageFilter.GaussianBlur(3)).convert("RGB")
    paths = {"photo_1500.jpg": photo, "photo_1500.png": photo, "poster_300x450.jpg": photo.resize((300, 450))}
    for name, image in paths.items():
        image.save(folder / name, quality=90)  # PNG ignores quality
    return [folder / name for name in paths]


def per_file_ms(paths: list[Path], work, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for path in paths:
            work(path)
    return (time.perf_counter() - start) / (repeats * len(paths)) * 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="check the images here instead of synthetic ones")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        if args.folder:
            groups = {"folder": sorted([*args.folder.glob("*.jpg"), *args.folder.glob("*.png")])}
        else:
            groups = {path.name: [path] for path in synthetic_images(Path(temporary))}
        results = {}
        for name, paths in groups.items():
            read_ms = per_file_ms(paths, Path.read_bytes, args.repeats)
            check_ms = per_file_ms(paths, image_problem, args.repeats)
            usable = sum(image_problem(path) is None for path in paths)
            mean_bytes = sum(path.stat().st_size for path in paths) // len(paths)
            results[name] = {"files": len(paths), "usable": usable, "mean_bytes": mean_bytes,
                             "read_ms": read_ms, "check_ms": check_ms, "ratio": check_ms / read_ms}
            print(f"{name}: {len(paths)} files ({usable} usable), {mean_bytes:,} bytes on average: "
                  f"check {check_ms:.2f} ms/file, read {read_ms:.3f} ms/file, ratio {check_ms / read_ms:.1f}x")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
