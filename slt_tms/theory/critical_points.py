r"""The k-gon critical points of the TMS population loss for :math:`r = 2`.

Families
--------
A *k-gon in c features* has :math:`k` live columns of common length :math:`l` at angles
:math:`2\pi j/k` (:math:`j = 0..k-1`), all with the common bias :math:`b`; the other :math:`c - k`
columns are zero. The variants (names as in the TMS paper, Chen et al. 2023):

* ``k`` followed by :math:`\sigma` plus signs (``"5"``, ``"5+"``, ``"4++"``): :math:`\sigma` of the dead
  columns carry the bias :math:`1/(2c)`, the remaining dead columns a negative bias (a flat direction:
  any :math:`b < 0` gives the same loss; we pick ``dead_bias = -1``);
* :math:`4^{\sigma+, \varphi-}` (written ``"4+,2-"`` for :math:`\sigma = 1, \varphi = 2`, ``"4,1-"`` for
  :math:`\sigma = 0, \varphi = 1`): additionally :math:`\varphi` of the four polygon columns keep their
  vector but are switched off by a bias :math:`b_j < -l^2` (they never fire; we pick
  :math:`b_j = -2 l^2`, strictly inside the flat region, because :math:`b_j = -l^2` sits on a
  :math:`C^1`-only boundary of the diagonal pair term).

Common length and bias
----------------------
The common :math:`(l^*, b^*)` of the polygon columns is a stationary point of the family loss
:math:`F(l, b)`, found over all activity patterns by
:func:`~slt_tms.theory.kgon_families.solve_kgon_family` (the reduction to one variable is derived in
:mod:`slt_tms.theory.kgon_families`); a dead column with positive bias has the bias :math:`1/(2c)`
(:func:`~slt_tms.theory.kgon_families.dead_bias_optimum`).

Certification
-------------
:func:`kgon` builds the full :math:`(W, b)`, evaluates the gradient of the closed form in all
:math:`3c` coordinates (torch float64 autograd; exactly with sympy when the point has exact
coordinates, e.g. :math:`l^* = 1, b^* = 0`), decides whether :math:`L` is :math:`C^2` at the point
(one-sided Hessians :math:`H(w \pm h u)` must agree), and classifies the Hessian: index, number of
zero modes (decided by an eigenvalue gap), and :math:`\lambda = \mathrm{rank}(H)/2` when the point is
minimally singular (:math:`C^2`, index 0, and every zero mode tangent to a manifold of minima, checked
by re-minimising transverse to it; :func:`~slt_tms.theory.point_analysis.analyse_point`).

The public names of :mod:`slt_tms.theory.kgon_families` and :mod:`slt_tms.theory.point_analysis` are
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sympy as sp
import torch

from slt_tms._progress import progress as _progress
from slt_tms.theory.critical_point import DEAD_BIAS, CriticalPoint
from slt_tms.theory.kgon_families import (
    FamilyRoot,
    FamilySolutions,
    _validate,
    dead_bias_optimum,
    family_name,
    solve_kgon_family,
)
from slt_tms.theory.point_analysis import (
    PointAnalysis,
    analyse_point,
    check_analysis_memory,
    probe_local_minimum,
)
from slt_tms.theory.symbolic import pair_terms, symbols
from slt_tms.validation import check_int

__all__ = [
    "FamilyRoot",
    "FamilySolutions",
    "PointAnalysis",
    "analyse_point",
    "critical_points",
    "dead_bias_optimum",
    "family_name",
    "family_parameters",
    "family_point",
    "kgon",
    "probe_local_minimum",
    "solve_kgon_family",
]

#: Gradient norm below which a point counts as critical.
GRAD_TOL = 1e-10
#: Switched-off polygon columns get bias OFF_BIAS_FACTOR * l**2 (< -l**2: strictly inside the flat region).
OFF_BIAS_FACTOR = -2.0


# ----------------------------------------------------------------------------------------------------
# the named points
# ----------------------------------------------------------------------------------------------------


def _exact_gradient_is_zero(W: sp.Matrix, b: list[sp.Expr]) -> bool:
    """Decide exactly (sympy) whether the gradient of L vanishes at exact (W, b).

    Chain rule through the pair terms: dL/dW_k = (1/c) sum_{i,j} dT/da (a_ij, b_i) (d_ik W_j + d_jk W_i),
    dL/db_i = (1/c) sum_j dT/db (a_ij, b_i). Where a pair sits on a boundary, L is C^1 there, so the
    branch sympy selects gives the common one-sided derivative.

    The pair derivatives are evaluated once per distinct argument ``(delta, a_ij, b_i)`` (a k-gon in c
    features has only a handful: the dead columns repeat) and exact zeros are not added, so the c^2
    loop does look-ups instead of c^2 sympy substitutions (c = 300: 0.2 s instead of 12 s; c = 1000: 2.5 s).
    """
    a, bs, _ = symbols()
    diag, off = pair_terms()
    der = {}
    for delta, pw in ((1, diag), (0, off)):
        der[delta] = (sp.diff(pw, a), sp.diff(pw, bs))
    r, c = W.shape
    G = (W.T * W).applyfunc(sp.nsimplify)
    gW = [[sp.Integer(0)] * c for _ in range(r)]
    gb = [sp.Integer(0)] * c
    memo: dict[tuple[int, sp.Expr, sp.Expr], tuple[sp.Expr, sp.Expr]] = {}
    for i in range(c):
        for j in range(c):
            key = (int(i == j), G[i, j], b[i])
            if key not in memo:
                da, db = der[key[0]]
                sub = {a: G[i, j], bs: b[i]}
                memo[key] = (sp.simplify(da.subs(sub)), sp.simplify(db.subs(sub)))
            va, vb = memo[key]
            if vb != 0:
                gb[i] += vb
            if va != 0:
                for row in range(r):
                    gW[row][i] += va * W[row, j]
                    gW[row][j] += va * W[row, i]
    return all(sp.simplify(x) == 0 for x in [*(x for row in gW for x in row), *gb])


def _exact_point(
    k: int, c: int, sigma: int, phi: int, off_positions: Sequence[int]
) -> tuple[sp.Matrix, list]:
    W = sp.zeros(2, c)
    b: list[sp.Expr] = [sp.Integer(0)] * c
    for j in range(k):
        W[0, j], W[1, j] = sp.cos(2 * sp.pi * j / k), sp.sin(2 * sp.pi * j / k)
    for j in off_positions:
        b[j] = sp.Integer(int(OFF_BIAS_FACTOR))
    for i in range(k, c):
        b[i] = sp.Rational(1, 2 * c) if i < k + sigma else sp.Integer(int(DEAD_BIAS))
    return W, b


def _unit(j: int, k: int) -> np.ndarray:
    """(cos 2 pi j/k, sin 2 pi j/k) with exact zeros and +-1 where the angle is a multiple of pi/2."""
    v = np.array([math.cos(2 * math.pi * j / k), math.sin(2 * math.pi * j / k)])
    v[np.abs(v) < 1e-15] = 0.0
    v[np.abs(np.abs(v) - 1) < 1e-15] = np.sign(v[np.abs(np.abs(v) - 1) < 1e-15])
    return v


def family_point(
    k: int,
    c: int,
    sigma: int = 0,
    phi: int = 0,
    *,
    dead_bias: float = DEAD_BIAS,
    off_positions: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""``(W, b)`` of the family :math:`k^{\sigma+,\varphi-}` without the analysis of :func:`kgon`.

    Same layout and parameters as :func:`kgon`; raises ValueError when no symmetric solution exists.

    Returns
    -------
    W : ndarray, shape ``(2, c)``
    b : ndarray, shape ``(c,)``
    """
    _validate(k, c, sigma, phi)
    if not (isinstance(dead_bias, int | float) and dead_bias < 0):
        raise ValueError(f"dead_bias must be a negative number (a flat direction), got {dead_bias!r}")
    if off_positions is None:
        off_positions = list(range(k - phi, k))
    off_positions = [int(j) for j in off_positions]
    if (len(off_positions) != phi or len(set(off_positions)) != phi
            or not all(0 <= j < k for j in off_positions)):
        raise ValueError(
            f"off_positions must list phi = {phi} distinct vertices in 0..{k - 1}, got {off_positions}"
        )
    sols = solve_kgon_family(k, c)
    if not sols.roots:
        raise ValueError(
            f"no symmetric {k}-gon solution exists for c = {c} (patterns checked: {sols.patterns})"
        )
    l, bb = sols.roots[0].length, sols.roots[0].bias
    W = np.zeros((2, c))
    b = np.zeros(c)
    for j in range(k):
        W[:, j] = l * _unit(j, k)
        b[j] = bb
    for j in off_positions:
        b[j] = OFF_BIAS_FACTOR * l * l
    for i in range(k, c):
        b[i] = 1.0 / (2 * c) if i < k + sigma else dead_bias
    return W, b


def kgon(
    k: int,
    c: int,
    sigma: int = 0,
    phi: int = 0,
    *,
    dead_bias: float = DEAD_BIAS,
    off_positions: Sequence[int] | None = None,
    exact: bool = True,
) -> CriticalPoint:
    r"""The k-gon critical point :math:`k^{\sigma+, \varphi-}` in ``c`` features (r = 2), certified.

    Columns ``0..k-1`` are the polygon, :math:`W_j = l^*(\cos\frac{2\pi j}{k}, \sin\frac{2\pi j}{k})`
    with bias :math:`b^*` (:func:`solve_kgon_family`, the lowest-loss root if there are several);
    ``off_positions`` of them (default: the last :math:`\varphi`) are switched off with bias
    :math:`-2 l^{*2}`; columns ``k..k+sigma-1`` are zero with bias :math:`1/(2c)`
    (:func:`dead_bias_optimum`); the rest are zero with bias ``dead_bias`` (< 0, a flat direction).

    The gradient of the closed form in all :math:`3c` coordinates is evaluated (torch float64; also
    exactly with sympy when ``exact`` and :math:`(l^*, b^*)` are exact, i.e. :math:`(1, 0)` for
    :math:`k \le 4`) and must be below ``1e-10``; the point is analysed by :func:`analyse_point`.

    Parameters
    ----------
    k : int
        Number of polygon vertices, ``2 <= k <= c``.
    c : int
        Number of features.
    sigma : int
        Dead columns with positive bias, ``0 <= sigma <= c - k``.
    phi : int
        Switched-off polygon columns (4-gons only), ``0 <= phi <= 3``.
    dead_bias : float
        Bias of the remaining dead columns, must be < 0.
    off_positions : sequence of int, optional
        Which polygon vertices are switched off (default the last ``phi``). For :math:`\varphi = 2`,
        adjacent and opposite vertices give different (both critical) configurations of equal loss.
    exact : bool
        Also decide the gradient exactly with sympy where the coordinates are exact.

    Returns
    -------
    CriticalPoint
        ``extra`` holds ``grad_norm``, ``gradient_exact_zero`` (True/False, or None when not decidable),
        ``pattern``, ``family_residual``, ``eigenvalue_gap``, ``zero_modes_flat``, ``hessian_jump``,
        ``other_family_roots``.

    Raises
    ------
    ValueError
        On k, c, sigma, phi out of range, if the point fails the criticality certificate, or, before
        any work, if the Hessian analysis would need more than half of the available memory
        (:func:`~slt_tms.theory.point_analysis.check_analysis_memory`: about :math:`128 (3c)^2` bytes,
        1.15 GB at c = 1000).

    Examples
    --------
    >>> p = kgon(4, 4)
    >>> p.name, p.loss, p.is_c2, p.lambda_theory
    ('4', 0.0, False, None)
    """
    _validate(k, c, sigma, phi)
    check_analysis_memory(c, f"the certification of the critical point {family_name(k, sigma, phi)}")
    W, b = family_point(k, c, sigma, phi, dead_bias=dead_bias, off_positions=off_positions)
    off_positions = list(range(k - phi, k)) if off_positions is None else [int(j) for j in off_positions]
    sols = solve_kgon_family(k, c)
    root = sols.roots[0]
    l, bb = root.length, root.bias
    w = torch.as_tensor(np.concatenate([W.reshape(-1), b]), dtype=torch.float64)
    an = analyse_point(w, c)
    if an.grad_norm >= GRAD_TOL:
        raise ValueError(
            f"{family_name(k, sigma, phi)} at c = {c} failed the criticality certificate: |grad L| = "
            f"{an.grad_norm:.3g} >= {GRAD_TOL:g}"
        )
    exact_zero: bool | None = None
    if exact and root.on_boundary and abs(l - 1) < 1e-14 and abs(bb) < 1e-14 and dead_bias == DEAD_BIAS:
        We, be = _exact_point(k, c, sigma, phi, off_positions)
        exact_zero = _exact_gradient_is_zero(We, be)
        if not exact_zero:
            raise ValueError(f"{family_name(k, sigma, phi)} at c = {c}: the exact gradient is not zero")
    extra = {
        "grad_norm": an.grad_norm,
        "gradient_exact_zero": exact_zero,
        "pattern": root.pattern,
        "family_residual": root.residual,
        "eigenvalue_gap": an.gap,
        "rank": an.rank,
        "zero_modes_flat": an.zero_modes_flat,
        "hessian_jump": an.hessian_jump,
        "c2_reason": an.c2_reason,
        "dead_bias": dead_bias,
        "off_positions": off_positions,
        "other_family_roots": [(r.length, r.bias, r.pattern) for r in sols.roots[1:]],
    }
    if not an.is_c2:
        extra["local_min_probe"] = probe_local_minimum(w, c)
        extra["one_sided_index_range"] = (min(int(np.sum(s < -1e-9)) for s in an.one_sided_spectra),
                                          max(int(np.sum(s < -1e-9)) for s in an.one_sided_spectra))
    return CriticalPoint(
        name=family_name(k, sigma, phi), k=k, c=c, r=2, sigma=sigma, phi=phi, W=W, b=b, loss=an.loss,
        length=l, bias=bb, hessian_eigenvalues=an.hessian_eigenvalues, index=an.index,
        num_zero_modes=an.num_zero_modes, is_c2=an.is_c2, lambda_theory=an.lambda_theory,
        lambda_reason=an.lambda_reason, extra=extra,
    )


def family_parameters(c: int) -> list[tuple[int, int, int]]:
    r"""Every ``(k, sigma, phi)`` of the named families for ``c`` features.

    :math:`2 \le k \le c`, :math:`0 \le \sigma \le c - k`, and :math:`\varphi \in \{0..3\}` for
    :math:`k = 4` (:math:`\varphi = 0` otherwise). Every one of them has a symmetric solution for
    :math:`c \le 8` (see ``docs/critical_points.md``).
    """
    out = []
    for k in range(c, 1, -1):
        for sigma in range(c - k + 1):
            for phi in range(4 if k == 4 else 1):
                out.append((k, sigma, phi))
    return out


def critical_points(c: int, *, exact: bool = False, progress: bool | None = None) -> list[CriticalPoint]:
    r"""Every named k-gon critical point for ``c`` features (r = 2), certified and classified.

    For each ``(k, sigma, phi)`` of :func:`family_parameters` whose family has a solution,
    :func:`kgon` is called (gradient < 1e-10, :math:`C^2` test, Hessian spectrum, index, zero modes,
    :math:`\lambda`). Sorted by loss. The result is cached per ``(c, exact)`` (the points are frozen
    records; the list is a fresh copy).

    Parameters
    ----------
    c : int
        Number of features, ``>= 2``.
    exact : bool
        Also decide the gradient exactly with sympy where possible (slower).
    progress : bool, optional
        Show a progress bar (None: unless ``SLT_TMS_NO_PROGRESS=1``).

    Examples
    --------
    >>> names = [p.name for p in critical_points(4)]
    >>> names[0]
    '4'
    """
    c = check_int("c", c)
    if c < 2:
        raise ValueError(f"c (number of features) must be >= 2, got {c}")
    key = (c, bool(exact))
    if key not in _CACHE:
        check_analysis_memory(c, "the certification of the critical points")
        _CACHE[key] = _compute_critical_points(c, bool(exact), progress)
    return list(_CACHE[key])


_CACHE: dict[tuple[int, bool], tuple[CriticalPoint, ...]] = {}


def _compute_critical_points(c: int, exact: bool, progress: bool | None) -> tuple[CriticalPoint, ...]:
    """The deterministic computation behind :func:`critical_points` (cached there; points are frozen)."""
    out = []
    for k, sigma, phi in _progress(family_parameters(c), desc=f"critical points c={c}", enabled=progress):
        if solve_kgon_family(k, c).roots:
            out.append(kgon(k, c, sigma, phi, exact=exact))
    out.sort(key=lambda p: (p.loss, -p.k, p.name))
    return tuple(out)
