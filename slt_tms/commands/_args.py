"""Argument types shared by the command modules (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "add_command",
    "add_dataclass_flags",
    "dataclass_overrides",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
]


def add_command(subparsers: Any, name: str, register: Callable[..., Any]) -> argparse.ArgumentParser:
    """Add the sub-command ``name``, its ``--help`` texts taken from the docstring of ``register``.

    The first line of the docstring (without its final period) is the one-line help shown in the
    parent's command list; the rest, as one paragraph, is the description at the top of the command's own
    ``--help``. One text serves the API docs of the command module and the CLI.
    """
    summary, _, rest = inspect.cleandoc(register.__doc__ or "").partition("\n")
    summary = summary.strip().removesuffix(".")
    if not summary:
        raise ValueError(f"{register.__qualname__} needs a docstring: it is the help of {name!r}")
    return subparsers.add_parser(name, help=summary, description=" ".join(rest.split()) or summary)


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    return _int_at_least(text, 1, "a positive integer")


def replica_count(text: str) -> int:
    """An integer >= 2 (argparse type): replica sets whose spread makes an interval (a bootstrap over one
    dataset gives a zero-width '95%' interval)."""
    return _int_at_least(text, 2, "an integer >= 2 (intervals come from the spread between replicas)")


def nonneg_int(text: str) -> int:
    """An integer >= 0 (argparse type)."""
    return _int_at_least(text, 0, "a non-negative integer")


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text!r}")
    return value


def add_dataclass_flags(parser: argparse.ArgumentParser | Any, cls: type, help_text: Mapping[str, str],
                        *, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per field of the frozen dataclass ``cls`` (the single source of defaults).

    Every flag defaults to None (= "the dataclass default"); its help is ``help_text[field]`` followed by
    the dataclass default, so the command line, the API and the documentation cannot drift apart.
    """
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = "none" if default is None else (" ".join(map(str, default)) if isinstance(default, tuple)
                                                else str(default))
        helptext = f"{help_text[f.name]} (default: {shown})"
        kind = str(f.type)
        if kind.startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        elif kind.startswith("tuple"):
            parser.add_argument(flag, type=float, nargs="+", default=None, metavar="M", help=helptext)
        elif kind.startswith("int"):  # ranges are checked by the dataclass: one-line errors
            parser.add_argument(flag, type=int, default=None, metavar="N", help=helptext)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, default=None, metavar="X", help=helptext)
        else:
            parser.add_argument(flag, default=None, metavar="NAME", help=helptext)


def dataclass_overrides(ns: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line (not None), ready for ``cls(**...)``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = getattr(ns, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
