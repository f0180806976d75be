"""``molar export``: the exported tables reproduce the live model's recommendations, the manifest says what they
are, histories embed as the model embeds them, and other data than the model's is refused with both digests."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from molar_lightning.callbacks.prepared_data import recorded_dataset
from molar_lightning.commands import main
from molar_lightning.data.prepare import CanonicalDataset
from molar_lightning.serving.export import export
from molar_lightning.serving.live_model import ServingError
from molar_lightning.serving.recommend import Recommender
from molar_lightning.user_error import UserError


def test_exported_tables_give_the_live_models_recommendations(sasrec_run, sasrec_export, tmp_path: Path) -> None:
    """``molar predict`` (the live model) and the export rank the same items with the same scores, every user."""
    main(["predict", "--config", str(sasrec_run["checkpoint"].parents[1] / "config.yaml"), "--ckpt_path",
          str(sasrec_run["checkpoint"]), f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false",
          "--model.init_args.top_k=5", "--trainer.enable_progress_bar=false"])
    live = [json.loads(line) for line in (tmp_path / "recommendations.jsonl").read_text().splitlines()]
    recommender = Recommender(str(sasrec_export))
    assert len(live) == len(recommender.user_ids) == 12
    for expected in live:
        answer = recommender.recommend({"user": expected["user"], "k": 5})
        assert answer["items"] == expected["items"][:len(answer["items"])]
        assert answer["scores"] == pytest.approx(expected["scores"][:len(answer["scores"])], abs=1e-5)
        assert len(answer["items"]) == len(expected["items"])


def test_manifest_and_id_maps_describe_the_export(sasrec_run, sasrec_export) -> None:
    manifest = json.loads((sasrec_export / "manifest.json").read_text())
    results = json.loads((sasrec_run["checkpoint"].parents[1] / "results.json").read_text())
    (prepared,) = (sasrec_run["work"] / "cache").glob("movielens-*")
    dataset = CanonicalDataset(prepared)
    items = load_file(str(sasrec_export / "items.safetensors"))["embeddings"]
    users = load_file(str(sasrec_export / "users.safetensors"))
    assert manifest["task"] == "molar_lightning.tasks.sequential.SequentialRecModule"
    assert manifest["hyper_parameters"]["encoder"]["class_path"] == "molar_lightning.models.id.sasrec.SASRec"
    assert manifest["dataset"] == prepared.name and manifest["test_metrics"] == results
    assert recorded_dataset(sasrec_run["checkpoint"]) == {"dataset": prepared.name, "num_items": 10, "num_users": 12}
    assert items.shape == (11, 64) and manifest["dim"] == 64 and manifest["num_trained_items"] == 10
    assert json.loads((sasrec_export / "items.json").read_text()) == list(dataset.items["raw_id"])
    assert json.loads((sasrec_export / "users.json").read_text()) == list(dataset.sequences["raw_user_id"])
    offsets, flat = dataset.flat_sequences
    assert users["seen_offsets"].tolist() == offsets.tolist() and users["seen_items"].tolist() == flat.tolist()


def test_a_history_embeds_as_the_data_set_user_with_it(sasrec_run, sasrec_export, tmp_path: Path) -> None:
    """``--histories``: a new user with user 3's whole sequence gets user 3's embedding; an unknown item is
    refused with the file, the line and the id."""
    recommender = Recommender(str(sasrec_export))
    raw_items = [recommender.item_ids[row - 1] for row in recommender.seen(recommender.user_rows["3"])]
    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"id": "new-user", "items": raw_items}) + "\n")
    folder = export(str(sasrec_run["checkpoint"]), str(tmp_path / "export"), histories=str(histories))
    extended = Recommender(str(folder))
    assert extended.user_ids[-1] == "new-user" and len(extended.user_ids) == 13
    assert torch.allclose(extended.users[-1], extended.users[extended.user_rows["3"]], atol=1e-6)
    assert extended.recommend({"user": "new-user"}) == {**extended.recommend({"user": "3"}), "user": "new-user"}

    only = Recommender(str(export(str(sasrec_run["checkpoint"]), str(tmp_path / "only"), histories=str(histories),
                                  data_set_users=False)))
    assert only.user_ids == ["new-user"] and torch.allclose(only.users[0], extended.users[-1])
    assert only.seen(0) == extended.seen(extended.user_rows["3"])

    histories.write_text(json.dumps({"id": "a", "items": ["1"]}) + "\n" + json.dumps({"id": "b", "items": ["1", "x9"]}))
    with pytest.raises(UserError, match=rf"{histories}:2: unknown item ids \['x9'\]"):
        export(str(sasrec_run["checkpoint"]), str(tmp_path / "export"), histories=str(histories))


def test_other_data_is_refused_with_both_digests(sasrec_run, tmp_path: Path) -> None:
    """Raw files edited since training prepare another data set: refused, naming both, before anything is written."""
    data = Path(shutil.copytree(sasrec_run["data"], tmp_path / "ml-1m"))
    with open(data / "ratings.dat", "a") as handle:
        handle.write("1::2::5::999999999\n")
    trained = next((sasrec_run["work"] / "cache").glob("movielens-*")).name
    with pytest.raises(ServingError) as refused:
        export(str(sasrec_run["checkpoint"]), str(tmp_path / "export"), overrides=[f"--data.init_args.data_dir={data}"])
    message = str(refused.value)
    assert trained in message and "movielens-" in message.replace(trained, "") and "data_dir" in message
    assert not (tmp_path / "export").exists()


def test_export_never_overwrites_a_folder_that_is_not_an_export(sasrec_run, tmp_path: Path) -> None:
    keep = tmp_path / "results"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ServingError, match="is not an export"):
        export(str(sasrec_run["checkpoint"]), str(keep))
    assert (keep / "notes.txt").read_text() == "mine"


def test_command_line_mistakes_are_one_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "--out", str(tmp_path / "x")])
    assert exited.value.code == 2 and "molar export needs --ckpt_path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")])
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    (tmp_path / "last.ckpt").mkdir()
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "x")])
    assert "is a folder of FSDP shards" in capsys.readouterr().err
