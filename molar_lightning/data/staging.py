"""Staging folders: where a writer builds something before moving it into place, named after the writer so that
the next writer of the same target can remove what a killed one left.

A staging folder is ``<folder>/.staging-<target>-<pid>@<host>-<random>``. It belongs to a writer that is gone
when that process no longer runs on this host, or (another host's, or one named before the owner was
recorded) when it has not been touched for a day; a live writer's folder is never removed.
"""

import glob
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

STALE_AFTER_SECONDS = 24 * 3600  # a staging folder of another machine this old is taken as abandoned


def _prefix(target: str) -> str:
    return f".staging-{target}-"


def make_staging(folder: Path, target: str) -> Path:
    """A new, empty staging folder for ``target`` inside ``folder``, named after this process and host."""
    return Path(tempfile.mkdtemp(prefix=f"{_prefix(target)}{os.getpid()}@{socket.gethostname()}-", dir=folder))


def _abandoned(staging: Path, prefix: str) -> bool:
    owner = re.fullmatch(r"(\d+)@(.+)-[^-]+", staging.name[len(prefix):])
    if owner and owner.group(2) == socket.gethostname():
        try:
            os.kill(int(owner.group(1)), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # runs, under another user
        return False
    try:
        return time.time() - staging.stat().st_mtime > STALE_AFTER_SECONDS
    except FileNotFoundError:
        return False  # its writer just renamed or removed it


def remove_abandoned_staging(folder: Path, target: str) -> list[Path]:
    """Delete the staging folders of ``target`` in ``folder`` that a killed writer left; return them."""
    prefix = _prefix(target)
    removed = [staging for staging in folder.glob(f"{glob.escape(prefix)}*") if _abandoned(staging, prefix)]
    for staging in removed:
        shutil.rmtree(staging, ignore_errors=True)
    return removed
