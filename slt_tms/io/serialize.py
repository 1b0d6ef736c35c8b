"""The one JSON serialiser of the package.

Results, configs, sweep records and report data all pass through :func:`to_jsonable`: numpy and torch
scalars and arrays become numbers and nested lists, tuples become lists, dataclasses with ``to_dict``
their dictionary, dtypes/devices/paths their string. Non-finite floats become ``None`` (NaN) or the
strings ``"inf"`` / ``"-inf"`` so that the JSON stays standard (``allow_nan=False``); :func:`as_float`
reads them back.

Examples
--------
>>> import numpy as np
>>> dumps({"x": np.float32(1.5), "y": (1, 2), "z": float("nan"), "w": float("inf")})
'{"x": 1.5, "y": [1, 2], "z": null, "w": "inf"}'
>>> as_float(None), as_float("inf")
(nan, inf)
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from slt_tms.io.atomic import atomic_write_text

__all__ = ["as_float", "dumps", "read_json", "to_jsonable", "write_json"]


def to_jsonable(obj: Any, *, strict: bool = False, where: str = "value") -> Any:
    """Convert ``obj`` to plain JSON types (see the module docstring).

    Parameters
    ----------
    obj : any
    strict : bool
        Refuse dataclasses, paths, dtypes and other objects (only numbers, strings, booleans, None,
        arrays, lists and string-keyed dicts pass): used for sweep task keys, which must be canonical.
    where : str
        Named in the error message.

    Raises
    ------
    ValueError
        For a value that has no JSON form (or, with ``strict``, is not plain data).
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        if not math.isfinite(f):
            return None if math.isnan(f) else ("inf" if f > 0 else "-inf")
        return f
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), strict=strict, where=where)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist(), strict=strict, where=where)
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, strict=strict, where=where) for v in obj]
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if strict and not isinstance(k, str):
                raise ValueError(f"{where}: dictionary keys must be strings, got {k!r}")
            out[str(k)] = to_jsonable(v, strict=strict, where=where)
        return out
    if not strict:
        if isinstance(obj, torch.dtype | torch.device | PurePath):
            return str(obj)
        if isinstance(obj, enum.Enum):
            return to_jsonable(obj.value, where=where)
        to_dict = getattr(obj, "to_dict", None)
        if callable(to_dict):
            return to_jsonable(to_dict(), where=where)
    raise ValueError(
        f"{where}: value of type {type(obj).__name__} is not JSON-serialisable; use numbers, strings, "
        "lists and dicts"
    )


def dumps(obj: Any, *, indent: int | None = None, sort_keys: bool = False, strict: bool = False) -> str:
    """``json.dumps`` of :func:`to_jsonable` (standard JSON: no NaN/Infinity literals)."""
    seps = (",", ":") if indent is None and sort_keys else None
    return json.dumps(to_jsonable(obj, strict=strict), indent=indent, sort_keys=sort_keys,
                      separators=seps, allow_nan=False)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (a trailing newline); returns the path."""
    return atomic_write_text(path, dumps(obj, indent=indent) + "\n")


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read JSON from ``path``; an empty, truncated or malformed file raises a one-line ValueError."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ValueError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if not text.strip():
        raise ValueError(f"{what} {p} is empty (an interrupted write?); delete it and rerun")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {p} is not valid JSON ({exc.msg} at line {exc.lineno}); delete it and "
                         "rerun") from None


def as_float(x: Any) -> float:
    """Inverse of the float encoding of :func:`to_jsonable`: None -> nan, "inf"/"-inf" -> +-inf."""
    if x is None:
        return math.nan
    return float(x)
