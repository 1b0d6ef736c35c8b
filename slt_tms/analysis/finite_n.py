r"""Finite-n local evidences by thermodynamic integration over the sample size (first part: the numerics).

For a phase :math:`a` with local evidence :math:`Z_a(n) = \int_{\text{phase } a}\varphi\,e^{-nL}`,
:math:`\frac{d\log Z_a}{d\log n} = -n\,E_n[L] = -nL_a - \lambda_{\mathrm{eff}}(n)` with the *effective
learning coefficient* :math:`\lambda_{\mathrm{eff}}(n) = n(E_n[L] - L_a)` (posterior mean restricted to
the phase). With the asymptotic expansion
:math:`\log Z_a(n) = -nL_a - \lambda_a\log n + K_a + o(1)` (:mod:`slt_tms.analysis.phase_constant`)
as the boundary condition at :math:`n = \infty`,

.. math::

    \log Z_a(n) = K_a - nL_a - \lambda_a\log n + \int_n^\infty (\lambda_{\mathrm{eff}}(n') - \lambda_a)\,
    d\log n'.

:func:`ti_log_evidence` evaluates this on a grid from values of :math:`\lambda_{\mathrm{eff}}` (e.g.
basin-restricted posterior means): the trapezoidal rule in :math:`\log n` between grid points and a
power-law tail :math:`(\lambda_{\mathrm{eff}} - \lambda_a)(n) = e_{\max}(n/n_{\max})^{-p}` beyond the last
one, whose integral is :math:`e_{\max}/p` (:math:`p = 1/3` for the cubic walls of a flat dead-column
region, :math:`p = 1` for a regular quadratic basin, or fitted). Standard errors of independent
:math:`\lambda_{\mathrm{eff}}` estimates propagate linearly. :func:`finite_n_crossover` finds where two
such curves cross.

The anchor at :math:`n = \infty` needs the whole tail of :math:`\lambda_{\mathrm{eff}}`, which decays like
:math:`n^{-1/3}` in a phase with a flat dead region (slowly, and noisy to sample). The second estimator
anchors at a small sample size :math:`n_0` instead, where a well-mixed replica-exchange run measures the
log-odds of two phases directly (:func:`anchored_log_odds`); for the population-loss posterior, exactly,

.. math::

    \log\frac{Z_b(n)}{Z_a(n)} = \log\frac{Z_b(n_0)}{Z_a(n_0)} - (L_b - L_a)(n - n_0)
    - \int_{n_0}^{n} \bigl(\lambda_{\mathrm{eff},b}(n') - \lambda_{\mathrm{eff},a}(n')\bigr)\,d\log n'.

With data, the empirical posterior adds the dataset effects :math:`\Delta_b(D, n) - \Delta_a(D, n)`
(:func:`slt_tms.experiments.lambda_eff.dataset_effect`) to the log-odds of each dataset :math:`D`.
:func:`predict_switch` turns per-dataset log-odds into the predicted switch of the pooled occupancy (the
:math:`n` where :math:`\sum_D (p_b - p_a) = 0`, with :math:`p_b/(p_a + p_b) = \sigma(\text{log-odds})`)
and its interval (bootstrap over datasets; the Monte-Carlo error of the shared log-odds as a normal shift
correlated along :math:`n`). The basin-restricted sampling of :math:`\lambda_{\mathrm{eff}}` is
:func:`slt_tms.experiments.lambda_eff.sample_basins`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FiniteNCurve",
    "SwitchPrediction",
    "anchor_log_odds",
    "anchored_log_odds",
    "finite_n_crossover",
    "predict_switch",
    "ti_log_evidence",
]


@dataclass(frozen=True)
class FiniteNCurve:
    r""":math:`\log Z_a(n)` on a grid from thermodynamic integration (:func:`ti_log_evidence`).

    Attributes
    ----------
    name : str
    n : ndarray
        The grid (ascending).
    log_z : ndarray
        :math:`\log Z_a(n)` at the grid.
    log_z_se : ndarray
        Its standard error from the standard errors of :math:`\lambda_{\mathrm{eff}}` (0 if none given).
    tail : float
        The tail integral beyond the last grid point, :math:`e_{\max}/p`.
    tail_exponent : float
        :math:`p`.
    """

    name: str
    n: np.ndarray
    log_z: np.ndarray
    log_z_se: np.ndarray
    tail: float
    tail_exponent: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"name": self.name, "n": self.n.tolist(), "log_z": self.log_z.tolist(),
                "log_z_se": self.log_z_se.tolist(), "tail": self.tail, "tail_exponent": self.tail_exponent}


def ti_log_evidence(
    name: str,
    n_grid: Any,
    lambda_eff: Any,
    lambda_: float,
    loss: float,
    constant: float,
    *,
    lambda_eff_se: Any = None,
    tail_exponent: float | None = None,
) -> FiniteNCurve:
    r""":math:`\log Z_a(n)` on ``n_grid`` from :math:`\lambda_{\mathrm{eff}}` by thermodynamic integration.

    Parameters
    ----------
    name : str
    n_grid : array-like, ascending, >= 1
    lambda_eff : array-like
        :math:`\lambda_{\mathrm{eff}}(n) = n(E_n[L] - L_a)` at the grid.
    lambda_, loss, constant : float
        :math:`\lambda_a`, :math:`L_a`, :math:`K_a`.
    lambda_eff_se : array-like, optional
        Standard errors of independent estimates of ``lambda_eff``.
    tail_exponent : float, optional
        :math:`p` of the tail :math:`e_{\max}(n/n_{\max})^{-p}`; None: fitted by least squares to
        :math:`\log(\lambda_{\mathrm{eff}} - \lambda_a)` against :math:`\log n` over the last (up to five)
        grid points (all excesses there must be positive).

    Examples
    --------
    A regular one-dimensional basin, :math:`L = w^2`, prior :math:`N(0,1)`: :math:`\log Z = -\tfrac12
    \log(1 + 2n)`, :math:`\lambda_{\mathrm{eff}} = n/(1 + 2n)`, :math:`K = -\tfrac12\log 2`.

    >>> n = np.geomspace(10, 1e4, 60)
    >>> cur = ti_log_evidence("q", n, n / (1 + 2 * n), 0.5, 0.0, -0.5 * math.log(2), tail_exponent=1.0)
    >>> bool(abs(cur.log_z[0] + 0.5 * math.log(21)) < 1e-3)
    True
    """
    n = np.asarray(n_grid, dtype=float).reshape(-1)
    lam = np.asarray(lambda_eff, dtype=float).reshape(-1)
    if n.size < 2 or lam.shape != n.shape or np.any(np.diff(n) <= 0) or n[0] < 1:
        raise ValueError("need an ascending grid of >= 2 sample sizes >= 1 and lambda_eff of the same length")
    if not np.all(np.isfinite(lam)):
        raise ValueError("lambda_eff must be finite")
    se = np.zeros_like(n) if lambda_eff_se is None else np.asarray(lambda_eff_se, dtype=float).reshape(-1)
    if se.shape != n.shape or np.any(se < 0):
        raise ValueError("lambda_eff_se must have the grid's length and be >= 0")
    excess = lam - lambda_
    t = np.log(n)
    if tail_exponent is None:
        m = min(5, n.size)
        if np.any(excess[-m:] <= 0):
            raise ValueError(
                "cannot fit a power-law tail: lambda_eff - lambda is not positive at the last points"
            )
        slope = np.polyfit(t[-m:], np.log(excess[-m:]), 1)[0]
        tail_exponent = -float(slope)
    if not tail_exponent > 0:
        raise ValueError(f"the tail exponent must be > 0 (excess decaying to 0), got {tail_exponent}")
    tail = float(excess[-1] / tail_exponent)
    # I_i = int_{t_i}^{t_max} excess dt (trapezoid) + tail; as a linear map of the excesses for the SE
    N = n.size
    weights = np.zeros((N, N))
    for i in range(N - 1):
        for j in range(i, N - 1):
            h = t[j + 1] - t[j]
            weights[i, j] += h / 2
            weights[i, j + 1] += h / 2
    weights[:, -1] += 1.0 / tail_exponent
    integral = weights @ excess
    log_z = constant - n * loss - lambda_ * t + integral
    log_z_se = np.sqrt((weights**2) @ (se**2))
    return FiniteNCurve(name, n, log_z, log_z_se, tail, float(tail_exponent))


def finite_n_crossover(
    low_n: FiniteNCurve, high_n: FiniteNCurve, *, num_se: float = 1.96
) -> tuple[float | None, tuple[float | None, float | None]]:
    r"""The first :math:`n` of the common grid where :math:`\log Z_{high}(n) - \log Z_{low}(n)` turns
    positive (linear interpolation in :math:`\log n`), and the same for the difference shifted by
    :math:`\mp k\,\mathrm{SE}` (``num_se``; SEs of the two curves added in quadrature). None where the
    difference does not change sign on the grid.

    Returns
    -------
    (n_c, (lo, hi))
    """
    if low_n.n.shape != high_n.n.shape or not np.allclose(low_n.n, high_n.n):
        raise ValueError("the two curves must share their grid of sample sizes")
    t = np.log(low_n.n)
    diff = high_n.log_z - low_n.log_z
    se = np.hypot(low_n.log_z_se, high_n.log_z_se)

    def first_up(d: np.ndarray) -> float | None:
        for j in range(1, d.size):
            if d[j - 1] <= 0 < d[j]:
                frac = -d[j - 1] / (d[j] - d[j - 1])
                return float(math.exp(t[j - 1] + frac * (t[j] - t[j - 1])))
        return None

    # a larger difference (high_n favoured more) means an earlier switch
    return first_up(diff), (first_up(diff + num_se * se), first_up(diff - num_se * se))


def _trapezoid_weights(t: np.ndarray) -> np.ndarray:
    """Row g: weights of the trapezoid integral from t[0] to t[g] (shape (G, G))."""
    G = t.size
    w = np.zeros((G, G))
    for g in range(1, G):
        w[g] = w[g - 1]
        h = t[g] - t[g - 1]
        w[g, g - 1] += h / 2
        w[g, g] += h / 2
    return w


def anchored_log_odds(
    n_grid: Any,
    lambda_eff_low: Any,
    lambda_eff_high: Any,
    loss_low: float,
    loss_high: float,
    log_odds0: float,
    *,
    lambda_eff_low_se: Any = None,
    lambda_eff_high_se: Any = None,
    log_odds0_se: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\log Z_{high}(n)/Z_{low}(n)` on ``n_grid`` from its value at ``n_grid[0]`` (module docstring).

    Parameters
    ----------
    n_grid : array-like, ascending, >= 1
        The first entry is the anchor :math:`n_0`.
    lambda_eff_low, lambda_eff_high : array-like
        :math:`\lambda_{\mathrm{eff}}` of the two phases at the grid.
    loss_low, loss_high : float
        :math:`L_a`, :math:`L_b`.
    log_odds0 : float
        :math:`\log Z_b(n_0)/Z_a(n_0)`.
    lambda_eff_low_se, lambda_eff_high_se : array-like, optional
        Standard errors of independent estimates.
    log_odds0_se : float

    Returns
    -------
    log_odds, se : ndarray

    Examples
    --------
    Two regular one-dimensional phases with :math:`\lambda_{\mathrm{eff}} = 1/2` exactly: the log-odds
    change by :math:`-(L_b - L_a)(n - n_0)` only.

    >>> lo, se = anchored_log_odds([10, 100], [0.5, 0.5], [0.5, 0.5], 0.02, 0.0, -1.0)
    >>> [round(float(x), 6) for x in lo]
    [-1.0, 0.8]
    """
    n = np.asarray(n_grid, dtype=float).reshape(-1)
    la = np.asarray(lambda_eff_low, dtype=float).reshape(-1)
    lb = np.asarray(lambda_eff_high, dtype=float).reshape(-1)
    if n.size < 2 or la.shape != n.shape or lb.shape != n.shape or np.any(np.diff(n) <= 0) or n[0] < 1:
        raise ValueError("need an ascending grid of >= 2 sample sizes >= 1 and lambda_eff of the same length")
    if not (np.all(np.isfinite(la)) and np.all(np.isfinite(lb)) and math.isfinite(log_odds0)):
        raise ValueError("lambda_eff and the anchor log-odds must be finite")
    sa = np.zeros_like(n) if lambda_eff_low_se is None else np.asarray(lambda_eff_low_se, float).reshape(-1)
    sb = np.zeros_like(n) if lambda_eff_high_se is None else np.asarray(lambda_eff_high_se, float).reshape(-1)
    if sa.shape != n.shape or sb.shape != n.shape or np.any(sa < 0) or np.any(sb < 0) or log_odds0_se < 0:
        raise ValueError("standard errors must be >= 0 and have the grid's length")
    wts = _trapezoid_weights(np.log(n))
    lo = log_odds0 - (loss_high - loss_low) * (n - n[0]) - wts @ (lb - la)
    se = np.sqrt(log_odds0_se**2 + (wts**2) @ (sa**2 + sb**2))
    return lo, se


@dataclass(frozen=True)
class SwitchPrediction:
    r"""Predicted switch of the pooled occupancy from per-dataset log-odds (:func:`predict_switch`).

    Attributes
    ----------
    n_switch : float or None
        Where the predicted :math:`\sum_D (p_b - p_a)` turns positive (None: not on the grid).
    interval : tuple of float or None
        2.5-97.5% percentiles over the bootstrap replicates that cross.
    frac_crossing : float
    per_dataset : list of float or None
        Each dataset's own predicted switch (its log-odds crossing 0).
    num_bootstrap : int
    """

    n_switch: float | None
    interval: tuple[float, float] | None
    frac_crossing: float
    per_dataset: list[float | None]
    num_bootstrap: int

    @property
    def width(self) -> float | None:
        """Width of the interval."""
        return None if self.interval is None else self.interval[1] - self.interval[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"n_switch": self.n_switch, "interval": None if self.interval is None else list(self.interval),
                "frac_crossing": self.frac_crossing, "per_dataset": list(self.per_dataset),
                "num_bootstrap": self.num_bootstrap, "width": self.width}


def _first_up(t: np.ndarray, d: np.ndarray) -> float | None:
    for j in range(1, d.size):
        if d[j - 1] <= 0 < d[j]:
            frac = -d[j - 1] / (d[j] - d[j - 1])
            return float(math.exp(t[j - 1] + frac * (t[j] - t[j - 1])))
    return None


def predict_switch(
    n_grid: Any,
    log_odds: Any,
    log_odds_se: Any = None,
    *,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> SwitchPrediction:
    r"""Predicted switch of the pooled two-phase occupancy from log-odds per dataset (module docstring).

    Parameters
    ----------
    n_grid : array-like, shape ``(G,)``, ascending
    log_odds : array-like, shape ``(D, G)`` or ``(G,)``
        :math:`\log Z_b/Z_a` of each dataset (one row: no dataset effect, e.g. the population loss).
    log_odds_se : array-like, shape ``(G,)``, optional
        Monte-Carlo standard error of the part shared by all datasets; each bootstrap replicate shifts
        all log-odds by :math:`z\,\mathrm{se}(n)`, :math:`z \sim N(0, 1)` (one :math:`z` per replicate:
        the error is correlated along :math:`n`, as an anchor's is).
    num_bootstrap : int
    seed : int

    Returns
    -------
    SwitchPrediction

    Examples
    --------
    >>> n = np.array([100.0, 200.0, 400.0])
    >>> round(predict_switch(n, [-2.0, -1.0, 1.0], num_bootstrap=10).n_switch, 1)
    282.8
    """
    n = np.asarray(n_grid, dtype=float).reshape(-1)
    lo = np.atleast_2d(np.asarray(log_odds, dtype=float))
    if lo.shape[1] != n.size or n.size < 2 or np.any(np.diff(n) <= 0):
        raise ValueError(f"log_odds must have shape (datasets, {n.size}) on an ascending grid")
    if not np.all(np.isfinite(lo)):
        raise ValueError("log_odds must be finite")
    se = np.zeros_like(n) if log_odds_se is None else np.asarray(log_odds_se, dtype=float).reshape(-1)
    if se.shape != n.shape or np.any(se < 0):
        raise ValueError("log_odds_se must be >= 0 with the grid's length")
    t = np.log(n)

    def pooled(x: np.ndarray) -> np.ndarray:
        return np.tanh(x / 2).mean(axis=0)  # mean over datasets of p_b - p_a, given p_a + p_b = 1

    point = _first_up(t, pooled(lo))
    rng = np.random.default_rng(seed)
    D = lo.shape[0]
    found = []
    for _ in range(int(num_bootstrap)):
        rows = rng.integers(0, D, D)
        x = _first_up(t, pooled(lo[rows] + rng.standard_normal() * se))
        if x is not None:
            found.append(x)
    interval = (float(np.percentile(found, 2.5)), float(np.percentile(found, 97.5))) if found else None
    per = [_first_up(t, row) for row in lo]
    return SwitchPrediction(point, interval, len(found) / max(int(num_bootstrap), 1), per, int(num_bootstrap))


def anchor_log_odds(
    n_grid: Any,
    counts: Any,
    phase_names: Any,
    low_n: str,
    high_n: str,
    *,
    min_share: float = 0.05,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float] | None:
    r"""The anchor of :func:`anchored_log_odds` from a well-mixed occupancy run: the smallest grid point
    :math:`n_0` where both phases hold at least ``min_share`` of the draws, the log-odds
    :math:`\log(N_{high}/N_{low})` of their draw counts there, and its standard error from a bootstrap over
    chains (replica sets; draws within a chain are correlated, chains are not).

    Parameters
    ----------
    n_grid : array-like, shape ``(G,)``
    counts : array-like, shape ``(G, K, P)``
        Draws per grid point, chain and phase (e.g. :class:`~slt_tms.experiments.occupancy.OccupancyResult`).
    phase_names : sequence of str, length ``P``
    low_n, high_n : str
    min_share : float
    num_bootstrap, seed : int

    Returns
    -------
    (n0, log_odds0, se) or None if no grid point qualifies.

    Examples
    --------
    >>> counts = np.array([[[10, 90, 0], [12, 88, 0]], [[50, 50, 0], [40, 60, 0]]])
    >>> n0, lo, se = anchor_log_odds([50, 100], counts, ["6", "5", "unclassified"], "5", "6")
    >>> n0, round(lo, 3)
    (50.0, -2.091)
    """
    n = np.asarray(n_grid, dtype=float).reshape(-1)
    cnt = np.asarray(counts, dtype=float)
    names = list(phase_names)
    if cnt.ndim != 3 or cnt.shape[0] != n.size or cnt.shape[2] != len(names):
        raise ValueError(f"counts must have shape (G={n.size}, K, P={len(names)}); got {cnt.shape}")
    if low_n not in names or high_n not in names:
        raise ValueError(f"unknown phase {low_n!r} or {high_n!r}; known: {names}")
    a, b = names.index(low_n), names.index(high_n)
    tot = np.maximum(cnt.sum(axis=(1, 2)), 1)
    share_a, share_b = cnt[:, :, a].sum(1) / tot, cnt[:, :, b].sum(1) / tot
    ok = np.flatnonzero((share_a >= min_share) & (share_b >= min_share))
    if ok.size == 0:
        return None
    g = int(ok[0])
    ca, cb = cnt[g, :, a], cnt[g, :, b]
    lo = float(math.log(cb.sum() / ca.sum()))
    rng = np.random.default_rng(seed)
    K = ca.size
    boots = []
    for _ in range(int(num_bootstrap)):
        k = rng.integers(0, K, K)
        sa, sb = ca[k].sum(), cb[k].sum()
        if sa > 0 and sb > 0:
            boots.append(math.log(sb / sa))
    se = float(np.std(boots, ddof=1)) if len(boots) > 1 else math.inf
    return float(n[g]), lo, se
