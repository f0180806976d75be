"""Claims on runs, so that several ``molar reproduce`` processes over one ``--out`` share the work.

Start one process per GPU (or per core) with the same arguments: each (row, seed) is trained by the process
that claims its folder first, and the others go on to runs nobody holds, then wait for the ``outcome.json`` of
the runs held elsewhere before they write the tables. A claim is an exclusive ``flock`` on the run's ``claimed``
file, which names the holder's host and process for people to read. The kernel drops the lock when its process
ends, however it ends, so a killed process leaves nothing to clear, and a reused process id cannot pass for a
live holder. The file is removed while the lock is still held; a process that opened it before then finds, once
it has the lock, that the path is no longer its file, and opens it again.
"""

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

CLAIM = "claimed"


def locked(path: Path, block: bool) -> Optional[int]:
    """A descriptor of ``path`` (made if missing) holding its exclusive lock, or None when another process holds
    it and ``block`` is False."""
    while True:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:  # removed by the holder we waited for
            pass
        os.close(descriptor)


@contextlib.contextmanager
def claimed(folder: Path, block: bool = False) -> Iterator[bool]:
    """True inside the block if this process holds ``folder``'s claim, False if another process does (with
    ``block``, wait for it instead); a claim made here is released when the block ends, however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM
    descriptor = locked(path, block)
    if descriptor is None:
        yield False
        return
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{socket.gethostname()} {os.getpid()}\n".encode())
        yield True
    finally:
        path.unlink(missing_ok=True)
        os.close(descriptor)
