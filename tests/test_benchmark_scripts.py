"""The scaling scripts and page: ``benchmarks/real_size.py`` counts the published Qwen2-VL architectures and
its memory model is what it says; ``--tiny`` runs of it and of ``benchmarks/gpu_check.py`` go through every
section on the CPU (slow); every ``molar`` training command of ``docs/scaling.md`` parses, and its FSDP
meshes match the processes it starts."""

import io
import json
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_size  # noqa: E402


def test_the_published_architectures_have_their_published_sizes() -> None:
    counts = {name: real_size.count_parameters(config) for name, config in real_size.MODELS.items()}
    two, seven = counts["Qwen2-VL-2B"], counts["Qwen2-VL-7B"]
    assert two.total == 2_208_985_600 and seven.total == 8_291_375_616  # 2.21B and 8.29B, as on the hub
    assert two.lm_head == 0 and seven.lm_head == seven.embeddings == 152_064 * 3584  # tied in 2B only
    assert two.embeddings == 151_936 * 1536 and two.largest_block == 1536 * (2 * 1536 + 2 * 256 + 3 * 8960) + \
        1536 + 2 * 256 + 2 * 1536  # q, k, v, o (q/k/v with bias), gate/up/down, two norms
    # LoRA r=8 on q/k/v/o/gate/up/down of the 28 decoder layers (none in the vision tower)
    per_layer = 8 * ((1536 + 1536) * 2 + (1536 + 256) * 2 + (1536 + 8960) * 3)
    assert two.lora == 28 * per_layer


def test_the_memory_model_charges_16_bytes_a_trained_weight_and_shards_everything() -> None:
    counts = real_size.count_parameters(real_size.QWEN2_VL_2B)
    full = real_size.per_gpu([real_size.mirm_part(counts, "full")])
    assert full.weights == full.gradients == 4 * counts.total and full.optimizer == 8 * counts.total
    lora = real_size.per_gpu([real_size.mirm_part(counts, "lora")])
    assert lora.weights == 2 * counts.total + 4 * counts.lora and lora.optimizer == 8 * counts.lora
    sharded = real_size.per_gpu([real_size.mirm_part(counts, "full")], processes=8)
    assert sharded.optimizer == full.optimizer / 8
    assert sharded.gathered == 2 * (counts.mirm_root + 2 * counts.largest_block)
    dueg = real_size.dueg_part(counts, "full")
    assert dueg.trainable == counts.language - counts.embeddings and dueg.frozen == counts.embeddings


def test_the_cost_estimates_scale_with_the_data() -> None:
    counts = {name: real_size.count_parameters(config) for name, config in real_size.MODELS.items()}
    rows = dict(real_size.cost_rows(counts["Qwen2-VL-2B"], counts["Qwen2-VL-7B"], real_size.Workload()))
    cached = rows["stage 2 cached: DUEG-2B full (Molar, Table 4 rows, w/o CL)"]
    users, _, interactions = real_size.DATASETS["MovieLens-1M"]
    expected = 5 * 8 * real_size.non_embedding(counts["Qwen2-VL-2B"]) * (interactions - 3 * users)
    assert cached["MovieLens-1M"] == expected
    assert cached["Amazon cloth"] > cached["MovieLens-1M"]


def run_script(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


@pytest.mark.slow  # builds and trains tiny models (~1 min on 2 shared cores)
def test_real_size_runs_tiny_models_and_measures_what_it_computes(tmp_path: Path) -> None:
    out = run_script("benchmarks/real_size.py", "--tiny", "--steps", "2", "--work-dir", str(tmp_path))
    assert "seconds per step" in out and "peak RSS" in out
    ratios = re.search(r"\| measured / computed \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", out)
    assert ratios and all(abs(float(value) - 1) < 0.01 for value in ratios.groups())


@pytest.mark.slow  # every section on tiny models, FSDP2 on one gloo process (~2 min on 2 shared cores)
def test_gpu_check_runs_every_section_on_the_cpu(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    out = run_script("benchmarks/gpu_check.py", "--tiny", "--work-dir", str(tmp_path), "--json", str(summary_file))
    summary = json.loads(summary_file.read_text())
    assert "GPU_CHECK_SUMMARY" in out and summary["ok"], json.dumps(summary, indent=1)[-4000:]
    sections = summary["sections"]
    assert sections["mirm_embed_flash_attention_2"]["status"] == "skipped"  # no flash-attn on a CPU
    assert all(sections[name]["status"] == "ok" for name in ("environment", "mirm_embed_sdpa", "molar_train",
                                                               "fsdp_molar_step", "fsdp_alignment_step"))
    assert sections["mirm_embed_sdpa"]["items_per_second"] > 0
    assert sections["molar_train"]["interactions_per_second"] > 0 and sections["molar_train"]["losses_finite"]
    assert all(sections["fsdp_molar_step"]["sharded"].values())
    assert sections["fsdp_alignment_step"]["exported"]


def test_gpu_check_reports_a_failing_section_and_runs_the_others(tmp_path: Path, monkeypatch) -> None:
    import gpu_check

    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.RUNNERS, "molar_train", broken)
    monkeypatch.setattr(gpu_check, "quiet", lambda: None)  # the script's warning and log filters stay out of the session
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    summary = gpu_check.main(["--tiny", "--work-dir", str(tmp_path), "--sections", "molar_train", "environment",
                              "mirm_embed_flash_attention_2", "--json", str(tmp_path / "summary.json")])
    sections = summary["sections"]
    assert sections["molar_train"]["status"] == "failed" and "boom" in sections["molar_train"]["error"]
    assert sections["environment"]["status"] == "ok" and not summary["ok"]
    assert json.loads((tmp_path / "summary.json").read_text())["sections"].keys() == sections.keys()


def doc_commands() -> list[list[str]]:
    """Every ``molar fit`` of docs/scaling.md's code blocks (also under torchrun and srun), as arguments, with
    its placeholders filled in."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined, current = [], ""
        for line in block.splitlines():
            if line.lstrip().startswith("#"):
                continue
            current += " " + line.split("  #")[0].rstrip().rstrip("\\")  # a trailing comment dropped
            if not line.rstrip().endswith("\\"):
                joined.append(current.strip())
                current = ""
        for command in joined:
            command = re.sub(r"<[^>]+>", "placeholder", command).replace("$NODE_RANK", "0")
            command = command.replace("$MASTER_ADDR", "127.0.0.1")
            words = shlex.split(command)
            for start, word in enumerate(words):
                if word in ("molar", "molar_lightning") and start + 1 < len(words) and words[start + 1] == "fit":
                    commands.append(words[start + 1:])
    return commands


def test_every_training_command_of_the_scaling_page_parses() -> None:
    from molar_lightning.commands import main

    commands = doc_commands()
    assert len(commands) >= 10
    for args in commands:
        out = io.StringIO()
        with redirect_stdout(out), redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as done:
            main([*args, "--print_config"])
        assert done.value.code in (0, None), " ".join(args)
        trainer = yaml.safe_load(out.getvalue())["trainer"]
        strategy = trainer["strategy"]
        if isinstance(strategy, dict) and strategy["class_path"].endswith("ModelParallelStrategy"):
            processes = int(trainer["devices"]) * int(trainer["num_nodes"])
            assert strategy["init_args"]["data_parallel_size"] == processes, " ".join(args)
            assert strategy["init_args"]["tensor_parallel_size"] == 1


def test_the_duorec_authors_wrapper_builds_the_object_arrays_old_numpy_built() -> None:
    import duorec_authors

    ragged = duorec_authors.ragged_array([np.array([1, 2]), np.array([3])])
    assert ragged.dtype == object and ragged.shape == (2,) and list(ragged[0]) == [1, 2] and list(ragged[1]) == [3]
    assert duorec_authors.ragged_array([[1, 2], [3, 4]]).shape == (2, 2)  # a regular list stays numeric
    with pytest.raises(ValueError):
        duorec_authors.ragged_array([[1, 2], [3]], dtype=np.int64)  # an explicit dtype is not overridden
    assert np.array is duorec_authors.numpy_array  # importing it changes nothing in this process


def test_duorec_third_pass_times_each_pass_against_the_main_pass(capsys, monkeypatch) -> None:
    import duorec_third_pass

    monkeypatch.setattr(sys, "argv", ["duorec_third_pass.py", "--steps", "1"])
    duorec_third_pass.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("main pass, 6 windows x 50: ") and lines[1].endswith(" ms a step, 1.0x the main pass")
    assert [line.split(":")[0] for line in lines[2:]] == ["third pass, 256 prefixes of 1-50, padded to the longest",
                                                          "third pass, the same in 4 length groups (as trained)"]
