"""The MovieLens download against a local server on 127.0.0.1: the published digest is checked, the archive is
unpacked through a staging folder (the next download removes one that a killed download left), and a wrong
digest, a zip-slip member, a body over the cap or a server that drips past the timeout are refused with one
message and leave nothing that reads as MovieLens."""

import hashlib
import io
import os
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from molar_lightning.data.sources import movielens
from molar_lightning.data.sources.movielens import MovieLens, download_movielens
from molar_lightning.user_error import UserError
from tests.data.test_readers_hostile import dead_pid


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves ``server.body`` at any path, all at once or (``server.drip``) a byte every 0.25 s."""

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        body = self.server.body
        step = 1 if self.server.drip else max(len(body), 1)
        try:
            for start in range(0, len(body), step):
                self.wfile.write(body[start:start + step])
                self.wfile.flush()
                if self.server.drip:
                    time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def grouplens(monkeypatch):
    """A stand-in for files.grouplens.org: ``grouplens.serve(zip bytes)`` publishes an archive and its MD5."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.body, httpd.drip, httpd.requests = b"", False, 0

    def serve(body: bytes, digest: str | None = None) -> None:
        httpd.body = body
        monkeypatch.setitem(movielens.DOWNLOAD_URLS, "ml-1m", f"http://127.0.0.1:{httpd.server_address[1]}/ml-1m.zip")
        monkeypatch.setitem(movielens.ARCHIVE_DIGESTS, "ml-1m", ("md5", digest or hashlib.md5(body).hexdigest()))

    httpd.serve = serve
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def grouplens_members(ml1m_dir: Path) -> dict[str, bytes]:
    """The fixture's files laid out as in GroupLens' ml-1m.zip (one top folder)."""
    return {f"ml-1m/{name}": (ml1m_dir / name).read_bytes() for name in ("ratings.dat", "movies.dat")}


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_checks_the_digest_and_unpacks(grouplens, ml1m_dir: Path, tmp_path: Path) -> None:
    grouplens.serve(archive(grouplens_members(ml1m_dir)))
    data_dir = tmp_path / "downloaded"
    source = MovieLens(str(data_dir), download=True, show_progress=False)
    assert leftovers(data_dir) == ["movies.dat", "ratings.dat"]  # flat, as before; no staging folder left
    assert (data_dir / "ratings.dat").read_bytes() == (ml1m_dir / "ratings.dat").read_bytes()
    expected = MovieLens(str(ml1m_dir), show_progress=False).read()
    assert source.read().item_raw_ids == expected.item_raw_ids
    MovieLens(str(data_dir), download=True, show_progress=False)  # present: not downloaded again
    assert grouplens.requests == 1


def test_the_next_download_removes_the_staging_folder_a_killed_one_left(grouplens, ml1m_dir: Path,
                                                                         tmp_path: Path) -> None:
    grouplens.serve(archive(grouplens_members(ml1m_dir)))
    data_dir, host = tmp_path / "downloaded", socket.gethostname()
    killed = data_dir / f".staging-download-{dead_pid()}@{host}-abc123"  # a SIGKILLed download's
    running = data_dir / f".staging-download-{os.getpid()}@{host}-def456"  # a live one's (this process)
    unnamed = data_dir / ".staging-download-ghi789"  # named before the owner was recorded, two days old
    for folder in (killed, running, unnamed):
        (folder / "unpacked").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(unnamed, (two_days_ago, two_days_ago))
    download_movielens("ml-1m", data_dir)
    assert leftovers(data_dir) == sorted([running.name, "movies.dat", "ratings.dat"])


def test_a_wrong_digest_is_refused_and_nothing_is_unpacked(grouplens, ml1m_dir: Path, tmp_path: Path) -> None:
    body = archive(grouplens_members(ml1m_dir))
    grouplens.serve(body, digest="0" * 32)
    with pytest.raises(UserError) as refused:
        download_movielens("ml-1m", tmp_path / "downloaded")
    assert f"its md5 is {hashlib.md5(body).hexdigest()}, not the {'0' * 32} GroupLens publishes" in str(refused.value)
    assert "download and unzip it into" in str(refused.value)
    assert leftovers(tmp_path / "downloaded") == []


@pytest.mark.parametrize("evil", ["ml-1m/../../evil.txt", "../evil.txt", "/tmp/evil.txt", "ml-1m\\..\\..\\evil.txt",
                                  "C:/evil.txt"], ids=["nested-dot-dot", "dot-dot", "absolute", "backslash", "drive"])
def test_a_member_outside_the_folder_refuses_the_archive(grouplens, ml1m_dir: Path, tmp_path: Path, evil: str) -> None:
    grouplens.serve(archive({**grouplens_members(ml1m_dir), evil: b"owned"}))
    data_dir = tmp_path / "a" / "b" / "downloaded"
    with pytest.raises(UserError, match="would be written outside the folder it is extracted to"):
        download_movielens("ml-1m", data_dir)
    assert leftovers(data_dir) == []  # not even ratings.dat: the archive is refused as a whole
    assert [path for path in tmp_path.rglob("*evil*")] == []


def test_a_body_over_the_cap_is_refused(grouplens, ml1m_dir: Path, tmp_path: Path, monkeypatch) -> None:
    grouplens.serve(archive(grouplens_members(ml1m_dir)))
    monkeypatch.setattr(movielens, "DOWNLOAD_MAX_BYTES", 100)
    with pytest.raises(UserError, match="larger than the 100-byte cap"):
        download_movielens("ml-1m", tmp_path / "downloaded")
    assert leftovers(tmp_path / "downloaded") == []


def test_a_server_that_drips_is_cut_at_the_timeout(grouplens, ml1m_dir: Path, tmp_path: Path) -> None:
    grouplens.serve(archive(grouplens_members(ml1m_dir)))
    grouplens.drip = True  # a byte every 0.25 s: minutes for the archive
    start = time.monotonic()
    with pytest.raises(UserError, match="not done after the 1 s timeout"):
        download_movielens("ml-1m", tmp_path / "downloaded", timeout=1)
    assert time.monotonic() - start < 5
    assert leftovers(tmp_path / "downloaded") == []


def test_an_unknown_variant_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown MovieLens variant 'ml-20m'; choose one of \['ml-100k', 'ml-1m'\]"):
        download_movielens("ml-20m", tmp_path)
