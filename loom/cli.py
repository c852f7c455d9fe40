"""The ``loom`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import loom
from loom.trainer.engine import Engine

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``loom`` command with ``argv`` (default: the process arguments).

    Returns:
        The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom",
        description="loom: a small, fast, event-driven PyTorch trainer whose methods are plugins.",
    )
    parser.add_argument("--version", action="version", version=f"loom {loom.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    events = commands.add_parser(
        "events", help="print the training loop with every event at its place"
    )
    events.set_defaults(run=_print_events)
    return parser


def _print_events(args: argparse.Namespace) -> int:
    del args
    print(Engine().schedule())
    return 0


if __name__ == "__main__":
    sys.exit(main())
