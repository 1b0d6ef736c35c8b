r"""Numerically stable evaluation of the TMS pair terms and their derivatives (numpy or torch arrays).

The pair term is the integral of the square of a piecewise-linear function,

.. math::

    T_\delta(a, b) = \int_0^1 g(\mu)^2\, d\mu, \qquad g(\mu) = \delta\mu - \mathrm{ReLU}(\mu a + b),

and :math:`g` is linear on each side of the kink :math:`\mu_0 = -b/a`. On a segment :math:`[l, h]`
where :math:`g` is linear with end values :math:`x = g(l)`, :math:`y = g(h)`,

.. math::

    \int_l^h g^2 = \frac{h - l}{3}\,(x^2 + x y + y^2), \qquad
    \int_l^h g = \frac{h - l}{2}\,(x + y), \qquad
    \int_l^h \mu\, g = \frac{h - l}{6}\,\bigl(l\,(2x + y) + h\,(x + 2y)\bigr)

(the first is also the 2-point Gauss-Legendre rule, whose node values are the squares of
:math:`g`). :math:`x^2 + xy + y^2 \ge (x^2 + y^2)/2`, so the value is a sum with bounded cancellation:
its relative error is a few ulps *provided the end values and the segment lengths are accurate*. They
are formed without cancellation from :math:`s = a + b` (the value :math:`z(1)`):

=====  ==========================  ============================================================
region  where (first match wins)    segments (length, x, y)
=====  ==========================  ============================================================
R0     :math:`b \le 0, s \le 0`     ``[0, 1]``: (1, 0, δ)                          (ReLU off)
R1     :math:`b \ge 0, s \ge 0`     ``[0, 1]``: (1, -b, δ - s)                     (ReLU on)
R2     :math:`b > 0 > s`            ``[0, m]``: (m, -b, δm), ``[m, 1]``: (n, δm, δ)  (on, then off)
R3     :math:`b < 0 < s`            ``[0, m]``: (m, 0, δm), ``[m, 1]``: (n, δm, δ - s) (off, then on)
=====  ==========================  ============================================================

with :math:`m = \mu_0 = -b/a` and :math:`n = 1 - \mu_0 = s/a` (both in :math:`(0, 1)`, each one
rounding). The region tests are those of :func:`slt_tms.theory.symbolic.pair_terms` in the same order,
so on a boundary the derivatives are those of the same (first matching) piece. The only remaining
cancellation is :math:`1 - s` (diagonal term), evaluated exactly with Knuth's TwoSum:
:math:`1 - (a + b) = (1 - \hat s) - t` with :math:`\hat s + t = a + b` exactly, and
:math:`1 - \hat s` exact whenever it cancels (Sterbenz).

Derivatives, from :math:`\partial_b T = -2\int_{\text{on}} g` and
:math:`\partial_a T = -2\int_{\text{on}} \mu\, g` (the kink moves, but :math:`g` is continuous there, so
no boundary terms), are evaluated with the segment formulas above; higher derivatives follow by
differentiating these expressions (torch autograd), which are the exact derivatives of the pieces.

Accuracy then rests on the Gram entries :math:`a_{ij} = W_i \cdot W_j`. :func:`gram_compensated`
forms them as unevaluated sums :math:`a_\text{hi} + a_\text{lo}` (Dekker's TwoProduct with Veltkamp
splitting and TwoSum: Ogita-Rump-Oishi ``Dot2``, as accurate as twice the working precision); the
pair functions accept ``a_lo`` and fold it into :math:`s` and :math:`1 - s`.

Every function takes ``indicator(mask, like)`` (0/1 array of ``like``'s dtype) so the same code runs
on numpy and torch; masks enter only as multiplicative constants, so torch autograd differentiates
the selected piece. Unselected pieces see masked (zero) inputs and a guarded denominator, so they
are finite and no ``0 * inf`` reaches a value or a gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__: list[str] = []

_THIRD = 1.0 / 3.0


def two_sum(x: Any, y: Any) -> tuple[Any, Any]:
    """Knuth's TwoSum: ``s = fl(x + y)`` and ``t`` with ``s + t = x + y`` exactly (no overflow)."""
    s = x + y
    z = s - x
    t = (x - (s - z)) + (y - z)
    return s, t


def _split_factor(x: Any) -> float:
    """Veltkamp's splitting constant 2^ceil(p/2) + 1 for the float type of ``x`` (p mantissa bits)."""
    if isinstance(x, np.ndarray):
        eps = float(np.finfo(x.dtype).eps)
    else:
        import torch

        eps = float(torch.finfo(x.dtype).eps)
    p = round(-math.log2(eps)) + 1
    return float(2 ** ((p + 1) // 2) + 1)


def _split(x: Any, factor: float) -> tuple[Any, Any]:
    """Veltkamp splitting: ``x = hi + lo`` exactly, each with at most half the mantissa bits."""
    t = factor * x
    hi = t - (t - x)
    return hi, x - hi


def gram_compensated(W: Any) -> tuple[Any, Any]:
    r"""The Gram matrix :math:`a = W^\top W` of ``W`` (..., r, c) as ``(a_hi, a_lo)`` (Dot2 accuracy).

    Each product :math:`W_{ki} W_{kj}` is split exactly into its rounded value and error (Dekker's
    TwoProduct), the products are summed with TwoSum, and all errors are accumulated in ``a_lo``.
    ``a_hi + a_lo`` has the accuracy of a dot product in twice the working precision (exact products
    need :math:`|W| \lesssim 10^{300}` in float64, and no underflow of the error terms).
    """
    factor = _split_factor(W)
    detach = (lambda x: x) if isinstance(W, np.ndarray) else (lambda x: x.detach())
    # a_hi carries the derivative (products and sums, as for the rounded Gram matrix); a_lo is a
    # rounding correction, detached: differentiating through the splitting would amplify the
    # rounding of tangents by the splitting constant (forward-mode AD of the value path)
    hi, lo = _split(detach(W), factor)
    r = W.shape[-2]
    a_hi = a_lo = None
    for k in range(r):
        x, y = W[..., k, :, None], W[..., k, None, :]
        xh, xl = hi[..., k, :, None], lo[..., k, :, None]
        yh, yl = hi[..., k, None, :], lo[..., k, None, :]
        p = x * y
        pd = detach(p)
        e = xl * yl - (((pd - xh * yh) - xl * yh) - xh * yl)  # p + e = x * y exactly
        if a_hi is None:
            a_hi, a_lo = p, e
        else:
            a_hi, t = two_sum(a_hi, p)
            a_lo = a_lo + (detach(t) + e)
    return a_hi, a_lo


def _regions(b: Any, s: Any, indicator: Any) -> tuple[Any, Any, Any]:
    """Indicators of R1 (ReLU on), R2 (on, then off), R3 (off, then on); R0 (off) is the rest.

    Same tests and order as the ``Piecewise`` of ``pair_terms``: R0 ``b <= 0 & s <= 0``, then R1
    ``b >= 0 & s >= 0``, then R2 ``b > 0 & s < 0``, then R3 (the rest: ``b < 0 & s > 0``).
    """
    s_pos, b_pos = s > 0, b > 0
    s_nneg, b_nneg = s >= 0, b >= 0
    f1 = indicator(s_nneg & b_nneg & (s_pos | b_pos), b)
    f2 = indicator(b_pos & ~s_nneg, b)
    f3 = indicator(s_pos & ~b_nneg, b)
    return f1, f2, f3


def _sum_a_b(a: Any, b: Any, a_lo: Any) -> tuple[Any, Any]:
    """``a + b`` (+ ``a_lo``) rounded once, and ``a`` (+ ``a_lo``) rounded once."""
    if a_lo is None:
        return a + b, a
    s, t = two_sum(a, b)
    return s + (t + a_lo), a + a_lo


def pair_off(
    a: Any, b: Any, indicator: Any, *, value: bool = True, grad: bool = False, a_lo: Any = None
) -> tuple[Any, Any, Any]:
    r"""Off-diagonal pair term :math:`T_0(a, b) = \int_0^1 \mathrm{ReLU}(\mu a + b)^2 d\mu` and/or its
    gradient: returns ``(T, dT/da, dT/db)`` with ``None`` for what is not requested.

    With :math:`\delta = 0`: R1: :math:`(b^2 + bs + s^2)/3`; R2: :math:`m b^2/3`; R3: :math:`n s^2/3`
    (all terms nonnegative). Derivatives: R1 :math:`(b + 2s)/3,\ b + s`; R2 :math:`m^2 b/3,\ m b`;
    R3 :math:`n s (3 - n)/3,\ n s`.
    """
    s, a = _sum_a_b(a, b, a_lo)
    f1, f2, f3 = _regions(b, s, indicator)
    b1, s1 = b * f1, s * f1
    b2, s3 = b * f2, s * f3
    g = f2 + f3
    a_safe = a * g + (1.0 - g)  # a in the kink regions (there |a| > |b| >= 0), 1 elsewhere
    x = s3 - b2  # the nonzero end value of z in the kink regions: -(-b) on R2, s on R3 (0 elsewhere)
    ln = x / a_safe  # length of the active segment: m on R2, n on R3 (0 elsewhere)
    out_v = out_a = out_b = None
    if value:
        out_v = (b1 * (b1 + s1) + s1 * s1 + (ln * x) * x) * _THIRD
    if grad:
        out_b = (b1 + s1) + ln * (s3 + b2)
        out_a = ((b1 + 2.0 * s1) + ln * (ln * b2 + s3 * (3.0 - ln))) * _THIRD
    return out_v, out_a, out_b


def pair_diag(
    a: Any, b: Any, indicator: Any, *, value: bool = True, grad: bool = False, a_lo: Any = None
) -> tuple[Any, Any, Any]:
    r"""Diagonal pair term :math:`T_1(a, b) = \int_0^1 (\mu - \mathrm{ReLU}(\mu a + b))^2 d\mu` and/or its
    gradient: returns ``(T, dT/da, dT/db)`` with ``None`` for what is not requested.

    Segments (see the module docstring) with :math:`e = 1 - s` evaluated exactly (TwoSum).
    """
    s, t = two_sum(a, b)
    if a_lo is not None:
        t = t + a_lo
        a = a + a_lo
    e = (1.0 - s) - t  # 1 - (a + b): 1 - s is exact where it cancels
    s = s + t
    f1, f2, f3 = _regions(b, s, indicator)
    g = f2 + f3
    a_safe = a * g + (1.0 - g)
    m = -(b * g) / a_safe  # kink position on R2, R3 (0 elsewhere)
    n = (s * g) / a_safe  # 1 - kink position on R2, R3 (0 elsewhere)
    b1, b2 = b * f1, b * f2
    e1, e3 = e * f1, e * f3
    out_v = out_a = out_b = None
    if value:
        # segment [0, m]: R2 on (x = -b, y = m), R3 off (x = 0, y = m); segment [m, 1] (length n, or 1
        # on R0/R1 where m = 0): x = m - b on R1; y = e on R1/R3, 1 on R0/R2
        xa, ya = -b2, m
        ln_b = n + (1.0 - g)
        xb = m - b1
        yb = e1 + e3 + (1.0 - f1 - f3)
        va = m * (xa * xa + xa * ya + ya * ya)
        vb = ln_b * (xb * xb + xb * yb + yb * yb)
        out_v = (va + vb) * _THIRD
    if grad:
        # active segment: R1 (1; l=0, h=1; -b, e), R2 (m; l=0, h=m; -b, m), R3 (n; l=m, h=1; m, e)
        # dT/db = -len (x + y); dT/da = -(len/3) (l (2x + y) + h (x + 2y))
        f2m = m * f2
        out_b = (b1 - e1) + m * (b2 - f2m) - n * (m * f3 + e3)
        out_a = ((b1 - 2.0 * e1) + m * m * (b2 - 2.0 * f2m)
                 - n * (m * (2.0 * m * f3 + e3) + (m * f3 + 2.0 * e3))) * _THIRD
    return out_v, out_a, out_b
