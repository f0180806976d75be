"""``Recommender`` and ``molar recommend``: seen items never come back unless asked, an ad-hoc history is
embedded by the live model as the export embedded the user with it, and every bad request is refused by name."""

import json
import shutil

import pytest

from molar_lightning.commands import main
from molar_lightning.serving.live_model import ServingError
from molar_lightning.serving.recommend import Recommender, RequestError


@pytest.fixture(scope="module")
def recommender(sasrec_export) -> Recommender:
    return Recommender(str(sasrec_export), histories=True)


def test_seen_items_are_never_returned_unless_asked(recommender) -> None:
    num_items = len(recommender.item_ids)
    for user, row in recommender.user_rows.items():
        seen = {recommender.item_ids[item - 1] for item in recommender.seen(row)}
        unseen = recommender.recommend({"user": user, "k": num_items})
        assert not seen & set(unseen["items"]) and len(unseen["items"]) == num_items - len(seen)
        everything = recommender.recommend({"user": user, "k": num_items, "include_seen": True})
        assert sorted(everything["items"]) == sorted(recommender.item_ids)
        assert everything["scores"] == sorted(everything["scores"], reverse=True)
        # Unseen items keep their order and scores among all items.
        assert [item for item in everything["items"] if item not in seen] == unseen["items"]


def test_an_ad_hoc_history_is_scored_as_the_user_with_that_history(recommender) -> None:
    for user in ("1", "5", "12"):
        history = [recommender.item_ids[item - 1] for item in recommender.seen(recommender.user_rows[user])]
        by_history = recommender.recommend({"history": history, "k": 5})
        by_user = recommender.recommend({"user": user, "k": 5})
        assert by_history["items"] == by_user["items"] and by_history["history"] == history
        assert by_history["scores"] == pytest.approx(by_user["scores"], abs=1e-5)


@pytest.mark.parametrize(("request_", "status", "message"), [
    ({"user": "ghost"}, 404, "unknown user id 'ghost'"),
    ({"history": ["1", "nope", "x2"]}, 400, r"unknown item ids in history: \['nope', 'x2'\]"),
    ({"history": []}, 400, "history must be a non-empty list"),
    ({"user": "1", "history": ["1"]}, 400, "exactly one of"),
    ({}, 400, "exactly one of"),
    ({"user": "1", "k": 0}, 400, "k must be an integer in 1..1000, got 0"),
    ({"user": "1", "k": "5"}, 400, 'k must be an integer in 1..1000, got "5"'),
    ({"user": "1", "include_seen": "yes"}, 400, "include_seen must be true or false"),
    ({"user": "1", "topk": 5}, 400, r"unknown request field\(s\) \['topk'\]"),
    ({"user": ["1"]}, 400, "user must be a string"),
    (["1"], 400, "a request is a JSON object"),
], ids=["unknown-user", "unknown-items", "empty-history", "both", "neither", "k-zero", "k-text", "include-seen-text",
        "unknown-field", "user-list", "not-an-object"])
def test_bad_requests_are_refused_by_name(recommender, request_, status, message) -> None:
    with pytest.raises(RequestError, match=message) as refused:
        recommender.recommend(request_)
    assert refused.value.status == status


def test_without_its_model_a_history_is_refused_and_users_still_answered(sasrec_export) -> None:
    users_only = Recommender(str(sasrec_export))
    assert users_only.recommend({"user": "2", "k": 3})["items"]
    with pytest.raises(RequestError, match="opened without its model"):
        users_only.recommend({"history": ["1"]})


def test_histories_need_the_exports_checkpoint(sasrec_export, tmp_path) -> None:
    moved = shutil.copytree(sasrec_export, tmp_path / "export")
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "checkpoint": str(tmp_path / "gone.ckpt")}))
    with pytest.raises(ServingError, match=r"gone.ckpt is not there.*--histories false"):
        Recommender(str(moved), histories=True)


def test_the_command_answers_json_lines(sasrec_export, tmp_path, capsys) -> None:
    """Only answers reach stdout, even when loading the model for a history draws a Rich progress bar."""
    export = shutil.copytree(sasrec_export, tmp_path / "export")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["overrides"] = ["--trainer.enable_progress_bar=true",
                             "--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar"]
    (export / "manifest.json").write_text(json.dumps(manifest))
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"user": "1", "k": 2}\n{"user": "ghost"}\n{"history": ["1", "2"], "k": 1}\n')
    with pytest.raises(SystemExit) as refused:  # one of the three was refused: the status says so
        main(["recommend", "--export", str(export), "--requests", str(requests)])
    assert refused.value.code == 1
    printed = capsys.readouterr()
    assert "1 of 3 requests refused" in printed.err
    answers = [json.loads(line) for line in printed.out.splitlines()]
    assert len(answers) == 3 and answers[2]["history"] == ["1", "2"] and len(answers[2]["items"]) == 1
    assert answers[0]["user"] == "1" and len(answers[0]["items"]) == 2
    assert answers[1] == {"error": "unknown user id 'ghost': not in this export (its users are the data set's and "
                                   "those exported with --histories); send their history instead"}
    main(["recommend", "--export", str(sasrec_export), "--user", "1", "--k", "2"])
    assert json.loads(capsys.readouterr().out) == answers[0]
    with pytest.raises(SystemExit) as exited:
        main(["recommend", "--export", str(tmp_path), "--user", "1"])
    assert exited.value.code == 2 and "is not an export" in capsys.readouterr().err
    requests.write_text('{"user": "1"}\n{"user": \n')
    for args, message in [(["--requests", str(requests)], f"--requests {requests}:2: not valid JSON"),
                          (["--requests", str(tmp_path / "none.jsonl")], "none.jsonl does not exist"),
                          (["--request", "{user: 1}"], "--request is not valid JSON"),
                          (["--user", "1", "--k", "five"], "--k takes a number of items, got 'five'"),
                          (["--user", "1", "--topk", "5"], "unknown option '--topk'")]:
        with pytest.raises(SystemExit):
            main(["recommend", "--export", str(sasrec_export), *args])
        assert message in capsys.readouterr().err, args
