"""`sbd`: boards, flashing, console and verification from the command line.

Exit status: 0 on success, 1 when `sbd verify` found a failing check or an
error, 2 on bad input or a board that does not answer (with a message saying
what to do).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sbd_harness.cli import advisories, board, classroom, farm, firmware, hwcheck, identity, release, verify
from sbd_harness.errors import SbdError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (board, classroom, firmware, identity, verify, release, hwcheck, farm, advisories):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SbdError as exc:
        print(f"sbd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sbd checks | head`: the reader has what it wanted
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
