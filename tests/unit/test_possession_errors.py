"""Proof of possession over an open board's REPL: a board that answers with an error has not
proven anything (the identity checks fail); one that gives no REPL at all leaves them untested."""
from __future__ import annotations

import pytest

from sbd_harness.boards.base import BoardError, BoardRaised
from sbd_harness.checks.common import possession


class _Board:
    def __init__(self, error: BoardError):
        self.error = error

    def exec(self, code: str, timeout: float = 10, soft_reset: bool = False) -> str:
        raise self.error


OPEN_BOOT = {"device_id": "3c71bf0a1b2c", "security": {"console": "open"}}


def test_a_board_whose_repl_raises_instead_of_signing_fails():
    evidence: dict = {}
    with pytest.raises(AssertionError, match="raised instead of signing the nonce"):
        possession(_Board(BoardRaised("the board raised:\nTraceback ...\nOSError: no key")), None, OPEN_BOOT,
                   evidence)
    assert "OSError: no key" in evidence["attestation_error"]


def test_a_board_without_a_repl_leaves_the_proof_untested():
    with pytest.raises(pytest.skip.Exception, match="did not sign a nonce"):
        possession(_Board(BoardError("no raw REPL on /dev/x")), None, OPEN_BOOT, {})
