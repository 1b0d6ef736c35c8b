"""The ``slt-tms`` command line.

Each command group lives in its own module under :mod:`slt_tms.commands` and exposes
``register(subparsers)``; the module's handlers receive the parsed ``argparse.Namespace`` and return
an exit code. Errors that are the user's (``ValueError``, ``FileNotFoundError``) are printed as one
line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from slt_tms import __version__

__all__ = ["build_parser", "main"]

# Command-group modules, in the order they appear in --help.
_GROUPS = (
    "reproduce",
    "train",
    "superposition",
    "theory",
    "llc",
    "phases",
    "dynamics",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available command group."""
    parser = argparse.ArgumentParser(
        prog="slt-tms",
        description="Singular learning theory on the Toy Model of Superposition.",
    )
    parser.add_argument("--version", action="version", version=f"slt-tms {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        try:
            module = importlib.import_module(f"slt_tms.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"slt_tms.commands.{name}":
                continue  # group not built yet
            raise
        module.register(sub)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Options must be spelled out, in every command: argparse would otherwise take ``--num-chain 3`` for
    ``--num-chains 3`` silently, and a later option could change what an abbreviation means."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slt-tms`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:  # results are written atomically and locks released on the way out
        print("slt-tms: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"slt-tms: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
