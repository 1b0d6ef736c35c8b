"""Ground-truth problems: exact minima at the anchors, Hessian ranks, and Monte-Carlo volume scaling."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch

from slt_tms.theory import (
    GroundTruthProblem,
    deep_linear_network,
    dln_lambda,
    minimally_singular_lambda,
    normal_crossing,
    normal_crossing_lambda,
    reduced_rank_regression,
    regular_quadratic,
    rrr_case,
    rrr_lambda,
    standard_problems,
)

N_SAMPLES = 10_000


def _all_problems() -> list[GroundTruthProblem]:
    extra = [
        regular_quadratic(1, N_SAMPLES),
        normal_crossing((2, 0, 1), None, N_SAMPLES),
        reduced_rank_regression(1, 1, 1, 0, N_SAMPLES),
        reduced_rank_regression(3, 2, 2, 2, N_SAMPLES, seed=3),
        deep_linear_network((1, 1, 1, 1), 0, N_SAMPLES),
        deep_linear_network((2, 3, 1, 2), 1, N_SAMPLES, seed=5),
        deep_linear_network((4, 3), 2, N_SAMPLES, seed=1),
    ]
    return standard_problems(N_SAMPLES) + extra


PROBLEMS = _all_problems()
IDS = [p.name for p in PROBLEMS]


# ---------------------------------------------------------------------------------------------------
# the anchor is an exact global minimum
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_anchor_is_zero_minimum_with_zero_gradient(problem):
    w = problem.w_star.clone().requires_grad_(True)
    value = problem.potential(w)
    (grad,) = torch.autograd.grad(value, w)
    assert value.shape == ()
    # Exact zero up to float64 round-off of the split singular values (s^(1/L))^L = s (~1e-16, squared).
    assert abs(value.item()) < 1e-24
    assert grad.norm().item() < 1e-12
    # Every potential is a sum of squares / a product of even powers: non-negative everywhere.
    gen = torch.Generator().manual_seed(0)
    pts = problem.w_star + torch.randn(200, problem.d, generator=gen, dtype=torch.float64)
    vals = problem.potential(pts)
    assert vals.shape == (200,)
    assert torch.all(vals >= 0) and torch.all(vals[:10] > 0)


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_batched_over_leading_axes_equals_loop_and_keeps_dtype(problem):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 4, problem.d, generator=gen, dtype=torch.float64)
    batched = problem.potential(w)
    assert batched.shape == (3, 4)
    loop = torch.stack([torch.stack([problem.potential(w[i, j]) for j in range(4)]) for i in range(3)])
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=0.0)
    out32 = problem.potential(w.float(), batch=None)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), batched, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_potential_survives_pickling(problem):
    # Potentials are module-level callables, so problems can be shipped to worker processes.
    clone = pickle.loads(pickle.dumps(problem.potential))
    w = torch.randn(5, problem.d, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(clone(w), problem.potential(w), rtol=0, atol=0)


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_potential_rejects_wrong_shape(problem):
    with pytest.raises(ValueError, match="shape"):
        problem.potential(torch.zeros(problem.d + 1, dtype=torch.float64))
    with pytest.raises(ValueError):
        problem.potential(torch.tensor(0.0))


@pytest.mark.parametrize(
    "problem",
    [reduced_rank_regression(2, 3, 2, 1, 10, seed=2), deep_linear_network((2, 2, 1, 2), 1, 10, seed=4)],
    ids=["rrr", "dln"],
)
def test_gradients_match_finite_differences(problem):
    gen = torch.Generator().manual_seed(2)
    w = (problem.w_star + 0.3 * torch.randn(problem.d, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(problem.potential, (w,), eps=1e-6, atol=1e-6)


def test_lambda_true_is_the_closed_form():
    # The wiring from constructors to closed forms, for every family.
    assert regular_quadratic(5, 10).lambda_true == 2.5
    nc = normal_crossing((1, 2), (0, 1), 10)
    assert (nc.lambda_true, nc.multiplicity) == normal_crossing_lambda((1, 2), (0, 1))
    for M, N, H, r in [(3, 3, 2, 1), (2, 5, 2, 1), (5, 2, 2, 1), (2, 2, 5, 1), (1, 1, 1, 0)]:
        p = reduced_rank_regression(M, N, H, r, 10)
        assert (p.lambda_true, p.multiplicity) == rrr_lambda(M, N, H, r)
        assert p.d == H * (M + N)
    p = deep_linear_network((3, 2, 2, 3), 1, 10)
    assert (p.lambda_true, p.multiplicity) == dln_lambda((3, 2, 2, 3), 1)
    assert p.d == 3 * 2 + 2 * 2 + 2 * 3


def test_standard_problems_cover_every_rrr_case():
    cases = {
        rrr_case(p.config["M"], p.config["N"], p.config["H"], p.config["r"])
        for p in standard_problems(100)
        if p.config["constructor"] == "reduced_rank_regression"
    }
    assert cases == {1, 2, 3, 4}
    assert all(p.n == 100 for p in standard_problems(100))


# ---------------------------------------------------------------------------------------------------
# structure of the RRR / DLN anchors
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("M", "N", "H", "r"), [(3, 3, 2, 1), (4, 2, 3, 2), (2, 2, 5, 1), (3, 2, 2, 0)])
def test_rrr_anchor_is_a_deepest_point(M, N, H, r):
    p = reduced_rank_regression(M, N, H, r, 10, seed=7)
    A = p.w_star[: H * M].reshape(H, M)
    B = p.w_star[H * M :].reshape(N, H)
    # Spare hidden units are exactly zero (the deepest stratum of the true set).
    assert torch.all(A[r:] == 0) and torch.all(B[:, r:] == 0)
    # The true map has rank r and singular values linspace(1, 2, r).
    sv = torch.linalg.svdvals(B @ A)
    torch.testing.assert_close(sv[:r], torch.linspace(1.0, 2.0, r, dtype=torch.float64).flip(0))
    assert torch.all(sv[r:] < 1e-12)


def test_rrr_equals_dln_with_one_hidden_layer():
    # Same layout (A then B, row-major) and same anchor construction: the potentials coincide.
    rrr = reduced_rank_regression(3, 4, 2, 1, 10, seed=11)
    dln = deep_linear_network((3, 2, 4), 1, 10, seed=11)
    torch.testing.assert_close(rrr.w_star, dln.w_star, rtol=0, atol=0)
    w = torch.randn(50, rrr.d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(rrr.potential(w), dln.potential(w), rtol=0, atol=0)


def test_scalar_rrr_is_the_normal_crossing():
    # M = N = H = 1, r = 0: L(a, b) = (b a)^2 = u0^2 u1^2.
    rrr = reduced_rank_regression(1, 1, 1, 0, 10)
    nc = normal_crossing((1, 1), None, 10)
    w = torch.randn(100, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(rrr.potential(w), nc.potential(w))
    assert (rrr.lambda_true, rrr.multiplicity) == (nc.lambda_true, nc.multiplicity) == (0.5, 2)


def test_seed_determines_the_anchor():
    a = reduced_rank_regression(3, 3, 2, 1, 10, seed=5)
    b = reduced_rank_regression(3, 3, 2, 1, 10, seed=5)
    c = reduced_rank_regression(3, 3, 2, 1, 10, seed=6)
    torch.testing.assert_close(a.w_star, b.w_star, rtol=0, atol=0)
    assert not torch.allclose(a.w_star, c.w_star)
    assert a.config["seed"] == 5


def test_dtype_and_device_of_anchor():
    p = deep_linear_network((2, 2, 2), 1, 10, dtype=torch.float32, device="cpu")
    assert p.w_star.dtype == torch.float32 and p.w_star.device.type == "cpu"


# ---------------------------------------------------------------------------------------------------
# Hessian rank at the anchor vs the closed forms
# ---------------------------------------------------------------------------------------------------


def _hessian_eigenvalues(problem: GroundTruthProblem) -> torch.Tensor:
    hess = torch.autograd.functional.hessian(problem.potential, problem.w_star.clone())
    return torch.linalg.eigvalsh(hess)


@pytest.mark.parametrize(
    "problem",
    [
        regular_quadratic(6, 10),
        reduced_rank_regression(3, 2, 2, 2, 10, seed=1),  # H = r: rank-2 manifold of 2x3 matrices
        reduced_rank_regression(4, 4, 1, 1, 10, seed=2),
        deep_linear_network((3, 2, 2, 3), 2, 10, seed=3),  # bottleneck width = rank
        deep_linear_network((3, 4), 1, 10),  # a single layer is regular
    ],
    ids=lambda p: p.name,
)
def test_minimally_singular_problems_have_lambda_half_hessian_rank(problem):
    # Where the true set is a smooth manifold with K non-degenerate across it (H = r, or a bottleneck of
    # width r), lambda = rank(Hessian)/2: the closed forms and the Hessian must agree.
    lam, rank, _ = minimally_singular_lambda(_hessian_eigenvalues(problem).numpy())
    assert lam == problem.lambda_true and rank == 2 * problem.lambda_true
    assert problem.multiplicity == 1


@pytest.mark.parametrize(("M", "N", "H", "r"), [(3, 3, 2, 1), (2, 5, 2, 1), (2, 2, 5, 1), (3, 4, 3, 2)])
def test_singular_rrr_lambda_exceeds_half_hessian_rank(M, N, H, r):
    # With spare hidden units (H > r) the anchor is singular: the Hessian only sees the tangent space of
    # the rank-r matrices (dimension r(M + N - r)) and lambda = rank/2 + (contribution of the
    # degenerate directions) > rank/2 (splitting lemma).
    p = reduced_rank_regression(M, N, H, r, 10, seed=8)
    _, rank, _ = minimally_singular_lambda(_hessian_eigenvalues(p).numpy())
    assert rank == r * (M + N - r)
    assert rank / 2 < p.lambda_true <= p.d / 2


# ---------------------------------------------------------------------------------------------------
# Monte-Carlo volume scaling V(eps) ~ eps^lambda (-log eps)^(m-1)
# ---------------------------------------------------------------------------------------------------
# Uniform samples in the box [-1, 1]^d; by the sign symmetry of every potential below, the fraction with
# L < eps equals the fraction for the box [0, 1]^d, for which the exact volumes were derived by hand:
#
#   regular d=2, c=(1,2):   ellipse with semi-axes sqrt(2 eps), sqrt(eps) (inside the box for eps <= 1/2):
#                           V = pi sqrt(2) eps / 4.
#   regular d=3, c=(1,1.5,2): V = (4/3) pi (2 eps)^(3/2) / sqrt(3) / 8 = pi (2 eps)^(3/2) / (6 sqrt(3)).
#   u^4 (k = (2,)):         V = eps^(1/4).
#   u0^2 u1^4 (k = (1, 2)): P(u0 u1^2 < t), t = sqrt(eps): int_0^1 min(1, t/u1^2) du1
#                           = sqrt(t) + t (1/sqrt(t) - 1) = 2 eps^(1/4) - eps^(1/2).
#   u0^2 u1^2 (k = (1, 1)): P(u0 u1 < t) = t - t log t with t = sqrt(eps)   (m = 2: the log factor).
#   u0^2 |u1| (k=(1,1), h=(0,1)): int_0^1 min(1, sqrt(eps/u1)) du1 = eps + 2 sqrt(eps)(1 - sqrt(eps))
#                           = 2 sqrt(eps) - eps.
#   |u| (k = (1,), h = (1,)): V = eps.
#
# Test 1: the MC fraction at each eps matches the exact V within 5 binomial standard errors.
# Test 2: the MC log-log slope between eps_lo and eps_hi matches the asymptotic slope
#     lambda + (m - 1) [log(-log eps_hi) - log(-log eps_lo)] / [log eps_hi - log eps_lo]
# of C eps^lambda (-log eps)^(m-1), using the problem's lambda_true and multiplicity, within
# 4 SE (delta method: Var log p_hat = (1 - p)/(num p), independent samples at the two eps) plus a bias
# allowance = |exact finite-eps slope - asymptotic slope| computed from the hand-derived V with the
# hand-derived (lambda, m) below (zero for the exact power laws). A wrong lambda_true or multiplicity
# shifts the target by more than this tolerance (checked in the negative-control test).

NUM_MC = 400_000

VOLUME_CASES = [
    # (problem, eps_lo, eps_hi, exact V(eps) on [0,1]^d, hand lambda, hand m)
    (regular_quadratic(2, 10), 1e-3, 1e-1, lambda e: math.pi * math.sqrt(2) * e / 4, 1.0, 1),
    (regular_quadratic(3, 10), 2e-2, 5e-1, lambda e: math.pi * (2 * e) ** 1.5 / (6 * math.sqrt(3)), 1.5, 1),
    (normal_crossing((2,), None, 10), 1e-12, 1e-4, lambda e: e**0.25, 0.25, 1),
    (normal_crossing((1, 2), None, 10), 1e-12, 1e-4, lambda e: 2 * e**0.25 - e**0.5, 0.25, 1),
    (
        normal_crossing((1, 1), None, 10),
        1e-8,
        1e-2,
        lambda e: math.sqrt(e) * (1 - math.log(math.sqrt(e))),
        0.5,
        2,
    ),
    (normal_crossing((1, 1), (0, 1), 10), 1e-6, 1e-2, lambda e: 2 * math.sqrt(e) - e, 0.5, 1),
    (normal_crossing((1,), (1,), 10), 2e-3, 2e-1, lambda e: e, 1.0, 1),
]


def _asymptotic_slope(lam: float, m: int, lo: float, hi: float) -> float:
    return lam + (m - 1) * (math.log(-math.log(hi)) - math.log(-math.log(lo))) / (math.log(hi) - math.log(lo))


def _mc_fraction(problem: GroundTruthProblem, eps: float, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    u = 2.0 * torch.rand(NUM_MC, problem.d, generator=gen, dtype=torch.float64) - 1.0
    return (problem.potential(u) < eps).double().mean().item()


def _volume_check(problem, lo, hi, exact, lam_hand, m_hand, lam_claim, m_claim) -> tuple[float, float]:
    """Return (|slope_mc - target|, tolerance) after checking the MC fractions against the exact V."""
    fractions = {}
    for seed, eps in enumerate((lo, hi)):
        p_hat = _mc_fraction(problem, eps, seed)
        p = exact(eps)
        se = math.sqrt(p * (1 - p) / NUM_MC)
        assert abs(p_hat - p) <= 5 * se, (problem.name, eps, p_hat, p)
        fractions[eps] = (p_hat, p)
    (p_lo_hat, p_lo), (p_hi_hat, p_hi) = fractions[lo], fractions[hi]
    log_ratio = math.log(hi / lo)
    slope_mc = math.log(p_hi_hat / p_lo_hat) / log_ratio
    se_slope = math.sqrt((1 - p_lo) / (NUM_MC * p_lo) + (1 - p_hi) / (NUM_MC * p_hi)) / log_ratio
    slope_exact = math.log(p_hi / p_lo) / log_ratio
    bias = abs(slope_exact - _asymptotic_slope(lam_hand, m_hand, lo, hi))
    target = _asymptotic_slope(lam_claim, m_claim, lo, hi)
    return abs(slope_mc - target), 4 * se_slope + bias


@pytest.mark.parametrize(
    ("problem", "lo", "hi", "exact", "lam_hand", "m_hand"),
    VOLUME_CASES,
    ids=[c[0].name for c in VOLUME_CASES],
)
def test_volume_scaling_matches_lambda(problem, lo, hi, exact, lam_hand, m_hand):
    assert (problem.lambda_true, problem.multiplicity) == (lam_hand, m_hand)
    err, tol = _volume_check(
        problem, lo, hi, exact, lam_hand, m_hand, problem.lambda_true, problem.multiplicity
    )
    assert err <= tol, (problem.name, err, tol)
    # The tolerance is informative: below 10% of lambda (plausible wrong answers differ by far more).
    assert tol < 0.1 * problem.lambda_true


@pytest.mark.parametrize(
    ("case_index", "wrong_lambda", "wrong_m"),
    [(0, 1.5, 1), (3, 0.5, 1), (4, 0.5, 1), (5, 0.25, 1)],
)
def test_volume_scaling_negative_control(case_index, wrong_lambda, wrong_m):
    # The same check with a wrong (lambda, m) claim must fail: e.g. d/2 + 1/2 for a regular problem, the
    # larger exponent for u0^2 u1^4, a missed multiplicity for u0^2 u1^2, a prior ignored for u0^2 |u1|.
    problem, lo, hi, exact, lam_hand, m_hand = VOLUME_CASES[case_index]
    err, tol = _volume_check(problem, lo, hi, exact, lam_hand, m_hand, wrong_lambda, wrong_m)
    assert err > tol


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: regular_quadratic(0, 10),
        lambda: regular_quadratic(3, 1),
        lambda: normal_crossing((0, 0), None, 10),
        lambda: normal_crossing((1, 2), (0,), 10),
        lambda: reduced_rank_regression(2, 2, 1, 2, 10),
        lambda: reduced_rank_regression(2, 2, 2, 1, 10, seed=-1),
        lambda: reduced_rank_regression(2, 2, 2, 1, 10.5),
        lambda: deep_linear_network((3,), 0, 10),
        lambda: deep_linear_network((2, 1, 2), 2, 10),
    ],
)
def test_constructors_reject_bad_input(make):
    with pytest.raises(ValueError):
        make()


def test_problem_record_validates_itself():
    good = regular_quadratic(2, 10)
    with pytest.raises(ValueError, match="w_star"):
        dataclasses.replace(good, w_star=torch.zeros(3))
    with pytest.raises(ValueError, match="lambda_true"):
        dataclasses.replace(good, lambda_true=-0.5)
