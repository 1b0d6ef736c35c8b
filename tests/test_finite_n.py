"""Tests of slt_tms.analysis.finite_n: log Z(n) by thermodynamic integration of lambda_eff(n) over n, on toys
whose evidence and lambda_eff(n) = n E_n[L - L*] are known by quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.optimize import brentq
from scipy.stats import norm

from slt_tms.analysis.finite_n import finite_n_crossover, ti_log_evidence


def _cubic_wall(n: float) -> tuple[float, float]:
    """L = 0 on w <= 0, w^3 on w > 0, prior N(0, 1): (log Z(n), lambda_eff(n)) by quadrature."""
    s = n ** (-1 / 3)
    z = integrate.quad(lambda w: norm.pdf(w) * math.exp(-n * w**3), 0, 60 * s, epsabs=1e-15, epsrel=1e-12)[0]
    m = integrate.quad(lambda w: norm.pdf(w) * w**3 * math.exp(-n * w**3), 0, 60 * s, epsabs=1e-15,
                       epsrel=1e-12)[0]
    return math.log(0.5 + z), n * m / (0.5 + z)


GRID = np.geomspace(10, 1e6, 80)
CUBIC = np.array([_cubic_wall(n) for n in GRID])


def test_ti_reproduces_the_cubic_wall_evidence():
    # lambda = 0, L* = 0, K = log 1/2; the excess decays like n^(-1/3)
    cur = ti_log_evidence("cubic", GRID, CUBIC[:, 1], 0.0, 0.0, math.log(0.5), tail_exponent=1 / 3)
    assert np.abs(cur.log_z - CUBIC[:, 0]).max() < 1e-4
    assert CUBIC[0, 1] > 0.07 and cur.log_z[0] - math.log(0.5) > 0.05  # far from the limit at n = 10
    fitted = ti_log_evidence("cubic", GRID, CUBIC[:, 1], 0.0, 0.0, math.log(0.5))
    assert fitted.tail_exponent == pytest.approx(1 / 3, abs=0.01)
    assert np.abs(fitted.log_z - CUBIC[:, 0]).max() < 1e-3
    # without the integral (the asymptotic formula) the error at n = 10 is the whole excess
    assert abs(math.log(0.5) - CUBIC[0, 0]) > 0.05


def test_finite_n_crossover_of_two_toy_phases():
    # a: L_a = 0.01 + cubic half-line (lambda 0, K log 1/2); b: L_b = a_b w^2 (lambda 1/2, K -1/2 log 2 a_b)
    La, ab = 0.01, 0.5
    exact_a = lambda n: -n * La + _cubic_wall(n)[0]  # noqa: E731
    exact_b = lambda n: -0.5 * math.log(1 + 2 * n * ab)  # noqa: E731
    n_exact = brentq(lambda t: exact_b(math.exp(t)) - exact_a(math.exp(t)), math.log(20), math.log(1e5))
    n_exact = math.exp(n_exact)
    cur_a = ti_log_evidence("a", GRID, CUBIC[:, 1], 0.0, La, math.log(0.5), tail_exponent=1 / 3)
    lam_b = GRID * ab / (1 + 2 * GRID * ab)
    cur_b = ti_log_evidence("b", GRID, lam_b, 0.5, 0.0, -0.5 * math.log(2 * ab), tail_exponent=1.0,
                            lambda_eff_se=np.full(GRID.size, 0.01))
    n_c, (lo, hi) = finite_n_crossover(cur_a, cur_b)
    assert n_c == pytest.approx(n_exact, rel=0.01)
    assert lo < n_c < hi
    # the asymptotic formula alone (no integral) puts the switch elsewhere
    n_asym = brentq(lambda t: (-0.5 * t - 0.5 * math.log(2 * ab)) - (-math.exp(t) * La + math.log(0.5)),
                    math.log(20), math.log(1e5))
    assert abs(math.exp(n_asym) / n_exact - 1) > 0.05


def test_finite_n_bad_input():
    with pytest.raises(ValueError, match="ascending"):
        ti_log_evidence("x", [10, 5], [1, 1], 0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="power-law tail"):
        ti_log_evidence("x", [10, 20], [0.4, 0.3], 0.5, 0.0, 0.0)
    cur = ti_log_evidence("x", [10, 20], [0.6, 0.55], 0.5, 0.0, 0.0, tail_exponent=1.0)
    other = ti_log_evidence("y", [10, 30], [0.6, 0.55], 0.5, 0.0, 0.0, tail_exponent=1.0)
    with pytest.raises(ValueError, match="share"):
        finite_n_crossover(cur, other)
