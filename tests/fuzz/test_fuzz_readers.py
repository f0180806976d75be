"""Every reader against seeded malformed variants of its fixture (:mod:`mutations` beside this file).

A case passes when preparation ends in a :class:`~molar_lightning.user_error.UserError` that names the raw file
(and its line, where one line is at fault), in the documented refusal of a data set that filtering empties, or
in a data set prepared in full; never in another exception. Either way no cache or staging folder is left
half-made. Under ``on_bad_line: skip`` the same cases must not end in a line's refusal (only a CSV's header
line, without which no row can be read, is still refused naming line 1): a bad line is counted instead
("skipped lines"). ``make test`` runs a few hundred cases; the slow run takes 10,000 per reader (``MOLAR_FUZZ_CASES``
changes the count, ``MOLAR_FUZZ_CASE=<format>:<index>`` reruns one case) and prints the counts per outcome.
"""

import os
import re
import shutil
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import pytest

from molar_lightning.data.prepare import PrepareParams, prepare_dataset
from molar_lightning.user_error import UserError

from tests.fuzz.mutations import FORMATS, base_folder, mutate

FAST_CASES = 60
SLOW_CASES = 10_000
PASSING = ("file and line", "file only", "emptied by filtering", "accepted", "skipped lines")


def outcome(name: str, index: int, root: Path, on_bad_line: str = "error") -> tuple[str, str]:
    """``(outcome, detail)`` of case ``index`` of format ``name``, run in the empty folder ``root``."""
    folder = base_folder(name, root / "raw")
    what = f"{name}:{index} ({mutate(name, index, folder)})"
    cache = root / "cache"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped or repeated lines are counted in meta.json
            dataset = prepare_dataset(FORMATS[name].source(folder), str(cache), PrepareParams(on_bad_line=on_bad_line))
    except UserError as error:
        if cache.exists() and any(cache.iterdir()):
            return "left behind", f"{what}: {sorted(path.name for path in cache.iterdir())}"
        message = str(error)
        if re.search(rf"{re.escape(str(folder))}/[^\s:]+:\d+: ", message):
            if on_bad_line == "skip" and not re.search(r"\.csv:1: ", message):  # a CSV's header line
                return "not skipped", f"{what}: {message}"
            return "file and line", message
        if str(folder) in message:
            return "file only", message
        if message.startswith("no interaction survives filtering"):
            return "emptied by filtering", message
        return "unnamed", f"{what}: {message}"
    except Exception:  # noqa: BLE001 - anything but a UserError is what this suite looks for
        return "uncaught", f"{what}:\n{traceback.format_exc(limit=-4)}"
    staging = [path.name for path in cache.iterdir() if path.name.startswith(".staging")]
    if staging:
        return "left behind", f"{what}: {staging}"
    if len(dataset.items) != dataset.num_items or not all(isinstance(title, str) for title in dataset.items["title"]):
        return "inconsistent", what
    return "skipped lines" if dataset.meta["bad_lines"]["skipped"] else "accepted", what


def run_cases(name: str, indices: range, on_bad_line: str = "error") -> Counter:
    """Run the cases, print the counts per outcome, and fail naming the first cases that did not pass."""
    counts: Counter = Counter()
    failures = []
    for index in indices:
        root = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
        try:
            kind, detail = outcome(name, index, root, on_bad_line)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        counts[kind] += 1
        if kind not in PASSING:
            failures.append(detail)
    print(f"\n{name} (on_bad_line: {on_bad_line}): {len(indices):,} cases: " + ", ".join(
        f"{kind} {counts[kind]:,}" for kind in (*PASSING, "uncaught", "unnamed", "left behind", "not skipped")))
    assert not failures, f"{len(failures)} of {len(indices)} cases failed; first ones:\n" + "\n".join(failures[:5])
    return counts


@pytest.mark.parametrize("on_bad_line", ["error", "skip"])
@pytest.mark.parametrize("name", FORMATS)
def test_malformed_input_is_refused_or_accepted(name: str, on_bad_line: str) -> None:
    run_cases(name, range(FAST_CASES if on_bad_line == "error" else FAST_CASES // 2), on_bad_line)


@pytest.mark.slow
@pytest.mark.parametrize("on_bad_line", ["error", "skip"])
@pytest.mark.parametrize("name", FORMATS)
def test_ten_thousand_malformed_inputs(name: str, on_bad_line: str) -> None:
    cases = int(os.environ.get("MOLAR_FUZZ_CASES", SLOW_CASES))
    run_cases(name, range(FAST_CASES, FAST_CASES + cases), on_bad_line)


@pytest.mark.skipif("MOLAR_FUZZ_CASE" not in os.environ,
                    reason="reruns one case: MOLAR_FUZZ_CASE=<format>:<index>[:skip]")
def test_one_case() -> None:
    name, index, *policy = os.environ["MOLAR_FUZZ_CASE"].split(":")
    run_cases(name, range(int(index), int(index) + 1), *policy)
