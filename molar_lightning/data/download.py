"""Downloads and archives from outside, fenced: http(s) only, a byte cap, a total timeout, no zip-slip.

Used by ``molar data fetch-images`` (URLs taken from Amazon metadata: untrusted input) and the MovieLens
download. :func:`download` fetches absolute ``http(s)`` URLs only, and follows redirects only to such URLs;
its opener has no ``file:``, ``data:`` or ``ftp:`` handler at all, so no URL, however it got there, reads
a local file or inline data. A body is refused once it is over ``max_bytes`` (from its ``Content-Length``
before reading, then counted while it streams to disk in chunks) or once the download has taken over
``timeout`` seconds (checked between chunks; connecting and each header line wait at most ``timeout``
too). :func:`extract_zip` refuses an archive with a member that would land outside the target folder.
"""

import functools
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

USER_AGENT = "molar-lightning/1 (+https://github.com/molar-lightning)"
WEB_SCHEMES = ("http", "https")
CHUNK_BYTES = 64 * 1024
PERMANENT_HTTP_ERRORS = (400, 401, 403, 404, 410)  # asking again cannot help


class DownloadError(Exception):
    """A download that failed, with the reason; ``permanent`` when asking the same URL again cannot help."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


class _WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL (urllib's own handler also follows ``ftp:``)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in WEB_SCHEMES:
            fp.close()
            raise DownloadError(f"redirected to {one_line(newurl)!r}, which is not an http(s) URL", permanent=True)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@functools.cache  # built on first use: importing a data source loads no certificates
def _web_only_opener() -> urllib.request.OpenerDirector:
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _WebOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line (safe in a TSV field or a message), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def url_problem(url: object) -> Optional[str]:
    """Why ``url`` is never requested (not a string, relative, another scheme), or None."""
    if not isinstance(url, str):
        return f"not a URL: {url!r}"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:
        return f"not a valid URL ({error})"
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.netloc:
        return "not an absolute http(s) URL; only those are fetched"
    return None


def download(url: str, target: Path, timeout: float, max_bytes: int) -> int:
    """Stream ``url`` into the file ``target`` and return the bytes received; raise :class:`DownloadError`.

    ``target`` may hold a partial body afterwards when it fails: give it a temporary name.
    """
    problem = url_problem(url)
    if problem is not None:
        raise DownloadError(problem, permanent=True)
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _web_only_opener().open(request, timeout=timeout) as response, open(target, "wb") as out:
            declared = response.headers.get("Content-Length", "")
            declared = int(declared) if declared.isdigit() else None
            if declared is not None and declared > max_bytes:
                raise DownloadError(f"larger than the {max_bytes:,}-byte cap (Content-Length {declared:,})", True)
            received = 0
            while chunk := response.read1(CHUNK_BYTES):  # what has arrived, never waiting to fill the chunk
                received += len(chunk)
                if received > max_bytes:
                    raise DownloadError(f"larger than the {max_bytes:,}-byte cap (more received)", True)
                if time.monotonic() > deadline:
                    raise DownloadError(f"not done after the {timeout:g} s timeout ({received:,} bytes received)",
                                        permanent=False)
                out.write(chunk)
    except urllib.error.HTTPError as error:
        error.close()
        if 300 <= error.code < 400:  # a redirect urllib refused itself (to file:, data:, ...)
            raise DownloadError(f"HTTP {error.code} ({one_line(error.reason)})", permanent=True) from None
        raise DownloadError(f"HTTP {error.code}", permanent=error.code in PERMANENT_HTTP_ERRORS) from None
    except urllib.error.URLError as error:
        raise DownloadError(one_line(error.reason), permanent=False) from None
    except (http.client.HTTPException, OSError) as error:  # connection errors, timeouts, a malformed response
        raise DownloadError(one_line(error) or type(error).__name__, permanent=False) from None
    if declared is not None and received < declared:
        raise DownloadError(f"incomplete body ({received:,} of {declared:,} bytes)", permanent=False)
    return received


def extract_zip(archive: Path, folder: Path, max_bytes: int) -> list[Path]:
    """Extract the zip file ``archive`` into ``folder`` and return the files written.

    Refused, before anything is written, with :class:`DownloadError`: a member with an absolute path, a
    drive or a ``..`` component (zip-slip), and archives that unpack to more than ``max_bytes``.
    """
    with zipfile.ZipFile(archive) as opened:
        members = [member for member in opened.infolist() if not member.is_dir()]
        for member in members:
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if not parts or member.filename.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
                raise DownloadError(f"{archive.name} holds {member.filename!r}, which would be written outside "
                                    f"the folder it is extracted to", permanent=True)
        unpacked = sum(member.file_size for member in members)
        if unpacked > max_bytes:
            raise DownloadError(f"{archive.name} unpacks to {unpacked:,} bytes, over the {max_bytes:,}-byte cap",
                                permanent=True)
        written = []
        for member in members:
            path = folder.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with opened.open(member) as source, open(path, "wb") as out:
                while chunk := source.read(CHUNK_BYTES):
                    out.write(chunk)
            written.append(path)
    return written
