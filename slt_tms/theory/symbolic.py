r"""The closed-form population loss of the TMS, derived with sympy.

For one-hot uniform inputs (:math:`x = \mu e_j`, :math:`j \sim U\{1..c\}`, :math:`\mu \sim U[0,1]`) and
ReLU, the population loss of :math:`w = (W, b)` is

.. math::

    L(W, b) = \frac1c \sum_{j=1}^c \sum_{i=1}^c \int_0^1
        \bigl(\delta_{ij}\,\mu - \mathrm{ReLU}(\mu\, a_{ij} + b_i)\bigr)^2 \, d\mu,
    \qquad a_{ij} = W_i \cdot W_j,

(input :math:`j`, output :math:`i`). Every summand is one of two *pair terms*

.. math::

    T_\delta(a, b) = \int_0^1 \bigl(\delta\,\mu - \mathrm{ReLU}(\mu a + b)\bigr)^2 d\mu,
    \qquad \delta \in \{1, 0\},

the diagonal (:math:`\delta = 1`, :math:`i = j`) and off-diagonal (:math:`\delta = 0`) one.

Derivation
----------
:math:`z(\mu) = \mu a + b` is affine, so its sign on :math:`[0, 1]` is fixed by the signs of
:math:`z(0) = b` and :math:`z(1) = a + b`. Four regions of the :math:`(a, b)` plane follow:

* :math:`b \le 0,\ a + b \le 0`: the ReLU is off on all of :math:`[0,1]`;
* :math:`b \ge 0,\ a + b \ge 0`: the ReLU is on on all of :math:`[0,1]`;
* :math:`b > 0,\ a + b < 0`: on for :math:`\mu < \mu_0`, off after, with the kink
  :math:`\mu_0 = -b/a \in (0, 1)` (the root of :math:`z`, solved by sympy);
* :math:`b < 0,\ a + b > 0`: off before :math:`\mu_0`, on after.

In each region the integral is split at :math:`\mu_0` (where there is a kink), the ReLU is replaced by
:math:`z` or :math:`0` on each sub-interval, and sympy integrates the resulting polynomials. The
result is a ``Piecewise`` in :math:`(a, b)`: polynomial in the first two regions, rational (with
:math:`a` in the denominator, but :math:`|a| > |b| \ge 0` there) in the kink regions.
:func:`pair_term_derivation` returns every step, :func:`pair_terms` the two ``Piecewise`` results,
:func:`loss_expression` the assembled :math:`L(W, b)` for any :math:`c, r`.

Evaluators
----------
:func:`population_loss` and :func:`population_loss_flat` accept numpy arrays or torch tensors with
leading batch axes; the torch version is differentiable to any order. They do not evaluate the
``Piecewise`` polynomials and rational functions above: those cancel catastrophically for large
inputs near a kink (e.g. :math:`T_1(10^8, 1 - 10^8)`, whose terms are of order :math:`10^{16}`) and
near :math:`T = 0`. Instead ``_stable`` integrates the square of the piecewise-linear integrand
segment by segment, :math:`\int_l^h g^2 = \tfrac{h - l}{3}(x^2 + xy + y^2)` with the end values
:math:`x, y` and the lengths formed without cancellation (:math:`\mu_0 = -b/a`,
:math:`1 - \mu_0 = (a + b)/a`, :math:`1 - a - b` by TwoSum), with the same region tests as the
``Piecewise`` (so the same one-sided derivatives on boundaries); derivatives are the corresponding
segment integrals of :math:`g` and :math:`\mu g`, and higher ones torch autograd of those. Points
whose loss is small compared with the rounding of their Gram matrix are re-evaluated with a
compensated (twice-the-precision) Gram matrix (``_evaluate``, which also chunks the batch). The
result is accurate to a few ulps relative for any finite input whose loss is a normal float (tested
against 60-digit integration); ``tests/theory/test_symbolic.py`` checks the segment formulas and
their first and second derivatives against sympy's ``diff`` of the pieces. Code generated from the
``Piecewise`` (``_codegen``, :func:`generated_source`) remains as an independent reference.
``exact=True`` evaluates the sympy pair terms on exact (rational or symbolic) inputs.

References
----------
Chen, Lau, Mendel, Wei, Murfet, *Dynamical versus Bayesian Phase Transitions in a Toy Model of
Superposition*, arXiv:2310.06301 (the paper writes :math:`L = H / (3c)`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
import torch
from torch import Tensor

from slt_tms.theory._codegen import piecewise_function
from slt_tms.theory._evaluate import loss_and_grad_arrays, loss_arrays
from slt_tms.tms import num_params, unpack, validate_shape

__all__ = [
    "PieceDerivation",
    "generated_source",
    "kink_location",
    "loss_expression",
    "loss_symbols",
    "pair_term_derivation",
    "pair_terms",
    "population_grad_flat",
    "population_loss",
    "population_loss_flat",
    "population_value_and_grad_flat",
    "symbols",
]

_MU = sp.Symbol("mu", real=True)
_A = sp.Symbol("a", real=True)
_B = sp.Symbol("b", real=True)


def symbols() -> tuple[sp.Symbol, sp.Symbol, sp.Symbol]:
    r"""The sympy symbols ``(a, b, mu)`` of the pair terms: :math:`a = W_i \cdot W_j`, :math:`b = b_i`,
    and the integration variable :math:`\mu`.

    Examples
    --------
    >>> a, b, mu = symbols()
    >>> pair_terms()[1].subs({a: 1, b: 0})
    1/3
    """
    return _A, _B, _MU


@dataclass(frozen=True)
class PieceDerivation:
    r"""One region of the :math:`(a, b)` plane in the derivation of a pair term.

    Attributes
    ----------
    description : str
        Which part of :math:`[0, 1]` the ReLU is active on.
    condition : sympy.Boolean
        The region, as inequalities in :math:`(a, b)`.
    integral : sympy.Expr
        The unevaluated integral(s) (split at the kink :math:`\mu_0` where there is one).
    value : sympy.Expr
        What sympy's ``integrate`` returns, factored.
    """

    description: str
    condition: sp.Basic
    integral: sp.Expr
    value: sp.Expr


def kink_location() -> sp.Expr:
    r"""The root :math:`\mu_0` of :math:`\mu a + b`, solved by sympy: :math:`\mu_0 = -b/a`.

    Examples
    --------
    >>> kink_location()
    -b/a
    """
    (root,) = sp.solve(sp.Eq(_MU * _A + _B, 0), _MU)
    return root


@functools.cache
def pair_term_derivation(delta: int) -> tuple[PieceDerivation, ...]:
    r"""Derive the pair term :math:`T_\delta(a, b)` region by region (see the module docstring).

    .. math::

        T_\delta(a, b) = \int_0^1 \bigl(\delta\,\mu - \mathrm{ReLU}(\mu a + b)\bigr)^2 d\mu

    Parameters
    ----------
    delta : {1, 0}
        1 for the diagonal term (output :math:`i` = input :math:`j`), 0 for the off-diagonal term.

    Returns
    -------
    tuple of PieceDerivation
        The four regions in the order used by :func:`pair_terms`: ReLU inactive everywhere, active
        everywhere, active then inactive (kink at :math:`\mu_0`), inactive then active.

    Examples
    --------
    >>> [p.value for p in pair_term_derivation(0)]
    [0, a**2/3 + a*b + b**2, -b**3/(3*a), (a + b)**3/(3*a)]
    """
    if delta not in (0, 1):
        raise ValueError(f"delta must be 1 (diagonal term) or 0 (off-diagonal term), got {delta!r}")
    mu, a, b = _MU, _A, _B
    z = mu * a + b
    on = (delta * mu - z) ** 2  # integrand where ReLU(z) = z
    off = (delta * mu) ** 2  # integrand where ReLU(z) = 0
    mu0 = kink_location()
    z0, z1 = z.subs(mu, 0), z.subs(mu, 1)  # b and a + b: the sign of z at the ends of [0, 1]

    def integral(pieces: list[tuple[sp.Expr, sp.Expr, sp.Expr]]) -> sp.Expr:
        return sp.Add(*[sp.Integral(f, (mu, lo, hi)) for f, lo, hi in pieces], evaluate=False)

    cases = [
        ("ReLU inactive on all of [0, 1]", sp.And(z0 <= 0, z1 <= 0), [(off, 0, 1)]),
        ("ReLU active on all of [0, 1]", sp.And(z0 >= 0, z1 >= 0), [(on, 0, 1)]),
        (
            "ReLU active on [0, mu0), inactive on (mu0, 1]",
            sp.And(z0 > 0, z1 < 0),
            [(on, 0, mu0), (off, mu0, 1)],
        ),
        (
            "ReLU inactive on [0, mu0), active on (mu0, 1]",
            sp.And(z0 < 0, z1 > 0),
            [(off, 0, mu0), (on, mu0, 1)],
        ),
    ]
    out = []
    for description, cond, pieces in cases:
        integ = integral(pieces)
        value = sp.factor(sp.Add(*[sp.integrate(f, (mu, lo, hi)) for f, lo, hi in pieces]))
        if value.is_polynomial(a, b):
            value = sp.expand(value)
        out.append(PieceDerivation(description, cond, integ, value))
    return tuple(out)


@functools.cache
def pair_terms() -> tuple[sp.Piecewise, sp.Piecewise]:
    r"""The two pair terms :math:`(T_1, T_0)` (diagonal, off-diagonal) as ``Piecewise`` in ``(a, b)``.

    .. math::

        T_\delta(a, b) = \int_0^1 \bigl(\delta\,\mu - \mathrm{ReLU}(\mu a + b)\bigr)^2 d\mu

    Derived once (cached) by :func:`pair_term_derivation`; the symbols are :func:`symbols`.

    Examples
    --------
    >>> diag, off = pair_terms()
    >>> a, b, _ = symbols()
    >>> diag.subs({a: 1, b: 0}), off.subs({a: 0, b: -1})
    (0, 0)
    """
    diag, off = (
        sp.Piecewise(*[(p.value, p.condition) for p in pair_term_derivation(delta)]) for delta in (1, 0)
    )
    return diag, off


@functools.cache
def loss_symbols(c: int, r: int = 2) -> tuple[sp.ImmutableMatrix, tuple[sp.Symbol, ...]]:
    r"""Symbols of the parameters: ``W`` (an ``r x c`` matrix of ``W_{k,i}``) and ``b = (b_0..b_{c-1})``.

    Indices are 0-based as in the arrays. ``list(W) + list(b)`` is the flat layout of
    :func:`slt_tms.tms.pack` (row-major ``W``, then ``b``).

    Examples
    --------
    >>> W, b = loss_symbols(3, 2)
    >>> W.shape, b[0]
    ((2, 3), b_{0})
    """
    validate_shape(c, r)
    W = sp.ImmutableMatrix(r, c, lambda k, i: sp.Symbol(f"W_{{{k},{i}}}", real=True))
    b = tuple(sp.Symbol(f"b_{{{i}}}", real=True) for i in range(c))
    return W, b


def _assemble(W: sp.MatrixBase, b: sp.MatrixBase | tuple, evaluate: bool) -> sp.Expr:
    """(1/c) sum_{i,j} T_{delta_ij}(W_i . W_j, b_i) with exact entries (symbolic or numbers)."""
    diag, off = pair_terms()
    c = W.shape[1]
    terms = []
    for i in range(c):
        for j in range(c):
            aij = sp.expand(sum(W[k, i] * W[k, j] for k in range(W.shape[0])))
            term = diag if i == j else off
            terms.append(
                term.subs({_A: aij, _B: b[i]}, simultaneous=True)
                if evaluate
                else term.xreplace({_A: aij, _B: b[i]})
            )
    return sp.Rational(1, c) * sp.Add(*terms)


@functools.cache
def loss_expression(c: int, r: int = 2) -> sp.Expr:
    r"""The population loss :math:`L(W, b)` for ``c`` features and ``r`` hidden dims, as a sympy expression.

    .. math::

        L(W, b) = \frac1c \sum_{i,j} T_{\delta_{ij}}(W_i \cdot W_j,\ b_i)

    A sum of :math:`c^2` ``Piecewise`` pair terms in the symbols of :func:`loss_symbols`, assembled
    from the two cached :func:`pair_terms` (so it is fast for any ``c``).

    Examples
    --------
    >>> L = loss_expression(2, 1)
    >>> W, b = loss_symbols(2, 1)
    >>> L.subs({W[0, 0]: 1, W[0, 1]: -1, b[0]: 0, b[1]: 0})
    0
    """
    W, b = loss_symbols(c, r)
    return _assemble(W, b, evaluate=False)


@functools.cache
def _evaluators() -> dict[str, Callable[..., Any]]:
    """Generated numeric code for each pair term: the value, its two partial derivatives (sympy ``diff``
    of every piece), and value and derivatives together (sharing masks and subexpressions).

    The closed form compiled as it stands: accurate for moderate inputs only (it cancels near kinks at
    large inputs and near T = 0). The evaluators use ``_stable``; this is the independent reference
    they are tested against (and the code shown in ``docs/theory.md``)."""
    out: dict[str, Callable[..., Any]] = {}
    for name, term in zip(("diag", "off"), pair_terms(), strict=True):
        grads = [sp.Piecewise(*[(sp.diff(v, s), cnd) for v, cnd in term.args]) for s in (_A, _B)]
        out[name] = piecewise_function(term, (_A, _B), f"pair_term_{name}")
        out[name + "_grad"] = piecewise_function(grads, (_A, _B), f"pair_term_{name}_grad")
        out[name + "_value_and_grad"] = piecewise_function(
            [term, *grads], (_A, _B), f"pair_term_{name}_value_and_grad"
        )
    return out


def generated_source() -> str:
    """The Python source generated from :func:`pair_terms` (the closed form compiled as it stands).

    Kept as an independent reference: the evaluators :func:`population_loss` and
    :func:`population_loss_flat` use the cancellation-free segment formulas of ``_stable`` instead,
    since the closed form loses accuracy for large inputs near a kink and near :math:`T = 0`."""
    return "\n\n".join(f.source for f in _evaluators().values())


def _is_torch(*xs: Any) -> bool:
    return any(isinstance(x, Tensor) for x in xs)


def _check_Wb_shapes(W_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    if len(W_shape) < 2:
        raise ValueError(f"W must have shape (..., r, c); got shape {W_shape}")
    if len(b_shape) < 1 or b_shape[-1] != W_shape[-1]:
        raise ValueError(
            f"b must have shape (..., c) with c = {W_shape[-1]} (the number of columns of W); "
            f"got shape {b_shape}"
        )
    if W_shape[-1] < 1 or W_shape[-2] < 1:
        raise ValueError(f"W must have at least one row and one column; got shape {W_shape}")
    try:
        np.broadcast_shapes(W_shape[:-2], b_shape[:-1])
    except ValueError:
        raise ValueError(f"batch axes of W {W_shape[:-2]} and b {b_shape[:-1]} do not broadcast") from None


def _to_exact_array(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().tolist()
    arr = np.asarray(x, dtype=object)

    def conv(v: Any) -> sp.Basic:
        if isinstance(v, float | np.floating):
            if not np.isfinite(v):
                raise ValueError(f"exact evaluation needs finite inputs, got {v!r}")
            return sp.Rational(float(v))  # the exact binary value of the float
        return sp.sympify(v)

    return np.vectorize(conv, otypes=[object])(arr) if arr.size else arr


def _exact_loss(W: Any, b: Any) -> sp.Expr | np.ndarray:
    Wx, bx = _to_exact_array(W), _to_exact_array(b)
    _check_Wb_shapes(Wx.shape, bx.shape)
    batch = np.broadcast_shapes(Wx.shape[:-2], bx.shape[:-1])
    Wx = np.broadcast_to(Wx, batch + Wx.shape[-2:])
    bx = np.broadcast_to(bx, batch + bx.shape[-1:])
    out = np.empty(batch, dtype=object)
    for idx in np.ndindex(*batch):
        out[idx] = _assemble(sp.Matrix(Wx[idx].tolist()), tuple(bx[idx].tolist()), evaluate=True)
    return out[()] if batch == () else out


def population_loss(W: Any, b: Any, *, exact: bool = False) -> Any:
    r"""Closed-form population loss :math:`L(W, b)` of the ReLU TMS on one-hot uniform inputs.

    .. math::

        L(W, b) = \frac1c \sum_{i,j=1}^{c} T_{\delta_{ij}}(W_i \cdot W_j,\ b_i),
        \qquad T_\delta(a, b) = \int_0^1 \bigl(\delta\mu - \mathrm{ReLU}(\mu a + b)\bigr)^2 d\mu,

    evaluated segment by segment from the derivation of :func:`pair_terms` without cancellation (see
    the module docstring and the Notes).

    Parameters
    ----------
    W : ndarray or Tensor, shape ``(..., r, c)``
        Columns :math:`W_i` are the feature vectors. Leading axes are batch axes.
    b : ndarray or Tensor, shape ``(..., c)``
        Biases; batch axes broadcast against those of ``W``.
    exact : bool
        If True, evaluate exactly with sympy: floats are converted to the rationals they represent,
        ints, rationals and symbols are kept. Returns a sympy expression (a ``Rational`` for numeric
        inputs), or a numpy object array of them if there are batch axes.

    Returns
    -------
    ndarray, Tensor or sympy.Expr, shape ``(...)``
        Same kind as the input (torch if either input is a tensor; numpy float64 otherwise). Torch
        results keep the input dtype (floating) and device and are differentiable to any order.

    Raises
    ------
    ValueError
        If the shapes do not match ``(..., r, c)`` and ``(..., c)``.

    Notes
    -----
    Numerically stable: for finite inputs the float64 result agrees with the exact loss of the given
    floats to better than :math:`10^{-13}` relative, typically a few ulps (tested to :math:`10^{-12}`
    against 60-digit integration), whenever the loss is a normal float, including large inputs near a
    kink, dead features with huge biases and near-perfect configurations with :math:`L \approx 0`;
    float32 to about :math:`10^{-6}` relative. Non-finite inputs give ``nan`` (no error, so a
    diverging sampler chain can be flagged by its caller); finite inputs whose loss exceeds the float
    range (above about :math:`10^{307}/c`) give ``inf``. Empty batch axes give empty results.
    :math:`L` is :math:`C^1` except at a dead feature with :math:`b_i = 0` (:math:`W_i = 0`),
    and :math:`C^2` except where some :math:`a_{ii} + b_i = 0` or some :math:`(a_{ij}, b_i) = (0, 0)`
    (see ``docs/theory.md``). On a boundary between pieces the derivatives returned are those of the
    first matching piece of :func:`pair_terms` (ReLU inactive first), i.e. one-sided there: a Hessian
    at such a point is direction-dependent, not a property of :math:`L`.

    Examples
    --------
    >>> import numpy as np
    >>> float(population_loss(np.zeros((2, 3)), -np.ones(3)))        # everything dead: L = 1/3
    0.333...
    >>> population_loss([[1, 0, -1, 0], [0, 1, 0, -1]], [0, 0, 0, 0], exact=True)   # regular 4-gon
    0
    """
    if exact:
        return _exact_loss(W, b)
    if _is_torch(W, b):
        ref = W if isinstance(W, Tensor) else b
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
        W = torch.as_tensor(W, dtype=dtype, device=ref.device)
        b = torch.as_tensor(b, dtype=dtype, device=ref.device)
        _check_Wb_shapes(tuple(W.shape), tuple(b.shape))
        return loss_arrays(W, b)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _check_Wb_shapes(W.shape, b.shape)
    return loss_arrays(W, b)


def population_loss_flat(w: Any, c: int, r: int = 2) -> Any:
    r"""Closed-form population loss of flat parameters ``w`` (layout of :func:`slt_tms.tms.pack`).

    .. math:: L(w), \qquad w = (\mathrm{vec}(W), b) \in \mathbb{R}^{rc + c}

    Parameters
    ----------
    w : Tensor or ndarray, shape ``(..., r*c + c)``
    c, r : int
        Number of features and hidden dimensions.

    Returns
    -------
    Tensor or ndarray, shape ``(...)``
        Differentiable in ``w`` (torch). Usable directly as a potential for samplers.

    Examples
    --------
    >>> w = torch.zeros(10, 18, dtype=torch.float64)      # 10 points, c = 6, r = 2
    >>> population_loss_flat(w, c=6).shape
    torch.Size([10])
    """
    validate_shape(c, r)
    if isinstance(w, Tensor):
        if not w.dtype.is_floating_point:
            w = w.to(torch.float64)
        W, b = unpack(w, c, r)
        return population_loss(W, b)
    w = np.asarray(w, dtype=np.float64)
    d = num_params(c, r)
    if w.shape[-1:] != (d,):
        raise ValueError(
            f"flat parameters for c={c}, r={r} must have last dimension d = r*c + c = {d}; "
            f"got shape {w.shape}"
        )
    W = w[..., : r * c].reshape(*w.shape[:-1], r, c)
    return population_loss(W, w[..., r * c :])


def population_value_and_grad_flat(w: Tensor, c: int, r: int = 2) -> tuple[Tensor, Tensor]:
    r"""The population loss of flat parameters ``w (M, r c + c)`` and its gradient, without autograd.

    .. math:: \nabla_W L = W (G + G^\top), \quad G_{ij} = \frac{\partial L}{\partial a_{ij}}, \quad
        a = W^\top W, \qquad \nabla_{b_i} L = \frac1c \sum_j \partial_b T_{\delta_{ij}}(a_{ij}, b_i)

    with the derivatives of the pair terms from the same stable segment formulas as the value. Equal to
    reverse-mode autograd through :func:`population_loss_flat` (tested), at less than half its cost:
    no graph is recorded (for samplers, which need one gradient per step).

    Returns
    -------
    value : Tensor, shape ``(M,)``
    grad : Tensor, shape ``(M, r c + c)``

    Examples
    --------
    >>> w = torch.randn(3, 18, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> value, grad = population_value_and_grad_flat(w, c=6)
    >>> auto = torch.autograd.grad(population_loss_flat(w.requires_grad_(), 6).sum(), w)[0]
    >>> bool(torch.allclose(grad, auto)), value.shape
    (True, torch.Size([3]))
    """
    value, grad = _flat_value_and_grad(w, c, r, with_value=True)
    assert value is not None
    return value, grad


def population_grad_flat(w: Tensor, c: int, r: int = 2) -> Tensor:
    r"""The gradient of :func:`population_loss_flat` at ``w (M, r c + c)`` alone (the value is not
    computed): :func:`population_value_and_grad_flat` for gradient flows.

    Examples
    --------
    >>> w = torch.randn(2, 18, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.equal(population_grad_flat(w, 6), population_value_and_grad_flat(w, 6)[1]))
    True
    """
    return _flat_value_and_grad(w, c, r, with_value=False)[1]


def _flat_value_and_grad(w: Tensor, c: int, r: int, with_value: bool) -> tuple[Tensor | None, Tensor]:
    validate_shape(c, r)
    d = num_params(c, r)
    if not isinstance(w, Tensor) or w.ndim != 2 or w.shape[-1] != d or not w.dtype.is_floating_point:
        raise ValueError(f"w must be a floating-point tensor of shape (M, {d}) for c={c}, r={r}; got "
                         f"{getattr(w, 'shape', type(w).__name__)}")
    W, b = unpack(w.detach(), c, r)
    value, gW, gb = loss_and_grad_arrays(W, b, with_value=with_value)
    return value, torch.cat([gW.reshape(w.shape[0], r * c), gb], dim=-1)
