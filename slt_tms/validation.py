"""Input validation shared by the whole package: one message style, one place.

Every public function checks its arguments on entry with these helpers and raises :class:`ValueError`
with a message that names the argument, what was expected and what was given.

Examples
--------
>>> check_int("num_chains", 4, minimum=1)
4
>>> check_int("num_chains", 0, minimum=1)
Traceback (most recent call last):
...
ValueError: num_chains must be an integer >= 1 (a positive integer), got 0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = [
    "GRAD_MODES",
    "LOSSES",
    "check_choice",
    "check_device",
    "check_float",
    "check_int",
    "check_probability",
    "check_seed",
]

#: The named losses of a module potential (``loss=`` of the API, ``--loss`` of the CLI); defined here, at
#: the bottom layer, because both the potentials and the file loaders check against it.
LOSSES: tuple[str, ...] = ("mse", "cross_entropy", "causal_lm")

#: How the gradients of all chains of a model are taken (``grad_mode=``, ``--grad-mode``): the potential's
#: own choice, ``torch.func.vmap`` over the chains, or a loop over them.
GRAD_MODES: tuple[str, ...] = ("auto", "vmap", "loop")


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) within ``[minimum, maximum]``."""
    ok = not isinstance(value, bool) and isinstance(value, int | np.integer)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        if minimum is not None and maximum is not None:
            want = f"an integer in [{minimum}, {maximum}]"
        elif minimum == 1:
            want = "an integer >= 1 (a positive integer)"
        elif minimum is not None:
            want = f"an integer >= {minimum}"
        elif maximum is not None:
            want = f"an integer <= {maximum}"
        else:
            want = "an integer"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    finite: bool = True,
    lower: float | None = None,
    upper: float | None = None,
) -> float:
    """Return ``value`` as a ``float`` after checking it is a real number with the stated properties.

    NaN is always refused (it would silently switch comparisons off); ``finite=False`` admits +-inf.
    """
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
    v = float(value) if ok else math.nan
    if ok and math.isnan(v):
        ok = False
    if ok and finite and not math.isfinite(v):
        ok = False
    if ok and positive and not v > 0:
        ok = False
    if ok and nonnegative and not v >= 0:
        ok = False
    if ok and lower is not None and v < lower:
        ok = False
    if ok and upper is not None and v > upper:
        ok = False
    if not ok:
        parts = ["finite" if finite else "non-NaN"]
        if positive:
            parts.append("positive")
        if nonnegative:
            parts.append("non-negative")
        want = " ".join(parts) + " number"
        if lower is not None or upper is not None:
            want += f" in [{'-inf' if lower is None else lower}, {'inf' if upper is None else upper}]"
        raise ValueError(f"{name} must be a {want}, got {value!r}")
    return v


def check_probability(name: str, value: Any, *, open_interval: bool = True) -> float:
    """A number in ``(0, 1)`` (or ``[0, 1]`` with ``open_interval=False``)."""
    v = check_float(name, value)
    if (open_interval and not 0.0 < v < 1.0) or (not open_interval and not 0.0 <= v <= 1.0):
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


#: The largest seed: torch's generators take seeds below 2**64, and derived seeds must stay in int64.
MAX_SEED = 2**63 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """A non-negative integer seed of at most :data:`MAX_SEED`."""
    return check_int(name, value, minimum=0, maximum=MAX_SEED)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed``; the error lists the allowed values."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(repr(a) for a in allowed)}")
    return value


def check_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` if this torch build can place tensors there.

    Called on entry by everything that takes ``device=``, so that an unusable device fails at once, in one
    line that names the fix, before any data is loaded or any chain runs.

    Raises
    ------
    ValueError
        Not a device name; CUDA asked for where this torch build has no CUDA support or sees no GPU (or not
        that many GPUs); MPS where it is not available; any other device torch cannot allocate on.

    Examples
    --------
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device 'gpu' is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:1'
    """
    cpu = f"{name} cpu" if name.startswith("--") else f"{name}='cpu'"  # the fix, as a flag or a keyword
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{name} {device!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:1'"
        ) from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(
                f"{name} {str(dev)!r}: CUDA is not available in this torch build ({torch.__version__}, built "
                f"without CUDA); use {cpu}, or install a CUDA build of torch (https://pytorch.org)"
            )
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name} {str(dev)!r}: CUDA is not available (torch {torch.__version__} sees no GPU; check "
                f"the driver and CUDA_VISIBLE_DEVICES); use {cpu}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{name} {str(dev)!r}: only {count} CUDA device(s) are visible (cuda:0 .. cuda:{count - 1})"
            )
        return dev
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ValueError(
            f"{name} {str(dev)!r} cannot be used with this torch build ({torch.__version__}): {reason}; use "
            f"{cpu}"
        ) from None
    return dev
