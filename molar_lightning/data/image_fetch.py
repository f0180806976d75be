"""The local image folder, filled from the URLs in Amazon metadata.

``molar data fetch-images`` downloads each reviewed item's main image to ``<image_dir>/<name>``, the name
given by :func:`~molar_lightning.data.image_names.image_file_name` (``<item id>.jpg`` for every ASIN),
urllib only, several at a time, with retries and a progress bar. It resumes: a file already there that
passes :func:`~molar_lightning.data.image_check.image_problem` is skipped, so an interrupted or partly
failed run is finished by running it again. Every download goes to a temporary name first and is renamed
into place only once it passes the same check, so the folder never holds a half-written image under an
item's name.

Metadata is untrusted input, so every download goes through :func:`~molar_lightning.data.download.download`:
absolute ``http(s)`` URLs only (redirects too), a byte cap (``max_bytes``) and a total timeout per download.
A record that breaks a rule (a number, a relative or ``file:`` URL, a body over the cap, a server that
drips) is a failure, counted and listed in ``<image_dir>/fetch_failures.tsv``, never an abort. That file
is written atomically on every run, a header alone when nothing failed.
"""

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence

from jsonargparse import ArgumentParser
from tqdm.auto import tqdm

from molar_lightning.atomic_files import write_atomically
from molar_lightning.data.download import DownloadError, download, one_line
from molar_lightning.data.image_check import MAX_IMAGE_BYTES, image_problem
from molar_lightning.data.image_names import image_file_name
from molar_lightning.data.sources.amazon import Amazon

FAILURES_FILE = "fetch_failures.tsv"


@dataclass
class FetchReport:
    """What a fetch did.

    Attributes:
        downloaded: images written by this run.
        skipped: images already present and usable (left untouched).
        failed: ``(item id, last URL tried, reason)`` for every item left without an image.
    """

    downloaded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def _download_image(url: str, target: Path, timeout: float, max_bytes: int) -> None:
    """Fetch ``url`` into ``target`` (a temporary name); a body that is not a usable image is a transient failure."""
    received = download(url, target, timeout, max_bytes)
    problem = image_problem(target)
    if problem is not None:
        raise DownloadError(f"{problem} ({received:,} bytes received)", permanent=False)


def _fetch_one(item_id: str, urls: Sequence[object], out_dir: Path, retries: int, timeout: float,
               max_bytes: int, backoff: float) -> tuple[str, str, Optional[tuple[str, str]]]:
    """Return ``(item_id, "skipped" | "downloaded" | "failed", None | (url, reason))`` for one item."""
    name = image_file_name(item_id)
    target = out_dir / name
    if image_problem(target) is None:
        return item_id, "skipped", None
    partial = out_dir / f".{name}.part"
    failure = ("", "no image URL in the metadata")
    try:
        for url in urls:
            for attempt in range(retries + 1):
                try:
                    _download_image(url, partial, timeout, max_bytes)
                    os.replace(partial, target)
                    return item_id, "downloaded", None
                except DownloadError as error:  # a URL that is not absolute http(s) is a permanent one
                    failure = (one_line(url), error.reason)
                    if error.permanent:
                        break  # try the item's next URL
                    if attempt < retries:
                        time.sleep(backoff * 2 ** attempt)
    finally:
        partial.unlink(missing_ok=True)
    return item_id, "failed", failure


def _write_failures(path: Path, failed: list[tuple[str, str, str]]) -> None:
    """``fetch_failures.tsv`` (a header alone when nothing failed), replaced in one step."""
    text = "item_id\turl\treason\n" + "".join(
        "\t".join(one_line(field, 2000) for field in row) + "\n" for row in sorted(failed))
    write_atomically(path, text)


def fetch_images(jobs: Sequence[tuple[str, Sequence[object]]], out_dir: os.PathLike | str, retries: int = 3,
                 timeout: float = 30.0, workers: int = 8, backoff: float = 1.0, max_bytes: int = MAX_IMAGE_BYTES,
                 show_progress: bool = True) -> FetchReport:
    """Download ``(item id, [url, fallback url, ...])`` jobs to ``out_dir/<image_file_name(item id)>``.

    Each URL is tried ``1 + retries`` times on transient failures (connection errors, timeouts, HTTP 5xx
    or 429, a body that is not a complete image), waiting ``backoff * 2**attempt`` seconds in between; a
    permanent failure (HTTP 404, 403, ..., a body over ``max_bytes``, a refused redirect) moves on to the
    item's next URL at once, and a URL that is not absolute http(s) is never requested. At most ``workers``
    downloads run at a time. The failures are also written to ``out_dir/fetch_failures.tsv``, whatever
    happens (an interrupted run lists those met so far).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    pending: set[Future] = set()
    progress = tqdm(total=len(jobs), desc="fetching images", unit=" items", disable=not show_progress)

    def collect(done: Iterable[Future]) -> None:
        for future in done:
            item_id, status, failure = future.result()
            if status == "downloaded":
                report.downloaded += 1
            elif status == "skipped":
                report.skipped += 1
            else:
                report.failed.append((item_id, *failure))
            progress.update(1)

    try:
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            for item_id, urls in jobs:
                if len(pending) >= 4 * max(workers, 1):  # a bounded window: 300k jobs never sit in memory as futures
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
                pending.add(pool.submit(_fetch_one, str(item_id), urls, out, retries, timeout, max_bytes, backoff))
            collect(wait(pending)[0])
    finally:
        progress.close()
        _write_failures(out / FAILURES_FILE, report.failed)
    return report


def fetch_amazon_images(
    data_dir: str,
    category: str = "Clothing_Shoes_and_Jewelry",
    release: Literal[2014, 2018, 2023] = 2023,
    reviews_file: Optional[str] = None,
    meta_file: Optional[str] = None,
    image_dir: str = "images",
    retries: int = 3,
    timeout: float = 30.0,
    max_bytes: int = MAX_IMAGE_BYTES,
    workers: int = 8,
    show_progress: bool = True,
) -> FetchReport:
    """Download the main image of every reviewed item named in an Amazon metadata file.

    Only items that appear in the reviews file are fetched (a category's metadata lists millions more).
    Running it again skips the images already there and retries the failures.

    Args:
        data_dir: folder holding the category's reviews and metadata files (as for ``AmazonDataModule``).
        category: category name as in the file names.
        release: Amazon Reviews release: 2014, 2018 or 2023; decides file and field names.
        reviews_file: reviews file inside data_dir when not the release's default name.
        meta_file: metadata file inside data_dir when not the release's default name.
        image_dir: where images go, relative to data_dir unless absolute; the DataModule reads the same folder.
        retries: further attempts per URL after a transient failure.
        timeout: seconds one download may take before the attempt counts as failed (checked between the
            chunks of its body; connecting and each header line also wait at most this long).
        max_bytes: largest image accepted, in bytes; a larger body is refused while it streams. Preparation
            refuses files over the image check's cap (50 MiB) whatever this says.
        workers: downloads in flight at once.
        show_progress: show a progress bar.
    """
    source = Amazon(data_dir, category=category, release=release, reviews_file=reviews_file,
                    meta_file=meta_file, image_dir=image_dir, show_progress=show_progress)
    jobs = list(source.image_urls())
    report = fetch_images(jobs, source.image_root, retries=retries, timeout=timeout, workers=workers,
                          max_bytes=max_bytes, show_progress=show_progress)
    print(f"{len(jobs):,} items with an image URL: {report.downloaded:,} downloaded, "
          f"{report.skipped:,} already present, {len(report.failed):,} failed -> {source.image_root}")
    if report.failed:
        for item_id, url, reason in report.failed[:10]:
            print(f"  {item_id}: {reason} ({url})")
        print(f"  every failure is listed in {Path(source.image_root) / FAILURES_FILE}; run the command again "
              f"to retry them")
    return report


def main(args: Sequence[str]) -> None:
    """``molar data fetch-images --data_dir DIR [...]`` (``--help`` lists every argument).

    Exits with status 1 when items were tried and none has an image afterwards (e.g. no network).
    """
    parser = ArgumentParser(prog="molar data fetch-images",
                            description=fetch_amazon_images.__doc__.split("\n\n")[0])
    parser.add_function_arguments(fetch_amazon_images, as_group=False)
    config = parser.parse_args(list(args))
    report = fetch_amazon_images(**config.as_dict())
    if report.failed and report.downloaded + report.skipped == 0:
        sys.exit(1)
