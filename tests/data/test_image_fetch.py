"""``molar data fetch-images`` against a local HTTP server on 127.0.0.1: downloads, fallback URLs, retries, 404s,
truncated bodies, resume, the failure summary; and the fences around untrusted metadata: only http(s) URLs and
redirects, ids that cannot leave the folder, a byte cap, a total timeout, one bad record never an abort."""

import base64
import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from molar_lightning.commands import main
from molar_lightning.data.datamodule import AmazonDataModule
from molar_lightning.data.image_check import image_problem
from molar_lightning.data.image_fetch import FAILURES_FILE, fetch_images
from molar_lightning.data.image_names import image_file_name

MAX_REQUESTS = 200  # a runaway retry loop hits this wall instead of hanging the suite


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), "red").save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = jpeg()


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (kind, body)``: ``ok`` (200), ``cut`` (sends half of what it announces),
    ``flaky`` (500 the first time, then 200), ``redirect`` (302 to the URL in body), ``drip`` (body's bytes
    one every 0.25 s), ``huge`` / ``huge-undeclared`` (body: a number of zero bytes, streamed 1 MiB at a time,
    with or without a Content-Length; ``server.sent[path]`` counts what got out), anything else 404."""

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.requests[self.path] += 1
            total, count = sum(server.requests.values()), server.requests[self.path]
        kind, body = server.routes.get(self.path, ("missing", b""))
        if total > MAX_REQUESTS or kind == "missing" or (kind == "flaky" and count == 1):
            self.send_error(503 if total > MAX_REQUESTS else 500 if kind == "flaky" else 404)
            return
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", body)
            self.end_headers()
            return
        if kind in ("huge", "huge-undeclared", "drip"):
            self.stream(kind, body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "cut" else body)
        self.close_connection = True

    def stream(self, kind: str, body) -> None:
        size = len(body) if kind == "drip" else body
        self.send_response(200)
        if kind != "huge-undeclared":  # without it the body ends when the connection closes (HTTP/1.0)
            self.send_header("Content-Length", str(size))
        self.end_headers()
        pieces = [body[i:i + 1] for i in range(size)] if kind == "drip" else [bytes(2**20)] * (size // 2**20)
        try:
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()
                self.server.sent[self.path] += len(piece)
                if kind == "drip":
                    time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass
        self.close_connection = True

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (free port) that shuts itself down after 60 s at the latest."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.requests, httpd.sent, httpd.lock = {}, Counter(), Counter(), threading.Lock()
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
    assert failed["e"].startswith("incomplete body") and failed["g"] == "HTTP 404"
    assert failed["h"].startswith("no image URL")
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
    assert (out / FAILURES_FILE).read_text() == "item_id\turl\treason\n"  # nothing left to report


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


def local_jpeg(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(JPEG)
    return secret


def test_only_absolute_http_urls_are_fetched_and_a_bad_one_is_one_failure(server, tmp_path: Path) -> None:
    server.routes["/ok.jpg"] = ("ok", JPEG)
    data_url = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    jobs = [("file", [local_jpeg(tmp_path).as_uri()]), ("data", [data_url]), ("relative", ["images/I/71abc.jpg"]),
            ("number", [12345]), ("ftp", ["ftp://127.0.0.1/x.jpg"]), ("no-host", ["http:///x.jpg"]),
            ("fallback", [None, f"{server.url}/ok.jpg"]), ("ok", [f"{server.url}/ok.jpg"])]
    out = tmp_path / "images"
    report = fetch_images(jobs, out, retries=1, backoff=0, show_progress=False)
    assert (report.downloaded, report.skipped) == (2, 0)
    failed = {item: (url, reason) for item, url, reason in report.failed}
    assert set(failed) == {"file", "data", "relative", "number", "ftp", "no-host"}
    assert all(reason == "not an absolute http(s) URL; only those are fetched"
               for item, (_, reason) in failed.items() if item != "number")
    assert failed["number"] == ("12345", "not a URL: 12345")
    assert sorted(path.name for path in out.glob("*.jpg")) == ["fallback.jpg", "ok.jpg"]
    listed = (out / FAILURES_FILE).read_text().splitlines()
    assert len(listed) == 1 + 6 and all(line.count("\t") == 2 for line in listed)


def test_redirects_are_followed_to_http_only(server, tmp_path: Path) -> None:
    secret = local_jpeg(tmp_path)
    server.routes.update({"/ok.jpg": ("ok", JPEG), "/to-ok": ("redirect", f"{server.url}/ok.jpg"),
                          "/to-file": ("redirect", secret.as_uri()), "/to-ftp": ("redirect", "ftp://127.0.0.1:9/x.jpg"),
                          "/to-data": ("redirect", "data:image/jpeg;base64," + base64.b64encode(JPEG).decode())})
    jobs = [(name, [f"{server.url}/to-{name}"]) for name in ("ok", "file", "ftp", "data")]
    report = fetch_images(jobs, tmp_path / "images", retries=2, backoff=0, show_progress=False)
    assert report.downloaded == 1 and image_problem(tmp_path / "images" / "ok.jpg") is None
    failed = {item: reason for item, _, reason in report.failed}
    assert set(failed) == {"file", "ftp", "data"}
    assert failed["file"].startswith("HTTP 302") and "is not allowed" in failed["file"]
    assert failed["ftp"] == "redirected to 'ftp://127.0.0.1:9/x.jpg', which is not an http(s) URL"
    # A refused redirect is permanent: asked once, however many retries.
    assert server.requests["/to-file"] == server.requests["/to-ftp"] == server.requests["/to-data"] == 1
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [FAILURES_FILE, "ok.jpg"]


@pytest.mark.parametrize("item_id", ["./../../ESCAPED2", "../ESCAPED", "a/b", "{tmp_path}/ESCAPED", ".hidden",
                                     "", "with space", "x" * 300],
                         ids=["dot-dot-twice", "dot-dot", "slash", "absolute", "hidden", "empty", "space", "long"])
def test_ids_become_names_inside_the_folder(server, tmp_path: Path, item_id: str) -> None:
    server.routes["/ok.jpg"] = ("ok", JPEG)
    item_id = item_id.format(tmp_path=tmp_path)
    out = tmp_path / "deep" / "er" / "images"
    report = fetch_images([(item_id, [f"{server.url}/ok.jpg"])], out, retries=0, show_progress=False)
    assert (report.downloaded, report.failed) == (1, [])
    name = image_file_name(item_id)
    assert "/" not in name and not name.startswith(".") and len(name) < 100
    written = [path for path in tmp_path.rglob("*") if path.is_file() and path.name != FAILURES_FILE]
    assert written == [out / name]


def test_image_file_names_keep_plain_ids_and_never_collide() -> None:
    assert image_file_name("B000000001") == "B000000001.jpg"  # folders fetched before keep their names
    assert image_file_name("i7.v2_x-y") == "i7.v2_x-y.jpg"
    tricky = ["a/b", "a_b", "a:b", "a?b", "a b", "a_b+", "../a_b", "a\\b", "A/B", ""]
    names = [image_file_name(item) for item in tricky]
    assert len(set(names)) == len(tricky)
    assert names[1] == "a_b.jpg" and names[0].startswith("a_b+") and names[0] != names[2]


@pytest.mark.parametrize("kind", ["huge", "huge-undeclared"])
def test_a_300_mb_body_is_refused_at_the_byte_cap(server, tmp_path: Path, kind: str) -> None:
    server.routes["/huge.jpg"] = (kind, 300 * 2**20)
    start = time.monotonic()
    report = fetch_images([("big", [f"{server.url}/huge.jpg"])], tmp_path / "images", retries=2, backoff=0,
                          max_bytes=2**20, show_progress=False)
    assert report.downloaded == 0 and report.failed[0][2].startswith("larger than the 1,048,576-byte cap")
    assert server.requests["/huge.jpg"] == 1  # permanent: not asked again
    assert server.sent["/huge.jpg"] < 64 * 2**20 and time.monotonic() - start < 20  # stopped early, not read through
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [FAILURES_FILE]  # no .part left


def test_a_slow_drip_is_cut_at_the_total_timeout(server, tmp_path: Path) -> None:
    server.routes["/slow.jpg"] = ("drip", JPEG[:24])  # a byte every 0.25 s: 6 s for the whole body
    start = time.monotonic()
    report = fetch_images([("slow", [f"{server.url}/slow.jpg"])], tmp_path / "images", retries=0, timeout=1,
                          show_progress=False)
    elapsed = time.monotonic() - start
    assert report.downloaded == 0 and report.failed[0][2].startswith("not done after the 1 s timeout")
    assert elapsed < 4.5, elapsed  # the whole body takes 6 s
