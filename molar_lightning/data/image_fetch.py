"""The local image folder, filled from the URLs in Amazon metadata.

``molar data fetch-images`` downloads each reviewed item's main image to ``<image_dir>/<name>``, the name
given by :func:`~molar_lightning.data.image_names.image_file_name` (``<item id>.jpg`` for every ASIN),
urllib only, several at a time, with retries and a progress bar. It resumes: a file already there that
passes :func:`~molar_lightning.data.image_check.image_problem` is skipped, so an interrupted or partly
failed run is finished by running it again. Every download goes to a temporary name first and is renamed
into place only once it passes the same check, so the folder never holds a half-written image under an
item's name.

Metadata is untrusted input, so each download is fenced: only absolute ``http(s)`` URLs are fetched, and
redirects only to such URLs (no ``file:``, ``data:`` or ``ftp:``, which urllib would otherwise open); a
body is refused once it is over ``max_bytes`` (from its ``Content-Length`` before reading, and while
streaming it to disk in chunks) or once the download has taken over ``timeout`` seconds (checked between
chunks; the connection and each header line wait at most ``timeout`` too). A record that breaks any rule
is a failure counted and listed in ``<image_dir>/fetch_failures.tsv`` (written atomically on every run,
a header alone when nothing failed), never an abort.
"""

import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence

from jsonargparse import ArgumentParser
from tqdm.auto import tqdm

from molar_lightning.data.image_check import MAX_IMAGE_BYTES, image_problem
from molar_lightning.data.image_names import image_file_name
from molar_lightning.data.sources.amazon import Amazon

FAILURES_FILE = "fetch_failures.tsv"
PERMANENT_HTTP_ERRORS = (400, 401, 403, 404, 410)  # retrying these cannot help; try the item's next URL
USER_AGENT = "molar-lightning-image-fetch/1 (+https://github.com/molar-lightning)"
CHUNK_BYTES = 64 * 1024
WEB_SCHEMES = ("http", "https")


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


class _Retryable(Exception):
    """A failure that another attempt at the same URL may not repeat."""


class _Permanent(Exception):
    """A failure every attempt at the same URL would repeat: go on to the item's next URL."""


class _WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL (urllib's own handler also follows ``ftp:``)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in WEB_SCHEMES:
            fp.close()
            raise _Permanent(f"redirected to {_shorten(newurl)!r}, which is not an http(s) URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _web_only_opener() -> urllib.request.OpenerDirector:
    """An opener with handlers for http(s) alone: no URL, however it got here, is read from disk or inline."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _WebOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


OPENER = _web_only_opener()


def _shorten(text: object, limit: int = 200) -> str:
    """``text`` on one line (safe for a TSV field), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _url_problem(url: object) -> Optional[str]:
    """Why ``url`` is not fetched (not a string, relative, another scheme), or None."""
    if not isinstance(url, str):
        return f"not a URL: {url!r}"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:
        return f"not a valid URL ({error})"
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.netloc:
        return "not an absolute http(s) URL; only those are fetched"
    return None


def _download(url: str, target: Path, timeout: float, max_bytes: int) -> None:
    """Fetch ``url`` into ``target`` (a temporary name); raise :class:`_Retryable` or :class:`_Permanent`."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with OPENER.open(request, timeout=timeout) as response, open(target, "wb") as out:
            declared = response.headers.get("Content-Length", "")
            declared = int(declared) if declared.isdigit() else None
            if declared is not None and declared > max_bytes:
                raise _Permanent(f"larger than the {max_bytes:,}-byte cap (Content-Length {declared:,})")
            received = 0
            while chunk := response.read1(CHUNK_BYTES):  # what has arrived, never waiting to fill the chunk
                received += len(chunk)
                if received > max_bytes:
                    raise _Permanent(f"larger than the {max_bytes:,}-byte cap (more received)")
                if time.monotonic() > deadline:
                    raise _Retryable(f"not done after the {timeout:g} s timeout ({received:,} bytes received)")
                out.write(chunk)
    except urllib.error.HTTPError as error:
        error.close()
        if 300 <= error.code < 400:  # a redirect urllib refused itself (to file:, data:, ...)
            raise _Permanent(f"HTTP {error.code} ({_shorten(error.reason)})") from None
        if error.code in PERMANENT_HTTP_ERRORS:
            raise _Permanent(f"HTTP {error.code}") from None
        raise _Retryable(f"HTTP {error.code}") from None
    except urllib.error.URLError as error:
        raise _Retryable(_shorten(error.reason)) from None
    except (http.client.HTTPException, OSError) as error:  # connection errors, timeouts, a bad header
        raise _Retryable(_shorten(error) or type(error).__name__) from None
    if declared is not None and received < declared:
        raise _Retryable(f"incomplete body ({received:,} of {declared:,} bytes)")
    problem = image_problem(target)
    if problem is not None:
        raise _Retryable(f"{problem} ({received:,} bytes received)")


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
            problem = _url_problem(url)
            if problem is not None:
                failure = (_shorten(url), problem)
                continue
            for attempt in range(retries + 1):
                try:
                    _download(url, partial, timeout, max_bytes)
                    os.replace(partial, target)
                    return item_id, "downloaded", None
                except _Permanent as error:
                    failure = (url, str(error))
                    break
                except _Retryable as error:
                    failure = (url, str(error))
                    if attempt < retries:
                        time.sleep(backoff * 2 ** attempt)
    finally:
        partial.unlink(missing_ok=True)
    return item_id, "failed", failure


def _write_failures(path: Path, failed: list[tuple[str, str, str]]) -> None:
    """``fetch_failures.tsv`` (a header alone when nothing failed), replaced in one step."""
    text = "item_id\turl\treason\n" + "".join(
        "\t".join(_shorten(field, 2000) for field in row) + "\n" for row in sorted(failed))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


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
        timeout: seconds one download may take in all (connecting, waiting, receiving) before the attempt
            counts as failed.
        max_bytes: largest image accepted, in bytes; a larger body is refused (the image check's cap too).
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
