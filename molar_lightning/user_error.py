"""Mistakes a user can fix, and how the ``molar`` command reports them: one message, no traceback.

Code that finds such a mistake (a malformed raw file, a folder that is not there, a config file that cannot
be read) raises a :class:`UserError` whose message names the file, the line or record, and what to change.
:func:`reported` turns it into that one message on stderr and exit status 2, as argparse does for a bad
argument. Every other exception is an internal error and keeps its traceback; ``--debug`` (or
``MOLAR_DEBUG=1``) keeps the traceback of user errors too.
"""

import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional


DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "MOLAR_DEBUG"
EXIT_STATUS = 2


class UserError(Exception):
    """Something the user gave cannot be used; the message says what to change."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named (or a config implies) is not there."""


class SettingError(UserError, ValueError):
    """A setting's value cannot work (with this data); the message names the setting and the values it takes."""


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``argv`` or the environment ask for tracebacks, and ``argv`` without ``--debug``."""
    rest = [arg for arg in argv if arg != DEBUG_FLAG]
    return len(rest) < len(argv) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"), rest


def user_error_in(error: Optional[BaseException]) -> Optional[Exception]:
    """``error`` if it is a user error, else the first one it was raised ``from`` (jsonargparse wraps what a
    constructor raises this way), else None. Only explicit causes count: an error raised while handling a user
    error is a bug of its own. User errors are ours, and Lightning's refusal of a Trainer setting (two progress
    bars, clipping under manual optimization, ...), whose message already says what to change; Lightning is
    imported here, not at the top, so that the models and readers that raise UserError do not import it."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    while error is not None and not isinstance(error, (UserError, MisconfigurationException)):
        error = error.__cause__
    return error


@contextmanager
def reported(debug: bool) -> Iterator[None]:
    """Print a :class:`UserError` raised inside (or the one behind a wrapper) as ``error: <message>`` and exit 2;
    re-raise it under ``debug``, and every other exception always."""
    try:
        yield
    except Exception as raised:
        error = user_error_in(raised)
        if error is None or debug:
            raise
        print(f"error: {error}\n(run with {DEBUG_FLAG} or {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        sys.exit(EXIT_STATUS)
