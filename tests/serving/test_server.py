"""``molar serve``: bound to 127.0.0.1, it answers concurrent requests as the Recommender does, and every bad
request gets a 4xx JSON error while the server keeps serving."""

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from molar_lightning.commands import main
from molar_lightning.serving.recommend import Recommender
from molar_lightning.serving.server import make_server


@pytest.fixture(scope="module")
def served(sasrec_export):
    """A server over the SASRec export on a free port of 127.0.0.1, and its recommender."""
    recommender = Recommender(str(sasrec_export), histories=True)
    server = make_server(recommender, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, recommender
    server.shutdown()
    server.server_close()


def call(server, method: str, path: str, body=None, raw: bytes = None, headers=None) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    status, payload = response.status, json.loads(response.read())
    connection.close()
    return status, payload


def test_binds_this_machine_only_by_default(served) -> None:
    server, _ = served
    assert server.server_address[0] == "127.0.0.1"


def test_concurrent_requests_all_answer_as_the_recommender(served) -> None:
    """200 requests from 8 threads (users and histories mixed): no error, each answer the direct one."""
    server, recommender = served
    users = list(recommender.user_rows)
    requests = []
    for number in range(200):
        user = users[number % len(users)]
        if number % 4 == 3:
            history = [recommender.item_ids[item - 1] for item in recommender.seen(recommender.user_rows[user])]
            requests.append({"history": history, "k": 3})
        else:
            requests.append({"user": user, "k": 1 + number % 5})
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda request: call(server, "POST", "/recommend", request), requests))
    assert all(status == 200 for status, _ in answers)
    for request, (_, answer) in zip(requests, answers):
        expected = recommender.recommend(request)
        assert answer["items"] == expected["items"]
        assert answer["scores"] == pytest.approx(expected["scores"], abs=1e-5)


def test_a_browser_query_is_the_same_request(served) -> None:
    server, recommender = served
    status, answer = call(server, "GET", "/recommend?user=3&k=2")
    assert status == 200 and answer == recommender.recommend({"user": "3", "k": 2})
    status, answer = call(server, "GET", "/recommend?history=1,2&k=2&include_seen=true")
    assert status == 200 and answer == recommender.recommend({"history": ["1", "2"], "k": 2, "include_seen": True})
    status, health = call(server, "GET", "/health")
    assert health == {"status": "ok", "items": 10, "users": 12, "histories": True}


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("POST", "/recommend", b'{"user": "1", ', 400, "the request body is not valid JSON"),
    ("POST", "/recommend", b"\xff\xfe", 400, "the request body is not valid JSON"),
    ("POST", "/recommend", b'{"user": "ghost"}', 404, "unknown user id 'ghost'"),
    ("POST", "/recommend", b'{"history": ["1", "zz"]}', 400, r"unknown item ids in history: ['zz']"),
    ("POST", "/recommend", b'{"user": "1", "k": -1}', 400, "k must be an integer"),
    ("GET", "/recommend?user=1&k=many", None, 400, "query parameter k='many'"),
    ("GET", "/recommend?who=1", None, 400, "unknown query parameter 'who'"),
    ("GET", "/admin", None, 404, "no page /admin"),
    ("POST", "/elsewhere", b"{}", 404, "no page /elsewhere"),
], ids=["truncated-json", "not-utf8", "unknown-user", "unknown-item", "bad-k", "bad-query-k", "unknown-query",
        "unknown-page", "unknown-post"])
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(served, method, path, body, status,
                                                                    message) -> None:
    server, recommender = served
    got, payload = call(server, method, path, raw=body)
    assert got == status and message in payload["error"]
    assert call(server, "POST", "/recommend", {"user": "1", "k": 2}) == (200, recommender.recommend({"user": "1",
                                                                                                     "k": 2}))


def test_an_oversized_body_is_refused_unread(served) -> None:
    server, _ = served
    got, payload = call(server, "POST", "/recommend", raw=b"{}", headers={"Content-Length": str(2 << 20)})
    assert got == 413 and "at most" in payload["error"]
    assert call(server, "GET", "/health")[0] == 200


def test_the_command_refuses_a_bad_port_and_one_in_use(served, sasrec_export, capsys) -> None:
    server, _ = served
    for port, message in [("http", "--port takes a port number"), (str(server.server_address[1]), "cannot listen")]:
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--export", str(sasrec_export), "--histories", "false", "--port", port])
        assert exited.value.code == 2 and message in capsys.readouterr().err
