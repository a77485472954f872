"""The one base class of every error the harness expects to meet.

An expected failure (bad input, a board that does not answer, a lab that
cannot start) reaches the user as one line and an exit code, never as a
traceback: `sbd` prints `sbd: error: <message>` and exits with `exit_code`.
"""
from __future__ import annotations

EXIT_FAIL = 1   # a check failed, or the device refused what it was sent
EXIT_USAGE = 2  # bad input, or a board, broker or lab that cannot be used as asked


class SbdError(Exception):
    """An expected failure; the message says what to do about it."""

    exit_code = EXIT_USAGE
