"""Shared figure style: one colour per TMS phase name, the same in every figure.

Every figure that colours something by its phase (a k-gon family named as in Chen et al. 2023: ``"6"``,
``"5+"``, ``"4++"``, ``"4,1-"``, ...) takes the colour from :func:`phase_color`, so the hexagon is the
same blue in the free-energy curves, the posterior occupancy, the loss and LLC curves of SGD and the
polygon snapshots. Things that are not phases (a loss on a second axis, reference lines) use the neutral
colours below, which no phase uses.
"""

from __future__ import annotations

import zlib

from matplotlib import colormaps

from slt_tms.analysis.kgon_classify import UNCLASSIFIED

__all__ = ["LOSS_COLOR", "PHASE_COLORS", "REFERENCE_COLOR", "UNCLASSIFIED", "phase_color", "phase_colors"]

#: Fixed colours of the phases that appear in most figures (the paper's c = 6 story), and of
#: :data:`UNCLASSIFIED`. Every other name gets a colour from :func:`phase_color`'s spare palette.
PHASE_COLORS: dict[str, str] = {
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
    UNCLASSIFIED: "#7f7f7f",
}

#: A loss drawn beside phase-coloured data (e.g. on a second y axis): dark grey, no phase's colour.
LOSS_COLOR = "#404040"
#: Reference lines and marks (crossovers, error bars of a point estimate): black.
REFERENCE_COLOR = "#000000"

#: Colours for the names not in :data:`PHASE_COLORS`: the light half of ``tab20`` (the dark half is
#: where the fixed colours come from), so a spare colour never repeats a fixed one.
_SPARE = tuple(
    f"#{int(255 * r):02x}{int(255 * g):02x}{int(255 * b):02x}"
    for r, g, b, _ in (colormaps["tab20"](i) for i in range(1, 20, 2))
)


def phase_color(name: str | None) -> str:
    """The colour of a phase: fixed for the common names, otherwise a stable pick from a spare palette
    that shares no colour with the fixed ones; ``None`` (no phase) is :data:`UNCLASSIFIED`'s grey.

    Examples
    --------
    >>> phase_color("6"), phase_color("6") == phase_color("6")
    ('#1f77b4', True)
    >>> phase_color("4+,2-") in PHASE_COLORS.values()
    False
    """
    if name is None:
        name = UNCLASSIFIED
    if name in PHASE_COLORS:
        return PHASE_COLORS[name]
    return _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]


def phase_colors(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``{name: phase_color(name)}`` for several names (for a legend or a lookup in a loop)."""
    return {name: phase_color(name) for name in names}
