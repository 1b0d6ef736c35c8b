r"""Switch points of phase occupancies over a grid of sample sizes, with bootstrap intervals over chains.

Pure numpy: the occupancy counts come from :mod:`slt_tms.experiments.occupancy`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slt_tms.analysis.free_energy import check_n_values

__all__ = ["SwitchPoint", "chain_switch_points", "switch_point"]


@dataclass(frozen=True)
class SwitchPoint:
    r"""Observed switch from phase ``low_n`` to ``high_n``: the first upward zero crossing of
    :math:`p_{high}(n) - p_{low}(n)` on the grid, interpolated linearly in :math:`\log n`.

    ``n_switch`` is None if there is no crossing on the grid; ``position`` then says whether ``high_n``
    already dominates at the smallest grid point (``"below"``) or never does (``"above"``).
    ``interval`` is the 2.5–97.5% bootstrap percentile interval over replicates that cross (chains, i.e.
    replica sets with their nested datasets, resampled with replacement, each chain with all its grid
    points), ``frac_crossing`` the share of such replicates.
    """

    low_n: str
    high_n: str
    n_switch: float | None
    position: str
    interval: tuple[float, float] | None
    frac_crossing: float
    num_bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _switch(n_grid: np.ndarray, diff: np.ndarray) -> tuple[float | None, str]:
    """First upward crossing of diff (N,) over n_grid, interpolated in log n."""
    if diff[0] > 0:
        return None, "below"
    for j in range(1, len(n_grid)):
        if diff[j - 1] <= 0 < diff[j]:
            t0, t1 = math.log(n_grid[j - 1]), math.log(n_grid[j])
            frac = -diff[j - 1] / (diff[j] - diff[j - 1])
            return math.exp(t0 + frac * (t1 - t0)), "inside"
    return None, "above"


def _checked(
    n_grid: Sequence[float], counts: np.ndarray, phase_names: Sequence[str], low_n: str, high_n: str
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The grid and the counts (as float) after validation, and the indices of ``low_n`` and ``high_n``."""
    grid = check_n_values(n_grid)
    if np.any(np.diff(grid) <= 0):
        raise ValueError("n_grid must be strictly increasing")
    cnt = np.asarray(counts, dtype=float)
    if cnt.ndim != 3 or cnt.shape[0] != grid.size or cnt.shape[2] != len(phase_names):
        raise ValueError(f"counts must have shape (len(n_grid), num_chains, num_phases); got {cnt.shape}")
    names = list(phase_names)
    for nm in (low_n, high_n):
        if nm not in names:
            raise ValueError(f"unknown phase {nm!r}; known: {names}")
    return grid, cnt, names.index(low_n), names.index(high_n)


def switch_point(
    n_grid: Sequence[float],
    counts: np.ndarray,
    phase_names: Sequence[str],
    low_n: str,
    high_n: str,
    *,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> SwitchPoint:
    r"""Observed switch point between two phases with a bootstrap interval over chains.

    Parameters
    ----------
    n_grid : sequence of float, length ``G`` (ascending)
    counts : ndarray, shape ``(G, K, P)``
        Draws of chain ``k`` at grid point ``g`` classified as phase ``p``.
    phase_names : sequence of str, length ``P``
    low_n, high_n : str
        The phase expected at small and at large ``n``.
    num_bootstrap : int
    seed : int
        Seed of the bootstrap (numpy ``default_rng``).
    """
    grid, cnt, ia, ib = _checked(n_grid, counts, phase_names, low_n, high_n)

    def diff_of(c: np.ndarray) -> np.ndarray:
        tot = c.sum(axis=(1, 2))
        return (c[:, :, ib].sum(1) - c[:, :, ia].sum(1)) / np.maximum(tot, 1)

    n_sw, pos = _switch(grid, diff_of(cnt))
    rng = np.random.default_rng(seed)
    K = cnt.shape[1]
    reps = []
    for _ in range(num_bootstrap):
        boot = cnt[:, rng.integers(0, K, size=K)]  # whole chains (datasets nested over n) at once
        v, _p = _switch(grid, diff_of(boot))
        if v is not None:
            reps.append(v)
    interval = (float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))) if reps else None
    return SwitchPoint(low_n, high_n, n_sw, pos, interval, len(reps) / max(num_bootstrap, 1), num_bootstrap)


def chain_switch_points(
    n_grid: Sequence[float], counts: np.ndarray, phase_names: Sequence[str], low_n: str, high_n: str
) -> list[tuple[float | None, str]]:
    r"""The switch point of every chain (replica set, i.e. dataset) alone: for chain :math:`k`, the first
    upward crossing of :math:`p_{high,k}(n) - p_{low,k}(n)` interpolated in :math:`\log n`, as
    ``(n_switch, position)`` (``n_switch`` None and ``position`` ``"below"``/``"above"`` if none).

    Examples
    --------
    >>> counts = np.array([[[9, 1], [5, 5]], [[2, 8], [1, 9]]])  # (G=2, K=2, P=2)
    >>> [(round(v), p) for v, p in chain_switch_points([100, 400], counts, ["5", "6"], "5", "6")]
    [(221, 'inside'), (100, 'inside')]
    """
    grid, cnt, ia, ib = _checked(n_grid, counts, phase_names, low_n, high_n)
    tot = np.maximum(cnt.sum(axis=2), 1)  # (G, K)
    diff = (cnt[:, :, ib] - cnt[:, :, ia]) / tot
    return [_switch(grid, diff[:, k]) for k in range(cnt.shape[1])]
