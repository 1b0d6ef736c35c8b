"""Tests of slt_tms.analysis.phase_constant: the O(1) constant K of
log Z(n) = -n L* - lambda log n + K + o(1).

Every term is checked on a toy whose evidence Z(n) = int phi(w) exp(-n L(w)) dw (prior N(0, I)) is known in
closed form or by one-dimensional quadrature: K must equal lim_n (log Z(n) + n L* + lambda log n) to 1e-3.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from slt_tms.analysis.free_energy import PhaseRecord, crossover
from slt_tms.analysis.phase_constant import (
    VARIANTS,
    constant_terms,
    dead_columns,
    flat_region_mass,
    log_normal_density,
    num_symmetric_copies,
    orbit_length,
    phase_constant,
    variant_log_constant,
)
from slt_tms.analysis.switch import SwitchPoint
from slt_tms.theory.critical_points import kgon
from slt_tms.theory.symbolic import population_loss_flat

LOG_2PI = math.log(2 * math.pi)


@pytest.fixture(scope="module")
def c6():
    """The c = 6 points of the 5 -> 6 switch (kgon directly: faster than critical_points(6))."""
    return {"6": kgon(6, 6, exact=False), "5": kgon(5, 6, exact=False), "5+": kgon(5, 6, 1, exact=False)}


# ---------------------------------------------------------------------------------------------------------
# (i) + (ii): prior and Laplace volume on a Gaussian evidence
# ---------------------------------------------------------------------------------------------------------


def _gaussian_log_evidence(w0: np.ndarray, Q: np.ndarray, n: float) -> float:
    """log int N(w; 0, I) exp(-n (w - w0)^T Q (w - w0)) dw, exactly:
    = log N(w0; 0, I + (2nQ)^-1) + (d/2) log 2 pi - 1/2 log det(2 n Q)."""
    d = w0.size
    S = np.eye(d) + np.linalg.inv(2 * n * Q)
    _, logdet_S = np.linalg.slogdet(S)
    log_n0 = -0.5 * w0 @ np.linalg.solve(S, w0) - 0.5 * logdet_S - 0.5 * d * LOG_2PI
    return float(log_n0 + 0.5 * d * LOG_2PI - 0.5 * np.linalg.slogdet(2 * n * Q)[1])


def test_gaussian_evidence_closed_form_matches_quadrature():
    w0, q, n = np.array([0.7]), np.array([[1.3]]), 50.0
    val = integrate.quad(lambda w: norm.pdf(w) * math.exp(-n * q[0, 0] * (w - w0[0]) ** 2), -5, 5,
                         points=[w0[0]], epsabs=1e-14)[0]
    assert abs(math.log(val) - _gaussian_log_evidence(w0, q, n)) < 1e-10


def test_prior_and_laplace_terms_on_a_2d_quadratic_loss():
    # L(w) = (w - w0)^T Q (w - w0) (no factor 1/2): Hessian H = 2 Q, lambda = d/2 = 1, L* = 0
    w0 = np.array([0.8, -0.5])
    Q = np.array([[1.5, 0.4], [0.4, 0.7]])
    H = 2 * Q
    k = constant_terms("q", w0, np.linalg.eigvalsh(H), 2)
    n = 1e7
    limit = _gaussian_log_evidence(w0, Q, n) + 1.0 * math.log(n)
    assert abs(k.total - limit) < 1e-3
    assert k.log_prior_nonflat == pytest.approx(log_normal_density(w0))
    assert k.laplace_volume == pytest.approx(LOG_2PI - 0.5 * math.log(np.linalg.det(H)))
    assert k.lambda_ == 1.0 and k.log_orbit_length == 0.0 and k.log_copies == 0.0 and k.log_flat_mass == 0.0
    # the factor-2 convention matters: the Hessian of L/2 (i.e. Q) misses by (d/2) log 2
    wrong = constant_terms("q", w0, np.linalg.eigvalsh(Q), 2)
    assert abs(wrong.total - limit - math.log(2)) < 1e-3


# ---------------------------------------------------------------------------------------------------------
# (iv): prior mass of a flat region
# ---------------------------------------------------------------------------------------------------------


def _half_line_log_evidence(n: float, power: int) -> float:
    """log int N(w; 0, 1) exp(-n L(w)) dw with L = 0 on w <= 0 and w^power on w > 0 (quadrature)."""
    scale = n ** (-1.0 / power)
    tail = integrate.quad(lambda w: norm.pdf(w) * math.exp(-n * w**power), 0, 60 * scale, epsabs=1e-15,
                          epsrel=1e-12, limit=200)[0]
    return math.log(0.5 + tail)


def test_flat_half_line_prior_mass():
    # L* = 0, lambda = 0 (no non-zero eigenvalue), K = log P(w <= 0) = log 1/2
    k = constant_terms("flat", [], [0.0], 0, log_flat_mass=math.log(0.5), num_flat_columns=1)
    assert abs(_half_line_log_evidence(1e7, 2) - k.total) < 1e-3
    # a quadratic wall approaches the limit like n^-1/2, a cubic wall (the TMS dead columns) like n^-1/3
    err3 = [_half_line_log_evidence(n, 3) - k.total for n in (1e3, 1e6, 1e10)]
    assert err3[0] > 0.03 and abs(err3[2]) < 1e-3
    assert err3[0] / err3[1] == pytest.approx(10.0, rel=0.05)  # (1e3)^(1/3)


def test_flat_region_with_a_quadratic_direction():
    # w = (u, v): L = a u^2 + [v > 0] v^2;  lambda = 1/2, K = log phi(0) + 1/2 log 2 pi - 1/2 log 2a + log 1/2
    a, n = 0.7, 1e7
    exact = -0.5 * math.log(1 + 2 * n * a) + _half_line_log_evidence(n, 2)
    k = constant_terms("mix", [0.0], [2 * a, 0.0], 1, log_flat_mass=math.log(0.5))
    assert abs(exact + 0.5 * math.log(n) - k.total) < 1e-3


def test_point_prior_fails_the_flat_region_toy():
    # negative control: log phi at one point of the flat half-line (-1, like the TMS dead bias, or the
    # boundary 0 of the paper variant) is not the constant
    truth = _half_line_log_evidence(1e7, 2)
    for rep in (-1.0, 0.0):
        assert abs(log_normal_density([rep]) - truth) > 0.2


# ---------------------------------------------------------------------------------------------------------
# (iii): orbit length and copies
# ---------------------------------------------------------------------------------------------------------


def test_orbit_length_on_a_rotationally_symmetric_toy():
    # L(w) = a (|w| - r0)^2 in 2-d: minima on the circle |w| = r0; lambda = 1/2 (radial Hessian 2a)
    a, r0, n = 0.9, 1.3, 1e7
    s = 1 / math.sqrt(n * a)
    Z = integrate.quad(lambda r: r * math.exp(-0.5 * r * r - n * a * (r - r0) ** 2), r0 - 40 * s, r0 + 40 * s,
                       points=[r0], epsabs=0, epsrel=1e-12)[0]  # = int 2 pi r phi_2(r) e^{-nL} dr
    w0 = np.array([[r0], [0.0]])  # a point of the circle, as W of shape (2, 1)
    assert orbit_length(w0) == pytest.approx(2 * math.pi * r0)
    k = constant_terms("ring", w0.ravel(), [2 * a, 0.0], 1, orbit=orbit_length(w0))
    assert abs(math.log(Z) + 0.5 * math.log(n) - k.total) < 1e-3
    assert k.log_orbit_length == pytest.approx(math.log(2 * math.pi * r0))


def test_copies_on_a_double_well():
    # L(w) = a (|w| - r0)^2 in 1-d: two minima +-r0 related by the reflection w -> -w
    a, r0, n = 1.1, 0.6, 1e7
    s = 1 / math.sqrt(n * a)
    one = integrate.quad(lambda w: norm.pdf(w) * math.exp(-n * a * (w - r0) ** 2), r0 - 40 * s, r0 + 40 * s,
                         epsabs=0, epsrel=1e-12)[0]
    k = constant_terms("wells", [r0], [2 * a], 1, num_copies=2)
    assert abs(math.log(2 * one) + 0.5 * math.log(n) - k.total) < 1e-3


def _canonical(W: np.ndarray, b: np.ndarray) -> tuple:
    """The SO(2) orbit of (W, b), labels kept: rotate the lowest-index live column onto +x."""
    i = int(np.flatnonzero(np.linalg.norm(W, axis=0) > 1e-9)[0])
    t = -math.atan2(W[1, i], W[0, i])
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return tuple(np.round(np.concatenate([(R @ W).ravel(), b]), 6) + 0.0)


@pytest.mark.parametrize("name,expected", [("6", 120), ("5", 144), ("5+", 144)])
def test_symmetric_copies_by_brute_force(c6, name, expected):
    p = c6[name]
    refl = np.diag([1.0, -1.0])
    seen = set()
    for perm in itertools.permutations(range(p.c)):
        for S in (np.eye(2), refl):
            seen.add(_canonical(S @ p.W[:, perm], p.b[list(perm)]))
    assert len(seen) == expected == num_symmetric_copies(p.k, p.c, p.sigma)


# ---------------------------------------------------------------------------------------------------------
# the TMS flat region
# ---------------------------------------------------------------------------------------------------------


def test_flat_region_definition_against_the_population_loss(c6):
    p = c6["5"]
    (d,) = dead_columns(p.W, p.b)
    live = [i for i in range(p.c) if i != d]
    L0 = p.loss
    rng = np.random.default_rng(1)
    inside = 0
    for _ in range(400):
        Wd, bd = 0.3 * rng.standard_normal(2), -abs(rng.standard_normal())
        proj = p.W[:, live].T @ Wd
        ok = bd <= -max(Wd @ Wd, proj.max(), 0) and np.all(proj + p.b[live] <= 0)
        W, b = p.W.copy(), p.b.copy()
        W[:, d], b[d] = Wd, bd
        L = float(population_loss_flat(torch.tensor(np.concatenate([W.ravel(), b])), p.c, 2))
        if ok:
            inside += 1
            assert abs(L - L0) < 1e-12
        else:
            assert abs(L - L0) > 1e-12  # outside the region the loss changes
    assert inside > 20
    # b_d > 0 with W_d = 0: the loss decreases (towards 5+): b_d <= 0 is the phase boundary, not a wall
    b = p.b.copy()
    b[d] = 0.01
    assert float(population_loss_flat(torch.tensor(np.concatenate([p.W.ravel(), b])), p.c, 2)) < L0


def test_flat_region_mass_quadrature_vs_monte_carlo(c6):
    p = c6["5"]
    live = [i for i in range(p.c) if np.linalg.norm(p.W[:, i]) > 0]
    q, q_err, method = flat_region_mass(p.W[:, live], p.b[live], 1)
    assert method == "quadrature" and q_err < 1e-9
    mc, mc_se, _ = flat_region_mass(p.W[:, live], p.b[live], 1, method="monte carlo", num_samples=200_000)
    assert abs(mc - q) < 4 * mc_se
    # and a raw Monte Carlo of the indicator of the region over (W_d, b_d) ~ N(0, I_3)
    rng = np.random.default_rng(0)
    N = 1_000_000
    Wd, bd = rng.standard_normal((N, 2)), rng.standard_normal(N)
    proj = Wd @ p.W[:, live]
    never_fires = bd <= -np.maximum((Wd**2).sum(1), np.maximum(proj.max(1), 0))
    ok = never_fires & np.all(proj + p.b[live] <= 0, axis=1)
    assert abs(ok.mean() - q) < 4 * math.sqrt(q * (1 - q) / N)


def test_two_dead_columns_monte_carlo_against_raw_indicator():
    p = kgon(5, 7, exact=False)  # two dead columns with bias -1
    dead = dead_columns(p.W, p.b)
    assert len(dead) == 2
    live = [i for i in range(p.c) if i not in dead]
    m, se, method = flat_region_mass(p.W[:, live], p.b[live], 2, num_samples=200_000)
    assert method.startswith("monte carlo") and se < 0.01 * m
    rng = np.random.default_rng(3)
    N = 1_500_000
    Wd, bd = rng.standard_normal((N, 2, 2)), rng.standard_normal((N, 2))
    proj = Wd @ p.W[:, live]  # (N, 2, k)
    cross = np.einsum("ni,ni->n", Wd[:, 0], Wd[:, 1])
    md = np.maximum(np.maximum((Wd**2).sum(2), proj.max(2)), cross[:, None])
    ok = np.all(bd <= -np.maximum(md, 0), axis=1) & np.all(proj + p.b[live] <= 0, axis=(1, 2))
    raw = ok.mean()
    assert abs(raw - m) < 4 * math.hypot(se, math.sqrt(raw / N))
    k = phase_constant(p, num_samples=100_000)
    assert k.num_flat_columns == 2 and k.se > 0 and k.d_nz == 14


# ---------------------------------------------------------------------------------------------------------
# the three variants at c = 6
# ---------------------------------------------------------------------------------------------------------


def test_terms_at_c6_and_the_three_variants(c6):
    k6, k5 = phase_constant(c6["6"]), phase_constant(c6["5"])
    # hexagon: 18 coordinates, one zero mode (rotation); 5-gon: rotation + 3 flat dead coordinates
    assert (k6.d_nz, k6.num_flat_columns, k5.d_nz, k5.num_flat_columns) == (17, 0, 14, 1)
    assert k6.log_copies == pytest.approx(math.log(120)) and k5.log_copies == pytest.approx(math.log(144))
    assert k6.log_orbit_length == pytest.approx(math.log(2 * math.pi * math.sqrt(6) * c6["6"].length))
    assert k5.log_flat_mass == pytest.approx(math.log(0.0140773), abs=1e-4)
    assert k6.total == pytest.approx(sum(v for key, v in k6.to_dict().items() if key in (
        "log_prior_nonflat", "laplace_volume", "log_orbit_length", "log_copies", "log_flat_mass")))
    n_c = {}
    for key in VARIANTS:
        recs = [PhaseRecord.from_critical_point(c6[nm], constant=key) for nm in ("5", "6")]
        n_c[key] = crossover(*recs).n_c
    assert abs(n_c["paper"] - 601) <= 1  # the TMS paper's value
    assert abs(n_c["point"] - 573.2) < 0.1
    assert 50 < n_c["full"] < 200  # the full constant favours the hexagon much earlier (112)
    paper, point = variant_log_constant(c6["5"], "paper")[0], variant_log_constant(c6["5"], "point")[0]
    assert paper == pytest.approx(point + 0.5)  # dead bias 0 instead of -1


def test_phase_constant_refuses_points_it_cannot_handle(c6):
    with pytest.raises(ValueError, match="not minimally singular"):
        phase_constant(kgon(4, 6, exact=False))
    with pytest.raises(ValueError, match="unknown variant"):
        variant_log_constant(c6["6"], "exact")
    with pytest.raises(ValueError, match="d_nz"):
        constant_terms("x", [0.0], [1.0], 2)
    with pytest.raises(ValueError, match="live bias"):
        flat_region_mass(np.eye(2), np.array([0.1, -0.1]), 1)


def test_numerical_constant_widens_the_crossover_interval():
    a = PhaseRecord("a", 0.0687, 7.0, log_prior=-20.7, log_prior_se=0.05)
    b = PhaseRecord("b", 0.0482, 8.5, log_prior=-22.9)
    x = crossover(a, b)
    lo, hi = x.interval
    assert lo < x.n_c < hi
    exact = crossover(PhaseRecord("a", 0.0687, 7.0, log_prior=-20.7), b)
    assert exact.interval == (exact.n_c, exact.n_c)


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------


def test_cli_predict_reports_every_variant(c6, monkeypatch, tmp_path, capsys):
    import slt_tms.commands.phases as cmd
    from slt_tms.cli import main

    pts = [c6["6"], c6["5+"], c6["5"]]
    monkeypatch.setattr(cmd, "_critical_points", lambda c, progress: pts)
    assert main(["phases", "predict", "--c", "6", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "full constant K" in out and "n_c paper" in out and "601.0" in out and "573.2" in out
    pred = json.loads((tmp_path / "prediction.json").read_text())
    assert pred["constant"] == "paper" and set(pred["variants"]) == set(VARIANTS)  # the default: 601
    terms = {p["name"]: p["constant_terms"] for p in pred["variants"]["full"]["phases"]}
    assert terms["5"]["num_flat_columns"] == 1 and terms["6"]["d_nz"] == 17
    header = (tmp_path / "crossovers.csv").read_text().splitlines()[0]
    assert header.endswith("n_c_full,n_c_paper,n_c_point")
    sw = [SwitchPoint("5", "6", 400.0, "inside", (350.0, 450.0), 1.0, 10)]
    rows = cmd.switch_points_csv(pred, sw).splitlines()
    head = rows[0].split(",")
    assert head[:4] == ["low_n", "high_n", "predicted_n_c", "observed_n_switch"]
    row = dict(zip(head, rows[1].split(","), strict=True))
    assert float(row["predicted_lo"]) == pytest.approx(float(row["predicted_n_c"]))
    assert float(row["predicted_hi"]) == pytest.approx(float(row["predicted_n_c"]))
    assert abs(float(row["predicted_n_c_paper"]) - 601) <= 1
