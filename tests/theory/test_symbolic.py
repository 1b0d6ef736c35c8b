"""Tests of the derived closed-form TMS population loss (slt_tms.theory.symbolic).

Reference values are never typed in: they come from (i) adaptive quadrature of the defining integral,
(ii) sympy's own integration of the ReLU integrand at exact rational points, (iii) Monte-Carlo on
sampled data through the model of slt_tms.tms, or (iv) the facts of the closed form derived here with
sympy.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import quad

from slt_tms.cli import main as cli_main
from slt_tms.theory import symbolic as S
from slt_tms.theory._codegen import numpy_indicator, piecewise_function, torch_indicator
from slt_tms.tms import OneHotUniform, empirical_loss, forward, pack

A, B, MU = S.symbols()


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _quad_pair(a: float, b: float, delta: float) -> float:
    """Adaptive quadrature of int_0^1 (delta mu - relu(mu a + b))^2 dmu, split at the kink."""
    points = None
    if a != 0 and 0 < -b / a < 1:
        points = [-b / a]
    val, _ = quad(lambda m: (delta * m - max(m * a + b, 0.0)) ** 2, 0.0, 1.0, points=points,
                  epsabs=1e-14, epsrel=1e-14, limit=200)
    return val


def _quad_loss(W: np.ndarray, b: np.ndarray) -> float:
    c = W.shape[1]
    a = W.T @ W
    return sum(_quad_pair(a[i, j], b[i], float(i == j)) for i in range(c) for j in range(c)) / c


def _edge_case_points(rng: np.random.Generator, c: int, r: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random points plus the edge cases: zero columns, a_ij = 0, b_i = 0, kinks at mu = 0 and 1."""
    pts = []
    for _ in range(3):
        pts.append((rng.normal(size=(r, c)), 0.5 * rng.normal(size=c)))
    W = rng.normal(size=(r, c))
    W[:, 0] = 0.0  # a zero column (dead feature) ...
    b = 0.5 * rng.normal(size=c)
    b[0] = 0.3  # ... with a positive bias
    pts.append((W, b))
    W = rng.normal(size=(r, c))
    W[:, -1] = 0.0
    b = rng.normal(size=c)
    b[-1] = -0.2
    pts.append((W, b))
    if r >= 2 and c >= 2:  # a_01 = 0: orthogonal columns
        W = rng.normal(size=(r, c))
        W[:, 1] = 0.0
        W[0, 1], W[1, 1] = -W[1, 0], W[0, 0]
        pts.append((W, rng.normal(size=c)))
    W = rng.normal(size=(r, c))
    b = rng.normal(size=c)
    b[0] = 0.0  # kink at mu = 0 for every input j of output 0
    if c >= 2:
        b[1] = -float(W[:, 1] @ W[:, 0])  # a_10 + b_1 = 0: kink at mu = 1 of an off-diagonal term
    if c >= 3:
        b[2] = -float(W[:, 2] @ W[:, 2])  # a_22 + b_2 = 0: kink at mu = 1 of a diagonal term
    pts.append((W, b))
    pts.append((np.zeros((r, c)), np.zeros(c)))  # everything on the boundary
    return pts


def _mc_per_sample_losses(w: torch.Tensor, c: int, r: int, n: int, seed: int) -> torch.Tensor:
    x = OneHotUniform(c).sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)
    per = ((x - forward(w, x, c, r)) ** 2).sum(-1)
    # the per-sample losses (needed for the standard error) average to the package's empirical loss
    assert torch.allclose(per.mean(), empirical_loss(w, x, c, r), rtol=1e-12, atol=0)
    return per


# ----------------------------------------------------------------------------------------------
# 1. derivation
# ----------------------------------------------------------------------------------------------
def test_kink_location_is_the_root():
    mu0 = S.kink_location()
    assert sp.simplify((MU * A + B).subs(MU, mu0)) == 0


def test_pair_terms_are_four_piece_piecewise_in_a_b():
    for term in S.pair_terms():
        assert isinstance(term, sp.Piecewise)
        assert len(term.args) == 4
        assert term.free_symbols == {A, B}


def test_pair_term_derivation_steps_integrate_to_values():
    for delta in (1, 0):
        for piece in S.pair_term_derivation(delta):
            assert isinstance(piece.integral, sp.Expr)
            assert piece.integral.has(sp.Integral)
            assert sp.simplify(piece.integral.doit() - piece.value) == 0


def test_pair_terms_match_sympy_integration_of_relu_at_rational_points():
    """Independent exact check: sympy integrates (delta mu - Max(0, mu a + b))^2 by itself."""
    diag, off = S.pair_terms()
    vals = [sp.Rational(v) for v in ("-3/2", "-1/4", "0", "1/4", "1")]  # every region and boundary
    for a, b in itertools.product(vals, vals):
        for delta, term in ((1, diag), (0, off)):
            ref = sp.integrate((delta * MU - sp.Max(0, a * MU + b)) ** 2, (MU, 0, 1))
            assert term.subs({A: a, B: b}) == ref, (delta, a, b)


def test_pieces_cover_the_plane_including_boundaries():
    diag, off = S.pair_terms()
    vals = [sp.Rational(v, 2) for v in range(-4, 5)]
    for a, b in itertools.product(vals, vals):
        for term in (diag, off):
            v = term.subs({A: a, B: b})
            assert v.is_Rational, (a, b, v)


@pytest.mark.parametrize("delta", [1, 0])
def test_smoothness_across_boundaries(delta):
    """Derived facts used by the critical-point analysis, from the pieces themselves: away from the
    origin both pair terms are C^1 across every boundary line; the off-diagonal term is even C^2; the
    diagonal term is C^2 across b = 0 (kink at mu = 0) but NOT across a + b = 0 (kink at mu = 1, where
    the integrand delta mu - z jumps in slope at a point with delta mu != 0)."""
    t = sp.Symbol("t", positive=True)
    none, full, on_off, off_on = [p.value for p in S.pair_term_derivation(delta)]
    boundaries = {  # (piece, piece, point on the common boundary as a function of t > 0)
        "a+b=0, b>0": (full, on_off, {A: -t, B: t}),
        "b=0, a>0": (full, off_on, {A: t, B: 0}),
        "b=0, a<0": (none, on_off, {A: -t, B: 0}),
        "a+b=0, b<0": (none, off_on, {A: t, B: -t}),
    }

    def jump(p, q, at, d):
        return sp.simplify(((sp.diff(p, *d) if d else p) - (sp.diff(q, *d) if d else q)).subs(at))

    for name, (p, q, at) in boundaries.items():
        for d in [(), (A,), (B,)]:
            assert jump(p, q, at, d) == 0, (delta, name, d)
        second = [jump(p, q, at, d) for d in [(A, A), (A, B), (B, B)]]
        if delta == 1 and name.startswith("a+b=0"):
            assert all(j != 0 for j in second), (name, second)
        else:
            assert all(j == 0 for j in second), (delta, name, second)
    # at the origin the diagonal term is not even differentiable in b (one-sided slopes 0 and -1)
    if delta == 1:
        assert sp.diff(none, B).subs({A: 0, B: 0}) == 0
        assert sp.diff(full, B).subs({A: 0, B: 0}) == -1


def test_loss_expression_assembles_pair_terms():
    W, b = S.loss_symbols(3, 2)
    L = S.loss_expression(3, 2)
    assert L.free_symbols == set(W) | set(b)
    rng = np.random.default_rng(0)
    for _ in range(3):
        Wv = [[sp.Rational(int(rng.integers(-6, 7)), 4) for _ in range(3)] for _ in range(2)]
        bv = [sp.Rational(int(rng.integers(-4, 5)), 4) for _ in range(3)]
        sub = {W[k, i]: Wv[k][i] for k in range(2) for i in range(3)} | dict(zip(b, bv, strict=True))
        assert L.subs(sub) == S.population_loss(Wv, bv, exact=True)


def test_loss_expression_fast_for_c8():
    # not a timed test: only checks it builds and has c^2 summands
    L = S.loss_expression(8, 2)
    assert len(sp.Add.make_args(sp.expand(L * 8, deep=False))) == 64


# ----------------------------------------------------------------------------------------------
# 2. evaluators vs quadrature / sympy
# ----------------------------------------------------------------------------------------------
# quad warns about roundoff when its requested 1e-14 tolerance meets machine precision; the test itself
# asserts agreement to 1e-10
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("c", range(2, 9))
@pytest.mark.parametrize("r", [1, 2, 3])
def test_population_loss_matches_quadrature(c, r):
    rng = np.random.default_rng(1000 * c + r)
    for W, b in _edge_case_points(rng, c, r):
        ref = _quad_loss(W, b)
        assert abs(S.population_loss(W, b) - ref) < 1e-10
        got_t = S.population_loss(torch.from_numpy(W), torch.from_numpy(b))
        assert abs(float(got_t) - ref) < 1e-10
        w = torch.from_numpy(np.concatenate([W.reshape(-1), b]))
        assert abs(float(S.population_loss_flat(w, c, r)) - ref) < 1e-10


def test_generated_code_matches_sympy_lambdify():
    """The generated code is compared with sympy's own lambdify of the same Piecewise."""
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.normal(size=500), [0.0, 0.0, 1.0, -1.0, 0.5, -0.5, 1e-200, -1e-200]])
    b = np.concatenate([rng.normal(size=500), [0.0, 1.0, -1.0, 1.0, 0.0, 0.5, 1.0, -1.0]])
    ev = S._evaluators()
    for name, term in zip(("diag", "off"), S.pair_terms(), strict=True):
        ref_fn = sp.lambdify((A, B), term, "mpmath")
        ref = np.array([float(ref_fn(x, y)) for x, y in zip(a, b, strict=True)])
        np.testing.assert_allclose(ev[name](a, b, numpy_indicator), ref, rtol=1e-13, atol=1e-15)
        da, db = ev[name + "_grad"](a, b, numpy_indicator)
        for s, d in ((A, da), (B, db)):
            dref_fn = sp.lambdify((A, B), sp.Piecewise(*[(sp.diff(v, s), cnd) for v, cnd in term.args]),
                                  "mpmath")
            dref = np.array([float(dref_fn(x, y)) for x, y in zip(a, b, strict=True)])
            np.testing.assert_allclose(d, dref, rtol=1e-12, atol=1e-14)
        assert np.all(np.isfinite(da)) and np.all(np.isfinite(db))


def _pair_test_points() -> tuple[np.ndarray, np.ndarray]:
    """Random (a, b) over many scales plus every boundary: a = 0, b = 0, a + b = 0, the origin."""
    rng = np.random.default_rng(4)
    n = 300
    scale = 10.0 ** rng.uniform(-6, 6, size=(2, n))
    a = np.concatenate([rng.normal(size=n), rng.normal(size=n) * scale[0],
                        [0.0, 0.0, 0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1e-200, -1e-200, 3.0]])
    b = np.concatenate([rng.normal(size=n), rng.normal(size=n) * scale[1],
                        [0.0, 1.0, -1.0, 0.0, 0.0, -0.5, 0.5, -2.0, 2.0, 1.0, -1.0, -3.0 + 1e-12]])
    return a, b


@pytest.mark.parametrize("delta", [1, 0])
def test_stable_pair_terms_match_sympy_derivatives(delta):
    """The stable segment formulas (slt_tms.theory._stable) are the derived pair terms: values, first
    derivatives and (torch autograd of the first) second derivatives agree with sympy's Piecewise and
    its derivatives evaluated in 50-digit mpmath, including on the boundaries (first matching piece)."""
    import mpmath

    from slt_tms.theory._stable import pair_diag, pair_off

    term = S.pair_terms()[1 - delta]
    fn = pair_diag if delta else pair_off
    a, b = _pair_test_points()

    def ref(expr):
        f = sp.lambdify((A, B), expr, "mpmath")
        with mpmath.workdps(50):
            return np.array([float(f(mpmath.mpf(x), mpmath.mpf(y))) for x, y in zip(a, b, strict=True)])

    def d(*syms):
        return sp.Piecewise(*[(sp.diff(v, *syms), cnd) for v, cnd in term.args])

    scale = 1.0 + np.abs(a) + np.abs(b)

    def close(got, want, rtol, atol):  # atol per point: derivatives may cancel to ~u scale^2
        bad = np.abs(got - want) > rtol * np.abs(want) + atol
        assert not bad.any(), list(zip(a[bad], b[bad], got[bad], want[bad], strict=True))[:5]

    v, da, db = fn(a, b, numpy_indicator, value=True, grad=True)
    close(v, ref(term), 1e-13, 0.0)
    close(da, ref(d(A)), 1e-12, 1e-14 * scale**2)
    close(db, ref(d(B)), 1e-12, 1e-14 * scale**2)
    at = torch.tensor(a, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    _, ga, gb = fn(at, bt, torch_indicator, value=False, grad=True)
    gaa, gab = torch.autograd.grad(ga.sum(), (at, bt), retain_graph=True)
    gba, gbb = torch.autograd.grad(gb.sum(), (at, bt))
    for got, syms in ((gaa, (A, A)), (gab, (A, B)), (gba, (A, B)), (gbb, (B, B))):
        close(got.numpy(), ref(d(*syms)), 1e-11, 1e-13 * scale**2)


def test_compensated_gram_is_twice_as_accurate():
    """gram_compensated: a_hi + a_lo equals the exact Gram entries (rational arithmetic) to about
    u |a| + u^2 sum |W_ki W_kj|, also where W_i . W_j cancels (near-orthogonal columns)."""
    from fractions import Fraction

    from slt_tms.theory._stable import gram_compensated

    rng = np.random.default_rng(8)
    W = rng.normal(size=(20, 3, 4))
    W[:, :, 1] = np.stack([-W[:, 1, 0], W[:, 0, 0], W[:, 2, 1] * 1e-9], axis=-1) * (1 + 1e-12)
    hi, lo = gram_compensated(W)
    u = 2.0**-53
    for n in range(W.shape[0]):
        for i in range(4):
            for j in range(4):
                exact = sum(Fraction(float(W[n, k, i])) * Fraction(float(W[n, k, j])) for k in range(3))
                got = Fraction(float(hi[n, i, j])) + Fraction(float(lo[n, i, j]))
                bound = 2 * u * abs(float(exact)) + 8 * u * u * float(np.abs(W[n, :, i] * W[n, :, j]).sum())
                assert abs(float(got - exact)) <= bound, (n, i, j)
    hi_t, lo_t = gram_compensated(torch.from_numpy(W))
    assert torch.equal(hi_t, torch.from_numpy(hi)) and torch.equal(lo_t, torch.from_numpy(lo))


def test_codegen_rejects_non_piecewise():
    with pytest.raises(ValueError, match="Piecewise"):
        piecewise_function(A + B, (A, B), "f")


def test_numpy_torch_batched_and_loop_agree():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 3, 2, 5, dtype=torch.float64, generator=g)
    b = torch.randn(4, 3, 5, dtype=torch.float64, generator=g)
    Lt = S.population_loss(W, b)
    assert Lt.shape == (4, 3) and Lt.dtype == torch.float64
    Ln = S.population_loss(W.numpy(), b.numpy())
    assert isinstance(Ln, np.ndarray) and Ln.shape == (4, 3)
    tol = {"rtol": 1e-13, "atol": 0}  # rounding only (batched vs single matmul)
    np.testing.assert_allclose(Lt.numpy(), Ln, **tol)
    loop = np.array([[float(S.population_loss(W[i, j], b[i, j])) for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(Ln, loop, **tol)
    # broadcasting: one b shared by a batch of W
    Lb = S.population_loss(W, b[0, 0])
    np.testing.assert_allclose(Lb[0, 0].item(), Lt[0, 0].item(), **tol)
    # flat layout of tms.pack
    w = pack(W, b)
    np.testing.assert_allclose(S.population_loss_flat(w, 5, 2).numpy(), Ln, **tol)
    np.testing.assert_allclose(S.population_loss_flat(w.numpy(), 5, 2), Ln, **tol)


def test_large_batch_chunking_consistent():
    """Batches larger than the evaluation chunk give the same numbers as small ones."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3000, 18, dtype=torch.float64, generator=g)
    big = S.population_loss_flat(w, 6)
    small = torch.cat([S.population_loss_flat(w[i:i + 100], 6) for i in range(0, 3000, 100)])
    assert torch.allclose(big, small, rtol=1e-15, atol=0)
    wg = w.clone().requires_grad_(True)
    S.population_loss_flat(wg, 6).sum().backward()
    for i in (0, 1234, 2999):
        wi = w[i].clone().requires_grad_(True)
        S.population_loss_flat(wi, 6).backward()
        assert torch.allclose(wg.grad[i], wi.grad, rtol=1e-14, atol=1e-15)


def test_dtypes():
    W = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    L32 = S.population_loss(W, torch.zeros(4))
    assert L32.dtype == torch.float32
    L32.backward()
    assert W.grad.dtype == torch.float32
    L64 = S.population_loss(W.detach().double(), torch.zeros(4, dtype=torch.float64))
    assert abs(L32.item() - L64.item()) < 1e-6 * max(1.0, L64.item())
    assert S.population_loss(torch.zeros(2, 4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)).dtype \
        == torch.float64
    assert S.population_loss([[1, 0], [0, 1]], [0, 0]).dtype == np.float64


# ----------------------------------------------------------------------------------------------
# 3. exact evaluation and the facts of the closed form
# ----------------------------------------------------------------------------------------------
def test_exact_matches_float_at_rational_points():
    rng = np.random.default_rng(5)
    for c in (2, 4, 6):
        W = rng.integers(-8, 9, size=(2, c)) / 8
        b = rng.integers(-8, 9, size=c) / 8
        ex = S.population_loss(W, b, exact=True)
        assert isinstance(ex, sp.Rational)
        assert abs(float(ex) - S.population_loss(W, b)) < 1e-14


def test_exact_batched_and_symbolic():
    out = S.population_loss(np.zeros((3, 2, 4)), -np.ones((3, 4)), exact=True)
    assert out.shape == (3,) and all(v == sp.Rational(1, 3) for v in out)
    beta = sp.Symbol("beta", real=True)
    expr = S.population_loss([[0, 0]], [beta, -1], exact=True)
    assert expr.free_symbols == {beta}
    assert expr.subs(beta, sp.Rational(1, 4)) == S.population_loss([[0, 0]], [sp.Rational(1, 4), -1],
                                                                     exact=True)


@pytest.mark.parametrize("c", [1, 3, 8])
def test_all_dead_loss_is_one_third(c):
    """L(0, b <= 0) = 1/3: derived with nonpositive symbolic biases."""
    bs = [sp.Symbol(f"beta{i}", nonpositive=True) for i in range(c)]
    assert sp.simplify(S.population_loss(np.zeros((2, c), dtype=int), bs, exact=True)) == sp.Rational(1, 3)
    assert abs(S.population_loss(np.zeros((2, c)), -np.abs(np.arange(c, dtype=float))) - 1 / 3) < 1e-15


@pytest.mark.parametrize("c", [3, 4, 5])
def test_dead_feature_adds_one_third_c(c):
    """With W_i = 0 and b_i <= 0 (and the other biases <= 0) the feature adds exactly 1/(3c):
    L_c = (c-1)/c * L_{c-1}(rest) + 1/(3c), with every other entry symbolic."""
    r = 2
    W, _ = S.loss_symbols(c - 1, r)
    bneg = [sp.Symbol(f"nb{i}", nonpositive=True) for i in range(c - 1)]
    Wc = sp.Matrix(W).col_insert(0, sp.zeros(r, 1))
    beta = sp.Symbol("beta", nonpositive=True)
    Lc = S.population_loss(Wc, [beta, *bneg], exact=True)
    Lrest = S.population_loss(W, bneg, exact=True)
    assert sp.simplify(Lc - sp.Rational(c - 1, c) * Lrest) == sp.Rational(1, 3 * c)
    # negative control: with a positive bias elsewhere the dead input makes that output fire
    pos = sp.Symbol("p", positive=True)
    Lc2 = S.population_loss(Wc, [beta, pos, *bneg[1:]], exact=True)
    Lrest2 = S.population_loss(W, [pos, *bneg[1:]], exact=True)
    assert sp.simplify(Lc2 - sp.Rational(c - 1, c) * Lrest2 - sp.Rational(1, 3 * c)) == pos**2 / c


@pytest.mark.parametrize("c", [2, 5, 8])
def test_dead_feature_optimal_positive_bias(c):
    """A dead feature's optimal bias is 1/(2c) and lowers L by 1/(4c^2), derived with sympy."""
    rng = np.random.default_rng(c)
    W = [[sp.Rational(int(v), 4) for v in row] for row in rng.integers(-4, 5, size=(2, c))]
    for row in W:
        row[0] = 0
    b = [sp.Rational(int(v), 8) for v in rng.integers(-4, 5, size=c)]
    beta = sp.Symbol("beta", positive=True)
    L_pos = S.population_loss(W, [beta, *b[1:]], exact=True)  # L for b_0 = beta > 0
    L_neg = S.population_loss(W, [0, *b[1:]], exact=True)  # L for any b_0 <= 0 (flat)
    (bstar,) = sp.solve(sp.diff(L_pos, beta), beta)
    assert bstar == sp.Rational(1, 2 * c)
    assert sp.diff(L_pos, beta, 2).subs(beta, bstar) > 0
    assert L_neg - L_pos.subs(beta, bstar) == sp.Rational(1, 4 * c**2)
    assert S.population_loss(W, [-sp.Rational(1, 3), *b[1:]], exact=True) == L_neg


def test_regular_4gon_has_zero_loss():
    W = [[1, 0, -1, 0], [0, 1, 0, -1]]
    assert S.population_loss(W, [0, 0, 0, 0], exact=True) == 0
    assert abs(S.population_loss(np.array(W, dtype=float), np.zeros(4))) < 1e-15
    # a rotation of the 4-gon (exact, symbolic angle) is still a zero of L
    th = sp.Symbol("theta", real=True)
    R = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
    Wr = (R * sp.Matrix(W)).applyfunc(lambda e: e.subs(th, sp.pi / 7))
    assert sp.nsimplify(sp.N(S.population_loss(Wr, [0] * 4, exact=True), 30), tolerance=1e-25) == 0


# ----------------------------------------------------------------------------------------------
# 4. Monte-Carlo on sampled data
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_population_loss_matches_monte_carlo():
    c, r, n = 6, 2, 200_000
    g = torch.Generator().manual_seed(11)
    k = 5.0  # |estimate - truth| < k * SE: a false failure has probability ~6e-7 per point
    for trial in range(4):
        w = torch.randn(r * c + c, dtype=torch.float64, generator=g) * 0.8
        per = _mc_per_sample_losses(w, c, r, n, seed=100 + trial)
        est, se = per.mean().item(), per.std().item() / n**0.5
        exact = S.population_loss_flat(w, c, r).item()
        assert abs(est - exact) < k * se, (trial, est, exact, se)
        # negative control: a visibly different parameter must be rejected by the same test
        w2 = w.clone()
        w2[r * c:] += 0.1
        assert abs(est - S.population_loss_flat(w2, c, r).item()) > k * se


# ----------------------------------------------------------------------------------------------
# 5. gradients
# ----------------------------------------------------------------------------------------------
def test_gradcheck_and_gradgradcheck():
    g = torch.Generator().manual_seed(2)
    for c, r in ((3, 1), (5, 2), (4, 3)):
        w = torch.randn(2, r * c + c, dtype=torch.float64, generator=g).requires_grad_(True)
        f = lambda w, c=c, r=r: S.population_loss_flat(w, c, r)  # noqa: E731
        assert torch.autograd.gradcheck(f, (w,))
        assert torch.autograd.gradgradcheck(f, (w,))


def test_hessian_via_torch_func_and_finite_differences():
    c, r = 5, 2
    w = torch.randn(r * c + c, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    f = lambda w: S.population_loss_flat(w, c, r)  # noqa: E731
    H1 = torch.func.hessian(f)(w)
    H2 = torch.autograd.functional.hessian(f, w)
    assert torch.allclose(H1, H2, atol=1e-13, rtol=0)
    grad = torch.func.grad(f)
    eps, d = 1e-5, w.numel()
    Hfd = torch.stack([(grad(w + eps * e) - grad(w - eps * e)) / (2 * eps)
                       for e in torch.eye(d, dtype=torch.float64)])
    assert torch.allclose(Hfd, H2, atol=1e-8, rtol=0)
    # forward mode (jvp rule of the autograd Function) agrees with reverse mode
    assert torch.allclose(torch.func.jacfwd(f)(w), grad(w), atol=1e-14, rtol=0)
    assert torch.allclose(torch.func.jacfwd(torch.func.jacrev(f))(w), H2, atol=1e-13, rtol=0)
    # vmap over a batch of points equals the per-point gradient
    ws = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    G = torch.func.vmap(grad)(ws)
    assert torch.allclose(G[1], grad(ws[1]), atol=1e-15)
    assert torch.allclose(torch.func.vmap(f)(ws), f(ws), atol=1e-15, rtol=0)


@pytest.mark.parametrize("c,r", [(4, 2), (6, 2), (5, 3)])
def test_gradients_finite_and_match_finite_differences_at_edge_cases(c, r):
    """No NaN at a = 0 and at kinks; L is C^1 there (away from W_i = 0 with b_i = 0), so central
    differences with h = 1e-6 agree with autograd to O(h) (second derivatives are bounded)."""
    rng = np.random.default_rng(7 + c)
    pts = _edge_case_points(rng, c, r)[:-1]  # the last point (all zero) is not differentiable
    W = rng.normal(size=(r, c))
    W[:, 1] = 1e-200  # a tiny but nonzero a_ij: the kink pieces are guarded
    pts.append((W, rng.normal(size=c)))
    for W, b in pts:
        w = torch.from_numpy(np.concatenate([W.reshape(-1), b])).requires_grad_(True)
        (gr,) = torch.autograd.grad(S.population_loss_flat(w, c, r), w, create_graph=True)
        assert torch.all(torch.isfinite(gr))
        h = 1e-6
        f = lambda v, c=c, r=r: S.population_loss_flat(v, c, r)  # noqa: E731
        with torch.no_grad():
            fd = torch.stack([(f(w + h * e) - f(w - h * e)) / (2 * h)
                              for e in torch.eye(w.numel(), dtype=torch.float64)])
        assert torch.allclose(gr.detach(), fd, atol=1e-6, rtol=0)
        H = torch.autograd.functional.hessian(f, w.detach())
        assert torch.all(torch.isfinite(H))


def test_nonfinite_inputs_give_nan():
    L = S.population_loss(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.zeros(2))
    assert np.isnan(L)
    L = S.population_loss(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([np.inf, 0.0]))
    assert not torch.isfinite(L)


def test_gradient_at_nondifferentiable_point_is_finite():
    """At W = 0, b = 0 (a dead feature exactly at b_i = 0) L has one-sided slopes; the evaluator
    returns the slope of the first matching piece (ReLU off), which is finite."""
    w = torch.zeros(15, dtype=torch.float64, requires_grad=True)
    (gr,) = torch.autograd.grad(S.population_loss_flat(w, 5, 2), w)
    assert torch.all(gr == 0)


@pytest.mark.slow
def test_gradient_matches_autograd_through_model_on_sampled_data():
    """The gradient of L equals E[grad of the per-sample loss] (ReLU: a.e. differentiable, bounded),
    so batched autograd through slt_tms.tms.forward agrees within Monte-Carlo error."""
    c, r = 6, 2
    num_groups, per_group = 40, 5000
    g = torch.Generator().manual_seed(21)
    k = 5.0
    for trial in range(2):
        w = torch.randn(r * c + c, dtype=torch.float64, generator=g) * 0.8
        x = OneHotUniform(c).sample(num_groups * per_group, torch.Generator().manual_seed(200 + trial))
        x = x.to(torch.float64).reshape(num_groups, per_group, c)
        wb = w.expand(num_groups, -1).clone().requires_grad_(True)
        loss = ((x - forward(wb, x, c, r)) ** 2).sum(-1).mean(-1)  # (groups,)
        (per,) = torch.autograd.grad(loss.sum(), wb)  # one gradient estimate per group
        est, se = per.mean(0), per.std(0) / num_groups**0.5
        wx = w.clone().requires_grad_(True)
        (exact,) = torch.autograd.grad(S.population_loss_flat(wx, c, r), wx)
        # components whose every group-gradient is identical (se = 0) must match to rounding
        assert torch.all((est - exact).abs() < k * se + 1e-12), (trial, est - exact, se)
        # negative control: the gradient at a shifted point is rejected by the same test
        w2 = (w + 0.1).requires_grad_(True)
        (other,) = torch.autograd.grad(S.population_loss_flat(w2, c, r), w2)
        assert torch.any((est - other).abs() > k * se + 1e-12)


# ----------------------------------------------------------------------------------------------
# 6. bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "W,b",
    [
        (np.zeros(4), np.zeros(4)),  # W not (..., r, c)
        (np.zeros((2, 4)), np.zeros(3)),  # mismatched c
        (np.zeros((2, 4)), np.zeros(())),  # b scalar
        (np.zeros((3, 2, 4)), np.zeros((2, 4))),  # batch axes do not broadcast
        (np.zeros((2, 0)), np.zeros(0)),  # no features
    ],
)
def test_bad_shapes_raise(W, b):
    for exact in (False, True):
        with pytest.raises(ValueError):
            S.population_loss(W, b, exact=exact)
    with pytest.raises(ValueError):
        S.population_loss(torch.as_tensor(W), torch.as_tensor(b))


def test_bad_flat_input_raises():
    with pytest.raises(ValueError, match="r\\*c \\+ c"):
        S.population_loss_flat(torch.zeros(17), 6, 2)
    with pytest.raises(ValueError, match="r\\*c \\+ c"):
        S.population_loss_flat(np.zeros(17), 6, 2)
    with pytest.raises(ValueError, match="c \\(number of features\\)"):
        S.population_loss_flat(torch.zeros(18), 0, 2)
    with pytest.raises(ValueError, match="r \\(hidden"):
        S.loss_expression(3, 0)
    with pytest.raises(ValueError, match="delta"):
        S.pair_term_derivation(2)
    with pytest.raises(ValueError, match="finite"):
        S.population_loss([[np.nan]], [0.0], exact=True)


# ----------------------------------------------------------------------------------------------
# 7. CLI
# ----------------------------------------------------------------------------------------------
def test_cli_theory_loss_prints_derived_expressions(capsys):
    assert cli_main(["theory", "loss", "--c", "3", "--r", "1"]) == 0
    out = capsys.readouterr().out
    diag, off = S.pair_terms()
    assert sp.sstr(diag) in out and sp.sstr(off) in out
    assert sp.sstr(S.loss_expression(3, 1)) in out
    assert cli_main(["theory", "loss", "--c", "3", "--latex"]) == 0
    out = capsys.readouterr().out
    assert sp.latex(off) in out and sp.latex(S.loss_expression(3, 2)) in out


def test_cli_theory_bad_input(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["theory", "loss", "--c", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err
    assert cli_main(["theory"]) == 2  # no subcommand: help on stderr
    assert "loss" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 8. docs generated from the code
# ----------------------------------------------------------------------------------------------
def test_docs_theory_md_is_generated_from_current_code():
    """docs/theory.md must equal what docs/gen_theory.py renders from the code (regenerate with
    ``python docs/gen_theory.py`` after changing the derivation)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "gen_theory.py"
    spec = importlib.util.spec_from_file_location("_gen_theory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (path.parent / "theory.md").read_text()
