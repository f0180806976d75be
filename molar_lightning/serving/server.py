"""``molar serve``: a small HTTP endpoint over :class:`~molar_lightning.serving.recommend.Recommender`, to try a
model from a browser or curl.

Standard library only (``http.server.ThreadingHTTPServer``: a thread per connection), bound to 127.0.0.1
unless told otherwise. ``POST /recommend`` takes a JSON request (the format of ``molar recommend``);
``GET /recommend?user=U&k=10`` or ``?history=i1,i2`` is the same for a browser; ``GET /health`` reports the
export. Every error is a JSON ``{"error": ...}`` with a 4xx status (unknown ids named, a malformed body
explained), an unexpected one a 500, and the server keeps serving. It is for trying a model, not for the
open internet: no authentication, no TLS.
"""

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from molar_lightning.serving.options import flag, parse_options, usage
from molar_lightning.serving.recommend import Recommender, RequestError
from molar_lightning.user_error import UserError

MAX_BODY_BYTES = 1 << 20
QUERY_FIELDS = {"user": str, "history": lambda text: [item for item in text.split(",") if item],
                "k": int, "include_seen": lambda text: flag(text, "include_seen")}


def query_request(query: str) -> dict[str, Any]:
    """A request from a URL query string (``user=U&k=5``, ``history=i1,i2``)."""
    request = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in QUERY_FIELDS:
            raise RequestError(f"unknown query parameter {name!r}; the parameters are {', '.join(QUERY_FIELDS)}")
        try:
            request[name] = QUERY_FIELDS[name](values[-1])
        except (ValueError, UserError) as error:
            raise RequestError(f"query parameter {name}={values[-1]!r}: {error}") from None
    return request


def make_handler(recommender: Recommender, verbose: bool = False) -> type[BaseHTTPRequestHandler]:
    """The request handler class of a server over ``recommender``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "molar-serve"
        protocol_version = "HTTP/1.1"

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def answer(self, read_request) -> None:
            try:
                self.reply(HTTPStatus.OK, recommender.recommend(read_request()))
            except RequestError as error:
                self.reply(error.status, {"error": str(error)})
            except Exception as error:  # noqa: BLE001 - a bug answers 500 and the server keeps serving
                self.log_error("internal error: %r", error)
                self.reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {error}"})

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            url = urlparse(self.path)
            if url.path == "/health":
                self.reply(HTTPStatus.OK, {"status": "ok", "items": len(recommender.item_ids),
                                           "users": len(recommender.user_ids),
                                           "histories": recommender.model is not None})
            elif url.path == "/recommend":
                self.answer(lambda: query_request(url.query))
            else:
                self.reply(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}; use POST /recommend, "
                                                           f"GET /recommend?user=<id> or GET /health"})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/recommend":
                self.reply(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}; POST to /recommend"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                self.reply(HTTPStatus.LENGTH_REQUIRED, {"error": "send the JSON request with a Content-Length"})
                return
            if int(length) > MAX_BODY_BYTES:
                self.close_connection = True  # the body is not read, so the connection cannot be reused
                self.reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           {"error": f"request body of {length} bytes; at most {MAX_BODY_BYTES}"})
                return
            body = self.rfile.read(int(length))

            def read_request() -> Any:
                try:
                    return json.loads(body)
                except (json.JSONDecodeError, UnicodeDecodeError) as error:
                    raise RequestError(f"the request body is not valid JSON ({error}); send e.g. "
                                       f'{{"user": "<id>", "k": 10}}') from None

            self.answer(read_request)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            if verbose:
                super().log_message(format, *args)

    return Handler


def make_server(recommender: Recommender, host: str = "127.0.0.1", port: int = 8000,
                verbose: bool = False) -> ThreadingHTTPServer:
    """A bound server (``port`` 0 picks a free one: ``server.server_address``); call ``serve_forever``."""
    server = ThreadingHTTPServer((host, port), make_handler(recommender, verbose))
    server.daemon_threads = True
    return server


OPTIONS = {
    "--export": "export folder written by molar export (required)",
    "--host": "address to bind (default 127.0.0.1: this machine only)",
    "--port": "port (default 8000; 0 picks a free one)",
    "--index": "exact (default) or faiss (approximate; pip install faiss-cpu)",
    "--histories": "true (default): load the export's checkpoint to embed ad-hoc histories; false: users only",
    "--verbose": "true: log every request to standard error",
}
DESCRIPTION = "an HTTP endpoint (127.0.0.1 by default) answering recommendation requests from an export"


def main(args: list[str]) -> Optional[ThreadingHTTPServer]:
    """``molar serve``: serves until interrupted."""
    if "-h" in args or "--help" in args:
        print(usage("molar serve [options]", DESCRIPTION, OPTIONS))
        return None
    options = parse_options(args, OPTIONS)
    if "export" not in options:
        raise UserError(f"molar serve needs --export\n{usage('molar serve [options]', DESCRIPTION, OPTIONS)}")
    port = options.get("port", "8000")
    if not port.isdigit() or int(port) > 65535:
        raise UserError(f"--port takes a port number (0 picks a free one), got {port!r}")
    recommender = Recommender(options["export"], options.get("index", "exact"),
                              histories=flag(options.get("histories", "true"), "histories"))
    host = options.get("host", "127.0.0.1")
    try:
        server = make_server(recommender, host, int(port), flag(options.get("verbose", "false"), "verbose"))
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or --host") from None
    host, port = server.server_address[:2]
    print(f"serving {options['export']} on http://{host}:{port}/recommend  (Ctrl-C stops)", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return server
