"""Shared figure style: one colour per TMS phase name, the same in every figure."""

from __future__ import annotations

import zlib

from matplotlib import colormaps

__all__ = ["phase_color"]

#: Fixed colours of the phases that appear in most figures (the paper's c = 6 story).
_FIXED = {
    "6": "#1f77b4",
    "5": "#d62728",
    "5+": "#ff7f0e",
    "5++": "#e6a100",
    "4": "#2ca02c",
    "4+": "#17becf",
    "4++": "#9467bd",
    "7": "#8c564b",
    "8": "#e377c2",
    "3": "#bcbd22",
    "unclassified": "#7f7f7f",
}


def phase_color(name: str) -> str:
    """The colour of a phase: fixed for the common names, otherwise a stable pick from ``tab20``.

    Examples
    --------
    >>> phase_color("6"), phase_color("6") == phase_color("6")
    ('#1f77b4', True)
    """
    if name in _FIXED:
        return _FIXED[name]
    r, g, b, _ = colormaps["tab20"](zlib.crc32(name.encode()) % 20)
    return f"#{int(255 * r):02x}{int(255 * g):02x}{int(255 * b):02x}"
