"""``molar recommend``: top-k items in raw ids for a raw user id or an ad-hoc history, from an export.

A request is a JSON object: ``{"user": "<raw user id>"}`` or ``{"history": ["<raw item id>", ...]}`` (oldest
first), with ``"k"`` (default 10) and ``"include_seen"`` (default false: the user's items, or the history's,
are never returned). The answer is ``{"user" or "history", "items": [raw ids], "scores": [...]}``, best first.
A user is looked up in the export; a history is embedded by the live model (the export's checkpoint,
:class:`~molar_lightning.serving.live_model.LiveModel`), loaded when the recommender is opened with
``histories=True``. Items added by cold start can be recommended but not read as history: the model has no
input row for them. Every mistake in a request is a :class:`RequestError` naming what to change (unknown ids
by id), which ``molar serve`` answers as an HTTP 4xx.
"""

import json
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file

from molar_lightning.serving.export import EXPORT_FORMAT, MANIFEST
from molar_lightning.serving.live_model import LiveModel, ServingError
from molar_lightning.serving.options import flag, parse_options, usage
from molar_lightning.serving.search import IndexKind, build_search
from molar_lightning.user_error import MissingInputError

MAX_K = 1000
REFUSED_EXIT_STATUS = 1  # some request got an {"error": ...} answer (2 is for a mistake in the command itself)
REQUEST_KEYS = ("user", "history", "k", "include_seen")


class RequestError(ValueError):
    """A request that cannot be answered; ``status`` is its HTTP status (400, or 404 for an unknown user)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _raw_id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(f"{what} must be a string (or an integer) id, got {json.dumps(value)}")
    return str(value)


class Recommender:
    """Answers recommendation requests from an export folder (``molar export``).

    Args:
        folder: the export.
        index: ``exact`` chunked search, or ``faiss``, an approximate index for large catalogues
            (:mod:`molar_lightning.serving.search`).
        histories: load the export's checkpoint to embed ad-hoc histories; off, only users of the export are
            answered.
    """

    def __init__(self, folder: str, index: IndexKind = "exact", histories: bool = False) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.is_file():
            raise ServingError(f"{folder} is not an export (no {MANIFEST}); write one with molar export --ckpt_path "
                               f"<checkpoint> --out {folder}")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != EXPORT_FORMAT:
            raise ServingError(f"{folder} is an export of format {self.manifest.get('format')}, this version reads "
                               f"format {EXPORT_FORMAT}; export the checkpoint again")
        self.items = load_file(str(self.folder / "items.safetensors"))["embeddings"]
        users = load_file(str(self.folder / "users.safetensors"))
        self.users, self.seen_offsets, self.seen_items = users["embeddings"], users["seen_offsets"], users["seen_items"]
        self.item_ids: list[str] = json.loads((self.folder / "items.json").read_text())
        self.user_ids: list[str] = json.loads((self.folder / "users.json").read_text())
        self.item_rows = {raw: row for row, raw in enumerate(self.item_ids, start=1)}
        self.user_rows = {raw: row for row, raw in enumerate(self.user_ids)}
        self.num_trained_items = int(self.manifest["num_trained_items"])
        self.search = build_search(self.items, index)
        self.model: Optional[LiveModel] = None
        if histories:
            if not Path(self.manifest["checkpoint"] or "").is_file():
                raise ServingError(f"the export's checkpoint {self.manifest['checkpoint']} is not there, so histories "
                                   f"cannot be embedded; answer users only (--histories false), or export again")
            self.model = LiveModel(self.manifest["checkpoint"], self.manifest["config"], self.manifest["overrides"])
        self._model_lock = threading.Lock()  # one history batch through the model at a time

    def seen(self, user_row: int) -> list[int]:
        return self.seen_items[self.seen_offsets[user_row]:self.seen_offsets[user_row + 1]].tolist()

    def _history_rows(self, history: Any) -> list[int]:
        if not isinstance(history, list) or not history:
            raise RequestError('history must be a non-empty list of raw item ids, e.g. {"history": ["i1", "i2"]}')
        raw = [_raw_id(item, "each history item") for item in history]
        unknown = [item for item in raw if item not in self.item_rows]
        if unknown:
            raise RequestError(f"unknown item ids in history: {unknown}")
        rows = [self.item_rows[item] for item in raw]
        cold = [item for item, row in zip(raw, rows) if row > self.num_trained_items]
        if cold:
            raise RequestError(f"items {cold} were added after training (cold start): they can be recommended but "
                               f"the model cannot read them as history; leave them out")
        return rows

    def parse(self, request: Any) -> tuple[dict[str, Any], torch.Tensor, list[int]]:
        """Check a request; returns ``(echo, user_emb [D] or None for a history, seen rows)``."""
        if not isinstance(request, dict):
            raise RequestError('a request is a JSON object: {"user": "<id>"} or {"history": ["<item id>", ...]}, with '
                               'optional "k" and "include_seen"')
        unknown = sorted(set(request) - set(REQUEST_KEYS))
        if unknown:
            raise RequestError(f"unknown request field(s) {unknown}; the fields are {', '.join(REQUEST_KEYS)}")
        if ("user" in request) == ("history" in request):
            raise RequestError('give exactly one of "user" (a raw user id) and "history" (raw item ids)')
        if "user" in request:
            user = _raw_id(request["user"], "user")
            if user not in self.user_rows:
                raise RequestError(f"unknown user id {user!r}: not in this export (its users are the data set's and "
                                   f"those exported with --histories); send their history instead", status=404)
            row = self.user_rows[user]
            return {"user": user}, self.users[row], self.seen(row)
        rows = self._history_rows(request["history"])
        if self.model is None:
            raise RequestError("this recommender was opened without its model, so it cannot embed a history; ask for "
                               "a user, or start it with histories on (molar serve/recommend --histories true)")
        with self._model_lock:
            user_emb = self.model.encode_histories([np.asarray(rows)])[0]
        return {"history": [str(item) for item in request["history"]]}, user_emb, rows

    def recommend(self, request: Any) -> dict[str, Any]:
        """Answer one request (see the module docstring); raises :class:`RequestError` for a bad one."""
        echo, user_emb, seen = self.parse(request)
        k = request.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RequestError(f"k must be an integer in 1..{MAX_K}, got {json.dumps(k)}")
        include_seen = request.get("include_seen", False)
        if not isinstance(include_seen, bool):
            raise RequestError(f"include_seen must be true or false, got {json.dumps(include_seen)}")
        scores, rows = self.search.search(user_emb[None], k, None if include_seen else [seen])
        kept = [(row, score) for row, score in zip(rows[0].tolist(), scores[0].tolist()) if row != 0]
        return {**echo, "items": [self.item_ids[row - 1] for row, _ in kept],
                "scores": [round(score, 6) for _, score in kept]}


OPTIONS = {
    "--export": "export folder written by molar export (required)",
    "--user": "a raw user id",
    "--history": "raw item ids, comma-separated, oldest first (loads the export's checkpoint)",
    "--request": "one request as JSON (see docs/serving.md)",
    "--requests": "a file of JSON requests, one per line ('-' reads standard input)",
    "--k": "items per answer (default 10)",
    "--include_seen": "true: also return the user's own items (default false)",
    "--index": "exact (default) or faiss (approximate; pip install faiss-cpu)",
}


def read_requests(source: str) -> list[Any]:
    """The JSON requests of a file (``-``: standard input), one per line; a line that is not JSON is refused by
    number before any is answered."""
    if source != "-" and not Path(source).is_file():
        raise MissingInputError(f"--requests {source} does not exist; it holds one JSON request per line")
    handle = sys.stdin if source == "-" else open(source, encoding="utf-8")
    requests = []
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                requests.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ServingError(f"--requests {source}:{number}: not valid JSON ({error})") from None
    return requests


def requests_of(options: dict[str, str]) -> list[Any]:
    """The requests that ``molar recommend``'s options describe."""
    if "k" in options and not options["k"].isdigit():
        raise ServingError(f"--k takes a number of items, got {options['k']!r}")
    common = {"k": int(options["k"])} if "k" in options else {}
    if "include_seen" in options:
        common["include_seen"] = flag(options["include_seen"], "include_seen")
    if "user" in options:
        return [{"user": options["user"], **common}]
    if "history" in options:
        return [{"history": [item for item in options["history"].split(",") if item], **common}]
    if "request" in options:
        try:
            return [json.loads(options["request"])]
        except json.JSONDecodeError as error:
            raise ServingError(f"--request is not valid JSON ({error})") from None
    if "requests" in options:
        return read_requests(options["requests"])
    raise ServingError("molar recommend needs one of --user, --history, --request or --requests")


DESCRIPTION = "top-k items in raw ids for a user or an ad-hoc history, from an export (JSON in, JSON out)"


def main(args: list[str]) -> None:
    """``molar recommend``: prints one JSON answer per request (an ``{"error": ...}`` line for a bad one); exits
    with status 1 when any request was refused, so a script can tell (``molar recommend ... || handle``)."""
    if "-h" in args or "--help" in args:
        print(usage("molar recommend [options]", DESCRIPTION, OPTIONS))
        return
    options = parse_options(args, OPTIONS)
    if "export" not in options:
        raise ServingError(f"molar recommend needs --export\n"
                           f"{usage('molar recommend [options]', DESCRIPTION, OPTIONS)}")
    requests = requests_of(options)
    needs_model = any(isinstance(request, dict) and "history" in request for request in requests)
    recommender = Recommender(options["export"], options.get("index", "exact"), histories=needs_model)
    refused = 0
    for request in requests:
        try:
            print(json.dumps(recommender.recommend(request)))
        except RequestError as error:
            print(json.dumps({"error": str(error)}))
            refused += 1
    if refused:
        print(f"{refused} of {len(requests)} requests refused: their answers are the {{\"error\": ...}} lines",
              file=sys.stderr)
        sys.exit(REFUSED_EXIT_STATUS)
