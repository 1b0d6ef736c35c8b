"""Tests of slt_tms.phases: free energies, crossovers, classification, occupancy bookkeeping, CLI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import slt_tms.experiments.occupancy as occ_mod
import slt_tms.experiments.posterior as post
from slt_tms.analysis.free_energy import (
    PhaseRecord,
    crossover,
    crossovers,
    dominant_phase,
    free_energy,
    log_prior_density,
    phase_sequence,
)
from slt_tms.analysis.kgon_classify import UNCLASSIFIED, ClassifyTolerances, classify
from slt_tms.analysis.switch import switch_point
from slt_tms.plotting.phases import plot_occupancy
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms import OneHotSums

# ---------------------------------------------------------------------------------------------------------
# free energies and crossovers
# ---------------------------------------------------------------------------------------------------------

# Hand-made two-phase example, worked by hand:
#   a: L = 0.10, lambda = 2;  b: L = 0.05, lambda = 5; no prior term.
#   F_n(a) = 0.1 n + 2 log n,  F_n(b) = 0.05 n + 5 log n.
#   n = 10:   F(a) = 1 + 2 * 2.3026 = 5.605;   F(b) = 0.5 + 5 * 2.3026 = 12.013  -> a dominates.
#   n = 1000: F(a) = 100 + 2 * 6.9078 = 113.8;  F(b) = 50 + 5 * 6.9078 = 84.54  -> b dominates.
#   Crossover: 0.05 n = 3 log n  <=>  n = 60 log n. Fixed-point iteration from n = 300:
#   60 ln 300 = 342.2, 60 ln 342.2 = 350.0, 60 ln 350.0 = 351.5, 60 ln 351.5 = 351.73, 60 ln 351.73 = 351.77,
#   60 ln 351.77 = 351.78 -> n_c = 351.78 (to 0.01). The other root of n = 60 ln n lies at n ~ 1.02 < 2.
#   With a prior term c_b - c_a = -log phi(b) + log phi(a) = 1 the equation is 0.05 n = 3 ln n + 1, i.e.
#   n = 60 ln n + 20: from 372: 60 ln 372 + 20 = 375.14, then 375.64, 375.72, 375.73 -> n_c = 375.73.
A = ("a", 0.10, 2.0)
B = ("b", 0.05, 5.0)


def test_hand_worked_two_phase_example():
    assert dominant_phase([A, B], [10, 1000], include_prior=False) == ["a", "b"]
    F = free_energy([A, B], [10.0, 1000.0], include_prior=False)
    np.testing.assert_allclose(F[:, 0], [1 + 2 * math.log(10), 0.5 + 5 * math.log(10)])
    x = crossover(A, B)
    assert (x.low_n, x.high_n, x.branch) == ("a", "b", -1)
    assert abs(x.n_c - 351.78) < 0.01
    xp = crossover(PhaseRecord("a", 0.10, 2.0, log_prior=0.0), PhaseRecord("b", 0.05, 5.0, log_prior=-1.0))
    assert abs(xp.n_c - 375.73) < 0.01
    assert [s[0] for s in phase_sequence([A, B], n_max=1e4)] == ["a", "b"]
    assert abs(phase_sequence([A, B], n_max=1e4)[0][2] - x.n_c) < 1e-6


@pytest.mark.parametrize(
    "la,lb,lama,lamb,ca,cb",
    [
        (0.1, 0.05, 2.0, 5.0, 0.0, 0.0),
        (0.068744, 0.048192, 7.0, 8.5, -20.0, -21.5),  # numbers of the size of c = 6 (5-gon vs 6-gon)
        (0.3, 0.01, 1.0, 30.0, -3.0, 2.0),
        (0.2, 0.1, 5.0, 4.0, -1.0, -50.0),  # lower lambda and loss, worse prior: W_0 branch
        (0.2, 0.1, 5.0, 5.0, -5.0, -10.0),  # equal lambda: linear, n = -C/A = 50
    ],
)
def test_lambert_closed_form_equals_brentq(la, lb, lama, lamb, ca, cb):
    x = crossover(PhaseRecord("a", la, lama, log_prior=ca), PhaseRecord("b", lb, lamb, log_prior=cb))
    assert x.n_c is not None and x.n_c_lambert is not None
    assert abs(x.n_c_lambert - x.n_c_root) <= 1e-9 * x.n_c
    # and it really is a root of F_b - F_a, with the lower-loss phase winning just after it
    F = free_energy([("a", la, lama, 0, ca), ("b", lb, lamb, 0, cb)], [x.n_c, x.n_c * 1.01])
    assert abs(F[1, 0] - F[0, 0]) < 1e-8 * max(1.0, abs(F[0, 0]))
    assert F[1, 1] < F[0, 1]


def test_crossover_cases_without_crossing():
    # lower loss and lower lambda: b dominates from n = 2 on
    x = crossover(("a", 0.1, 6.0), ("b", 0.05, 5.0))
    assert x.n_c is None and x.always_high and not x.never
    # identical phases: never cross
    y = crossover(("a", 0.1, 6.0), ("b", 0.1, 6.0))
    assert y.never and y.n_c is None
    # larger loss gap than lambda can pay for at any n: D(n) < 0 everywhere (z < -1/e, no real W)
    z = crossover(("a", 1.0, 1.0), ("b", 0.0, 1.5))
    assert z.n_c is None and z.always_high


def test_interval_from_lambda_standard_errors():
    a = PhaseRecord("a", 0.1, 2.0, lambda_se=0.3)
    b = PhaseRecord("b", 0.05, 5.0, lambda_se=0.4)
    x = crossover(a, b, num_se=2.0)
    se = math.hypot(0.3, 0.4)  # = 0.5
    lo = crossover(("a", 0.1, 2.0), ("b", 0.05, 5.0 - 2.0 * se)).n_c
    hi = crossover(("a", 0.1, 2.0), ("b", 0.05, 5.0 + 2.0 * se)).n_c
    assert x.interval == pytest.approx((lo, hi))
    assert lo < x.n_c < hi  # n_c increases with the lambda gap (d n_c / d B = log n / |A + B/n| > 0)


def test_multiplicity_uses_root_finder_only():
    x = crossover(PhaseRecord("a", 0.1, 2.0, multiplicity=1), PhaseRecord("b", 0.05, 5.0, multiplicity=2))
    assert x.n_c_lambert is None and x.n_c_root is not None
    n = x.n_c
    assert abs(-0.05 * n + 3 * math.log(n) + math.log(math.log(n))) < 1e-8
    # without the multiplicity term the closed form is back
    assert (
        crossover(
            PhaseRecord("a", 0.1, 2.0),
            PhaseRecord("b", 0.05, 5.0, multiplicity=2),
            include_multiplicity=False,
        ).n_c_lambert
        is not None
    )


def test_three_phase_sequence_and_all_pairs():
    phases = [("a", 0.1, 2.0), ("b", 0.05, 5.0), ("c", 0.07, 3.0)]
    seq = phase_sequence(phases)
    assert [s[0] for s in seq] == ["a", "c", "b"]
    for (_, _, end), (_, start, _) in itertools.pairwise(seq):
        assert end == start
    xs = {(x.low_n, x.high_n): x for x in crossovers(phases)}
    assert set(xs) == {("a", "b"), ("a", "c"), ("c", "b")}
    # sequence breakpoints are the pairwise crossovers a->c and c->b
    assert seq[0][2] == pytest.approx(xs["a", "c"].n_c)
    assert seq[1][2] == pytest.approx(xs["c", "b"].n_c)


def test_log_prior_density_and_from_critical_point():
    w = np.array([1.0, -2.0, 0.5])
    assert log_prior_density(w) == pytest.approx(-0.5 * 5.25 - 1.5 * math.log(2 * math.pi))
    cp = _hand_point(5, 1)
    rec = PhaseRecord.from_critical_point(cp)
    assert rec.log_prior == pytest.approx(log_prior_density(cp.flat().numpy()))
    assert rec.lambda_ == cp.lambda_theory


def test_bad_input_errors():
    with pytest.raises(ValueError, match="no finite lambda"):
        PhaseRecord("a", 0.1, None)
    with pytest.raises(ValueError, match="no finite loss"):
        PhaseRecord("a", float("nan"), 1.0)
    with pytest.raises(ValueError, match="no learning coefficient"):
        PhaseRecord.from_critical_point(_hand_point(4, 0, lam=None))
    with pytest.raises(ValueError, match=">= 2"):
        free_energy([A, B], [1.0])
    with pytest.raises(ValueError, match="empty"):
        free_energy([A, B], [])
    with pytest.raises(ValueError, match="at least one phase"):
        free_energy([], [10.0])
    with pytest.raises(ValueError, match="unique"):
        free_energy([A, A], [10.0])
    with pytest.raises(ValueError, match="n must be"):
        post.sample_posterior(6, 1)
    with pytest.raises(ValueError, match="empty"):
        switch_point([], np.zeros((0, 1, 2)), ["a", "b"], "a", "b")


# ---------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------


def _hand_point(
    k: int,
    sigma: int,
    phi: int = 0,
    c: int = 6,
    length: float = 1.2,
    bias: float = -0.3,
    lam: float | None = 7.0,
) -> CriticalPoint:
    """A k-gon-shaped point (not necessarily critical): k columns of length `length` at angles 2 pi j / k,
    `sigma` dead columns with bias 1/(2c), the other dead ones with bias -1, `phi` vertices switched off
    with bias -2 l^2. Its loss is the population loss of the point itself."""
    from slt_tms.theory.symbolic import population_loss_flat
    from slt_tms.tms import pack

    W = np.zeros((2, c))
    ang = 2 * np.pi * np.arange(k) / k + 0.3
    W[:, :k] = length * np.stack([np.cos(ang), np.sin(ang)])
    b = np.full(c, -1.0)
    b[:k] = bias
    b[k - phi : k] = -2 * length**2
    b[k : k + sigma] = 1 / (2 * c)
    name = f"{k}" + "+" * sigma + (f",{phi}-" if phi else "")
    loss = float(population_loss_flat(pack(torch.tensor(W), torch.tensor(b)), c))
    return CriticalPoint(
        name=name, k=k, c=c, r=2, sigma=sigma, phi=phi, W=W, b=b, loss=loss, lambda_theory=lam
    )


HAND = [
    _hand_point(6, 0),
    _hand_point(5, 1),
    _hand_point(5, 0),
    _hand_point(4, 2, length=1.0, bias=0.0),
    _hand_point(4, 1, phi=1, length=1.0, bias=0.0),
]


# hand-made points are not critical: they are classified without the gradient flow (tolerance windows)
NO_FLOW = ClassifyTolerances(flow_steps=0, energy_tol=0.01)


def test_classify_hand_points_and_perturbations():
    w = torch.stack([p.flat() for p in HAND])
    cls = classify(w, HAND, tolerances=NO_FLOW)
    assert list(cls.names) == [p.name for p in HAND]
    assert list(cls.nearest) == [p.name for p in HAND]
    # O(2) and permutation invariance: rotate the hidden plane, reflect, permute features
    rot = torch.tensor([[math.cos(1.0), -math.sin(1.0)], [math.sin(1.0), math.cos(1.0)]], dtype=torch.float64)
    refl = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    moved = []
    for p in HAND:
        W = refl @ rot @ torch.as_tensor(p.W)
        moved.append(torch.cat([W[:, perm].reshape(-1), torch.as_tensor(p.b)[perm]]))
    assert list(classify(torch.stack(moved), HAND, tolerances=NO_FLOW).names) == [p.name for p in HAND]
    # small perturbations (sd 0.02) keep the class; the energy tolerance 0.01 is not exceeded
    noise = 0.02 * torch.randn(
        len(HAND), 20, 18, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    pert = classify(w[:, None, :] + noise, HAND, tolerances=NO_FLOW)
    expected = np.repeat([p.name for p in HAND], 20)
    assert np.mean(pert.names == expected) > 0.95


def test_classify_rejects_non_polygons_and_off_energy():
    p6 = HAND[0]
    W = np.array(p6.W, copy=True)
    W[:, 1] = W[:, 0] * 1.0 + 0.05  # two vertices on top of each other: not a regular hexagon
    bad = np.concatenate([W.reshape(-1), p6.b])
    far = p6.flat().numpy() * 1.0
    far[12:] += 0.5  # biases all shifted up: same geometry, energy far above the 6-gon level
    cls = classify(np.stack([bad, far]), HAND, tolerances=NO_FLOW)
    assert list(cls.names) == [UNCLASSIFIED, UNCLASSIFIED]
    assert not cls.regular[0] and cls.regular[1]
    # a looser energy tolerance accepts the shifted point (negative control for the energy test)
    assert (
        classify(far[None], HAND, tolerances=ClassifyTolerances(flow_steps=0, energy_tol=1.0)).names[0] == "6"
    )


def test_classify_bad_input():
    with pytest.raises(ValueError, match="at least one critical point"):
        classify(torch.zeros(3, 18), [])
    with pytest.raises(ValueError, match="last dimension 18"):
        classify(torch.zeros(3, 15), HAND)
    with pytest.raises(ValueError, match="live_threshold"):
        ClassifyTolerances(live_threshold=1.5)
    with pytest.raises(ValueError, match="flow_steps"):
        ClassifyTolerances(flow_steps=-1)


def test_classify_exact_critical_points_from_theory():
    from slt_tms.theory.critical_points import kgon

    pts = [kgon(6, 6), kgon(5, 6, 1), kgon(5, 6, 0)]
    w = torch.stack([p.flat() for p in pts])
    assert list(classify(w, pts).names) == [p.name for p in pts] == ["6", "5+", "5"]
    # perturbed (sd 0.01 on every coordinate) they still classify
    noise = 0.01 * torch.randn(3, 10, 18, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = classify(w[:, None, :] + noise, pts).names.reshape(3, 10)
    for i, p in enumerate(pts):
        assert np.mean(got[i] == p.name) >= 0.9


# ---------------------------------------------------------------------------------------------------------
# posterior sampling machinery
# ---------------------------------------------------------------------------------------------------------


def _nested_data(c=6, sizes=(10, 57, 300), K=2):
    from slt_tms.tms import OneHotUniform

    X = torch.stack([OneHotUniform(c).sample(max(sizes), torch.Generator().manual_seed(s)) for s in range(K)])
    return X.double(), list(sizes)


def test_one_hot_sums_equal_empirical_loss_value_and_gradient():
    from slt_tms.tms import empirical_loss

    X, sizes = _nested_data()
    sums = OneHotSums(X, sizes)
    w = torch.randn(6, 18, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w[0, 12:] = 0.0  # b = 0 exactly (ties mu a + b = 0 at mu = 0)
    w[1, :12] = 0.0  # W = 0: a = 0 for every pair
    w.requires_grad_(True)
    kk, hh = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
    fast = sums.total(w, kk, hh, 2)
    ref = torch.stack(
        [sizes[h] * empirical_loss(w[m], X[kk[m], : sizes[h]], 6, 2) for m, h in enumerate(hh.tolist())]
    )
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-10)
    g1 = torch.autograd.grad(fast.sum(), w)[0]
    g2 = torch.autograd.grad(ref.sum(), w)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)
    value, grad = sums.value_and_grad(w, kk, hh, 2)  # the closed-form gradient (no autograd)
    torch.testing.assert_close(value, ref.detach(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(grad, g2, rtol=1e-10, atol=1e-10)
    assert not value.requires_grad and not grad.requires_grad
    for m in (0, 1, 4):  # every chain on one dataset and size (the potential's path)
        v1, g1 = sums.value_and_grad_at(w[m : m + 1].repeat(3, 1), int(kk[m]), int(hh[m]), 2)
        torch.testing.assert_close(v1, ref[m].detach().expand(3), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(g1, g2[m].expand(3, -1), rtol=1e-10, atol=1e-10)


def test_swap_ratio_is_the_metropolis_ratio_of_the_two_posteriors():
    from slt_tms.tms import empirical_loss

    X, sizes = _nested_data()
    sums = OneHotSums(X, sizes)
    gen = torch.Generator().manual_seed(4)
    w_lo, w_hi = (
        torch.randn(1, 18, generator=gen, dtype=torch.float64),
        torch.randn(1, 18, generator=gen, dtype=torch.float64),
    )
    k, g = torch.tensor([1]), torch.tensor([1])

    def U(w, h):  # n_h L_{n_h}(w) + |w|^2 / 2 on the first n_h rows of dataset 1
        return sizes[h] * empirical_loss(w, X[1, : sizes[h]], 6, 2) + 0.5 * (w * w).sum(-1)

    got = post.swap_log_ratio(sums, k, g, w_lo, w_hi, 2)
    want = U(w_lo, 1) + U(w_hi, 2) - U(w_hi, 1) - U(w_lo, 2)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)


def test_sample_size_ladder():
    assert post.sample_size_ladder([100, 200], max_ratio=1.3) == [100, 126, 159, 200]
    lad = post.sample_size_ladder([100, 300, 2000], max_ratio=1.3, n_floor=20)
    assert lad[0] == 20 and lad[-1] == 2000 and {100, 300, 2000} <= set(lad)
    assert max(b / a for a, b in itertools.pairwise(lad)) <= 1.3 + 0.01
    with pytest.raises(ValueError, match="max_ratio"):
        post.sample_size_ladder([100, 200], max_ratio=1.0)


#: Two short chains with few leapfrog steps, no progress bar (each test adds draws, warm-up and seed).
_TINY_HMC = {"num_chains": 2, "config": post.HMCConfig(num_leapfrog=4), "progress": False}


def test_ladder_sampling_seeded_shapes_and_swaps():
    kw = {**_TINY_HMC, "num_draws": 15, "num_warmup": 20, "seed": 5}
    a = post.sample_posterior_ladder(4, [50, 80], **kw)
    b = post.sample_posterior_ladder(4, [50, 80], **kw)
    assert a.ladder == [50, 63, 80]  # 80/50 = 1.6 > 1.3: one rung at sqrt(50 * 80) = 63.2
    assert a.samples.shape == (2, 3, 15, 12)
    assert torch.equal(a.samples, b.samples)
    assert a.swap_accept.shape == (2,) and np.all((a.swap_accept >= 0) & (a.swap_accept <= 1))
    assert set(a.diagnostics_at(0)["rhat"]) == {"potential", "loss", "W_sq", "b_sq"}
    # the stored empirical loss is L_{n_g} at each draw
    single = post.sample_posterior(4, 50, num_chains=2, num_draws=5, num_warmup=5, seed=1, progress=False)
    assert single.samples.shape == (2, 5, 12) and single.empirical_loss.shape == (2, 5)


def test_switch_point_on_synthetic_counts():
    # phase b's share is 0.2, 0.4, 0.6, 0.8 at n = 100, 200, 400, 800 for every one of 8 chains (a gets the
    # rest): p_b - p_a = -0.6, -0.2, 0.2, 0.6 crosses 0 halfway between 200 and 400 in log n: sqrt(200*400).
    grid = [100, 200, 400, 800]
    share_b = [0.2, 0.4, 0.6, 0.8]
    counts = np.zeros((4, 8, 3), dtype=int)
    for g, s in enumerate(share_b):
        counts[g, :, 1] = round(100 * s)
        counts[g, :, 0] = 100 - round(100 * s)
    sw = switch_point(grid, counts, ["a", "b", "unclassified"], "a", "b", num_bootstrap=200)
    assert sw.n_switch == pytest.approx(math.sqrt(200 * 400))
    assert sw.interval == pytest.approx((math.sqrt(200 * 400),) * 2)  # identical chains: no spread
    assert sw.frac_crossing == 1.0
    # noisy chains: the interval contains the point estimate
    rng = np.random.default_rng(0)
    noisy = np.zeros((4, 8, 3), dtype=int)
    for g, s in enumerate(share_b):
        noisy[g, :, 1] = rng.binomial(100, s, size=8)
        noisy[g, :, 0] = 100 - noisy[g, :, 1]
    sw2 = switch_point(grid, noisy, ["a", "b", "unclassified"], "a", "b", num_bootstrap=300, seed=1)
    assert sw2.interval[0] <= sw2.n_switch <= sw2.interval[1]
    # b dominating everywhere: no crossing; position "below" (already switched) or "above" (never)
    all_b = np.zeros((4, 8, 3), dtype=int)
    all_b[:, :, 1] = 100
    assert switch_point(grid, all_b, ["a", "b", "u"], "a", "b").position == "below"
    assert switch_point(grid, all_b, ["a", "b", "u"], "b", "a").position == "above"
    assert switch_point(grid, all_b, ["a", "b", "u"], "b", "a").n_switch is None


def test_occupancy_end_to_end_small(tmp_path):
    pts = [_hand_point(4, 0, c=4, length=1.0, bias=0.0), _hand_point(3, 1, c=4, length=1.0, bias=0.0)]
    occ = occ_mod.occupancy(
        4,
        [40, 60],
        pts,
        **_TINY_HMC,
        num_draws=10,
        num_warmup=10,
        seed=0,
    )
    assert occ.n_grid == [40, 49, 60]  # ladder: sqrt(40 * 60) = 49.0 inserted
    assert occ.counts.shape == (3, 2, 3)
    np.testing.assert_allclose(occ.proportions.sum(1), 1.0)
    assert occ.counts.sum() == 3 * 2 * 10
    csv_text = occ.to_csv()
    assert csv_text.splitlines()[0] == "n,phase,proportion,chain0,chain1"
    fig = plot_occupancy(occ, [("4", pts[0].loss, 6.0), ("3+", pts[1].loss, 4.0)])
    from slt_tms.io.atomic import save_figure

    save_figure(fig, tmp_path / "occ.png")
    assert (tmp_path / "occ.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------------------
# CLI (critical points replaced by hand-made ones: the real c = 6 computation takes ~30 s)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def hand_points(monkeypatch):
    import slt_tms.commands.phases as cmd

    pts = [
        _hand_point(4, 0, c=4, length=1.0, bias=0.0, lam=6.0),
        _hand_point(3, 1, c=4, length=1.0, bias=0.0, lam=4.0),
        _hand_point(2, 2, c=4, length=1.0, bias=0.0, lam=None),
    ]
    monkeypatch.setattr(cmd, "_critical_points", lambda c, progress: pts)
    return pts


def test_cli_predict(hand_points, tmp_path, capsys):
    import json

    from slt_tms.cli import main

    # hand-made points have no Hessian spectrum: only the point-prior variants apply
    args = ["phases", "predict", "--c", "4", "--out", str(tmp_path), "--quiet", "--constant", "point"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3+->4" in out and "left out" in out and "2++" in out
    pred = json.loads((tmp_path / "prediction.json").read_text())
    x = crossover(
        PhaseRecord.from_critical_point(hand_points[0]), PhaseRecord.from_critical_point(hand_points[1])
    )
    assert pred["crossovers"][0]["n_c"] == pytest.approx(x.n_c)
    assert (tmp_path / "free_energy.png").exists() and (tmp_path / "crossovers.csv").exists()


def test_cli_sample_quick(hand_points, tmp_path, capsys):
    import json

    from slt_tms.cli import main

    rc = main(
        [
            "phases",
            "sample",
            "--c",
            "4",
            "--n",
            "30,40",
            "--quick",
            "--num-draws",
            "8",
            "--num-warmup",
            "8",
            "--num-chains",
            "2",
            "--num-leapfrog",
            "3",
            "--num-bootstrap",
            "20",
            "--constant",
            "point",
            "--pop-chains",
            "2",
            "--basin-chains",
            "2",
            "--basin-draws",
            "5",
            "--basin-warmup",
            "5",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "occupancy.json").read_text())
    assert {"population_occupancy", "finite_n", "comparison", "dataset_switch_points",
            "classifier_sensitivity", "timings_seconds"} <= set(res)
    assert res["population_occupancy"]["config"]["loss"] == "population"
    assert res["population_occupancy"]["n_grid"][0] == 20  # the anchors start below the grid
    assert res["config"]["seed"] == 0 and res["occupancy"]["n_grid"] == [30, 35, 40]
    for name in ("occupancy.csv", "switch_points.csv", "occupancy.png"):
        assert (tmp_path / name).exists()
    header = (tmp_path / "switch_points.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["low_n", "high_n", "predicted_n_c", "observed_n_switch"]
    assert {"predicted_lo", "predicted_hi", "predicted_source", "agree", "predicted_population_n_c",
            "observed_population_n_switch", "predicted_n_c_point", "predicted_n_c_paper"} <= set(header)
    for name in ("occupancy_population.csv", "occupancy_population.png", "switch_comparison.png"):
        assert (tmp_path / name).exists()
    # each rung shows R-hat across the sets (their own datasets) and the worst chain's own split R-hat;
    # a rung whose chain disagrees with itself beyond 1.05 is starred, noted and warned about
    out, err = capsys.readouterr()
    assert "R-hat sets R-hat chain" in out
    rows = {int(ln.split()[0]): ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()}
    slow = []
    for n, dg in zip(res["occupancy"]["n_grid"], res["occupancy"]["diagnostics"], strict=True):
        within = dg["rhat_within"]["loss"]
        assert len(within) == 2
        worst = max(within)
        assert rows[n].split()[-2 if worst > 1.05 else -1] == f"{worst:.3f}"
        if worst > 1.05:
            slow.append(str(n))
    assert ("NOT CONVERGED at n = " + ", ".join(slow) in out) is bool(slow)
    assert ("warning: not converged" in err) is bool(slow)


def test_cli_bad_input(hand_points, tmp_path, capsys):
    from slt_tms.cli import main

    with pytest.raises(SystemExit):
        main(["phases", "sample", "--c", "4", "--n", "1,100", "--out", str(tmp_path)])
    assert ">= 2" in capsys.readouterr().err
    assert main(["phases", "predict", "--c", "4", "--phases", "9", "--quiet"]) == 2
    assert "unknown phase" in capsys.readouterr().err
    for flag, value, words in (("--n", "30,inf", "whole numbers"), ("--n", "30.7,100", "whole numbers"),
                               ("--num-chains", "1", "integer >= 2"), ("--pop-chains", "1", "integer >= 2"),
                               ("--basin-chains", "1", "integer >= 2")):
        with pytest.raises(SystemExit):
            main(["phases", "sample", "--c", "4", flag, value, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert flag in err and words in err and "Traceback" not in err, err


def test_cli_predict_leaves_out_untrusted_estimates(hand_points, monkeypatch, tmp_path, capsys):
    """--lambda estimate: an estimate flagged NOT TRUSTWORTHY, or negative, does not enter the prediction
    (a 4-gon estimated at -4.7 with escaped chains made a confident wrong phase sequence)."""
    import json
    from types import SimpleNamespace

    import slt_tms.commands.phases as cmd
    from slt_tms.cli import main

    fake = {
        "4": SimpleNamespace(llc=6.1, se=0.2, ok=True, flags=(), rhat=1.004, ess=500.0),
        "3+": SimpleNamespace(llc=-4.7, se=0.3, ok=False, flags=("chains escaped",), rhat=1.3, ess=40.0),
        "2++": SimpleNamespace(llc=3.0, se=0.2, ok=True, flags=(), rhat=1.002, ess=600.0),
    }
    monkeypatch.setattr(cmd, "estimate_llc", lambda p, **kw: fake[p.name])
    args = ["phases", "predict", "--c", "4", "--lambda", "estimate", "--constant", "point", "--quiet",
            "--out", str(tmp_path)]
    assert main(args) == 0
    pred = json.loads((tmp_path / "prediction.json").read_text())
    assert [p["name"] for p in pred["phases"]] == ["4", "2++"]
    assert any("3+" in n and "LEFT OUT" in n and "NOT TRUSTWORTHY" in n for n in pred["notes"])
    # every estimate untrusted: no prediction, one line saying why
    for r in fake.values():
        r.ok = False
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no phase has a trustworthy, non-negative estimated learning coefficient" in err
    # names holding a comma are matched whole; negative or NaN --num-se is refused
    assert cmd.split_phase_names("4+,1-,5 6", {"4+,1-": 0, "5": 0, "6": 0}) == ["4+,1-", "5", "6"]
    for bad in ("-2", "nan"):
        with pytest.raises(SystemExit):
            main(["phases", "predict", "--c", "4", "--num-se", bad, "--quiet"])
        assert "--num-se" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num_se"):
        crossover(("a", 0.1, 2.0), ("b", 0.05, 5.0), num_se=-1.96)
    with pytest.raises(ValueError, match="lambda -3 < 0"):
        PhaseRecord(name="a", loss=0.07, lambda_=-3.0)


def test_cli_predict_at_c4_says_there_is_no_theoretical_lambda(monkeypatch, capsys):
    import slt_tms.commands.phases as cmd
    from slt_tms.cli import main

    pts = [_hand_point(4, 0, c=4, length=1.0, bias=0.0, lam=None)]
    monkeypatch.setattr(cmd, "_critical_points", lambda c, progress: pts)
    assert main(["phases", "predict", "--c", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no chosen phase has a theoretical learning coefficient at c = 4; use --lambda estimate" in err
    assert "--phases" not in err  # no phase to choose instead


def test_cli_sample_without_any_lambda(monkeypatch, tmp_path, capsys):
    import slt_tms.commands.phases as cmd
    from slt_tms.cli import main

    pts = [
        _hand_point(4, 0, c=4, length=1.0, bias=0.0, lam=None),
        _hand_point(3, 1, c=4, length=1.0, bias=0.0, lam=None),
    ]
    monkeypatch.setattr(cmd, "_critical_points", lambda c, progress: pts)
    args = [
        "phases",
        "sample",
        "--c",
        "4",
        "--n",
        "30",
        "--num-draws",
        "4",
        "--num-warmup",
        "4",
        "--num-chains",
        "2",
        "--num-leapfrog",
        "2",
        "--num-bootstrap",
        "5",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(args) == 0
    assert "no prediction" in capsys.readouterr().out
    assert (tmp_path / "occupancy.png").exists()


def test_comparison_rows_flags_and_roles():
    import slt_tms.commands.phases as cmd
    from slt_tms.analysis.finite_n import SwitchPrediction
    from slt_tms.analysis.switch import SwitchPoint
    from slt_tms.experiments.lambda_eff import FiniteNSwitch

    names = ["6", "5", "5+", UNCLASSIFIED]
    counts = np.zeros((3, 2, 4), dtype=int)
    counts[:, :, 0] = [[10, 10], [45, 45], [90, 90]]  # 6 grows
    counts[:, :, 1] = [[88, 88], [50, 50], [5, 5]]  # 5 shrinks
    counts[:, :, 2] = [[2, 2], [5, 5], [5, 5]]
    occ = occ_mod.OccupancyResult(6, [100, 400, 1600], names, counts, [], {}, 0)

    def obs(a, b, n):
        return SwitchPoint(a, b, n, "inside", (n * 0.9, n * 1.1), 1.0, 10)

    def fin(a, b, n, lo, hi):
        p = SwitchPrediction(n, (lo, hi) if n is not None else None, 1.0, [n], 10)
        return FiniteNSwitch(a, b, {"n0": 50.0, "log_odds": -2.0, "se": 0.1}, np.zeros(2), np.zeros(2),
                             np.zeros(2), np.zeros((1, 2)), 50.0, p, p)

    pairs = [("5", "6"), ("5", "5+")]
    rows = cmd.comparison_rows(
        pairs, {"crossovers": [], "variants": {}}, [obs("5", "6", 420.0), obs("5", "5+", 1500.0)],
        [obs("5", "6", 250.0), obs("5", "5+", 1500.0)],
        [fin("5", "6", 400.0, 350.0, 450.0), fin("5", "5+", None, None, None)], occ,
    )
    main, minor = rows
    assert main["role"] == "main" and main["agree_empirical"] is True and main["agree_population"] is False
    assert minor["role"] == "minor" and minor["agree_empirical"] is None  # no predicted switch: no verdict
    text = cmd.comparison_table(rows)
    assert "DISAGREE" in text and "agree" in text and "anchored at n0 = 50" in text
    csv_text = cmd.switch_points_csv({"crossovers": [], "variants": {}}, [obs("5", "6", 420.0)], rows)
    head, first = csv_text.splitlines()[:2]
    row = dict(zip(head.split(","), first.split(","), strict=True))
    assert row["predicted_n_c"] == "400.0" and row["predicted_source"] == "finite-n"
    assert row["agree"] == "True"


@pytest.mark.parametrize("c", [5, 6])
def test_classify_every_family_exact_and_perturbed(c):
    from slt_tms.theory.critical_points import critical_points

    pts = critical_points(c, progress=False)
    by = {p.name: p for p in pts}
    w = torch.stack([p.flat() for p in pts])
    assert list(classify(w, pts).names) == [p.name for p in pts]  # every family, exact
    noise = 0.01 * torch.randn(len(pts), 10, w.shape[1], generator=torch.Generator().manual_seed(2),
                               dtype=torch.float64)
    got = classify(w[:, None, :] + noise, pts).names.reshape(len(pts), 10)
    for i, p in enumerate(pts):
        if p.k >= 3:  # perturbed polygons stay in their basin
            assert np.mean(got[i] == p.name) >= 0.9, (p.name, got[i])
        else:  # the 2-gons are saddles: a perturbation flows down to a lower level, never up
            named = [nm for nm in got[i] if nm != UNCLASSIFIED]
            assert all(by[nm].loss <= p.loss + 1e-9 for nm in named), (p.name, got[i])


def test_cli_sample_keeps_the_occupancy_when_finite_n_fails(hand_points, monkeypatch, tmp_path, capsys):
    import json

    import slt_tms.commands.phases as cmd
    from slt_tms.cli import main

    def boom(*args, **kwargs):
        raise ValueError("synthetic failure")

    monkeypatch.setattr(cmd, "finite_n_switches", boom)
    args = ["phases", "sample", "--c", "4", "--n", "30,40", "--num-draws", "6", "--num-warmup", "6",
            "--num-chains", "2", "--num-leapfrog", "2", "--num-bootstrap", "5", "--pop-chains", "2",
            "--no-sensitivity", "--constant", "point", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    res = json.loads((tmp_path / "occupancy.json").read_text())
    assert res["occupancy"]["counts"] and res["population_occupancy"]["counts"]
    assert any("synthetic failure" in n for n in res["notes"]) and res["finite_n"] == []
    assert "finite-n prediction failed" in capsys.readouterr().err


def test_switch_comparison_leaves_out_switches_with_nothing_to_show():
    from slt_tms.plotting.phases import SWITCH_ROWS, plot_switch_comparison

    empty = {"low_n": "3", "high_n": "4", **{key: None for key, _ in SWITCH_ROWS}}
    full = {"low_n": "5", "high_n": "6", **{key: None for key, _ in SWITCH_ROWS},
            "observed_empirical": (400.0, 350.0, 450.0), "paper": (601.0, None, None)}
    fig = plot_switch_comparison([empty, full], None, c=6)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == len(SWITCH_ROWS) and all(lab.startswith("5→6") for lab in labels)
    # nothing to show anywhere: every switch is kept (the figure is not empty)
    fig = plot_switch_comparison([empty], None)
    assert len(fig.axes[0].get_yticklabels()) == len(SWITCH_ROWS)


def test_one_hot_sums_count_exactly_over_many_groups_in_float32():
    """The shared key array offsets every (dataset, size, feature) group; in float32 parameters the
    thresholds must still be placed exactly among the mu's of their own group (a float32 offset of a few
    thousand would blur them by ~1e-4)."""
    from slt_tms.tms import OneHotUniform

    gen = torch.Generator().manual_seed(1)
    K, sizes, c = 30, [50, 400, 800], 6
    X = torch.stack([OneHotUniform(c).sample(800, gen) for _ in range(K)])
    sums = OneHotSums(X, sizes)
    M = 40
    kk, hh = torch.randint(0, K, (M,), generator=gen), torch.randint(0, len(sizes), (M,), generator=gen)
    t = torch.rand(M, c, c, generator=gen) * 1.2 - 0.1  # thresholds in float32, some outside [0, 1]
    counts = sums._prefix_at(t, sums._constants(sums._groups(kk, hh), t.dtype))[0]
    feat, mu = X.argmax(-1), X.amax(-1)
    for m in range(M):
        rows = slice(0, sizes[int(hh[m])])
        for i in range(c):
            mus = mu[kk[m], rows][feat[kk[m], rows] == i]
            want = (mus[None, :] < t[m, i, :, None]).sum(-1)
            assert torch.equal(counts[m, i].long(), want), (m, i)


def test_occupancy_labels_of_close_switches_do_not_overlap():
    """Three observed switches within n = 45-70 (as at c = 6) on a 10-10 000 axis: their labels are drawn
    on staggered levels, and no two of their rendered boxes intersect (they did at one level)."""
    from types import SimpleNamespace

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from slt_tms.analysis.switch import SwitchPoint

    grid = [10, 30, 100, 300, 1000, 3000, 10000]
    share = np.linspace(0.0, 1.0, len(grid))
    occ = SimpleNamespace(n_grid=grid, proportions=np.stack([1 - share, share], axis=1),
                          phase_names=["5", "6"], c=6)
    switches = [SwitchPoint(a, b, n, "inside", (0.9 * n, 1.1 * n), 1.0, 100)
                for a, b, n in [("5", "6", 45.0), ("4", "5", 55.0), ("4+", "5", 70.0), ("6", "7", 3000.0)]]
    fig = plot_occupancy(occ, switches=switches)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    labels = [t for ax in fig.axes for t in ax.texts if t.get_text().startswith("observed")]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(boxes) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert not boxes[i].overlaps(boxes[j]), (i, j, boxes[i], boxes[j])
