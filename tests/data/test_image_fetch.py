"""``molar data fetch-images`` against a local HTTP server on 127.0.0.1: downloads, fallback URLs, retries, 404s,
truncated bodies, resume, the failure summary."""

import io
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.commands import main
from molar_lightning.data.datamodule import AmazonDataModule
from molar_lightning.data.image_check import image_problem
from molar_lightning.data.image_fetch import FAILURES_FILE, fetch_images

MAX_REQUESTS = 200  # a runaway retry loop hits this wall instead of hanging the suite


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), "red").save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = jpeg()


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (kind, body)``: ``ok`` (200), ``cut`` (sends half of what it announces),
    ``flaky`` (500 the first time, then 200), anything else 404."""

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.requests[self.path] += 1
            total, count = sum(server.requests.values()), server.requests[self.path]
        kind, body = server.routes.get(self.path, ("missing", b""))
        if total > MAX_REQUESTS or kind == "missing" or (kind == "flaky" and count == 1):
            self.send_error(503 if total > MAX_REQUESTS else 500 if kind == "flaky" else 404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "cut" else body)
        self.close_connection = True

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (free port) that shuts itself down after 60 s at the latest."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.requests, httpd.lock = {}, Counter(), threading.Lock()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    deadline = threading.Timer(60, httpd.shutdown)
    deadline.daemon = True
    deadline.start()
    yield httpd
    deadline.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_fetch_downloads_falls_back_retries_and_reports(server, tmp_path: Path) -> None:
    url = server.url
    server.routes.update({"/a.jpg": ("ok", JPEG), "/b.jpg": ("ok", JPEG), "/flaky.jpg": ("flaky", JPEG),
                          "/truncated.jpg": ("ok", JPEG[:200]), "/cut.jpg": ("cut", JPEG),
                          "/html.jpg": ("ok", b"<html>Rate limited</html>")})
    jobs = [("a", [f"{url}/a.jpg"]), ("b", [f"{url}/gone.jpg", f"{url}/b.jpg"]), ("c", [f"{url}/flaky.jpg"]),
            ("d", [f"{url}/truncated.jpg"]), ("e", [f"{url}/cut.jpg"]), ("f", [f"{url}/html.jpg"]),
            ("g", [f"{url}/gone-too.jpg"]), ("h", [])]
    out = tmp_path / "images"
    report = fetch_images(jobs, out, retries=2, timeout=5, workers=3, backoff=0, show_progress=False)

    assert (report.downloaded, report.skipped) == (3, 0)
    assert all(image_problem(out / f"{item}.jpg") is None for item in "abc")
    failed = {item: reason for item, _, reason in report.failed}
    assert set(failed) == set("defgh") and not any((out / f"{item}.jpg").exists() for item in "defgh")
    assert failed["d"].startswith("truncated JPEG") and failed["f"].startswith("not an image")
    assert "IncompleteRead" in failed["e"] and failed["g"] == "HTTP 404" and failed["h"].startswith("no image URL")
    # 404s are not retried; transient failures are tried 1 + retries times; a success stops at once.
    assert server.requests["/gone.jpg"] == server.requests["/gone-too.jpg"] == server.requests["/a.jpg"] == 1
    assert server.requests["/flaky.jpg"] == 2
    assert server.requests["/truncated.jpg"] == server.requests["/cut.jpg"] == server.requests["/html.jpg"] == 3
    assert not list(out.glob(".*.part"))  # no half-written file is left behind
    listed = (out / FAILURES_FILE).read_text().splitlines()
    assert listed[0] == "item_id\turl\treason" and len(listed) == 6 and listed[1].startswith(f"d\t{url}/truncated.jpg")


def test_fetch_resumes(server, tmp_path: Path) -> None:
    url = server.url
    server.routes.update({"/a.jpg": ("ok", JPEG), "/b.jpg": ("ok", JPEG), "/c.jpg": ("ok", JPEG)})
    out = tmp_path / "images"
    out.mkdir()
    (out / "b.jpg").write_bytes(JPEG[:100])  # left truncated by an earlier, killed run
    jobs = [("a", [f"{url}/a.jpg"]), ("b", [f"{url}/b.jpg"]), ("c", [f"{url}/c-moved.jpg"])]
    first = fetch_images(jobs, out, retries=0, backoff=0, show_progress=False)
    assert (first.downloaded, first.skipped, len(first.failed)) == (2, 0, 1)
    assert image_problem(out / "b.jpg") is None  # replaced
    jobs[2] = ("c", [f"{url}/c.jpg"])  # e.g. fixed metadata
    second = fetch_images(jobs, out, retries=0, backoff=0, show_progress=False)
    assert (second.downloaded, second.skipped, second.failed) == (1, 2, [])
    assert server.requests["/a.jpg"] == server.requests["/b.jpg"] == 1  # not fetched again
    assert not (out / FAILURES_FILE).exists()  # nothing left to report


def test_fetch_images_command_on_amazon_metadata(server, amazon_dir: Path, rewrite_gz, tmp_path: Path,
                                                 capsys) -> None:
    folder = amazon_dir / "2023"
    rewrite_gz(folder / "meta_Clothing_Shoes_and_Jewelry.jsonl.gz",
               lambda lines: [line.replace("https://m.media-amazon.com", server.url) for line in lines])
    for n in (1, 2, 3, 6):
        server.routes[f"/images/I/B0000000{n:02d}._SL1500_.jpg"] = ("ok", JPEG)
    server.routes["/images/I/B000000004.jpg"] = ("ok", JPEG)  # no hi-res: falls back to "large"
    main(["data", "fetch-images", "--data_dir", str(folder), "--image_dir", "fetched", "--retries", "0",
          "--workers", "2", "--show_progress", "false"])
    printed = capsys.readouterr().out
    assert "8 items with an image URL: 5 downloaded, 0 already present, 3 failed" in printed
    assert "B000000007: HTTP 404" in printed and FAILURES_FILE in printed
    fetched = sorted(path.name for path in (folder / "fetched").glob("*.jpg"))
    assert fetched == [f"B0000000{n:02d}.jpg" for n in (1, 2, 3, 4, 6)]
    assert not any("B099999999" in path for path in server.requests)  # in the metadata, never reviewed
    data = AmazonDataModule(str(folder), image_dir="fetched", cache_dir=str(tmp_path / "cache"),
                            min_user_interactions=0, min_item_interactions=0)
    assert data.dataset.meta["statistics"]["images_usable"] == 5


def test_fetch_images_help_shows_the_arguments(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "fetch-images", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--data_dir" in text and "further attempts per URL after a transient failure" in text
