"""``molar reproduce``: run a paper table's rows from their shipped configs over seeds, and write the comparison.

    molar reproduce --data movielens --data-dir ../shared/data/movielens-100k --table 2 4 5 --seeds 3

Every row of each table runs once per seed (an ID model that a row aligns with runs first, with the same seed),
each from ``configs/<data>/<row>.yaml`` with the profile's overrides (:mod:`.profiles`); then ``table<N>.md``,
``.csv`` and the plots land in ``--out``. Runs are kept, so a second call with more tables or seeds trains only
what is new, and an interrupted run resumes. Several processes with the same arguments share the runs
(:mod:`.claims`). Arguments it does not know are passed to every ``molar fit``.
"""

import argparse
import time
from pathlib import Path

from molar_lightning.reproduce.profiles import CONFIGS, Profile, cpu_profile, fast_profile
from molar_lightning.reproduce.runs import Runner
from molar_lightning.reproduce.summary import RowResult, summarise, write
from molar_lightning.reproduce.tables import paper_tables, table
from molar_lightning.user_error import MissingInputError, SettingError

DESCRIPTION = "run a paper table's rows over seeds, with the paper's figures and paired tests beside them"


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="molar reproduce", description=__doc__.split("\n\n")[0])
    options.add_argument("--data", default="movielens", choices=sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()
                                                                        and (p / "sasrec.yaml").is_file()),
                         help="the data set, whose configs/<data>/ rows run (default: movielens)")
    options.add_argument("--data-dir", required=True, help="the raw data folder (for MovieLens: ratings.dat ...)")
    options.add_argument("--table", type=int, nargs="+", default=[2], help="paper tables to run (2 to 6; default 2)")
    options.add_argument("--rows", nargs="+", help="only these rows of the tables (keys of paper_tables.yaml)")
    options.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    options.add_argument("--out", default="runs/reproduce", help="output folder (default: runs/reproduce)")
    options.add_argument("--max-epochs", type=int, help="cap every row's epochs (default: each config's own)")
    options.add_argument("--fast", action="store_true",
                         help="tiny random models and 2 epochs: checks the command and the files, not the figures")
    return options


def main(arguments: list[str]) -> list[Path]:
    """Run ``molar reproduce``; returns the files written."""
    options, fit_arguments = parser().parse_known_args(arguments)
    if options.seeds < 1:
        raise SettingError(f"--seeds {options.seeds}: give at least 1 seed (3 or more for the seed test)")
    if not Path(options.data_dir).is_dir():
        raise MissingInputError(f"--data-dir {options.data_dir}: no such folder")
    out = Path(options.out)
    tables = [table(number) for number in options.table]
    rows = paper_tables()[0]
    if options.rows:
        unknown = sorted(set(options.rows) - {key for t in tables for key in t.rows})
        if unknown:
            raise SettingError(f"--rows {' '.join(unknown)}: not rows of table(s) {' '.join(map(str, options.table))}; "
                               f"they have {', '.join(key for t in tables for key in t.rows)}")
    profile = fast_profile(out, options.max_epochs or 2) if options.fast else cpu_profile(options.max_epochs)
    runner = Runner(options.data, options.data_dir, out, profile, rows, fit_arguments,
                    say=lambda line: print(f"[reproduce {time.strftime('%H:%M:%S')}] {line}", flush=True))
    seeds = list(range(options.seeds))
    written = []
    for number, paper_table in zip(options.table, tables):
        keys = [key for key in paper_table.rows if not options.rows or key in options.rows or key == paper_table.base]
        for key in keys:  # first the table's runs that no other process holds (claims.py), then the rest
            if not profile.skip_reason(rows[key], options.data):
                for seed in seeds:
                    runner.outcome(rows[key], seed, wait=False)
        results = [run_row(runner, profile, rows[key], options.data, seeds) for key in keys]
        header = (f"{options.data} from `{options.data_dir}`, seeds {', '.join(map(str, seeds))}, profile "
                  f"{profile.name}: {profile.note}. Test: each user's last item ranked against all items, history "
                  f"excluded, at the best validation NDCG@10. p (users): paired t-test over the test users of the "
                  f"per-user metric averaged over seeds; p (seeds): paired t-test over the seeds' means.")
        written += write(paper_table, options.data, header, summarise(paper_table, options.data, results), out)
    for path in written:
        print(path)
    print((out / f"table{options.table[-1]}.md").read_text())
    return written


def run_row(runner: Runner, profile: Profile, row, data: str, seeds: list[int]) -> RowResult:
    """The row's outcomes over ``seeds``, or why it was skipped or failed."""
    reason = profile.skip_reason(row, data)
    if reason:
        return RowResult(row, "skipped", reason)
    outcomes = [runner.outcome(row, seed) for seed in seeds]
    failed = [outcome for outcome in outcomes if outcome.status != "done"]
    if failed:
        return RowResult(row, "failed", f"seed {failed[0].seed}: {failed[0].error}", profile.stands_in(row), outcomes)
    return RowResult(row, "ran", stands_in=profile.stands_in(row), outcomes=outcomes)
