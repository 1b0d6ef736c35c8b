"""Closed-form learning coefficients: worked examples derived by hand, cross-checks, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from slt_tms.theory import learning_coefficients as lc

# A grid small enough to be fast, large enough to hit every case of the RRR theorem many times.
RRR_GRID = [
    (M, N, H, r) for M, N, H in itertools.product(range(1, 7), repeat=3) for r in range(0, min(M, N, H) + 1)
]


# ---------------------------------------------------------------------------------------------------
# regular
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 7, 18])
def test_regular_is_half_dimension(d):
    # {1/2 w^T H w < eps} is an ellipsoid with semi-axes ~ sqrt(eps): volume ~ eps^(d/2), m = 1.
    lam, m = lc.regular_lambda(d)
    assert lam == d / 2 and m == 1
    assert isinstance(lc.regular_lambda(d), lc.LearningCoefficient)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "3", None])
def test_regular_rejects_bad_d(bad):
    with pytest.raises(ValueError, match="d"):
        lc.regular_lambda(bad)


def test_regular_accepts_numpy_integers():
    assert lc.regular_lambda(np.int64(4)) == (2.0, 1)


# ---------------------------------------------------------------------------------------------------
# normal crossings
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_normal_crossing_one_coordinate(k):
    # vol{|w| < 1 : w^(2k) < eps} = 2 eps^(1/(2k)) exactly: lambda = 1/(2k), m = 1.
    assert lc.normal_crossing_lambda([k]) == (1 / (2 * k), 1)


@pytest.mark.parametrize("d", [1, 2, 3, 6])
def test_normal_crossing_all_tied(d):
    # K = (w_1 ... w_d)^2: zeta = prod_i 1/(2z + 1) has a pole of order d at z = -1/2.
    assert lc.normal_crossing_lambda([1] * d) == (0.5, d)


def test_normal_crossing_worked_examples():
    # K = w1^2 w2^4: ratios (0+1)/2 = 1/2 and (0+1)/4 = 1/4 -> lambda = 1/4, one minimiser.
    assert lc.normal_crossing_lambda([1, 2]) == (0.25, 1)
    # Prior |w2|^1 on K = w1^2 w2^4: ratios 1/2 and (1+1)/4 = 1/2 tie -> lambda = 1/2, m = 2.
    assert lc.normal_crossing_lambda([1, 2], [0, 1]) == (0.5, 2)
    # Prior |w1|^2: ratios 3/2 and 1/4 -> 1/4.
    assert lc.normal_crossing_lambda([1, 2], [2, 0]) == (0.25, 1)
    # k_i = 0 is a free direction and does not enter: K = w2^6 -> 1/6.
    assert lc.normal_crossing_lambda([0, 3]) == (1 / 6, 1)
    # K = w1^2 w2^2 w3^4 with prior |w3|^1: ratios 1/2, 1/2, 2/4 = 1/2: three-way tie.
    assert lc.normal_crossing_lambda([1, 1, 2], [0, 0, 1]) == (0.5, 3)


@pytest.mark.parametrize(
    ("k", "h"),
    [([], None), ([0, 0], None), ([1, -1], None), ([1.5], None), ([1, 2], [0]), ([1], [-1]), (3, None)],
)
def test_normal_crossing_rejects_bad_input(k, h):
    with pytest.raises(ValueError):
        lc.normal_crossing_lambda(k, h)


# ---------------------------------------------------------------------------------------------------
# reduced-rank regression (Aoyagi & Watanabe 2005)
# ---------------------------------------------------------------------------------------------------


def test_rrr_scalar_cases():
    # M = N = H = 1, r = 0: K = (ab)^2 is the normal crossing k = (1, 1): lambda = 1/2, m = 2.
    assert lc.rrr_lambda(1, 1, 1, 0) == (0.5, 2)
    # r = 1: K = (ab - c)^2 with c != 0; grad(ab) = (b, a) != 0 on the fibre, so locally K = t^2 in one
    # transverse coordinate t: lambda = 1/2, m = 1.
    assert lc.rrr_lambda(1, 1, 1, 1) == (0.5, 1)


@pytest.mark.parametrize("H", [1, 2, 3, 4, 6])
def test_rrr_scalar_in_scalar_out_r0(H):
    # M = N = 1, r = 0: K = q^2 with q(a, b) = sum_h b_h a_h a non-degenerate quadratic form in n = 2H
    # variables. Blowing up the origin (q = t^2 q~, Jacobian t^(n-1)) gives the candidate n/(2*2) = H/2
    # for K = q^2, and the smooth strict transform {q~ = 0} gives 1/2. So lambda = min(H/2, 1/2) = 1/2,
    # with m = 2 when the two candidates tie (H = 1) and m = 1 otherwise.
    assert lc.rrr_lambda(1, 1, H, 0) == (0.5, 2 if H == 1 else 1)


@pytest.mark.parametrize("N", [1, 2, 3, 5])
def test_rrr_one_hidden_unit_one_input_r0(N):
    # M = H = 1, r = 0: K = a^2 ||b||^2. Polar coordinates in b (rho = ||b||, volume rho^(N-1) d rho)
    # give the normal crossing K = a^2 rho^2 with prior |rho|^(N-1): lambda = min(1/2, N/2) = 1/2,
    # m = 2 iff N = 1.
    assert lc.rrr_lambda(1, N, 1, 0) == (0.5, 2 if N == 1 else 1)
    assert lc.rrr_lambda(N, 1, 1, 0) == (0.5, 2 if N == 1 else 1)


def test_rrr_each_case_by_hand():
    # Case 1, M+N+H+r = 9 odd: (2*3*6 - 0 - 9 + 1)/8 = 28/8 = 7/2, m = 2.
    assert lc.rrr_case(3, 3, 2, 1) == 1 and lc.rrr_lambda(3, 3, 2, 1) == (3.5, 2)
    # Case 1, M+N+H+r = 6 even, r = 0: (2*2*4 - 0 - 4)/8 = 12/8 = 3/2, m = 1.
    assert lc.rrr_case(2, 2, 2, 0) == 1 and lc.rrr_lambda(2, 2, 2, 0) == (1.5, 1)
    # Case 2 (M + H = 4 < N + r = 6): (H M - H r + N r)/2 = (4 - 2 + 5)/2 = 7/2.
    assert lc.rrr_case(2, 5, 2, 1) == 2 and lc.rrr_lambda(2, 5, 2, 1) == (3.5, 1)
    # Case 3 (N + H = 4 < M + r = 6): (H N - H r + M r)/2 = (4 - 2 + 5)/2 = 7/2.
    assert lc.rrr_case(5, 2, 2, 1) == 3 and lc.rrr_lambda(5, 2, 2, 1) == (3.5, 1)
    # Case 4 (M + N = 4 < H + r = 6): M N / 2 = 2.
    assert lc.rrr_case(2, 2, 5, 1) == 4 and lc.rrr_lambda(2, 2, 5, 1) == (2.0, 1)


def test_rrr_grid_hits_all_four_cases():
    assert {lc.rrr_case(*args) for args in RRR_GRID} == {1, 2, 3, 4}


def test_rrr_h_equals_r_is_rank_r_manifold():
    # H = r: near the true parameter (A, B full rank r) the map (A, B) -> BA is a submersion onto the
    # manifold of rank-r N x M matrices (dimension r(M + N - r)), whose fibres are GL(r) orbits. K is
    # non-degenerate transverse to the fibre: lambda = r(M + N - r)/2, m = 1 (not d/2 = r(M + N)/2).
    for M, N in itertools.product(range(1, 7), repeat=2):
        for r in range(1, min(M, N) + 1):
            assert lc.rrr_lambda(M, N, r, r) == (r * (M + N - r) / 2, 1), (M, N, r)


def test_rrr_symmetric_in_input_and_output():
    # Transposing y = BAx gives x-space <-> y-space with the same K: lambda(M, N) = lambda(N, M).
    for M, N, H, r in RRR_GRID:
        assert lc.rrr_lambda(M, N, H, r) == lc.rrr_lambda(N, M, H, r)


def test_rrr_bounds():
    # 0 <= lambda <= d/2 with d = H(M + N), and lambda >= r(M + N - r)/2 (the rank-r manifold part:
    # the splitting lemma gives lambda = rank(Hessian)/2 + lambda_rest >= rank(Hessian)/2, and at the
    # deepest true parameter the Hessian rank is the tangent dimension r(M + N - r)).
    for M, N, H, r in RRR_GRID:
        lam, m = lc.rrr_lambda(M, N, H, r)
        assert 0 < lam <= H * (M + N) / 2
        assert lam >= r * (M + N - r) / 2
        assert m in (1, 2)


def test_rrr_full_h_reaches_regular_value():
    # H >= M + N - r puts us in case 4 (or on its boundary): lambda = MN/2, half the dimension of the
    # space of N x M matrices, whatever H is.
    for M, N in itertools.product(range(1, 5), repeat=2):
        for r in range(0, min(M, N) + 1):
            assert lc.rrr_lambda(M, N, M + N + 3, r)[0] == M * N / 2


@pytest.mark.parametrize(
    "args", [(0, 1, 1, 0), (1, 1, 1, 2), (2, 2, 1, 2), (1, 1, 1, -1), (1.0, 1, 1, 0), (True, 1, 1, 0)]
)
def test_rrr_rejects_bad_input(args):
    with pytest.raises(ValueError):
        lc.rrr_lambda(*args)


# ---------------------------------------------------------------------------------------------------
# deep linear networks (Aoyagi 2024)
# ---------------------------------------------------------------------------------------------------


def test_dln_one_hidden_layer_is_rrr():
    # A DLN with widths (M, H, N) is the RRR model y = BAx: the two theorems must agree, value and order.
    for M, N, H, r in RRR_GRID:
        assert lc.dln_lambda([M, H, N], r) == lc.rrr_lambda(M, N, H, r), (M, N, H, r)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5, 8])
def test_dln_width_one_layers(num_layers):
    widths = [1] * (num_layers + 1)
    # r = 0: K = (w_1 ... w_L)^2, the normal crossing k = (1, ..., 1): lambda = 1/2, m = L.
    assert lc.dln_lambda(widths, 0) == (0.5, num_layers)
    # r = 1: K = (w_1 ... w_L - c)^2, c != 0, smooth fibre: lambda = 1/2, m = 1.
    assert lc.dln_lambda(widths, 1) == (0.5, 1)


@pytest.mark.parametrize(("h1", "h2"), [(1, 1), (2, 3), (4, 1), (5, 5)])
def test_dln_single_layer_is_regular(h1, h2):
    # One layer: K = ||W - C0||_F^2 is a regular quadratic in d = h1 h2 parameters for every rank.
    for r in range(0, min(h1, h2) + 1):
        assert lc.dln_lambda([h1, h2], r) == (h1 * h2 / 2, 1)


def test_dln_worked_examples():
    # widths (2, 2, 2, 2), r = 0: Delta = (2, 2, 2, 2), all selected, l = 3, S = 8,
    # a = 8 - (ceil(8/3) - 1) * 3 = 2, so lambda = 0 + 2*1/12 - (3*2/4)(8/3)^2 + (6 pairs * 4)/2
    # = 1/6 - 32/3 + 12 = 3/2 and m = a(l - a) + 1 = 3.
    assert lc.dln_lambda([2, 2, 2, 2], 0) == (1.5, 3)
    # widths (3, 2, 2, 3), r = 1: Delta sorted (1, 1, 2, 2); prefix sums 2, 4, 6 against l*max 1*1, 2*2,
    # 3*2 all pass, so all four are selected: l = 3, S = 6, a = 6 - (2 - 1)*3 = 3, a(l - a) = 0.
    # lambda = (-1 + 1*(3 + 3))/2 + 0 - (3*2/4)(6/3)^2 + (1*1 + 1*2 + 1*2 + 1*2 + 1*2 + 2*2)/2
    #        = 5/2 - 6 + 13/2 = 3, m = 1.
    assert lc.dln_lambda([3, 2, 2, 3], 1) == (3.0, 1)
    # widths (3, 2, 2, 3), r = 2: Delta = (1, 0, 0, 1) sorted (0, 0, 1, 1); the prefix of size 3 fails
    # (0+0+1 < 2*1), so Sigma = {0, 0}, l = 1, S = 0, a = 1, lambda = (-4 + 2*6)/2 = 4, m = 1: the
    # rank-2 bottleneck makes the product map a submersion onto rank-2 3x3 matrices (dim 2*(3+3-2) = 8).
    assert lc.dln_lambda([3, 2, 2, 3], 2) == (4.0, 1)
    # widths (2, 10, 2), r = 0: the wide hidden layer is excluded (2 + 2 + 10 < 2 * 10): Sigma = {2, 2},
    # l = 1, lambda = 2*2/2 = 2 = MN/2, RRR case 4.
    assert lc.dln_lambda([2, 10, 2], 0) == (2.0, 1)


def test_dln_reversal_and_bounds():
    # Reversing the widths is transposing the network (W_s -> W_{L+1-s}^T): same K up to relabelling.
    # And 0 <= lambda <= d/2 with d = sum_s H_s H_{s+1}.
    for widths in itertools.product(range(1, 5), repeat=4):
        d = sum(a * b for a, b in itertools.pairwise(widths))
        for r in range(0, min(widths) + 1):
            lam, m = lc.dln_lambda(widths, r)
            assert (lam, m) == lc.dln_lambda(widths[::-1], r)
            assert 0 < lam <= d / 2 and m >= 1
            # The rank-r part: lambda >= r(H_1 + H_{L+1} - r)/2 (Hessian rank at the deepest point).
            assert lam >= r * (widths[0] + widths[-1] - r) / 2


def test_dln_adding_a_wide_layer_does_not_change_lambda():
    # A hidden layer wider than the selected set's bound is excluded from Sigma and does not enter the
    # formula, e.g. widths (2, 2, 2) (RRR M=N=H=2, r=0: 3/2) with a 40-wide layer inserted: the set
    # {2, 2, 2} still satisfies S = 6 < l * 38 = 3 * 38 (Delta_k = 40), so lambda is unchanged.
    assert lc.dln_lambda([2, 40, 2, 2], 0)[0] == lc.dln_lambda([2, 2, 2], 0)[0] == 1.5


@pytest.mark.parametrize(
    ("widths", "rank"), [([3], 0), ([], 0), ([2, 0, 2], 0), ([2, 2], 3), ([2, 2], -1), ("22", 0), (5, 0)]
)
def test_dln_rejects_bad_input(widths, rank):
    with pytest.raises(ValueError):
        lc.dln_lambda(widths, rank)


# ---------------------------------------------------------------------------------------------------
# minimally singular points
# ---------------------------------------------------------------------------------------------------


def test_minimally_singular_clear_gap():
    res = lc.minimally_singular_lambda([3.0, -2e-15, 1.0, 0.5, 1e-16])
    assert (res.value, res.rank) == (1.5, 3)
    # Deciding gap: 0.5 / (1e-12 * 3.0) (zeros clamped at the floor).
    assert math.isclose(res.gap, 0.5 / 3e-12)


def test_minimally_singular_full_rank():
    lam, rank, gap = lc.minimally_singular_lambda(np.array([2.0, 1.0, 0.3]))
    assert (lam, rank) == (1.5, 3)
    assert math.isclose(gap, 0.3 / 2e-12)


def test_minimally_singular_real_small_eigenvalue_is_kept():
    # A genuinely small eigenvalue (1e-3 relative) far above round-off (1e-15) is kept: the deciding gap
    # 1e-3 / 1e-12 = 1e9 dominates the 1e3 gap by 1e6 >= rel_gap.
    assert lc.minimally_singular_lambda([1.0, 1e-3, 1e-15, 0.0]).rank == 2


@pytest.mark.parametrize(
    "eigs",
    [
        [1.0, 1e-6, 1e-13],  # two equal gaps of 1e6: rank 1 or 2?
        [1.0, 1e-4, 1e-9],  # gaps 1e4 and 1e5 do not dominate each other
        list(np.logspace(0, -14, 8)),  # smooth decay into the noise floor: every gap is 1e2 < rel_gap
    ],
)
def test_minimally_singular_refuses_without_clear_gap(eigs):
    with pytest.raises(ValueError, match="no clear eigenvalue gap"):
        lc.minimally_singular_lambda(eigs)


@pytest.mark.parametrize("eigs", [[], [np.nan, 1.0], [np.inf], [0.0, 0.0]])
def test_minimally_singular_rejects_bad_spectra(eigs):
    with pytest.raises(ValueError):
        lc.minimally_singular_lambda(eigs)


@pytest.mark.parametrize(("rel_gap", "floor"), [(1.0, 1e-12), (0.5, 1e-12), (1e3, 0.0), (1e3, 1.0)])
def test_minimally_singular_rejects_bad_settings(rel_gap, floor):
    with pytest.raises(ValueError):
        lc.minimally_singular_lambda([1.0, 0.0], rel_gap=rel_gap, floor=floor)
