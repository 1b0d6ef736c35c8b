"""Tests of the finite-n phase prediction: basin-restricted sampling of lambda_eff(n)
(slt_tms.experiments.lambda_eff), the dataset effect by importance sampling, and the anchored
thermodynamic integration and switch prediction (slt_tms.analysis.finite_n), against quadrature and
against direct evaluations of the empirical loss."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from slt_tms.analysis.finite_n import anchored_log_odds, predict_switch
from slt_tms.analysis.kgon_classify import classify
from slt_tms.experiments.lambda_eff import BasinLadder, dataset_effect, finite_n_switches, sample_basins
from slt_tms.theory.critical_points import critical_points, kgon
from slt_tms.theory.symbolic import population_loss_flat
from slt_tms.tms import OneHotSums, OneHotUniform, empirical_loss


def test_total_one_equals_total_on_every_dataset_and_size():
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    X = torch.stack([OneHotUniform(6).sample(300, g) for g in gens]).double()
    sums = OneHotSums(X, [40, 300])
    w = torch.randn(500, 18, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for k in range(3):
        for h in range(2):
            full = sums.total(w, torch.full((500,), k), torch.full((500,), h), 2)
            assert torch.allclose(sums.total_one(w, k, h, 2), full, rtol=1e-12, atol=1e-9)


# --- anchored thermodynamic integration against quadrature --------------------------------------------
# phase a: w < 0 with L = La + w^4 (lambda = 1/4); phase b: w > 0 with L = Lb + w^2 (regular, lambda = 1/2),
# Lb < La: a wins at small n, b at large n; prior N(0, 1).
# Z_a(n), Z_b(n) and lambda_eff(n) = n E[L - L_a] by quadrature.
LA, LB = 0.03, 0.0


def _phase(n: float, power: int, level: float) -> tuple[float, float]:
    s = n ** (-1 / power)
    f = lambda w: norm.pdf(w) * math.exp(-n * abs(w) ** power)  # noqa: E731
    z = integrate.quad(f, 0, 40 * s, epsabs=0, epsrel=1e-12)[0]
    m = integrate.quad(lambda w: f(w) * abs(w) ** power, 0, 40 * s, epsabs=0, epsrel=1e-12)[0]
    return math.log(z) - n * level, n * m / z


def exact_sign_change(d: np.ndarray) -> bool:
    return bool(d[0] < 0 < d[-1])


def test_anchored_log_odds_against_quadrature():
    grid = np.geomspace(5, 2000, 60)
    a = np.array([_phase(n, 4, LA) for n in grid])
    b = np.array([_phase(n, 2, LB) for n in grid])
    assert exact_sign_change(b[:, 0] - a[:, 0])
    exact = b[:, 0] - a[:, 0]
    lo, se = anchored_log_odds(grid, a[:, 1], b[:, 1], LA, LB, float(exact[0]))
    assert np.abs(lo - exact).max() < 2e-3 * max(1.0, np.abs(exact).max())
    assert np.all(se == 0)
    # the switch where the exact log-odds cross 0, found from the TI curve
    pred = predict_switch(grid, lo, num_bootstrap=20)
    j = int(np.argmax(exact > 0))
    assert grid[j - 1] <= pred.n_switch <= grid[j]
    # negative control: leaving out the integral of lambda_eff (the asymptotic slope only) misses it
    naive = float(exact[0]) - (LB - LA) * (grid - grid[0])
    assert np.abs(naive - exact).max() > 0.5


def test_anchored_log_odds_standard_errors_and_bad_input():
    n = [10, 20, 40]
    _, se = anchored_log_odds(n, [1, 1, 1], [1, 1, 1], 0.1, 0.0, 0.0, lambda_eff_low_se=[0.1, 0.1, 0.1],
                               lambda_eff_high_se=[0, 0, 0], log_odds0_se=0.2)
    h = math.log(2)
    assert se[0] == pytest.approx(0.2)
    assert se[2] ** 2 == pytest.approx(0.04 + 0.01 * ((h / 2) ** 2 + h**2 + (h / 2) ** 2))
    with pytest.raises(ValueError, match="ascending"):
        anchored_log_odds([20, 10], [1, 1], [1, 1], 0, 0, 0)
    with pytest.raises(ValueError, match="finite"):
        anchored_log_odds([10, 20], [1, math.nan], [1, 1], 0, 0, 0)


def test_predict_switch_per_dataset_and_interval():
    n = np.geomspace(100, 1000, 40)
    t = np.log(n)
    centres = np.array([200.0, 300.0, 400.0, 500.0])
    lo = 3.0 * (t[None, :] - np.log(centres)[:, None])  # dataset d switches at centres[d]
    pr = predict_switch(n, lo, num_bootstrap=400, seed=1)
    assert [round(x) for x in pr.per_dataset] == pytest.approx(centres, rel=0.02)
    assert 250 < pr.n_switch < 420
    lo_i, hi_i = pr.interval
    assert 200 <= lo_i <= pr.n_switch <= hi_i <= 500 and pr.width == hi_i - lo_i
    # a larger shared error widens the interval
    wide = predict_switch(n, lo, np.full(n.size, 2.0), num_bootstrap=400, seed=1)
    assert wide.width > pr.width
    with pytest.raises(ValueError, match="shape"):
        predict_switch(n, lo[:, :-1])


# --- the dataset effect against direct sums ----------------------------------------------------------
def _point_ladder(point, grid, copies: int = 3) -> BasinLadder:
    """A 'ladder' whose draws are all the critical point itself (a point-mass posterior)."""
    G = len(grid)
    draws = point.flat().to(torch.float64).expand(G, 1, copies, point.d).clone()
    z = np.zeros(G)
    return BasinLadder(point.name, point.c, float(point.loss), np.asarray(grid), z, z, z, z, z, draws, {}, 0)


def test_dataset_effect_is_the_permutation_average_of_the_empirical_loss():
    p = kgon(5, 6)
    grid = [50, 120]
    X = torch.stack([OneHotUniform(6).sample(120, torch.Generator().manual_seed(s)) for s in (3, 4)]).double()
    lad = _point_ladder(p, grid)
    eff, wess = dataset_effect(lad, X, num_permutations=6, seed=2)
    gen = torch.Generator().manual_seed(2)
    perms = [torch.arange(6)] + [torch.randperm(6, generator=gen) for _ in range(5)]
    W, b = torch.as_tensor(p.W, dtype=torch.float64), torch.as_tensor(p.b, dtype=torch.float64)
    L = float(population_loss_flat(p.flat().to(torch.float64)[None], 6, 2)[0])
    for k in range(2):
        for g, n in enumerate(grid):
            flat = [torch.cat([W[:, q].reshape(-1), b[q]])[None] for q in perms]
            vals = [-n * (float(empirical_loss(w, X[k, :n], 6, 2)[0]) - L) for w in flat]
            direct = math.log(np.mean(np.exp(vals)))
            assert eff[k, g] == pytest.approx(direct, abs=1e-9)
            assert 1.0 <= wess[k, g] <= 18.0 + 1e-9
    # the 5-gon drops one feature: the data decide which one is cheapest, so the effect varies with it
    assert np.ptp(eff[:, 1]) > 0


# --- basin-restricted sampling -----------------------------------------------------------------------
def test_sample_basins_stays_in_the_basin_and_is_seeded():
    pts = critical_points(6, progress=False)
    by = {p.name: p for p in pts}
    kw = dict(num_chains=2, num_draws=15, num_warmup=15, keep_draws=15, progress=False, seed=3)
    res = sample_basins([by["5"], by["6"]], pts, [150, 600], **kw)
    for name, lad in res.items():
        names = classify(lad.draws.reshape(-1, lad.draws.shape[-1]), pts).names
        assert set(names) == {name}  # every kept draw is in its own basin
        assert lad.lambda_eff.shape == (2,) and np.all(np.isfinite(lad.lambda_eff))
        assert np.all((lad.leave_rate >= 0) & (lad.leave_rate <= 1))
        assert lad.to_dict()["phase"] == name
    again = sample_basins([by["5"], by["6"]], pts, [150, 600], **kw)
    assert torch.equal(again["6"].draws, res["6"].draws)
    with pytest.raises(ValueError, match="not among"):
        sample_basins([by["5"]], [by["6"]], [100, 200], progress=False)
    with pytest.raises(ValueError, match="increasing"):
        sample_basins([by["5"]], pts, [200, 100], progress=False)


def test_finite_n_switches_end_to_end_small():
    from slt_tms.experiments.occupancy import occupancy
    from slt_tms.experiments.posterior import HMCConfig, ladder_datasets

    pts = critical_points(5, progress=False)
    hmc = HMCConfig(num_leapfrog=6)
    pop = occupancy(5, [20, 40, 80, 160], pts, num_chains=4, num_draws=40, num_warmup=40, config=hmc,
                    loss="population", seed=1, progress=False)
    X = ladder_datasets(5, 160, 3, seed=1)
    sw, basins = finite_n_switches([("4", "5")], pts, pop.n_grid, pop.counts, pop.phase_names, datasets=X,
                                   num_chains=2, num_draws=20, num_warmup=20, keep_draws=10,
                                   num_permutations=4, num_bootstrap=50, seed=1, progress=False)
    (f,) = sw
    assert set(basins) == {"4", "5"}
    n0 = f.anchor["n0"]
    # the anchor is the first rung where both phases hold >= 5% of the population-loss draws
    prop = pop.proportions
    i4, i5 = pop.phase_names.index("4"), pop.phase_names.index("5")
    first = next(g for g in range(len(pop.n_grid)) if prop[g, i4] >= 0.05 and prop[g, i5] >= 0.05)
    assert n0 == pop.n_grid[first] and f.n_grid[0] == n0
    assert f.log_odds[0] == pytest.approx(f.anchor["log_odds"])
    assert f.effect.shape == (3, f.n_grid.size) and np.all(np.isfinite(f.effect))
    assert f.population is not None and f.empirical is not None and len(f.empirical.per_dataset) == 3
    d = f.to_dict()
    assert d["low_n"] == "4" and len(d["log_odds_population"]) == f.n_grid.size
    # a phase whose point is not a critical point of the population loss is refused with a reason
    bad = [dataclasses.replace(p, W=np.zeros_like(p.W)) if p.name == "5" else p for p in pts]
    out, _ = finite_n_switches([("4", "5")], bad, pop.n_grid, pop.counts, pop.phase_names, progress=False)
    assert out[0].population is None and "own basin" in out[0].anchor["reason"]
