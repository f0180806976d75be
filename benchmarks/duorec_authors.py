"""Run the DuoRec authors' own code (github.com/RuihongQiu/DuoRec, a 2021 RecBole fork) as a reference.

Their fork predates numpy 1.24 and torch 2.6; this wrapper restores what those removed and then runs their
``run_seq.py`` unchanged, with its command-line arguments, from inside their checkout:

    git clone https://github.com/RuihongQiu/DuoRec /work/duorec-authors
    cd /work/duorec-authors && /work/recbole-venv/bin/python /path/to/benchmarks/duorec_authors.py \\
        --model=DuoRec --dataset=ml-100k --config_files=seq.yaml --train_batch_size=256 --lmd=0.1 --lmd_sem=0.1 \\
        --contrast=us_x --sim=dot --tau=1 --use_gpu=False --show_progress=False

For ``ml-100k`` the fork reads the copy it ships (``recbole/dataset_example/ml-100k``, RecBole's atomic files) and
keeps its same-target index beside it (``semantic_augmentation.npy``, 130 MB, written by the first run: start a
second run only after it exists). The RecBole venv of docs/recbole.md has what the fork imports (torch, numpy<2,
scipy, pandas, colorlog). ``--contrast=none`` trains the same network with the next-item loss alone: the
authors' SASRec at their batch. docs/id_models.md gives what it measured.
"""

import os
import runpy
import sys

import numpy as np
import torch

numpy_array = np.array
torch_load = torch.load


def ragged_array(obj, *args, **kwargs):
    """numpy >= 1.24 refuses a ragged list where older numpy made an object array (their semantic_augmentation)."""
    try:
        return numpy_array(obj, *args, **kwargs)
    except ValueError:
        if not isinstance(obj, list) or args or kwargs:
            raise
        out = np.empty(len(obj), dtype=object)
        out[:] = obj
        return out


def restore_old_apis() -> None:
    """What the fork needs of numpy < 1.24 and torch < 2.6, set in this process only."""
    for alias, builtin in {"bool": bool, "int": int, "float": float, "object": object, "long": int}.items():
        if not hasattr(np, alias):  # aliases numpy 1.24 removed (the fork uses np.bool, np.float, ...)
            setattr(np, alias, builtin)
    np.array = ragged_array
    # torch >= 2.6 loads weights_only by default, which refuses the fork's own checkpoint (its best model,
    # written by the same run a moment before); nothing else is loaded.
    torch.load = lambda *args, **kwargs: torch_load(*args, **{**kwargs, "weights_only": False})


if __name__ == "__main__":
    restore_old_apis()
    sys.argv = ["run_seq.py"] + sys.argv[1:]
    sys.path.insert(0, os.getcwd())  # their recbole package, not the RecBole 1.2.1 installed in the venv
    runpy.run_path("run_seq.py", run_name="__main__")
