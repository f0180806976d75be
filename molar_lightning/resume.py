"""Where a resumed fit writes its checkpoints: where the run it resumes wrote them.

ModelCheckpoint forgets which checkpoint was best when its folder changes (it compares the folder it is given
with the one its saved state names), and the final test would then take the first checkpoint saved after the
resume. The ``interrupted.ckpt`` that SIGTERM saves sits at the run's root, away from that folder, so the
folder is read from the checkpoint's own ModelCheckpoint state, and run folders are kept as real paths.
"""

import os
import pickle
from pathlib import Path
from typing import Optional

import torch


def checkpoint_folder(ckpt_path: Optional[str]) -> Optional[str]:
    """Where the run that saved the checkpoint ``ckpt_path`` kept its checkpoints: the folder that its
    ModelCheckpoint state names if it is there, else the checkpoint's own folder (a sharded checkpoint, one
    without that state, or a run moved since). None when ``ckpt_path`` is no checkpoint file or folder (None,
    or Lightning's ``"last"`` and other keywords): Lightning's default then."""
    path = Path(str(ckpt_path))
    if ckpt_path is None or not path.exists():
        return None
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:  # holds objects that only a full unpickling rebuilds: not read here
            state = {}
        folders = [value.get("dirpath") for key, value in state.get("callbacks", {}).items()
                   if key.startswith("ModelCheckpoint")]
        if folders and folders[0] and Path(folders[0]).is_dir():  # (not a run moved or copied since)
            return folders[0]
    return str(path.resolve().parent)


def real_folder(path: Optional[str]) -> str:
    """``path`` as a real path (the working directory for none), the form in which ModelCheckpoint keeps its
    folder and compares it on resume; a remote URL (``s3://...``) as it is."""
    if path and "://" in path:
        return path
    return os.path.realpath(path or os.getcwd())
