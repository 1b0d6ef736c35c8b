"""Numerical stability of the closed-form population loss (slt_tms.theory.symbolic.population_loss).

Requirement: for ANY finite input the float64 loss agrees with a 60-digit mpmath integration of the
defining integral to 1e-12 relative wherever the answer is representable; vectorised edge cases
(empty batches) work; derivatives stay those of the closed form.

The reference is independent of the package: the Gram entries a_ij = W_i . W_j, the kink
mu0 = -b/a and the values of g(mu) = delta mu - relu(mu a + b) at 0, mu0 and 1 are formed exactly
(rational arithmetic on the float inputs), and each pair term int_0^1 g^2 dmu is integrated by mpmath
with 60 digits on each piece between them (where g is affine).
"""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slt_tms.theory import symbolic as S
from slt_tms.theory._codegen import torch_indicator

_DPS = 60
REL = 1e-12  # the required relative accuracy in float64
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# reference
# ----------------------------------------------------------------------------------------------
def _segments(a: Fraction, b: Fraction, delta: int) -> list[tuple[Fraction, Fraction, Fraction]]:
    """[0, 1] split at the kink mu0 = -b/a: (length, g(start), g(end)) of each piece, exactly, with
    g(mu) = delta mu - relu(mu a + b) (affine on each piece)."""

    def g(mu: Fraction) -> Fraction:
        z = a * mu + b
        return delta * mu - (z if z > 0 else 0)

    points = [Fraction(0), Fraction(1)]
    if a != 0 and 0 < -b / a < 1:
        points.insert(1, -b / a)
    return [(hi - lo, g(lo), g(hi)) for lo, hi in itertools.pairwise(points)]


def _mpf(x: Fraction) -> mpmath.mpf:
    return mpmath.mpf(x.numerator) / x.denominator


def _mp_pair(a: Fraction, b: Fraction, delta: int) -> mpmath.mpf:
    """int_0^1 g(mu)^2 dmu by mpmath quadrature (60 digits), piece by piece, mu = start + t length."""
    total = mpmath.mpf(0)
    for length, x, y in _segments(a, b, delta):
        L, X, Y = _mpf(length), _mpf(x), _mpf(y)

        def f(t, L=L, X=X, Y=Y):
            return L * ((1 - t) * X + t * Y) ** 2

        try:  # Gauss-Legendre is exact for the quadratic pieces (and fast) ...
            total += mpmath.quad(f, [0, 1], method="gauss-legendre")
        except ZeroDivisionError:  # ... but its error estimate divides by zero when two levels agree exactly
            total += mpmath.quad(f, [0, 1], method="tanh-sinh")
    return total


def mp_loss(W, b) -> mpmath.mpf:
    """L(W, b) for one point by 60-digit integration, from the exact values of the float inputs."""
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    r, c = W.shape
    Wq = [[Fraction(float(W[k, i])) for i in range(c)] for k in range(r)]
    with mpmath.workdps(_DPS):
        total = mpmath.mpf(0)
        for i in range(c):
            bi = Fraction(float(b[i]))
            for j in range(c):
                a = sum(Wq[k][i] * Wq[k][j] for k in range(r))  # exact
                total += _mp_pair(a, bi, int(i == j))
        return total / c


def _representable(ref: mpmath.mpf) -> bool:
    return ref == 0 or 1e-290 < ref < 1e300


def _rel_err(got: float, ref: mpmath.mpf) -> float:
    if ref == 0:
        return 0.0 if got == 0 else float("inf")
    with mpmath.workdps(_DPS):
        return float(abs(mpmath.mpf(float(got)) - ref) / ref)


def _check_point(W: np.ndarray, b: np.ndarray) -> float:
    """Relative error of the numpy and torch float64 evaluators at (W, b) (asserts <= REL)."""
    ref = mp_loss(W, b)
    if not _representable(ref):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings for finite inputs
        got_np = float(S.population_loss(W, b))
    got_t = float(S.population_loss(torch.from_numpy(W), torch.from_numpy(b)))
    Wg = torch.from_numpy(W).requires_grad_(True)  # the autograd.Function path
    got_g = float(S.population_loss(Wg, torch.from_numpy(b)).detach())
    errs = [_rel_err(v, ref) for v in (got_np, got_t, got_g)]
    assert max(errs) <= REL, (W.tolist(), b.tolist(), float(ref), got_np, got_t, got_g)
    return max(errs)


# ----------------------------------------------------------------------------------------------
# 1. regression tests: the reported probes
# ----------------------------------------------------------------------------------------------
def test_probe_large_weight_kink_near_one_numpy():
    """Was 0.5 (true ~1/3): cancellation in the closed form of the kink piece."""
    W, b = np.array([[1e4]]), np.array([-1e8 + 1])
    ref = mp_loss(W, b)
    assert abs(float(ref) - 1 / 3) < 1e-7
    assert _rel_err(S.population_loss(W, b), ref) <= REL
    assert _rel_err(S.population_loss(W.tolist(), b.tolist()), ref) <= REL


def test_probe_huge_negative_bias_no_overflow():
    """Was nan with overflow warnings (b^3 of an unselected piece overflows; 0 * inf = nan)."""
    W, b = np.array([[1.0, 0.0]]), np.array([0.0, -1e103])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = S.population_loss(W, b)
    assert _rel_err(got, mp_loss(W, b)) <= REL
    assert abs(got - 1 / 6) < 1e-15
    got_t = S.population_loss(torch.from_numpy(W), torch.from_numpy(b))
    assert abs(float(got_t) - 1 / 6) < 1e-15
    w = torch.from_numpy(np.concatenate([W.reshape(-1), b])).requires_grad_(True)
    (g,) = torch.autograd.grad(S.population_loss_flat(w, 2, 1), w)
    assert torch.all(torch.isfinite(g))


def test_probe_torch_float32_kink_near_one():
    """Was 2.0 in float32 (true ~1/3); float64 must be exact to REL."""
    W, b = torch.tensor([[100.0]]), torch.tensor([-9999.0])
    got = S.population_loss(W, b)
    assert got.dtype == torch.float32
    ref = mp_loss(W.double().numpy(), b.double().numpy())
    assert _rel_err(float(got), ref) <= 1e-5
    got64 = S.population_loss(W.double(), b.double())
    assert _rel_err(float(got64), ref) <= REL


def test_probe_float32_dead_feature_with_huge_negative_bias():
    """Was NaN in float32 (b^3 = -1e39 overflows float32)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2, 4, generator=g)
    W[:, 0] = 0.0  # dead feature ...
    b = torch.tensor([-1e13, 0.1, -0.2, 0.05])  # ... with a huge negative bias
    got = S.population_loss(W, b)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    ref = mp_loss(W.double().numpy(), b.double().numpy())
    assert _rel_err(float(got), ref) <= 1e-5
    w = torch.cat([W.reshape(-1), b]).requires_grad_(True)
    (gr,) = torch.autograd.grad(S.population_loss_flat(w, 4, 2), w)
    assert torch.all(torch.isfinite(gr))
    w64 = w.detach().double().requires_grad_(True)
    (gr64,) = torch.autograd.grad(S.population_loss_flat(w64, 4, 2), w64)
    assert torch.allclose(gr.double(), gr64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [(0,), (0, 3), (2, 0)])
def test_empty_batch(batch):
    """An empty batch axis gives an empty result (was: 'need at least one array to concatenate')."""
    c, r = 3, 2
    W = np.zeros((*batch, r, c))
    b = np.zeros((*batch, c))
    out = S.population_loss(W, b)
    assert isinstance(out, np.ndarray) and out.shape == batch and out.dtype == np.float64
    assert S.population_loss(W, np.zeros(c)).shape == batch  # broadcast b
    Wt = torch.zeros((*batch, r, c), dtype=torch.float64)
    bt = torch.zeros((*batch, c), dtype=torch.float64)
    assert S.population_loss(Wt, bt).shape == batch
    assert S.population_loss(Wt.float(), bt.float()).dtype == torch.float32
    Wg = Wt.clone().requires_grad_(True)
    L = S.population_loss(Wg, bt)
    assert L.shape == batch
    L.sum().backward()
    assert Wg.grad is not None and Wg.grad.shape == Wg.shape
    w = torch.zeros((*batch, r * c + c), dtype=torch.float64, requires_grad=True)
    assert S.population_loss_flat(w, c, r).shape == batch
    assert S.population_loss_flat(w.detach().numpy(), c, r).shape == batch
    ex = S.population_loss(W, b, exact=True)
    assert ex.shape == batch


# ----------------------------------------------------------------------------------------------
# 2. fuzz against 60-digit integration
# ----------------------------------------------------------------------------------------------
_w_entries = st.one_of(
    st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False),
    st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5, 1e-8, 1e8]),
)
_b_entries = st.one_of(
    st.floats(-1e100, 1e100, allow_nan=False, allow_infinity=False),
    st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5, 1e-8, -1e-8]),
)


@st.composite
def _generic_points(draw):
    c = draw(st.integers(1, 4))
    r = draw(st.integers(1, 3))
    W = np.array(draw(st.lists(_w_entries, min_size=r * c, max_size=r * c))).reshape(r, c)
    b = np.array(draw(st.lists(_b_entries, min_size=c, max_size=c)))
    return W, b


@st.composite
def _near_kink_points(draw):
    """Biases put the kink mu0 = -b_i / a_ij within a hair of 0 or 1 (the cancellation regime)."""
    W, b = draw(_generic_points())
    c = W.shape[1]
    for i in range(c):
        j = draw(st.integers(0, c - 1))
        a = float(W[:, i] @ W[:, j])
        kind = draw(st.sampled_from(["-a+d", "-a(1+t)", "d"]))
        d = draw(st.floats(-1e-3, 1e-3, allow_nan=False) | st.sampled_from([1.0, -1.0, 1e-12]))
        if kind == "-a+d":
            b[i] = -a + d * max(1.0, abs(a)) ** draw(st.sampled_from([0.0, 0.5, 1.0]))
        elif kind == "-a(1+t)":
            b[i] = -a * (1.0 + d)
        else:
            b[i] = d
    return W, b


@st.composite
def _near_perfect_points(draw):
    """Rotated, slightly perturbed regular k-gons with tiny biases: L tiny, so every digit of
    1 - a_ii - b_i and of the near-zero a_ij counts."""
    k = draw(st.integers(1, 6))
    theta = draw(st.floats(0.0, 2 * np.pi))
    ang = theta + 2 * np.pi * np.arange(k) / k
    eps = np.array(draw(st.lists(st.sampled_from([0.0]) | st.floats(-1e-6, 1e-6), min_size=k, max_size=k)))
    W = np.stack([np.cos(ang), np.sin(ang)]) * (1.0 + eps)
    b = np.array(draw(st.lists(st.sampled_from([0.0]) | st.floats(-1e-6, 1e-6), min_size=k, max_size=k)))
    return W, b


@FUZZ
@given(_generic_points())
def test_fuzz_generic_matches_mpmath(point):
    _check_point(*point)


@FUZZ
@given(_near_kink_points())
def test_fuzz_near_kinks_matches_mpmath(point):
    _check_point(*point)


@FUZZ
@given(_near_perfect_points())
def test_fuzz_near_perfect_configurations_matches_mpmath(point):
    _check_point(*point)


def test_batched_extreme_points_match_pointwise():
    """A batch mixing extreme and ordinary points gives the pointwise values (chunking, masks)."""
    rng = np.random.default_rng(0)
    pts = [(rng.normal(size=(2, 3)), rng.normal(size=3)) for _ in range(5)]
    pts.append((np.array([[1e4, 0, 0], [0, 1, 0]]), np.array([-1e8 + 1, 0.0, -1e103])))
    pts.append((np.array([[1e-3, 1e20, 0], [5, -3, 2]]), np.array([1e-300, -1e40, 3.0])))
    W = np.stack([p[0] for p in pts])
    b = np.stack([p[1] for p in pts])
    batched = S.population_loss(W, b)
    for k, (Wk, bk) in enumerate(pts):
        assert _rel_err(batched[k], mp_loss(Wk, bk)) <= REL


# ----------------------------------------------------------------------------------------------
# 3. derivatives
# ----------------------------------------------------------------------------------------------
def _closed_form_loss(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L from the generated closed-form pair terms (the original evaluator), plain torch autograd."""
    ev = S._evaluators()
    c = W.shape[-1]
    a = W.T @ W
    off = ev["off"](a, b[:, None].expand(c, c), torch_indicator) * (1 - torch.eye(c, dtype=W.dtype))
    diag = ev["diag"](torch.diagonal(a), b, torch_indicator)
    return (off.sum() + diag.sum()) / c


@pytest.mark.parametrize("c,r", [(1, 1), (3, 1), (4, 2), (6, 2), (5, 3)])
def test_derivatives_agree_with_closed_form_at_moderate_inputs(c, r):
    g = torch.Generator().manual_seed(10 * c + r)
    for _ in range(4):
        w = torch.randn(r * c + c, dtype=torch.float64, generator=g)

        def ref(v):
            return _closed_form_loss(v[: r * c].reshape(r, c), v[r * c:])

        def new(v):
            return S.population_loss_flat(v, c, r)

        assert torch.allclose(new(w), ref(w), rtol=1e-12, atol=0)
        assert torch.allclose(torch.func.grad(new)(w), torch.func.grad(ref)(w), rtol=0, atol=1e-10)
        H_new = torch.autograd.functional.hessian(new, w)
        assert torch.allclose(H_new, torch.func.hessian(ref)(w), rtol=0, atol=1e-10)
        assert torch.allclose(torch.func.hessian(new)(w), H_new, rtol=0, atol=1e-12)


def _exact_gradient(W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d L / d (vec W, b) at the exact values of the float inputs (sympy, rational arithmetic)."""
    r, c = W.shape
    Ws, bs = S.loss_symbols(c, r)
    L = S.loss_expression(c, r)
    syms = [*Ws, *bs]
    sub = {s: sp.Rational(float(v)) for s, v in zip(syms, [*W.reshape(-1), *b], strict=True)}
    return np.array([float(sp.diff(L, s).subs(sub)) for s in syms])


@pytest.mark.parametrize(
    "W,b",
    [
        ([[1e4]], [-1e8 + 1]),
        ([[100.0]], [-9999.0]),
        ([[1.0, 0.0]], [0.0, -1e103]),
        ([[3e3, -1.0], [2.0, 1e-3]], [-9e6 + 0.5, 2.0]),
    ],
)
def test_gradient_accurate_at_large_inputs(W, b):
    """The gradient of the closed form suffers the same cancellation; it must match the exact one."""
    W, b = np.array(W, dtype=np.float64), np.array(b, dtype=np.float64)
    r, c = W.shape
    w = torch.from_numpy(np.concatenate([W.reshape(-1), b])).requires_grad_(True)
    (gr,) = torch.autograd.grad(S.population_loss_flat(w, c, r), w)
    exact = _exact_gradient(W, b)
    np.testing.assert_allclose(gr.numpy(), exact, rtol=1e-10, atol=1e-300)


def test_compensated_points_under_vmap_and_forward_mode():
    """Points re-evaluated with the compensated Gram matrix (tiny L, large inputs near a kink) give the
    same values under torch.func.vmap (no data-dependent control flow there) and consistent
    forward-mode derivatives (torch.func.jvp differentiates the value path)."""
    c, r = 2, 2
    pts = [
        (np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]]), np.array([0.0, 1e-9])),
        (np.array([[1e4, 3.0], [0.0, 1.0]]), np.array([-1e8 + 1, 0.5])),
        (np.array([[0.3, -1.2], [0.8, 0.1]]), np.array([0.2, -0.4])),
    ]
    ws = torch.stack([torch.from_numpy(np.concatenate([W.reshape(-1), b])) for W, b in pts])

    def f(v):
        return S.population_loss_flat(v, c, r)

    direct, mapped = f(ws), torch.func.vmap(f)(ws)
    for k, (W, b) in enumerate(pts):
        ref = mp_loss(W, b)
        assert _rel_err(float(direct[k]), ref) <= REL and _rel_err(float(mapped[k]), ref) <= REL
    v = torch.randn(ws.shape[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for w in ws:
        g = torch.func.grad(f)(w)
        _, t = torch.func.jvp(f, (w,), (v,))
        # derivatives are accurate in absolute terms (terms of order 1 cancel near a minimum)
        assert abs(float(t) - float(g @ v)) <= 1e-9 * float(g.abs() @ v.abs()) + 1e-14 * float(v.abs().sum())


@pytest.mark.parametrize(
    "W,b",
    [([[1e200]], [0.0]), ([[0.0]], [1e200]), ([[1e154]], [-1e308]), ([[1e100, 1e-100]], [-1e200, 0.5])],
)
def test_loss_beyond_float_range_is_inf(W, b):
    """Finite inputs whose exact loss exceeds the float range give inf (no warning, no nan). The third
    point has a + b = 0 in floats but 6e291 exactly: a sliver of the active segment carries 8e566."""
    W, b = np.array(W), np.array(b)
    assert mp_loss(W, b) > 1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert S.population_loss(W, b) == np.inf
    assert float(S.population_loss(torch.from_numpy(W), torch.from_numpy(b))) == np.inf
