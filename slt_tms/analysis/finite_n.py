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
such curves cross. The sampling of :math:`\lambda_{\mathrm{eff}}(n)` at the TMS phases is not part of
this module (not yet provided by the package).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FiniteNCurve", "finite_n_crossover", "ti_log_evidence"]


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
