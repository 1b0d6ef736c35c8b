"""Tests of slt_tms.theory.critical_points (k-gon families, certification, classification, CLI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sympy as sp
import torch

from slt_tms.cli import main
from slt_tms.theory.critical_points import (
    GRAD_TOL,
    analyse_point,
    critical_points,
    dead_bias_optimum,
    family_name,
    family_point,
    kgon,
    solve_kgon_family,
)
from slt_tms.theory.discovery import equivalent
from slt_tms.theory.symbolic import population_loss, population_loss_flat


@pytest.fixture(scope="module")
def points6():
    return critical_points(6, progress=False)


def _flat(W, b):
    return torch.as_tensor(np.concatenate([np.asarray(W).reshape(-1), np.asarray(b)]), dtype=torch.float64)


def test_every_named_point_at_c6_is_critical(points6):
    assert len(points6) == len({(p.k, p.sigma, p.phi) for p in points6})
    for p in points6:
        w = p.flat().requires_grad_(True)
        (g,) = torch.autograd.grad(population_loss_flat(w, 6), w)
        assert float(g.norm()) < GRAD_TOL, p.name
        assert p.extra["grad_norm"] < GRAD_TOL


def test_4gon_at_c4_has_zero_loss_and_is_not_c2():
    p = kgon(4, 4, exact=True)
    assert p.name == "4"
    # exact: W has entries 0, +-1 and b = 0, so the sympy evaluation decides L = 0 and grad L = 0
    assert population_loss(p.W, p.b, exact=True) == 0
    assert p.extra["gradient_exact_zero"] is True
    assert p.loss == 0.0
    assert not p.is_c2
    assert p.lambda_theory is None and p.hessian_eigenvalues is None and p.index is None
    assert "C^1 but not C^2" in p.lambda_reason
    # the culprits are the orthogonal neighbours: a_ij = 0 with b_i = 0
    assert "a_ij = 0, b_i = 0" in p.extra["c2_reason"]
    # L >= 0 everywhere, so L = 0 is a global minimum; the probe agrees
    assert p.extra["local_min_probe"][0]


@pytest.mark.parametrize("k", [5, 6, 7, 8])
def test_activity_pattern_holds_at_the_root(k):
    sol = solve_kgon_family(k, k)
    assert len(sol.roots) == 1
    r = sol.roots[0]
    assert r.residual < 1e-20  # polished at 40 digits
    # independent re-check of the pattern from (l*, b*): bias negative, nearest neighbours fire at mu = 1,
    # every farther neighbour never fires
    s = r.length**2
    assert r.bias < 0 and s + r.bias > 0
    assert s * math.cos(2 * math.pi / k) + r.bias > 0
    for m in range(2, k // 2 + 1):
        assert s * math.cos(2 * math.pi * m / k) + r.bias < 0
    # the point built from it is critical in all 3k coordinates (float64 autograd)
    p = kgon(k, k)
    assert p.extra["grad_norm"] < GRAD_TOL


def test_spurious_roots_are_rejected_and_reported():
    sol = solve_kgon_family(5, 5)
    # the pattern equations have real roots outside their own intervals; they must be listed, not kept
    assert sol.rejected
    for r in sol.roots:
        assert r.length > 0


def test_dead_bias_optimum_matches_closed_form_loss():
    for c in range(5, 9):
        beta, contribution = dead_bias_optimum(c)
        assert beta == sp.Rational(1, 2 * c)
        assert contribution == sp.Rational(1, 3) - sp.Rational(1, 4 * c)
        # switching one dead column from b = -1 to 1/(2c) lowers L by 1/(4c^2)
        W, b = family_point(4, c, 0)
        b2 = b.copy()
        b2[4] = 1 / (2 * c)
        diff = float(population_loss(W, b2) - population_loss(W, b))
        assert diff == pytest.approx(-1 / (4 * c * c), abs=1e-15)


def test_loss_ordering_and_lambda_follow_the_vertex_count(points6):
    by_name = {p.name: p for p in points6}
    # the max-sigma variant of each k at c = 6: more vertices -> lower loss
    losses = [by_name[family_name(k, 6 - k)].loss for k in (4, 5, 6)]
    assert losses[0] > losses[1] > losses[2]
    # among the minimally singular (C^2) minima, lambda does not decrease with k at fixed loss order
    c2 = sorted((p for p in points6 if p.lambda_theory is not None), key=lambda p: -p.loss)
    assert [p.name for p in c2] == ["5", "5+", "6"]
    lams = [p.lambda_theory for p in c2]
    assert lams == sorted(lams)
    # the global minimum among the named points is the hexagon
    assert points6[0].name == "6"


def test_lambda_is_rank_over_two_with_symmetry_zero_modes(points6):
    for p in points6:
        if not p.is_c2:
            assert p.lambda_theory is None and "not C^2" in p.lambda_reason
            continue
        # zero modes: one O(2) rotation + (W_i, b_i) of every dead column with negative bias (flat)
        num_dead_negative = p.c - p.k - p.sigma
        assert p.num_zero_modes == 1 + 3 * num_dead_negative
        assert p.index == 0
        assert p.lambda_theory == (p.d - p.num_zero_modes) / 2
        assert p.extra["eigenvalue_gap"] > 1e6


def test_invariance_under_o2_and_permutations():
    p = kgon(5, 6, sigma=1)
    rng = np.random.default_rng(0)
    th = rng.uniform(0, 2 * np.pi)
    Q = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1.0, -1.0])
    perm = rng.permutation(6)
    W2, b2 = (Q @ p.W)[:, perm], p.b[perm]
    a1 = analyse_point(p.flat(), 6)
    a2 = analyse_point(_flat(W2, b2), 6)
    assert a2.loss == pytest.approx(a1.loss, abs=1e-14)
    assert a2.grad_norm < GRAD_TOL
    np.testing.assert_allclose(a2.hessian_eigenvalues, a1.hessian_eigenvalues, atol=1e-10)
    assert a2.lambda_theory == a1.lambda_theory
    assert equivalent(p.W, p.b, W2, b2)
    # negative control: a different family is not equivalent
    q = kgon(5, 6)
    assert not equivalent(p.W, p.b, q.W, q.b)


def test_phi_variant_switches_off_columns():
    p = kgon(4, 6, sigma=1, phi=2)
    assert p.name == "4+,2-"
    assert np.all(p.b[2:4] < -np.sum(p.W[:, 2:4] ** 2, axis=0))  # b_j < -l^2: never fires
    assert p.extra["grad_norm"] < GRAD_TOL
    # the loss of the live part is 0; dead / switched-off outputs give 1/3 each, the sigma one 1/3 - 1/(4c)
    c = 6
    assert p.loss == pytest.approx((2 / 3 + 1 / 3 + (1 / 3 - 1 / (4 * c))) / c, abs=1e-15)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=7, c=6),
        dict(k=1, c=6),
        dict(k=4, c=6, sigma=3),
        dict(k=4, c=6, sigma=-1),
        dict(k=5, c=6, phi=1),
        dict(k=4, c=6, phi=4),
        dict(k=4.0, c=6),
        dict(k=4, c=6, dead_bias=0.5),
    ],
)
def test_bad_input_raises(kwargs):
    with pytest.raises(ValueError):
        kgon(**kwargs)


def test_bad_input_messages_say_what_is_allowed():
    with pytest.raises(ValueError, match="2 <= k <= c"):
        kgon(7, 6)
    with pytest.raises(ValueError, match="0 <= sigma <= c - k"):
        kgon(4, 6, sigma=3)
    with pytest.raises(ValueError, match="r = 2"):
        from slt_tms.theory.critical_points import _validate

        _validate(4, 6, 0, 0, r=3)


def test_cli_json_and_csv(capsys):
    assert main(["theory", "critical-points", "--c", "4", "--format", "json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["c"] == 4
    names = [row["name"] for row in data["points"]]
    assert names[0] == "4"
    columns = ("name", "k", "sigma", "phi", "l*", "b*", "loss", "lambda_theory", "index", "zero_modes", "C2")
    for key in columns:
        assert key in data["points"][0]
    assert data["points"][0]["C2"] is False and data["points"][0]["lambda_theory"] is None
    assert main(["theory", "critical-points", "--c", "4", "--format", "csv", "--quiet"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("name,k,sigma,phi,l*,b*,loss,lambda_theory,index,zero_modes,C2")
    assert main(["theory", "critical-points", "--c", "1", "--quiet"]) == 2
