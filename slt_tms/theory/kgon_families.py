r"""Stationary points of the symmetric k-gon family loss of the TMS for :math:`r = 2`.

A *k-gon in c features* has :math:`k` live columns of common length :math:`l` at angles
:math:`2\pi j/k` (:math:`j = 0..k-1`), all with the common bias :math:`b`; the other :math:`c - k`
columns are zero. This module holds what depends only on the family, not on the full point:

* :func:`family_name`: the TMS paper's name of a variant :math:`k^{\sigma+,\varphi-}` (Chen et al. 2023);
* :func:`dead_bias_optimum`: the optimal positive bias :math:`1/(2c)` of a dead column;
* :func:`solve_kgon_family`: every stationary point :math:`(l^*, b^*)` of the family loss, over all
  activity patterns (:class:`FamilyRoot`, :class:`FamilySolutions`).

The full points :math:`(W, b)` of the variants and their certification are in
:mod:`slt_tms.theory.critical_points`.

Reduction to one variable
-------------------------
All live outputs of a k-gon see the same pair arguments, so on the family

.. math::

    c\,L = k\,F(l, b) + \sum_{\text{dead } i} \Bigl(T_1(0, b_i) + (c-1)\,T_0(0, b_i)\Bigr),
    \qquad
    F(l, b) = T_1(l^2, b) + \sum_{m=1}^{k-1} T_0\bigl(l^2 \cos\tfrac{2\pi m}{k},\ b\bigr)
              + (c - k)\, T_0(0, b),

with the pair terms :math:`T_\delta` of :func:`slt_tms.theory.symbolic.pair_terms`. The dead part
does not involve :math:`(l, b)`; the dead output with bias :math:`\beta > 0` contributes
:math:`\tfrac13 - \beta + c\beta^2`, minimised at :math:`\beta = 1/(2c)` (derived in
:func:`dead_bias_optimum`). The *activity pattern* of a live output is the sign of :math:`b` and, for
each neighbour distance :math:`m`, the sign of :math:`l^2\cos(2\pi m/k) + b`; it selects one branch
of every ``Piecewise`` and makes :math:`F` a rational function :math:`F_P`. Every branch is a sum
:math:`\tfrac13 - 2\,G_1 + G_2` with :math:`G_1, G_2` homogeneous of degree 1 and 2 in
:math:`(l^2, b)`, so with :math:`s = l^2`, :math:`b = t s`,

.. math::

    F_P(s, ts) = \tfrac13 - 2 s\, g_1(t) + s^2 g_2(t), \qquad
    \partial_s F_P = 0 \iff s = g_1(t)/g_2(t),

and the stationary points are the roots of :math:`\tfrac{d}{dt}\,[g_1^2/g_2](t)` inside the
:math:`t`-interval where :math:`P` holds. The code does not assume this structure: it forms
:math:`\partial_s F_P` with sympy, solves it for :math:`s`, and finds *all* real roots of the
numerator of :math:`dF_P/dt` (a polynomial) in the pattern's interval, then polishes every root on the
stationarity equations :math:`\partial_l F_P = \partial_b F_P = 0` in :math:`(l, b)` with mpmath
(40 digits) and re-checks the activity pattern at the polished root; roots outside the interval are
*spurious* and rejected (recorded). Breakpoints of the pattern intervals (:math:`b = 0`,
:math:`l^2 \cos + b = 0`) are checked separately with the one-sided derivatives; this is where the
4-gon (:math:`b^* = 0`) lives.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import mpmath
import sympy as sp

from slt_tms.theory.symbolic import pair_terms, symbols
from slt_tms.validation import check_int

__all__ = [
    "FamilyRoot",
    "FamilySolutions",
    "dead_bias_optimum",
    "family_name",
    "solve_kgon_family",
]

_DIGITS = 40


# ----------------------------------------------------------------------------------------------------
# names and validation
# ----------------------------------------------------------------------------------------------------


def family_name(k: int, sigma: int = 0, phi: int = 0) -> str:
    """The TMS paper's name of the family: ``"5"``, ``"5+"``, ``"4++"``, ``"4,1-"``, ``"4+,2-"``.

    :math:`\\sigma` plus signs follow :math:`k`; a nonzero :math:`\\varphi` is appended as
    ``",<phi>-"`` (the paper writes :math:`4^{+,2-}` as ``"4+,2-"``).

    Examples
    --------
    >>> family_name(5, 1), family_name(4, 2), family_name(4, 1, 2)
    ('5+', '4++', '4+,2-')
    """
    name = f"{k}" + "+" * sigma
    if phi:
        name += f",{phi}-"
    return name


def _validate(k: int, c: int, sigma: int, phi: int, r: int = 2) -> None:
    k, c, sigma, phi, r = (check_int(n, v) for n, v in
                           (("k", k), ("c", c), ("sigma", sigma), ("phi", phi), ("r", r)))
    if r != 2:
        raise ValueError(f"k-gon critical points are defined for r = 2 hidden dimensions only, got r = {r}")
    if c < 2:
        raise ValueError(f"c (number of features) must be >= 2 for a k-gon, got {c}")
    if not 2 <= k <= c:
        raise ValueError(f"k (number of polygon vertices) must satisfy 2 <= k <= c = {c}, got {k}")
    if not 0 <= sigma <= c - k:
        raise ValueError(
            f"sigma (dead columns with positive bias) must satisfy 0 <= sigma <= c - k = {c - k}, got {sigma}"
        )
    if phi != 0 and k != 4:
        raise ValueError(
            f"phi (switched-off polygon columns) is defined for 4-gons only (k = 4), got k = {k}"
        )
    if not 0 <= phi <= 3:
        raise ValueError(f"phi must satisfy 0 <= phi <= 3 (at least one live 4-gon column), got {phi}")


def dead_bias_optimum(c: int) -> tuple[sp.Expr, sp.Expr]:
    r"""Optimal positive bias of a dead column (:math:`W_i = 0`) and its loss contribution (pair terms).

    A dead output sees :math:`a_{ij} = 0` for every input, so its share of :math:`c L` is
    :math:`T_1(0, \beta) + (c - 1) T_0(0, \beta) = \tfrac13 - \beta + c \beta^2` for :math:`\beta > 0`,
    minimised at :math:`\beta = 1/(2c)` with value :math:`\tfrac13 - \tfrac1{4c}`, i.e. it lowers
    :math:`L` by :math:`1/(4c^2)` relative to :math:`\beta \le 0`.

    Returns
    -------
    (beta, contribution) : sympy expressions
        The optimal bias and the dead output's contribution to :math:`c L`.

    Examples
    --------
    >>> dead_bias_optimum(6)
    (1/12, 7/24)
    """
    a, b, _ = symbols()
    diag, off = pair_terms()
    beta = sp.Symbol("beta", positive=True)
    expr = (diag.subs({a: 0, b: beta}) + (c - 1) * off.subs({a: 0, b: beta}))
    expr = sp.expand(sp.piecewise_fold(expr))
    (opt,) = sp.solve(sp.diff(expr, beta), beta)
    return opt, sp.simplify(expr.subs(beta, opt))


# ----------------------------------------------------------------------------------------------------
# the symmetric family: activity patterns and stationarity equations
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyRoot:
    r"""One stationary point :math:`(l^*, b^*)` of the k-gon family loss :math:`F` (module docstring).

    Attributes
    ----------
    k, c : int
    length, bias : float
        :math:`l^*` and :math:`b^*` (polished to 40 digits, stored as float).
    ratio : float
        :math:`t^* = b^* / l^{*2}`.
    pattern : str
        The activity pattern, e.g. ``"b<0; a+b>0 for m in {1}"`` (``m``: neighbour distance), or
        ``"boundary: ..."`` when the root sits on a breakpoint.
    on_boundary : bool
        True if some pair argument sits exactly on a piece boundary (:math:`b = 0` or
        :math:`l^2\cos + b = 0`).
    residual : float
        :math:`\max |\partial_l F|, |\partial_b F|` at the polished root (one-sided ones on a boundary).
    family_loss : float
        :math:`F(l^*, b^*)`, the loss of one live output (times :math:`c`).
    """

    k: int
    c: int
    length: float
    bias: float
    ratio: float
    pattern: str
    on_boundary: bool
    residual: float
    family_loss: float


@dataclass(frozen=True)
class FamilySolutions:
    """All stationary points of the k-gon family for one ``(k, c)`` and what was rejected.

    Attributes
    ----------
    k, c : int
    roots : tuple of FamilyRoot
        Accepted roots, sorted by ``family_loss``.
    patterns : tuple of str
        Every activity pattern examined (one per open :math:`t`-interval), with its interval.
    rejected : tuple of str
        Spurious roots: real roots of a pattern's equation that violate the pattern (outside its
        interval or with :math:`l^2 \\le 0`), and breakpoints where only one side is stationary.
    continua : tuple of str
        Patterns whose equation vanishes identically (a continuum of stationary points), if any.
    """

    k: int
    c: int
    roots: tuple[FamilyRoot, ...]
    patterns: tuple[str, ...]
    rejected: tuple[str, ...]
    continua: tuple[str, ...] = ()


def _cos_exact(k: int, m: int) -> sp.Expr:
    return sp.cos(2 * sp.pi * sp.Integer(m) / k)


def _branch(pw: sp.Piecewise, a_val: sp.Expr, b_val: sp.Expr) -> sp.Expr:
    """The branch of ``pw`` active at the numeric point (a_val, b_val) (a point inside an open region)."""
    a, b, _ = symbols()
    for expr, cond in pw.args:
        if cond is sp.true or bool(cond.subs({a: a_val, b: b_val})):
            return expr
    raise ValueError(f"no branch of the pair term is active at a={a_val}, b={b_val}")  # pragma: no cover


def _breakpoints(k: int) -> list[sp.Expr]:
    """Breakpoints in t = b / l^2 of the activity pattern, inside (-1, inf): t = 0 and t = -cos(2 pi m/k)."""
    pts = {sp.Integer(0)}
    for m in range(1, k // 2 + 1):
        cm = sp.nsimplify(_cos_exact(k, m)) if k in (2, 3, 4, 6) else _cos_exact(k, m)
        val = -cm
        if sp.N(val, _DIGITS) > -1:
            pts.add(sp.simplify(val))
    return sorted(pts, key=lambda v: float(sp.N(v, _DIGITS)))


def _pattern_label(k: int, t_rep: float) -> str:
    sgn = "b>0" if t_rep > 0 else "b<0"
    fires = [m for m in range(1, k // 2 + 1) if math.cos(2 * math.pi * m / k) + t_rep > 0]
    return f"{sgn}; a+b>0 for neighbour distances m in {{{', '.join(map(str, fires))}}}"


def _family_expression(k: int, c: int, t_rep: sp.Expr) -> tuple[sp.Expr, sp.Symbol, sp.Symbol]:
    """F_P(s, b) for the pattern containing t = t_rep (s = l^2), branches picked at (s, b) = (1, t_rep)."""
    diag, off = pair_terms()
    a, b, _ = symbols()
    s = sp.Symbol("s", positive=True)
    t_num = sp.Float(t_rep, _DIGITS)
    F = _branch(diag, sp.Integer(1), t_num).subs({a: s}, simultaneous=True)
    for m in range(1, k):
        cm = _cos_exact(k, m)
        br = _branch(off, sp.Float(sp.N(cm, _DIGITS), _DIGITS), t_num)
        F = F + br.subs({a: s * cm}, simultaneous=True)
    if c > k:
        F = F + (c - k) * _branch(off, sp.Integer(0), t_num).subs({a: 0}, simultaneous=True)
    return F, s, b


def _numeric(expr: sp.Expr) -> sp.Expr:
    """Replace the exact cosines (and radicals) by 50-digit rationals, so the algebra stays exact and fast.

    The stationarity equations then differ from the exact ones by ~1e-50 relative, far below the
    1e-12 asked of (l*, b*).
    """
    reps = {x: sp.Rational(str(sp.N(x, 50))) for x in expr.atoms(sp.cos, sp.Pow)
            if not x.free_symbols and not x.is_Rational}
    return expr.xreplace(reps)


def _stationary_in_t(F: sp.Expr, s: sp.Symbol, b: sp.Symbol) -> tuple[sp.Expr, sp.Expr, sp.Symbol]:
    """Return (s(t), dF/dt along s = s(t), t) for a pattern's F(s, b)."""
    t = sp.Symbol("t", real=True)
    G = sp.expand(sp.cancel(_numeric(F).subs(b, t * s)))
    dGs = sp.diff(G, s)
    sols = sp.solve(dGs, s)
    if len(sols) != 1:
        msg = f"unexpected structure of the family loss: d/ds F has roots {sols}"
        raise ValueError(msg)  # pragma: no cover
    s_of_t = sp.cancel(sols[0])
    dGt = sp.cancel(sp.diff(G, t).subs(s, s_of_t))
    return s_of_t, dGt, t


def _polish(F: sp.Expr, s: sp.Symbol, b: sp.Symbol, s0: float, b0: float) -> tuple[float, float, float]:
    """Polish a root of dF/dl = dF/db = 0 (in l = sqrt(s), b) with mpmath at 40 digits."""
    l = sp.Symbol("l", positive=True)
    Fl = _numeric(F).subs(s, l**2)
    eqs = [sp.diff(Fl, l), sp.diff(Fl, b)]
    f = sp.lambdify((l, b), eqs, "mpmath")
    with mpmath.workdps(_DIGITS):
        try:
            root = mpmath.findroot(lambda x, y: f(x, y), (mpmath.sqrt(s0), b0), tol=mpmath.mpf(10) ** (-30))
        except (ValueError, ZeroDivisionError):
            return math.nan, math.nan, math.inf
        lv, bv = root[0], root[1]
        res = max(abs(v) for v in f(lv, bv))
        return float(lv), float(bv), float(res)


@functools.cache
def solve_kgon_family(k: int, c: int) -> FamilySolutions:
    r"""Every stationary point :math:`(l^*, b^*)` of the k-gon family loss, over all activity patterns.

    For each open interval of :math:`t = b/l^2` between the breakpoints :math:`t = 0` and
    :math:`t = -\cos(2\pi m/k)` (restricted to :math:`t > -1`, where the live outputs fire at all), the
    branches of the pair terms are fixed, the stationarity equations are formed with sympy and all their
    real roots in the interval are found (module docstring); each root is polished to 40 digits and its
    activity pattern re-checked. Breakpoints are accepted when the stationarity equations hold from both
    sides (the loss is :math:`C^1` there).

    Parameters
    ----------
    k, c : int
        Number of polygon vertices and of features, ``2 <= k <= c``.

    Returns
    -------
    FamilySolutions

    Examples
    --------
    >>> sol = solve_kgon_family(4, 4)
    >>> [(round(r.length, 12), round(r.bias, 12)) for r in sol.roots]
    [(1.0, 0.0)]
    """
    _validate(k, c, 0, 0)
    bps = _breakpoints(k)
    bp_num = [float(sp.N(v, _DIGITS)) for v in bps]
    edges = [-1.0, *[v for v in bp_num if v > -1.0]]
    intervals = [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)] + [(edges[-1], math.inf)]
    roots: list[FamilyRoot] = []
    patterns: list[str] = []
    rejected: list[str] = []
    continua: list[str] = []
    per_interval: list[tuple[Any, ...]] = []
    for lo, hi in intervals:
        t_rep = (lo + hi) / 2 if math.isfinite(hi) else lo + 1.0
        label = _pattern_label(k, t_rep)
        patterns.append(f"{label}  (t = b/l^2 in ({lo:.6g}, {hi:.6g}))")
        F, s, b = _family_expression(k, c, sp.Rational(t_rep) if t_rep != 0 else sp.Integer(0))
        s_of_t, dGt, t = _stationary_in_t(F, s, b)
        per_interval.append((lo, hi, F, s, b, s_of_t, dGt, t, label))
        num, _den = sp.fraction(sp.together(dGt))
        poly = sp.Poly(sp.expand(num), t)
        if poly.is_zero:
            continua.append(label)
            continue
        cands = _real_roots(poly) if poly.degree() > 0 else []
        for tz in cands:
            if not lo < tz < (hi if math.isfinite(hi) else math.inf) and -1 < tz:
                rejected.append(f"{label}: root t = {tz:.6g} outside the pattern's interval")
                continue
            if tz <= -1:
                continue
            s0 = float(s_of_t.subs(t, tz))
            if not s0 > 0:
                rejected.append(f"{label}: root t = {tz:.6g} has l^2 = {s0:.3g} <= 0")
                continue
            lv, bv, res = _polish(F, s, b, s0, tz * s0)
            tv = bv / lv**2 if lv == lv else math.nan
            margin = 1e-10
            if not (lv > 1e-8 and lo + margin < tv and (tv < hi - margin)):
                rejected.append(f"{label}: polished root (l, b) = ({lv:.6g}, {bv:.6g}) violates the pattern")
                continue
            roots.append(_make_root(k, c, F, s, b, lv, bv, label, False, res))
    # breakpoints: stationary from both sides?
    for i, tb in enumerate(edges[1:]):
        left, right = per_interval[i], per_interval[i + 1]
        vals = []
        for _lo, _hi, F, s, b, s_of_t, dGt, t, _label in (left, right):
            tb_exact = sp.Rational(str(sp.N(bps[[float(sp.N(v, _DIGITS)) for v in bps].index(tb)], 50)))
            sv = float(s_of_t.subs(t, tb_exact))
            dv = float(dGt.subs(t, tb_exact))
            vals.append((sv, dv, F, s, b))
        (sL, dL, FL, s_, b_), (sR, dR, FR, _, _) = vals
        ok_s = sL > 0 and abs(sL - sR) <= 1e-25 * max(1.0, abs(sL))
        if ok_s and abs(dL) < 1e-25 and abs(dR) < 1e-25:
            lv = math.sqrt(sL)
            label = f"boundary t = b/l^2 = {tb:.6g} between [{left[-1]}] and [{right[-1]}]"
            res = _one_sided_residual(FL, FR, s_, b_, sL, tb * sL)
            roots.append(_make_root(k, c, FL, s_, b_, lv, tb * sL, label, True, res))
        elif ok_s and (abs(dL) < 1e-25 or abs(dR) < 1e-25):
            rejected.append(f"breakpoint t = {tb:.6g}: stationary from one side only")
    roots.sort(key=lambda r: r.family_loss)
    return FamilySolutions(k, c, tuple(roots), tuple(patterns), tuple(rejected), tuple(continua))


def _real_roots(poly: sp.Poly) -> list[float]:
    """Real roots of a univariate polynomial with float coefficients (mpmath, 60 digits, deflation-free)."""
    coeffs = [mpmath.mpf(str(cf)) for cf in poly.all_coeffs()]
    scale = max(abs(cf) for cf in coeffs)
    # coefficients at the 40-digit round-off level of exact zeros (cancelled cosines) are zeros
    coeffs = [cf if abs(cf) > scale * mpmath.mpf(10) ** (-25) else mpmath.mpf(0) for cf in coeffs]
    while coeffs and coeffs[0] == 0:
        coeffs.pop(0)
    if len(coeffs) < 2:
        return []
    with mpmath.workdps(60):
        zs = mpmath.polyroots(coeffs, maxsteps=5000, extraprec=400, error=False)
    out = []
    for z in zs:
        z = complex(z)
        if abs(z.imag) <= 1e-12 * max(1.0, abs(z.real)):
            out.append(z.real)
    return sorted(set(out))


def _one_sided_residual(FL: sp.Expr, FR: sp.Expr, s: sp.Symbol, b: sp.Symbol, sv: float, bv: float) -> float:
    l = sp.Symbol("l", positive=True)
    res = 0.0
    for F in (FL, FR):
        Fl = _numeric(F).subs(s, l**2)
        for var in (l, b):
            val = sp.diff(Fl, var).subs({l: sp.Float(math.sqrt(sv), _DIGITS), b: sp.Float(bv, _DIGITS)})
            res = max(res, abs(float(val)))
    return res


def _make_root(k: int, c: int, F: sp.Expr, s: sp.Symbol, b: sp.Symbol, lv: float, bv: float,
               label: str, boundary: bool, res: float) -> FamilyRoot:
    Fv = float(_numeric(F).subs({s: sp.Float(lv, _DIGITS) ** 2, b: sp.Float(bv, _DIGITS)}))
    return FamilyRoot(k, c, lv, bv, bv / lv**2, label, boundary, res, Fv)
