"""Claims on runs, so that several ``molar reproduce`` processes over one ``--out`` share the work.

Start one process per GPU (or per core) with the same arguments: each (row, seed) is trained by the process
that claims its folder first, and the others go on to runs nobody holds, then wait for the ``outcome.json`` of
the runs held elsewhere before they write the tables. A claim is a file naming its host and process, made with
``O_EXCL`` so that two processes never both make it. One whose process has died on this host is taken over, so a
killed process leaves nothing to clear by hand; a claim made on another host (a shared file system) cannot be
checked from here, so if that process is gone, delete the run's ``claimed`` file.
"""

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

CLAIM = "claimed"


def this_process() -> str:
    """How a claim names its holder: ``<host> <pid>``."""
    return f"{socket.gethostname()} {os.getpid()}"


def holder_alive(holder: str) -> bool:
    """Whether the process a claim names may still run: False only for a process of this host that has ended."""
    host, _, pid = holder.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's, or a claim still being written
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def take(path: Path) -> bool:
    """Make the claim ``path`` for this process, or take it over from an ended one; False if a live one holds it."""
    for _ in range(2):  # a second try after removing an ended holder's claim
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = path.read_text()
            except FileNotFoundError:  # released in between
                continue
            if holder_alive(holder):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(this_process())
        return True
    return False


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[bool]:
    """True inside the block if this process holds ``folder``'s claim, False if another live process does; a claim
    made here is released when the block ends, however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM
    mine = take(path)
    try:
        yield mine
    finally:
        if mine:
            path.unlink(missing_ok=True)
