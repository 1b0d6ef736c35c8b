r"""Closed-form learning coefficients: ground truths for validating estimators.

The (local) learning coefficient :math:`\lambda` and its multiplicity :math:`m` describe how the volume
of near-optimal parameters shrinks:

.. math::

    V(\varepsilon) = \mathrm{vol}\{w : K(w) < \varepsilon\} \sim C\, \varepsilon^{\lambda}
    (-\log \varepsilon)^{m - 1}, \qquad \varepsilon \to 0.

Equivalently :math:`\lambda` is the real log canonical threshold (RLCT) of :math:`K` with respect to the
prior, and :math:`m` its order: the largest pole of :math:`\zeta(z) = \int K(w)^z \varphi(w)\, dw` is at
:math:`z = -\lambda` with order :math:`m`.

This module collects the cases where :math:`(\lambda, m)` is known in closed form:

* :func:`regular_lambda` -- a regular (non-degenerate) minimum, :math:`\lambda = d/2`.
* :func:`normal_crossing_lambda` -- a monomial :math:`K = \prod_i w_i^{2k_i}` with monomial prior.
* :func:`rrr_lambda` -- reduced-rank regression (Aoyagi & Watanabe 2005), all four cases.
* :func:`dln_lambda` -- deep linear networks (Aoyagi 2024).
* :func:`minimally_singular_lambda` -- :math:`\mathrm{rank}(\nabla^2 K)/2` with the rank decided by an
  eigenvalue gap (for Morse--Bott / minimally singular points).

All closed forms are computed in exact rational arithmetic (:class:`fractions.Fraction`) and returned as
floats together with their multiplicity.

References
----------
.. [AW05] M. Aoyagi and S. Watanabe, "Stochastic complexities of reduced rank regression in Bayesian
   estimation", Neural Networks 18(7):924--933, 2005.
.. [A24] M. Aoyagi, "Consideration on the learning efficiency of multiple-layered neural networks with
   linear units", Neural Networks 172:106132, 2024.
.. [W09] S. Watanabe, "Algebraic Geometry and Statistical Learning Theory", Cambridge University Press,
   2009 (normal crossings, regular models).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

__all__ = [
    "LearningCoefficient",
    "MinimallySingularLambda",
    "dln_lambda",
    "minimally_singular_lambda",
    "normal_crossing_lambda",
    "regular_lambda",
    "rrr_case",
    "rrr_lambda",
]


class LearningCoefficient(NamedTuple):
    """A learning coefficient and its multiplicity; unpacks as ``lam, m = ...``.

    Attributes
    ----------
    value : float
        The learning coefficient :math:`\\lambda` (an exact rational, converted to float).
    multiplicity : int
        The order :math:`m \\ge 1` of the largest pole of the zeta function.
    """

    value: float
    multiplicity: int


class MinimallySingularLambda(NamedTuple):
    """Result of :func:`minimally_singular_lambda`; unpacks as ``lam, rank, gap = ...``.

    Attributes
    ----------
    value : float
        :math:`\\lambda = \\mathrm{rank}/2`.
    rank : int
        The numerical rank of the Hessian decided by the eigenvalue gap.
    gap : float
        The deciding relative gap :math:`|\\mu_{(k)}| / |\\mu_{(k+1)}|` (ratio of consecutive sorted
        absolute eigenvalues, the one below the smallest kept eigenvalue; see the function).
    """

    value: float
    rank: int
    gap: float


def _as_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as a Python int >= ``minimum`` or raise a ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got the boolean {value!r}")
    try:
        v = operator.index(value)  # accepts int and numpy integers, rejects floats
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}")
    return int(v)


def _as_int_sequence(name: str, values: object, minimum: int) -> list[int]:
    """Return ``values`` as a non-empty list of ints >= ``minimum``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a sequence of integers >= {minimum}, got {values!r}")
    out = [_as_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(values)]
    if not out:
        raise ValueError(f"{name} must contain at least one entry")
    return out


def regular_lambda(d: int) -> LearningCoefficient:
    r"""Learning coefficient of a regular (non-degenerate) minimum in :math:`d` dimensions.

    If :math:`K(w) = \tfrac12 (w - w^*)^\top H (w - w^*) + O(\|w - w^*\|^3)` with :math:`H \succ 0`,
    then :math:`\{K < \varepsilon\}` is (to leading order) an ellipsoid with semi-axes
    :math:`\propto \sqrt{\varepsilon}`, so

    .. math::

        V(\varepsilon) \propto \varepsilon^{d/2}, \qquad \lambda = \frac d2, \quad m = 1.

    Parameters
    ----------
    d : int
        Number of parameters, ``d >= 1``.

    Returns
    -------
    LearningCoefficient
        ``(d / 2, 1)``.

    Raises
    ------
    ValueError
        If ``d`` is not an integer >= 1.

    Examples
    --------
    >>> regular_lambda(6)
    LearningCoefficient(value=3.0, multiplicity=1)
    """
    d = _as_int("d (number of parameters)", d, 1)
    return LearningCoefficient(float(Fraction(d, 2)), 1)


def normal_crossing_lambda(k: Sequence[int], h: Sequence[int] | None = None) -> LearningCoefficient:
    r"""Learning coefficient of a normal-crossing (monomial) singularity with a monomial prior.

    For :math:`K(w) = \prod_{i=1}^d w_i^{2k_i}` and prior :math:`\varphi(w) \propto \prod_i |w_i|^{h_i}`
    near :math:`w = 0` (Watanabe 2009, §2.4; the zeta function factorises into one-dimensional integrals
    :math:`\int_0^1 w^{2 k_i z + h_i} dw = 1/(2 k_i z + h_i + 1)`),

    .. math::

        \lambda = \min_{i:\, k_i > 0} \frac{h_i + 1}{2 k_i}, \qquad
        m = \#\Bigl\{ i : k_i > 0,\ \frac{h_i + 1}{2 k_i} = \lambda \Bigr\}.

    Coordinates with :math:`k_i = 0` do not enter :math:`K` (free directions) and do not contribute.

    Parameters
    ----------
    k : sequence of int
        Exponents :math:`k_i \ge 0`, at least one positive.
    h : sequence of int, optional
        Prior exponents :math:`h_i \ge 0`, same length as ``k``; default all zero (flat prior).

    Returns
    -------
    LearningCoefficient
        The minimum over the coordinates and how many attain it.

    Raises
    ------
    ValueError
        On negative or non-integer exponents, mismatched lengths, or all :math:`k_i = 0`.

    Examples
    --------
    >>> normal_crossing_lambda([1, 2])          # K = w1^2 w2^4: min(1/2, 1/4)
    LearningCoefficient(value=0.25, multiplicity=1)
    >>> normal_crossing_lambda([1, 1], [0, 0])  # K = w1^2 w2^2: two tied coordinates
    LearningCoefficient(value=0.5, multiplicity=2)
    """
    ks = _as_int_sequence("k", k, 0)
    hs = [0] * len(ks) if h is None else _as_int_sequence("h", h, 0)
    if len(hs) != len(ks):
        raise ValueError(f"h must have the same length as k ({len(ks)}), got {len(hs)}")
    if all(ki == 0 for ki in ks):
        raise ValueError("at least one exponent k_i must be positive (K = 1 has no zero set)")
    ratios = [Fraction(hi + 1, 2 * ki) for ki, hi in zip(ks, hs, strict=True) if ki > 0]
    lam = min(ratios)
    return LearningCoefficient(float(lam), sum(1 for q in ratios if q == lam))


def _validate_rrr(M: int, N: int, H: int, r: int) -> tuple[int, int, int, int]:
    M = _as_int("M (input dimension)", M, 1)
    N = _as_int("N (output dimension)", N, 1)
    H = _as_int("H (number of hidden units)", H, 1)
    r = _as_int("r (true rank)", r, 0)
    if r > min(M, N, H):
        raise ValueError(
            f"the true rank r must satisfy 0 <= r <= min(M, N, H) = {min(M, N, H)} "
            f"(a rank-{r} matrix cannot pass through the model), got r = {r}"
        )
    return M, N, H, r


def rrr_case(M: int, N: int, H: int, r: int) -> int:
    r"""Which of the four cases of the Aoyagi--Watanabe (2005) theorem applies.

    Case 2: :math:`M + H < N + r`; case 3: :math:`N + H < M + r`; case 4: :math:`M + N < H + r`;
    case 1 otherwise (i.e. :math:`N + r \le M + H`, :math:`M + r \le N + H`, :math:`H + r \le M + N`).
    Cases 2, 3, 4 are mutually exclusive because :math:`r \le \min(M, N, H)`.

    Parameters
    ----------
    M, N, H, r : int
        Input dimension, output dimension, hidden units, true rank (see :func:`rrr_lambda`).

    Returns
    -------
    int
        1, 2, 3 or 4.
    """
    M, N, H, r = _validate_rrr(M, N, H, r)
    if M + H < N + r:
        return 2
    if N + H < M + r:
        return 3
    if M + N < H + r:
        return 4
    return 1


def rrr_lambda(M: int, N: int, H: int, r: int) -> LearningCoefficient:
    r"""Learning coefficient of reduced-rank regression (Aoyagi & Watanabe 2005, main theorem).

    The model is :math:`y = B A x + \text{noise}` with :math:`A \in \mathbb{R}^{H \times M}`,
    :math:`B \in \mathbb{R}^{N \times H}` (input dimension :math:`M`, output dimension :math:`N`,
    :math:`H` hidden units, :math:`d = H(M + N)` parameters) and the true map :math:`B_0 A_0` has rank
    :math:`r`, so :math:`K(A, B) \propto \|BA - B_0 A_0\|_F^2` for isotropic inputs. With a prior that is
    positive and bounded at the true parameters, [AW05]_ prove:

    1. If :math:`N + r \le M + H`, :math:`M + r \le N + H` and :math:`H + r \le M + N`:

       .. math::

           \lambda = \frac{2(H + r)(M + N) - (M - N)^2 - (H + r)^2}{8}, \; m = 1
           \quad (M + N + H + r \text{ even}),

           \lambda = \frac{2(H + r)(M + N) - (M - N)^2 - (H + r)^2 + 1}{8}, \; m = 2
           \quad (M + N + H + r \text{ odd}).

    2. If :math:`M + H < N + r`: :math:`\lambda = \tfrac12 (HM - Hr + Nr)`, :math:`m = 1`.
    3. If :math:`N + H < M + r`: :math:`\lambda = \tfrac12 (HN - Hr + Mr)`, :math:`m = 1`.
    4. If :math:`M + N < H + r`: :math:`\lambda = \tfrac12 MN`, :math:`m = 1`.

    :math:`\lambda` is symmetric in :math:`(M, N)`. With :math:`H = r` it reduces to half the dimension
    :math:`r(M + N - r)` of the manifold of rank-:math:`r` matrices; with one hidden layer it equals
    :func:`dln_lambda` for widths ``(M, H, N)``.

    Parameters
    ----------
    M : int
        Input dimension, ``M >= 1``.
    N : int
        Output dimension, ``N >= 1``.
    H : int
        Number of hidden units (the rank bound of the model), ``H >= 1``.
    r : int
        Rank of the true matrix, ``0 <= r <= min(M, N, H)``.

    Returns
    -------
    LearningCoefficient
        :math:`\lambda` and :math:`m` of the case of the theorem that applies.

    Raises
    ------
    ValueError
        On non-integer or out-of-range arguments.

    References
    ----------
    .. [AW05] M. Aoyagi and S. Watanabe, Neural Networks 18(7):924--933, 2005, main theorem.

    Examples
    --------
    >>> rrr_lambda(1, 1, 1, 0)   # K = (ab)^2
    LearningCoefficient(value=0.5, multiplicity=2)
    >>> rrr_lambda(2, 2, 5, 1)   # case 4: M + N < H + r
    LearningCoefficient(value=2.0, multiplicity=1)
    """
    M, N, H, r = _validate_rrr(M, N, H, r)
    case = rrr_case(M, N, H, r)
    if case == 2:
        return LearningCoefficient(float(Fraction(H * M - H * r + N * r, 2)), 1)
    if case == 3:
        return LearningCoefficient(float(Fraction(H * N - H * r + M * r, 2)), 1)
    if case == 4:
        return LearningCoefficient(float(Fraction(M * N, 2)), 1)
    numerator = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    if (M + N + H + r) % 2 == 0:
        return LearningCoefficient(float(Fraction(numerator, 8)), 1)
    return LearningCoefficient(float(Fraction(numerator + 1, 8)), 2)


def _dln_exact(widths: list[int], rank: int) -> tuple[Fraction, int, list[int]]:
    """Exact (lambda, multiplicity, selected sorted deficiencies) of Aoyagi's DLN theorem."""
    deficiencies = sorted(w - rank for w in widths)
    # The selected set is a prefix of the sorted deficiencies of size k = l + 1 >= 2 such that
    #   (A_k)  sum_{i<k} D_i >= (k - 1) * D_{k-1}   and   (B_k)  sum_{i<k} D_i < (k - 1) * D_k.
    # A_2 always holds, A_{k+1} <=> not B_k, and A_k => A_{k-1}; hence the unique valid prefix is the
    # largest k with A_k. B_k together with A_k forces D_{k-1} < D_k (the strict separation condition).
    k = 2
    while k < len(deficiencies) and sum(deficiencies[: k + 1]) >= k * deficiencies[k]:
        k += 1
    selected = deficiencies[:k]
    ell = k - 1
    total = sum(selected)
    a = total - (math.ceil(Fraction(total, ell)) - 1) * ell  # 1 <= a <= ell
    pairs = sum(selected[i] * selected[j] for i in range(k) for j in range(i + 1, k))
    lam = (
        Fraction(-(rank**2) + rank * (widths[0] + widths[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(pairs, 2)
    )
    return lam, a * (ell - a) + 1, selected


def dln_lambda(widths: Sequence[int], rank: int) -> LearningCoefficient:
    r"""Learning coefficient of a deep linear network (Aoyagi 2024, main theorem).

    The network :math:`f(x) = W_L \cdots W_1 x` has layer widths :math:`H_1, \dots, H_{L+1}`
    (``widths[0]`` is the input dimension, ``widths[-1]`` the output dimension,
    :math:`W_s \in \mathbb{R}^{H_{s+1} \times H_s}`) and the true product has rank :math:`r`.
    Let :math:`\Delta_s = H_s - r \ge 0`. There is a unique set :math:`\Sigma` of
    :math:`\ell + 1 \ge 2` indices such that

    .. math::

        \max_{\sigma \in \Sigma} \Delta_\sigma < \min_{k \notin \Sigma} \Delta_k, \quad
        \sum_{\sigma \in \Sigma} \Delta_\sigma \ge \ell \max_{\sigma \in \Sigma} \Delta_\sigma, \quad
        \sum_{\sigma \in \Sigma} \Delta_\sigma < \ell \min_{k \notin \Sigma} \Delta_k

    (the last two only when the index sets are non-empty). With
    :math:`S = \sum_{\sigma\in\Sigma} \Delta_\sigma` and
    :math:`a = S - (\lceil S / \ell \rceil - 1)\ell \in \{1, \dots, \ell\}`, [A24]_ proves

    .. math::

        \lambda = \frac{-r^2 + r(H_1 + H_{L+1})}{2} + \frac{a(\ell - a)}{4\ell}
        - \frac{\ell(\ell - 1)}{4} \Bigl(\frac{S}{\ell}\Bigr)^2
        + \frac12 \sum_{\sigma < \sigma' \in \Sigma} \Delta_\sigma \Delta_{\sigma'},
        \qquad m = a(\ell - a) + 1.

    :math:`\Sigma` consists of the :math:`\ell + 1` smallest deficiencies; it is found as the longest
    prefix of the sorted :math:`\Delta` satisfying the second condition (the conditions then hold
    automatically).

    Notes
    -----
    Consistency checks (tested): for one hidden layer, ``dln_lambda((M, H, N), r)`` equals
    :func:`rrr_lambda` ``(M, N, H, r)`` including the multiplicity; for width-1 layers and
    :math:`r = 0`, :math:`K = (w_1 \cdots w_L)^2` is a normal crossing with :math:`\lambda = 1/2`,
    :math:`m = L`, which the formula reproduces; a single layer gives the regular value
    :math:`H_1 H_2 / 2`. The multiplicity :math:`m = a(\ell - a) + 1` is the pole order stated with
    the theorem; it agrees with both checks above, but for :math:`\ell \ge 3` it has not been
    re-derived here.

    Parameters
    ----------
    widths : sequence of int
        Layer widths :math:`(H_1, \dots, H_{L+1})`, at least two entries, each >= 1.
    rank : int
        True rank :math:`r`, ``0 <= rank <= min(widths)``.

    Returns
    -------
    LearningCoefficient
        :math:`\lambda` and :math:`m` from the index set :math:`\Sigma` above.

    Raises
    ------
    ValueError
        On fewer than two widths, non-positive widths, or a rank outside ``[0, min(widths)]``.

    References
    ----------
    .. [A24] M. Aoyagi, Neural Networks 172:106132, 2024, main theorem.

    Examples
    --------
    >>> dln_lambda([1, 1, 1, 1], 0)   # K = (w1 w2 w3)^2
    LearningCoefficient(value=0.5, multiplicity=3)
    >>> dln_lambda([3, 2, 4], 1) == rrr_lambda(3, 4, 2, 1)
    True
    """
    ws = _as_int_sequence("widths", widths, 1)
    if len(ws) < 2:
        raise ValueError(
            f"widths must list at least two layer widths (input, ..., output), got {len(ws)}"
        )
    rank = _as_int("rank (true rank)", rank, 0)
    if rank > min(ws):
        raise ValueError(
            f"rank must satisfy 0 <= rank <= min(widths) = {min(ws)} (a product through a width-"
            f"{min(ws)} layer has at most that rank), got {rank}"
        )
    lam, mult, _ = _dln_exact(ws, rank)
    return LearningCoefficient(float(lam), mult)


def minimally_singular_lambda(
    hessian_eigenvalues: Sequence[float] | np.ndarray,
    rel_gap: float = 1e3,
    floor: float = 1e-12,
) -> MinimallySingularLambda:
    r"""Learning coefficient of a minimally singular point, :math:`\lambda = \mathrm{rank}(H)/2`.

    At a minimally singular (Morse--Bott) minimum the set of minima is locally a smooth manifold of
    dimension :math:`d - \mathrm{rank}(H)` and :math:`K` is non-degenerate transverse to it, so
    :math:`V(\varepsilon) \propto \varepsilon^{\mathrm{rank}(H)/2}` and :math:`m = 1`. Whether a point
    is minimally singular is the caller's claim; this function only decides the numerical rank.

    The rank is decided by the largest relative gap in the spectrum. Let
    :math:`\mu_1 \ge \dots \ge \mu_d` be the sorted absolute eigenvalues, clamped below at
    :math:`f \mu_1` (``floor``), and append the sentinel :math:`\mu_{d+1} = f \mu_1` (so that "full rank"
    is a candidate). The candidate gaps are :math:`g_k = \mu_k / \mu_{k+1}`, :math:`k = 1, \dots, d`;
    the rank is the :math:`k` of the largest gap. The gap is *clear* when

    .. math::

        g_k \ge \texttt{rel\_gap} \quad \text{and} \quad
        g_j \le g_k / \texttt{rel\_gap} \ \text{ for all } j \ne k,

    i.e. the deciding gap is large and dominates every other gap by the same factor; otherwise the rank
    is ambiguous and a ValueError is raised.

    Parameters
    ----------
    hessian_eigenvalues : array_like, shape ``(d,)``
        Eigenvalues of the Hessian of the loss at the point (absolute values are used; :math:`\lambda`
        is only meaningful at a local minimum, where the non-zero eigenvalues are positive).
    rel_gap : float, default 1e3
        Minimum size and dominance factor of the deciding gap, ``> 1``.
    floor : float, default 1e-12
        Relative noise floor: eigenvalues below ``floor * max|eigenvalue|`` count as numerical zeros
        (float64 Hessians carry round-off of order 1e-14 relative).

    Returns
    -------
    MinimallySingularLambda
        ``(rank / 2, rank, gap)``.

    Raises
    ------
    ValueError
        On an empty or non-finite spectrum, an all-zero spectrum, bad ``rel_gap``/``floor``, or when no
        clear gap exists (the message quotes the two largest gaps).

    Examples
    --------
    >>> minimally_singular_lambda([2.0, 1.0, 3e-15, -1e-15])
    MinimallySingularLambda(value=1.0, rank=2, gap=500000000000.0)
    """
    mu = np.abs(np.asarray(hessian_eigenvalues, dtype=float).reshape(-1))
    if mu.size == 0:
        raise ValueError("hessian_eigenvalues is empty; pass the d eigenvalues of the Hessian")
    if not np.all(np.isfinite(mu)):
        raise ValueError("hessian_eigenvalues contains NaN or inf; check the Hessian computation")
    if not (isinstance(rel_gap, (int, float)) and rel_gap > 1):
        raise ValueError(f"rel_gap must be a number > 1, got {rel_gap!r}")
    if not (isinstance(floor, (int, float)) and 0 < floor < 1):
        raise ValueError(f"floor must be a number in (0, 1), got {floor!r}")
    top = float(mu.max())
    if top == 0.0:
        raise ValueError(
            "all Hessian eigenvalues are zero: the rank cannot be decided from the spectrum "
            "(the point is not minimally singular, or the Hessian was not computed)"
        )
    sorted_mu = np.maximum(np.sort(mu)[::-1], floor * top)
    extended = np.append(sorted_mu, floor * top)
    gaps = extended[:-1] / extended[1:]
    k = int(np.argmax(gaps))
    best = float(gaps[k])
    others = np.delete(gaps, k)
    runner_up = float(others.max()) if others.size else 1.0
    if best < rel_gap or runner_up > best / rel_gap:
        raise ValueError(
            f"no clear eigenvalue gap: the largest relative gap is {best:.3g} (rank {k + 1}) and the next "
            f"largest is {runner_up:.3g}; need the largest >= rel_gap = {rel_gap:g} and dominating the "
            "others by that factor. Compute the Hessian more accurately, or pass a smaller rel_gap / a "
            "larger floor if you know the noise level."
        )
    rank = k + 1
    return MinimallySingularLambda(rank / 2, rank, best)
