r"""Analytic phase diagram of 2 features in 1 hidden dimension (Elhage et al. 2022), derived with sympy.

The model :math:`f(x) = \mathrm{ReLU}(W^\top W x + b)` with :math:`W = (w_1, w_2)` a single row has, for
the classes of its phase diagram, three candidate solutions: feature 2 not represented
(:math:`W = [1, 0]`), feature 2 given the dimension (:math:`W = [0, 1]`), or the two stored antipodally in
superposition (:math:`W = [1, -1]`). With :math:`x_1, x_2` independent, each 0 with probability
:math:`1 - p` (density :math:`p = 1 - S`) and otherwise :math:`U[0, 1]`, and importances
:math:`I_1 = 1`, :math:`I_2 = r`, the population loss of each candidate splits into per-feature terms,
each minimised over its own bias :math:`\beta`:

.. math::

    L_{[1,0]} = \ell^*_{\rm ded} + r\,\ell^*_{\rm off}, \quad
    L_{[0,1]} = \ell^*_{\rm off} + r\,\ell^*_{\rm ded}, \quad
    L_{[1,-1]} = (1 + r)\,\ell^*_{\rm sup}.

* :func:`two_feature_losses` -- the per-feature losses :math:`\ell_k(p, \beta)` as sympy piecewise
  polynomials, integrated exactly over the regions where the ReLU fires;
* :func:`optimal_two_feature_losses` -- :math:`\ell^*_k(p) = \min_\beta \ell_k(p, \beta)` and the
  minimising biases;
* :func:`analytic_phase` -- the class (code of :data:`PHASE_NAMES`) of lowest loss;
* :func:`analytic_boundaries` -- the superposition region :math:`r_{\rm low}(p) < r < 1 / r_{\rm low}(p)`
  and the density :math:`p_{\rm critical}` of its tip.

Pure mathematics: no training, no files, no plots. The derivation is written out in the superposition
guide of the documentation.

References
----------
N. Elhage et al., *Toy Models of Superposition*, Transformer Circuits Thread (2022).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import sympy

__all__ = [
    "DEDICATED",
    "NOT_REPRESENTED",
    "PHASE_NAMES",
    "SUPERPOSITION",
    "analytic_boundaries",
    "analytic_phase",
    "optimal_two_feature_losses",
    "two_feature_losses",
]

#: Phase labels of the 2-features-in-1-dimension diagram, indexed by class code. They describe the
#: second ("extra") feature: not represented (W = [1, 0]), given the dimension (W = [0, 1]), or stored
#: in superposition with the first (W = [1, -1]).
PHASE_NAMES: tuple[str, ...] = ("not represented", "dedicated dimension", "superposition")
#: Class codes, indices into :data:`PHASE_NAMES` (and the order of the candidates in
#: :func:`analytic_phase`, whose ties go to the lower code).
NOT_REPRESENTED, DEDICATED, SUPERPOSITION = 0, 1, 2


@functools.lru_cache(maxsize=1)
def _two_feature_pieces() -> dict[str, list[tuple[float, float, sympy.Expr]]]:
    r"""Per-feature population losses of the three configurations, as polynomials in (p, beta) on the
    bias intervals [-1, 0] and [0, 1], derived by sympy integration over the regions where the ReLU
    fires (the region boundaries are worked out in docs/superposition.md)."""
    p, beta, u, v = sympy.symbols("p beta u v", real=True)
    third = sympy.Rational(1, 3)
    # Feature not represented (w_i = 0): output ReLU(beta), a constant.
    off_neg = p * sympy.integrate(u**2, (u, 0, 1))  # ReLU(beta) = 0: error x_i^2
    off_pos = (1 - p) * beta**2 + p * sympy.integrate((u - beta) ** 2, (u, 0, 1))
    # Feature with a dedicated dimension (w_i = 1, the other column 0): output ReLU(x_i + beta).
    ded_pos = (1 - p) * beta**2 + p * sympy.integrate((u - (u + beta)) ** 2, (u, 0, 1))
    ded_neg = p * (sympy.integrate(u**2, (u, 0, -beta)) + sympy.integrate(beta**2, (u, -beta, 1)))
    # Antipodal pair W = [1, -1]: feature 1's output ReLU(x_1 - x_2 + beta); by symmetry feature 2 has the
    # same loss. Sparsity patterns: (0,0) w.p. (1-p)^2, (x1,0) and (0,x2) w.p. p(1-p), (x1,x2) w.p. p^2.
    only1_pos = sympy.integrate(beta**2, (u, 0, 1))  # fires always: error -beta
    only2_pos = sympy.integrate((beta - v) ** 2, (v, 0, beta))  # fires for v < beta
    both_pos = (  # fires where v < u + beta: error (v - beta)^2, else error u^2
        sympy.integrate(sympy.integrate((v - beta) ** 2, (v, 0, u + beta)), (u, 0, 1 - beta))
        + sympy.integrate(sympy.integrate((v - beta) ** 2, (v, 0, 1)), (u, 1 - beta, 1))
        + sympy.integrate(sympy.integrate(u**2, (v, u + beta, 1)), (u, 0, 1 - beta))
    )
    sup_pos = (1 - p) ** 2 * beta**2 + p * (1 - p) * (only1_pos + only2_pos) + p**2 * both_pos
    only1_neg = ded_neg / p
    both_neg = third + sympy.integrate(  # fires where u > v - beta
        sympy.integrate((v - beta) ** 2 - u**2, (u, v - beta, 1)), (v, 0, 1 + beta)
    )
    sup_neg = p * (1 - p) * only1_neg + p**2 * both_neg
    ex = sympy.expand
    return {
        "off": [(-1.0, 0.0, ex(off_neg)), (0.0, 1.0, ex(off_pos))],
        "dedicated": [(-1.0, 0.0, ex(ded_neg)), (0.0, 1.0, ex(ded_pos))],
        "superposition": [(-1.0, 0.0, ex(sup_neg)), (0.0, 1.0, ex(sup_pos))],
    }


def two_feature_losses() -> dict[str, sympy.Piecewise]:
    r"""Sympy expressions of the per-feature population losses of the three candidate solutions.

    For density :math:`p = 1 - S` and a feature's bias :math:`\beta`, with :math:`x_1, x_2` independent,
    0 w.p. :math:`1 - p`, else :math:`U[0, 1]`:

    * ``"off"`` (:math:`w_i = 0`): :math:`\ell_{\rm off}(p, \beta) = E[(x_i - \mathrm{ReLU}(\beta))^2]`;
    * ``"dedicated"`` (:math:`w_i = 1`, other column 0):
      :math:`\ell_{\rm ded}(p, \beta) = E[(x_i - \mathrm{ReLU}(x_i + \beta))^2]`;
    * ``"superposition"`` (:math:`W = [1, -1]`):
      :math:`\ell_{\rm sup}(p, \beta) = E[(x_1 - \mathrm{ReLU}(x_1 - x_2 + \beta))^2]`.

    Each is a piecewise polynomial in :math:`(p, \beta)` for :math:`\beta \in [-1, 1]` (pieces
    :math:`\beta \le 0` and :math:`\beta \ge 0`); the integrals are evaluated by sympy over the regions
    where the ReLU is active (docs/superposition.md). Outside :math:`[-1, 1]` no bias is better: for
    :math:`\beta \le -1` the ReLUs never fire (constant loss, equal to the value at -1) and for
    :math:`\beta \ge 1` every loss increases with :math:`\beta`. Returns Piecewise expressions in the
    real symbols ``p`` and ``beta`` (``sympy.Symbol("p", real=True)``, ``sympy.Symbol("beta", real=True)``).

    Examples
    --------
    >>> p, beta = sympy.symbols("p beta", real=True)
    >>> two_feature_losses()["off"].subs({p: 1, beta: sympy.Rational(1, 2)})
    1/12
    """
    beta = sympy.Symbol("beta", real=True)
    out = {}
    for name, pieces in _two_feature_pieces().items():
        (_, hi0, e0), (_, _, e1) = pieces
        out[name] = sympy.Piecewise((e0, beta <= hi0), (e1, True))
    return out


@functools.lru_cache(maxsize=1)
def _piece_polys() -> dict[str, list[tuple[float, float, list[Callable[[np.ndarray], np.ndarray]]]]]:
    p, beta = sympy.symbols("p beta", real=True)
    out: dict[str, list] = {}
    for name, pieces in _two_feature_pieces().items():
        lst = []
        for lo, hi, expr in pieces:
            coeffs = sympy.Poly(expr, beta).all_coeffs()  # highest degree first, each a polynomial in p
            lst.append((lo, hi, [sympy.lambdify(p, cf, "numpy") for cf in coeffs]))
        out[name] = lst
    return out


def _min_piecewise_poly(pieces: list, p: float) -> tuple[float, float]:
    best = (math.inf, math.nan)
    for lo, hi, fns in pieces:
        coeffs = np.array([float(f(p)) for f in fns])
        cands = [lo, hi]
        if len(coeffs) > 2:  # degree >= 2: interior stationary points are roots of the derivative
            for rt in np.roots(np.polyder(coeffs)):
                if abs(rt.imag) < 1e-12 and lo <= rt.real <= hi:
                    cands.append(float(rt.real))
        for bta in cands:
            val = float(np.polyval(coeffs, bta))
            if val < best[0]:
                best = (val, bta)
    return best


def optimal_two_feature_losses(density: float | np.ndarray) -> dict[str, np.ndarray]:
    r"""Per-feature losses minimised over the bias, and the optimal biases, at density(ies) :math:`p`.

    .. math:: \ell^*_k(p) = \min_{\beta \in [-1, 1]} \ell_k(p, \beta), \quad k \in
        \{\text{off}, \text{dedicated}, \text{superposition}\},

    computed from the piecewise polynomials of :func:`two_feature_losses` by comparing the interval end
    points with the real stationary points (roots of the derivative) inside each piece. Closed forms that
    follow: :math:`\ell^*_{\rm off} = p/3 - p^2/4` at :math:`\beta = p/2`, :math:`\ell^*_{\rm ded} = 0` at
    :math:`\beta = 0`.

    Returns a dict with keys ``"off"``, ``"dedicated"``, ``"superposition"`` (losses) and
    ``"beta_off"``, ``"beta_dedicated"``, ``"beta_superposition"`` (minimisers), arrays shaped like
    ``density``.

    Examples
    --------
    >>> opt = optimal_two_feature_losses([1.0, 0.5])
    >>> opt["off"].round(4).tolist(), opt["beta_off"].tolist()   # p/3 - p^2/4 at beta = p/2
    ([0.0833, 0.1042], [0.5, 0.25])
    """
    dens = np.asarray(density, dtype=float)
    if np.any(~np.isfinite(dens)) or np.any(dens <= 0) or np.any(dens > 1):
        raise ValueError("density 1 - S must lie in (0, 1] (sparsity S in [0, 1))")
    polys = _piece_polys()
    out: dict[str, np.ndarray] = {}
    flat = dens.reshape(-1)
    for name, pieces in polys.items():
        vals = np.array([_min_piecewise_poly(pieces, float(pv)) for pv in flat])
        out[name] = vals[:, 0].reshape(dens.shape)
        out[f"beta_{name}"] = vals[:, 1].reshape(dens.shape)
    return out


def _configuration_losses(relative_importance: np.ndarray, density: np.ndarray) -> np.ndarray:
    r, p = np.broadcast_arrays(np.asarray(relative_importance, dtype=float), np.asarray(density, dtype=float))
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("relative importance I_2 / I_1 must be a finite number > 0")
    opt = optimal_two_feature_losses(p)
    off, ded, sup = opt["off"], opt["dedicated"], opt["superposition"]
    # L([1,0]) = 1 * ded + r * off;  L([0,1]) = off + r * ded;  L([1,-1]) = (1 + r) * sup.
    return np.stack([ded + r * off, off + r * ded, (1 + r) * sup], axis=-1)


def analytic_phase(
    relative_importance: float | np.ndarray, density: float | np.ndarray
) -> np.ndarray:
    r"""Analytic class at (relative importance :math:`r = I_2/I_1`, density :math:`p = 1 - S`).

    The class is the configuration of lowest population loss (with :math:`I_1 = 1`)

    .. math::

        L_{[1,0]} = \ell^*_{\rm ded} + r\,\ell^*_{\rm off}, \quad
        L_{[0,1]} = \ell^*_{\rm off} + r\,\ell^*_{\rm ded}, \quad
        L_{[1,-1]} = (1 + r)\,\ell^*_{\rm sup}

    (:func:`optimal_two_feature_losses`), coded as in :data:`PHASE_NAMES` (ties go to the lower code).
    Arguments broadcast; returns int codes.

    Examples
    --------
    >>> analytic_phase([0.1, 10.0, 1.0], [1.0, 1.0, 0.01]).tolist()   # dense: keep the more important one
    [0, 1, 2]
    """
    return np.argmin(_configuration_losses(relative_importance, density), axis=-1)


def analytic_boundaries(density: float | np.ndarray) -> dict[str, np.ndarray]:
    r"""Phase boundaries in relative importance at the given density(ies).

    Since :math:`\ell^*_{\rm ded} = 0`, superposition wins iff
    :math:`(1 + r)\,\ell^*_{\rm sup} < \min(1, r)\,\ell^*_{\rm off}`, i.e. with
    :math:`g(p) = \ell^*_{\rm sup}(p) / \ell^*_{\rm off}(p)`,

    .. math::

        r_{\rm low}(p) = \frac{g}{1 - g} < r < r_{\rm high}(p) = \frac{1 - g}{g} = \frac{1}{r_{\rm low}},

    non-empty iff :math:`g < 1/2`. Outside it the dense boundary is :math:`r = 1` (keep the more important
    feature). Returns ``{"r_low", "r_high", "g"}`` (``r_low``/``r_high`` NaN where :math:`g \ge 1/2`) and
    ``"p_critical"``, the density where :math:`g = 1/2` (the tip of the superposition region at
    :math:`r = 1`), found by bisection.

    Examples
    --------
    >>> b = analytic_boundaries([0.5, 0.1])
    >>> b["r_low"].round(3).tolist(), round(float(b["p_critical"]), 4)
    ([0.582, 0.057], 0.6269)
    """
    p = np.asarray(density, dtype=float)
    opt = optimal_two_feature_losses(p)
    g = opt["superposition"] / opt["off"]
    with np.errstate(divide="ignore", invalid="ignore"):
        r_low = np.where(g < 0.5, g / (1 - g), np.nan)
        r_high = np.where(g < 0.5, (1 - g) / g, np.nan)

    def gm(x: float) -> float:
        o = optimal_two_feature_losses(x)
        return float(o["superposition"] / o["off"]) - 0.5

    lo, hi = 1e-3, 1.0
    if gm(lo) < 0 < gm(hi):
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if gm(mid) < 0 else (lo, mid)
        p_crit = 0.5 * (lo + hi)
    else:
        p_crit = math.nan
    return {"r_low": r_low, "r_high": r_high, "g": g, "p_critical": np.asarray(p_crit)}
