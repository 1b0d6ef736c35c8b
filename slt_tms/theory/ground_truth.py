r"""Ground-truth problems with known learning coefficients, for validating LLC estimators.

Each :class:`GroundTruthProblem` carries an exact population potential :math:`L(w)` (no data, so
estimator tests are cheap and free of data noise), a minimiser :math:`w^*` with :math:`L(w^*) = 0`, and
the closed-form :math:`(\lambda, m)` from :mod:`slt_tms.theory.learning_coefficients`.

How the problems meet the estimator
-----------------------------------
The LLC estimator samples

.. math::

    p_{\mathrm{loc}}(w) \propto \exp\Bigl(-n\beta L(w) - \frac\gamma2 \|w - w^*\|^2\Bigr),
    \qquad \hat\lambda = n\beta\bigl(\mathbb{E}[L(w)] - L(w^*)\bigr),

i.e. it uses a flat prior (the Gaussian localisation is positive and smooth at :math:`w^*`, so it does
not change :math:`\lambda`). As :math:`n\beta \to \infty` (and for the localisation scale fixed),
:math:`\hat\lambda \to \lambda(w^*)`, the *local* learning coefficient at :math:`w^*` with a flat prior,
which is what ``lambda_true`` states. Positive constant factors in :math:`L` do not change
:math:`\lambda` (they rescale :math:`\varepsilon` in :math:`V(\varepsilon)`).

* Prior exponents :math:`h \ne 0` of a normal crossing cannot be passed to an estimator that uses a flat
  prior. :func:`normal_crossing` therefore encodes the prior :math:`\prod_i |w_i|^{h_i}` by the change of
  variables :math:`u_i = \mathrm{sign}(w_i) |w_i|^{h_i + 1}` (then :math:`du_i \propto |w_i|^{h_i} dw_i`),
  which turns :math:`\prod_i w_i^{2k_i}` into :math:`\prod_i |u_i|^{2k_i/(h_i + 1)}` under a flat prior
  on :math:`u`, with exactly the same :math:`(\lambda, m)`. For :math:`h_i > 0` this potential is not
  smooth on the hyperplane :math:`u_i = 0`; use ``h = 0`` problems for gradient-based samplers.
* For reduced-rank regression and deep linear networks the closed forms are the *global* learning
  coefficients (the minimum over the set of true parameters). The anchor ``w_star`` is placed at a
  deepest point of that set, where the local coefficient equals the global one: the rank-:math:`r` true
  map is carried by :math:`r` hidden units in every layer and all other hidden units are exactly zero
  (at a generic point of the true set, with the spare units non-zero but cancelling, the local
  coefficient can be larger).

References
----------
See :mod:`slt_tms.theory.learning_coefficients`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from slt_tms._rng import as_generator
from slt_tms.theory.learning_coefficients import (
    _as_int,
    _as_int_sequence,
    dln_lambda,
    normal_crossing_lambda,
    regular_lambda,
    rrr_lambda,
)

__all__ = [
    "GroundTruthProblem",
    "deep_linear_network",
    "normal_crossing",
    "reduced_rank_regression",
    "regular_quadratic",
    "standard_problems",
]

Potential = Callable[..., Tensor]


@dataclass(frozen=True, eq=False)
class GroundTruthProblem:
    r"""A potential with a known learning coefficient at a known minimiser.

    Parameters
    ----------
    name : str
        Short identifier, e.g. ``"rrr(M=3,N=3,H=2,r=1)"``.
    potential : callable
        ``potential(w, batch=None) -> Tensor`` with ``w`` of shape ``(..., d)`` (any leading axes, e.g.
        chains) returning shape ``(...)``; differentiable; the exact population loss, so ``batch`` is
        accepted for the common potential interface and ignored. Constants follow ``w``'s dtype and
        device.
    w_star : Tensor, shape ``(d,)``
        The anchor, a global minimiser with ``potential(w_star) == 0`` (up to round-off).
    n : int
        Sample size the problem stands for (the estimator's :math:`n\beta = n / \log n` by default).
    lambda_true : float
        The learning coefficient at ``w_star`` (flat prior).
    multiplicity : int
        Its multiplicity (order of the largest pole of the zeta function).
    d : int
        Number of parameters.
    description : str
        The formula of the potential and where :math:`\lambda` comes from.
    config : dict
        The constructor and its arguments (including the seed), enough to rebuild the problem.
    """

    name: str
    potential: Potential = field(repr=False)
    w_star: Tensor = field(repr=False)
    n: int
    lambda_true: float
    multiplicity: int
    d: int
    description: str = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.w_star, Tensor) or tuple(self.w_star.shape) != (self.d,):
            raise ValueError(f"w_star must be a tensor of shape ({self.d},)")
        if self.n < 2:
            raise ValueError(f"n must be an integer >= 2 (beta = 1/log n), got {self.n}")
        # (lambda <= d/2 holds for analytic potentials; the non-smooth normal crossings with a prior
        # exponent h > 0 can exceed it, so only non-negativity is checked.)
        if not (math.isfinite(self.lambda_true) and self.lambda_true >= 0.0):
            raise ValueError(f"lambda_true must be a finite number >= 0, got {self.lambda_true}")
        if self.multiplicity < 1:
            raise ValueError(f"multiplicity must be >= 1, got {self.multiplicity}")


def _check_w(w: Tensor, d: int, name: str) -> None:
    if not isinstance(w, Tensor):
        raise ValueError(f"{name}: w must be a torch.Tensor of shape (..., {d}), got {type(w).__name__}")
    if w.ndim == 0 or w.shape[-1] != d:
        raise ValueError(f"{name}: w must have shape (..., {d}), got {tuple(w.shape)}")


class _QuadraticPotential:
    """``w -> 1/2 sum_i c_i w_i^2`` (a picklable callable, unlike a closure)."""

    def __init__(self, curvatures: Tensor, name: str) -> None:
        self.curvatures = curvatures
        self.d = int(curvatures.numel())
        self.name = name

    def __call__(self, w: Tensor, batch: object = None) -> Tensor:
        _check_w(w, self.d, self.name)
        return 0.5 * (self.curvatures.to(device=w.device, dtype=w.dtype) * w.square()).sum(-1)

    def __repr__(self) -> str:
        return f"<potential {self.name}>"


class _MonomialPotential:
    """``w -> prod_i |w_i|^(2 k_i / (h_i + 1))``, the polynomial ``w_i^(2 k_i)`` where ``h_i = 0``."""

    def __init__(self, d: int, terms: list[tuple[int, int, int]], name: str) -> None:
        self.d = d
        self.terms = terms
        self.name = name

    def __call__(self, w: Tensor, batch: object = None) -> Tensor:
        _check_w(w, self.d, self.name)
        out = torch.ones(w.shape[:-1], dtype=w.dtype, device=w.device)
        for i, ki, hi in self.terms:
            ui = w[..., i]
            out = out * (ui ** (2 * ki) if hi == 0 else ui.abs() ** (2 * ki / (hi + 1)))
        return out

    def __repr__(self) -> str:
        return f"<potential {self.name}>"


def _check_n(n: int) -> int:
    return _as_int("n (sample size)", n, 2)


def _problem(
    name: str,
    potential: Callable[[Tensor], Tensor],
    w_star: Tensor,
    n: int,
    lam_mult: tuple[float, int],
    description: str,
    config: dict[str, Any],
) -> GroundTruthProblem:
    """The :class:`GroundTruthProblem` of a constructor (``d`` is the size of ``w_star``)."""
    lam, mult = lam_mult
    return GroundTruthProblem(
        name=name,
        potential=potential,
        w_star=w_star,
        n=n,
        lambda_true=lam,
        multiplicity=mult,
        d=int(w_star.numel()),
        description=description,
        config=config,
    )


def regular_quadratic(
    d: int, n: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device | None = None
) -> GroundTruthProblem:
    r"""A regular minimum: a positive-definite quadratic with :math:`\lambda = d/2`, :math:`m = 1`.

    .. math::

        L(w) = \frac12 \sum_{i=1}^d c_i w_i^2, \qquad c_i = 1 + \frac{i - 1}{d - 1} \in [1, 2],
        \qquad w^* = 0,

    (fixed curvatures with condition number 2, so a sampler meets unequal scales; :math:`c = (1)` for
    :math:`d = 1`). :math:`\{L < \varepsilon\}` is an ellipsoid with semi-axes
    :math:`\sqrt{2\varepsilon / c_i}`, so :math:`V(\varepsilon) \propto \varepsilon^{d/2}` exactly.

    Parameters
    ----------
    d, n : int
        Number of parameters (>= 1); sample size the problem stands for (>= 2).
    dtype, device
        Of ``w_star``.

    Returns
    -------
    GroundTruthProblem
        With lambda_true = d/2, multiplicity 1.
    """
    d = _as_int("d (number of parameters)", d, 1)
    n = _check_n(n)
    name = f"regular_quadratic(d={d})"
    potential = _QuadraticPotential(torch.linspace(1.0, 2.0, d, dtype=torch.float64), name)  # [1.] if d=1
    lam, mult = regular_lambda(d)
    return _problem(
        name,
        potential,
        torch.zeros(d, dtype=dtype, device=device),
        n,
        (lam, mult),
        f"L(w) = 1/2 sum_i c_i w_i^2, c = linspace(1, 2, {d}); regular minimum, lambda = d/2",
        {"constructor": "regular_quadratic", "d": d, "n": n},
    )


def normal_crossing(
    k: Sequence[int],
    h: Sequence[int] | None,
    n: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> GroundTruthProblem:
    r"""A normal-crossing singularity :math:`K = \prod_i w_i^{2k_i}` with prior :math:`\prod_i |w_i|^{h_i}`.

    The potential, for a flat prior on :math:`u` (see the module notes for the change of variables
    :math:`u_i = \mathrm{sign}(w_i)|w_i|^{h_i+1}` that absorbs the prior), is

    .. math::

        L(u) = \prod_{i:\, k_i > 0} |u_i|^{p_i}, \qquad p_i = \frac{2 k_i}{h_i + 1}, \qquad u^* = 0,

    with :math:`\lambda = \min_i (h_i + 1)/(2k_i)` and :math:`m` the number of minimisers
    (:func:`~slt_tms.theory.learning_coefficients.normal_crossing_lambda`). For :math:`h_i = 0` the
    factor is the polynomial :math:`u_i^{2k_i}` (analytic); for :math:`h_i > 0` it is not smooth at
    :math:`u_i = 0` (and its gradient is unbounded there when :math:`p_i < 1`), so estimator tests should
    use ``h = None``. Coordinates with :math:`k_i = 0` are free directions.

    Parameters
    ----------
    k : sequence of int
        Exponents :math:`k_i \ge 0`, at least one positive.
    h : sequence of int or None
        Prior exponents :math:`h_i \ge 0` (None: flat prior, all zero).
    n : int
        Sample size the problem stands for, >= 2.
    dtype, device
        Of ``w_star``.

    Returns
    -------
    GroundTruthProblem
        With lambda_true = min_i (h_i + 1)/(2 k_i), multiplicity the number of minimisers.
    """
    lam, mult = normal_crossing_lambda(k, h)  # validates k and h
    ks = _as_int_sequence("k", k, 0)
    hs = [0] * len(ks) if h is None else _as_int_sequence("h", h, 0)
    n = _check_n(n)
    d = len(ks)
    name = f"normal_crossing(k={tuple(ks)}, h={tuple(hs)})"
    terms = [(i, ki, hi) for i, (ki, hi) in enumerate(zip(ks, hs, strict=True)) if ki > 0]
    potential = _MonomialPotential(d, terms, name)
    formula = " * ".join(
        f"u{i}^{2 * ki}" if hi == 0 else f"|u{i}|^({2 * ki}/{hi + 1})" for i, ki, hi in terms
    )
    return _problem(
        name,
        potential,
        torch.zeros(d, dtype=dtype, device=device),
        n,
        (lam, mult),
        (
            f"L(u) = {formula}; normal crossing K = prod w_i^(2 k_i) with prior prod |w_i|^h_i written in "
            "flat-prior coordinates u_i = sign(w_i)|w_i|^(h_i+1); lambda = min (h_i+1)/(2 k_i)"
        ),
        {"constructor": "normal_crossing", "k": ks, "h": hs, "n": n},
    )


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """A (rows, cols) matrix with orthonormal columns (QR of a Gaussian, signs fixed), float64 CPU."""
    q, rr = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    signs = torch.sign(torch.diagonal(rr))
    signs[signs == 0] = 1.0
    return q * signs


def _dln_anchor(widths: list[int], rank: int, seed: int) -> tuple[list[Tensor], Tensor]:
    r"""Deepest-point anchor layers (float64, CPU) and the true product :math:`U \mathrm{diag}(s) V^\top`.

    Singular values :math:`s = \mathrm{linspace}(1, 2, r)` are split evenly over the :math:`L` layers
    (:math:`s^{1/L}` per layer); the rank-:math:`r` map uses the first :math:`r` units of every hidden
    layer and every other hidden unit is zero.
    """
    gen = as_generator(seed)
    num_layers = len(widths) - 1
    u = _orthonormal(widths[-1], rank, gen) if rank > 0 else torch.zeros(widths[-1], 0, dtype=torch.float64)
    v = _orthonormal(widths[0], rank, gen) if rank > 0 else torch.zeros(widths[0], 0, dtype=torch.float64)
    s = torch.linspace(1.0, 2.0, rank, dtype=torch.float64)  # [1.0] for rank 1, empty for rank 0
    target = u @ torch.diag(s) @ v.T
    if num_layers == 1:
        return [target.clone()], target
    root = torch.diag(s ** (1.0 / num_layers))
    layers = []
    for idx in range(num_layers):
        out_w, in_w = widths[idx + 1], widths[idx]
        layer = torch.zeros(out_w, in_w, dtype=torch.float64)
        if idx == 0:
            layer[:rank, :] = root @ v.T
        elif idx == num_layers - 1:
            layer[:, :rank] = u @ root
        else:
            layer[:rank, :rank] = root
        layers.append(layer)
    return layers, target


class _ProductPotential:
    """``w -> || W_L ... W_1 - target ||_F^2`` over flat ``w = concat(vec(W_1), ..., vec(W_L))``."""

    def __init__(self, widths: list[int], target: Tensor, name: str) -> None:
        self.shapes = [(widths[i + 1], widths[i]) for i in range(len(widths) - 1)]
        self.sizes = [a * b for a, b in self.shapes]
        self.d = sum(self.sizes)
        self.target = target
        self.name = name

    def __call__(self, w: Tensor, batch: object = None) -> Tensor:
        _check_w(w, self.d, self.name)
        lead = w.shape[:-1]
        product: Tensor | None = None
        offset = 0
        for (out_w, in_w), size in zip(self.shapes, self.sizes, strict=True):
            layer = w[..., offset : offset + size].reshape(*lead, out_w, in_w)
            offset += size
            product = layer if product is None else layer @ product
        assert product is not None
        return (product - self.target.to(device=w.device, dtype=w.dtype)).square().sum((-2, -1))

    def __repr__(self) -> str:
        return f"<potential {self.name}>"


def _flatten_layers(layers: list[Tensor], dtype: torch.dtype, device: str | torch.device | None) -> Tensor:
    return torch.cat([layer.reshape(-1) for layer in layers]).to(dtype=dtype, device=device)


def _product_problem(
    name: str,
    widths: list[int],
    rank: int,
    n_seed: tuple[int, int],
    lam_mult: tuple[float, int],
    description: str,
    config: dict[str, Any],
    dtype: torch.dtype,
    device: str | torch.device | None,
) -> GroundTruthProblem:
    """A linear-network problem (reduced-rank regression, deep linear network) at its balanced anchor;
    ``config`` gets the validated ``n`` and ``seed``."""
    n, seed = _check_n(n_seed[0]), _as_int("seed", n_seed[1], 0)
    layers, target = _dln_anchor(widths, rank, seed)
    w_star = _flatten_layers(layers, dtype, device)
    potential = _ProductPotential(widths, target, name)
    return _problem(name, potential, w_star, n, lam_mult, description, {**config, "n": n, "seed": seed})


def reduced_rank_regression(
    M: int,
    N: int,
    H: int,
    r: int,
    n: int,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> GroundTruthProblem:
    r"""Reduced-rank regression with its exact population loss (Aoyagi & Watanabe 2005).

    Model :math:`y = BAx + \xi`, :math:`A \in \mathbb{R}^{H\times M}`, :math:`B \in \mathbb{R}^{N\times H}`,
    :math:`x \sim \mathcal N(0, I_M)`; the true map :math:`C_0 = U\,\mathrm{diag}(s)\,V^\top` has rank
    :math:`r` (random orthonormal :math:`U, V` from ``seed``, singular values
    :math:`s = \mathrm{linspace}(1, 2, r)`). The potential is the excess population squared error

    .. math::

        L(A, B) = \mathbb{E}_x \|(BA - C_0)x\|^2 = \|BA - C_0\|_F^2,

    (the noise variance is a constant and dropped), on ``w = concat(A.reshape(-1), B.reshape(-1))``
    (row-major, :math:`d = H(M + N)`; the same layout as :func:`deep_linear_network` with widths
    ``(M, H, N)``). The anchor is :math:`A^* = [\mathrm{diag}(\sqrt s) V^\top; 0]`,
    :math:`B^* = [U \mathrm{diag}(\sqrt s), 0]`: the :math:`H - r` spare hidden units are zero, a deepest
    point of the true set, so the local coefficient there equals the closed form
    :func:`~slt_tms.theory.learning_coefficients.rrr_lambda`.

    Parameters
    ----------
    M, N, H : int
        Input dimension, output dimension, hidden units (>= 1).
    r : int
        True rank, ``0 <= r <= min(M, N, H)``.
    n, seed : int
        Sample size the problem stands for (>= 2); seed of the random singular vectors.
    dtype, device
        Of ``w_star``.

    Returns
    -------
    GroundTruthProblem
        With the anchor :math:`(A^*, B^*)` and :math:`\lambda` of Aoyagi & Watanabe (2005).

    Examples
    --------
    >>> p = reduced_rank_regression(3, 3, 2, 1, n=10_000, seed=0)
    >>> p.d, p.lambda_true, p.multiplicity
    (12, 3.5, 2)
    >>> float(p.potential(p.w_star))
    0.0
    >>> p.potential(torch.zeros(4, 7, p.d)).shape   # chains on the leading axes
    torch.Size([4, 7])
    """
    lam, mult = rrr_lambda(M, N, H, r)  # validates M, N, H, r
    widths = [int(M), int(H), int(N)]
    return _product_problem(
        f"rrr(M={M},N={N},H={H},r={r})",
        widths,
        int(r),
        (n, seed),
        (lam, mult),
        f"L(A, B) = ||B A - C0||_F^2, A: {H}x{M}, B: {N}x{H}, rank(C0) = {r}; "
        "lambda from Aoyagi & Watanabe (2005)",
        {"constructor": "reduced_rank_regression", "M": M, "N": N, "H": H, "r": r},
        dtype,
        device,
    )


def deep_linear_network(
    widths: Sequence[int],
    rank: int,
    n: int,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> GroundTruthProblem:
    r"""A deep linear network with its exact population loss (Aoyagi 2024).

    Layers :math:`W_s \in \mathbb{R}^{H_{s+1} \times H_s}` for widths :math:`(H_1, \dots, H_{L+1})`,
    :math:`x \sim \mathcal N(0, I)`, true map :math:`C_0 = U\,\mathrm{diag}(s)\,V^\top` of rank ``rank``
    (random orthonormal :math:`U, V` from ``seed``, :math:`s = \mathrm{linspace}(1, 2, r)`):

    .. math::

        L(W_1, \dots, W_L) = \mathbb{E}_x \|(W_L \cdots W_1 - C_0) x\|^2 = \|W_L \cdots W_1 - C_0\|_F^2

    on ``w = concat(W_1.reshape(-1), ..., W_L.reshape(-1))`` (row-major), :math:`d = \sum_s H_s H_{s+1}`.
    The anchor splits :math:`\mathrm{diag}(s)` evenly over the layers (:math:`s^{1/L}` each), routes the
    rank-:math:`r` map through the first :math:`r` units of every hidden layer and sets all other hidden
    units to zero (a deepest point of the true set; see the module notes). ``lambda_true`` is
    :func:`~slt_tms.theory.learning_coefficients.dln_lambda`.

    Parameters
    ----------
    widths : sequence of int
        :math:`(H_1, \dots, H_{L+1})`, input first, at least two entries.
    rank, n, seed : int
        True rank (``0 <= rank <= min(widths)``), sample size the problem stands for (>= 2) and seed of
        the random singular vectors.
    dtype, device
        Of ``w_star``.

    Returns
    -------
    GroundTruthProblem
        With the balanced anchor and :math:`\lambda` of Aoyagi (2024).
    """
    lam, mult = dln_lambda(widths, rank)  # validates widths and rank
    ws = _as_int_sequence("widths", widths, 1)
    rank = _as_int("rank", rank, 0)
    return _product_problem(
        f"dln(widths={tuple(ws)},r={rank})",
        ws,
        rank,
        (n, seed),
        (lam, mult),
        f"L(W) = ||W_L ... W_1 - C0||_F^2, widths {tuple(ws)}, rank(C0) = {rank}; lambda from Aoyagi (2024)",
        {"constructor": "deep_linear_network", "widths": ws, "rank": rank},
        dtype,
        device,
    )


def standard_problems(
    n: int = 10_000,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> list[GroundTruthProblem]:
    r"""A small validation suite covering every closed form (for estimator tests).

    ==============================  ========  ====  ===  =====================================
    problem                         lambda    m     d    why
    ==============================  ========  ====  ===  =====================================
    regular_quadratic(d=4)          2         1     4    regular
    normal_crossing(k=(1, 2))       1/4       1     2    monomial, one minimiser
    normal_crossing(k=(1, 1))       1/2       2     2    monomial, tied minimisers
    rrr(M=3,N=3,H=2,r=1)            7/2       2     12   Aoyagi--Watanabe case 1 (odd)
    rrr(M=2,N=5,H=2,r=1)            7/2       1     14   case 2 (M + H < N + r)
    rrr(M=5,N=2,H=2,r=1)            7/2       1     14   case 3 (N + H < M + r)
    rrr(M=2,N=2,H=5,r=1)            2         1     20   case 4 (M + N < H + r)
    dln(widths=(3,2,2,3),r=1)       3         1     16   Aoyagi 2024, three layers
    ==============================  ========  ====  ===  =====================================

    (The values are recomputed from the closed forms, not hard-coded; the table is for reading.)

    Parameters
    ----------
    n : int
        Sample size given to every problem.
    seed : int
        Seed of the random true matrices.
    dtype, device
        Of the anchors.

    Returns
    -------
    list of GroundTruthProblem
    """
    kw: dict[str, Any] = {"dtype": dtype, "device": device}
    return [
        regular_quadratic(4, n, **kw),
        normal_crossing((1, 2), None, n, **kw),
        normal_crossing((1, 1), None, n, **kw),
        reduced_rank_regression(3, 3, 2, 1, n, seed, **kw),
        reduced_rank_regression(2, 5, 2, 1, n, seed, **kw),
        reduced_rank_regression(5, 2, 2, 1, n, seed, **kw),
        reduced_rank_regression(2, 2, 5, 1, n, seed, **kw),
        deep_linear_network((3, 2, 2, 3), 1, n, seed, **kw),
    ]
