"""Tests of the superposition layers (theory.two_feature, analysis, experiments) and the superposition /
reproduce commands.

Golden numbers are derived in the comments (or in docs/superposition.md); Monte-Carlo comparisons use
k x standard-error tolerances.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from slt_tms.analysis.superposition import (
    REPRESENTED_THRESHOLD,
    classify_two_feature,
    dimensions_per_feature,
    feature_dimensionality,
    procrustes_distance,
)
from slt_tms.cli import main
from slt_tms.commands.reproduce import STAGES, Stage, run_stages
from slt_tms.commands.superposition import FIGURES, run_figure
from slt_tms.experiments.superposition import (
    DimensionalityConfig,
    GeometryConfig,
    PhaseDiagramConfig,
    SwishConfig,
    TrainConfig,
    dimensionality,
    geometry,
    phase_diagram,
    sparse_uniform_sampler,
    swish_comparison,
)
from slt_tms.theory.two_feature import (
    DEDICATED,
    NOT_REPRESENTED,
    SUPERPOSITION,
    analytic_boundaries,
    analytic_phase,
    optimal_two_feature_losses,
    two_feature_losses,
)
from slt_tms.tms import forward, pack

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ analytic two-feature losses


def _at(expr, p: float, beta: float) -> float:
    syms = {s.name: s for s in expr.free_symbols}
    return float(expr.subs({syms["p"]: p, syms["beta"]: beta}))


def _mc_feature1_loss(W: list[float], beta: float, p: float, n: int, seed: int) -> tuple[float, float]:
    """Monte-Carlo estimate (mean, standard error) of E[(x_1 - f(x)_1)^2] for the 2-feature, 1-dim model."""
    g = torch.Generator().manual_seed(seed)
    sampler = sparse_uniform_sampler(torch.tensor([p], dtype=torch.float64), 2)
    x = sampler(n, g)[0].to(torch.float64)
    w = pack(torch.tensor([W], dtype=torch.float64), torch.tensor([beta, 0.0], dtype=torch.float64))
    err = (x[:, 0] - forward(w, x, c=2, r=1)[:, 0]) ** 2
    return float(err.mean()), float(err.std() / math.sqrt(n))


@pytest.mark.parametrize(
    ("name", "W"),
    [("off", [0.0, 0.0]), ("dedicated", [1.0, 0.0]), ("superposition", [1.0, -1.0])],
)
@pytest.mark.parametrize(("p", "beta"), [(0.8, 0.3), (0.3, 0.05), (0.3, -0.2), (0.05, -0.6)])
def test_two_feature_losses_match_monte_carlo(name, W, p, beta):
    expr = two_feature_losses()[name]
    exact = _at(expr, p, beta)
    mean, se = _mc_feature1_loss(W, beta, p, n=200_000, seed=int(1000 * p + 100 * beta) % 997 + 1)
    # 5 SE: a false alarm has probability < 1e-6 per case; no bias (exact sampler, exact integral).
    assert abs(mean - exact) < 5 * se + 1e-12, (name, p, beta, exact, mean, se)


def test_optimal_losses_closed_forms():
    p = np.array([1.0, 0.6, 0.2, 0.01])
    opt = optimal_two_feature_losses(p)
    # ell_off(p, beta) = (1-p) beta^2 + p E[(u - beta)^2] = beta^2 - p beta + p/3 for beta >= 0:
    # minimised at beta = p/2 with value p/3 - p^2/4 (by hand).
    np.testing.assert_allclose(opt["off"], p / 3 - p**2 / 4, rtol=1e-12)
    np.testing.assert_allclose(opt["beta_off"], p / 2, rtol=1e-12)
    # A dedicated dimension with beta = 0 reconstructs x_i exactly: loss 0.
    np.testing.assert_allclose(opt["dedicated"], 0.0, atol=1e-15)
    # Antipodal pair at beta = 0: only (x1, x2) both active errs, by min(x1, x2), E[min^2] = 1/6,
    # so ell_sup(p, 0) = p^2/6; the slope there is -p^2/3 (docs), so the optimum is below and beta* > 0.
    sup0 = np.array([_at(two_feature_losses()["superposition"], v, 0.0) for v in p])
    np.testing.assert_allclose(sup0, p**2 / 6, rtol=1e-12)
    assert np.all(opt["superposition"] < sup0) and np.all(opt["beta_superposition"] > 0)


def test_analytic_phase_limits_and_boundaries():
    # Dense data: superposition loses; keep the more important feature.
    assert analytic_phase(0.5, 1.0) == NOT_REPRESENTED
    assert analytic_phase(2.0, 1.0) == DEDICATED
    # Very sparse: ell_sup ~ p^2/6 << ell_off ~ p/3, so g ~ p/2 and superposition wins for r in (p/2, 2/p).
    assert np.all(analytic_phase(np.logspace(-1, 1, 9), 0.01) == SUPERPOSITION)
    b = analytic_boundaries(np.array([0.5, 0.1, 0.01]))
    np.testing.assert_allclose(b["r_high"], 1 / b["r_low"], rtol=1e-12)
    # p_critical solves g = 1/2; just below it superposition wins at r = 1, just above it does not.
    pc = float(b["p_critical"])
    assert 0 < pc < 1
    assert analytic_phase(1.0, pc * 0.98) == SUPERPOSITION
    assert analytic_phase(1.0, pc * 1.02) != SUPERPOSITION
    # The boundary really separates the classes: just inside / outside r_low at p = 0.1.
    r_low = float(b["r_low"][1])
    assert analytic_phase(r_low * 1.02, 0.1) == SUPERPOSITION
    assert analytic_phase(r_low / 1.02, 0.1) == NOT_REPRESENTED


def test_phase_diagram_quick_grid_agrees_with_analytic():
    res = phase_diagram(PhaseDiagramConfig.quick(), seed=0, progress=False)
    assert res.classes.shape == (8, 8)
    assert res.agreement >= 0.9, (res.classes, res.analytic_classes)
    # All three phases occur on the grid, so the agreement is not trivial.
    assert set(np.unique(res.analytic_classes)) == {0, 1, 2}
    # Superposition models store the two features antipodally (opposite signs).
    sup = res.classes == SUPERPOSITION
    assert np.all(res.W[sup][:, 0] * res.W[sup][:, 1] < 0)


def test_classify_two_feature_rule():
    W = np.array([[1.0, 0.1], [0.2, 0.0], [0.1, 1.0], [1.0, -1.0], [0.7, -0.6]])
    assert classify_two_feature(W).tolist() == [0, 0, 1, 2, 2]
    assert classify_two_feature(W[:, None, :]).tolist() == [[0], [0], [1], [2], [2]]
    with pytest.raises(ValueError, match=r"\(w_1, w_2\)"):
        classify_two_feature(np.ones((3, 3)))


# ------------------------------------------------------------------ geometry via the CLI (one run, shared)


@pytest.fixture(scope="module")
def geometry_cli(tmp_path_factory):
    out = tmp_path_factory.mktemp("geometry")
    code = main(["superposition", "geometry", "--out", str(out), "--quick", "--quiet", "--seed", "0"])
    assert code == 0
    return out


def test_cli_geometry_writes_png_and_json(geometry_cli):
    png = geometry_cli / "geometry.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    data = json.loads((geometry_cli / "geometry.json").read_text())
    assert data["seed"] == 0 and data["quick"] is True and data["runtime_seconds"] > 0
    relu = data["results"]["relu"]
    assert relu["config"]["n"] == 5 and relu["config"]["m"] == 2 and relu["seed"] == 0
    assert not list(geometry_cli.glob("*.tmp*"))  # no temporary leftovers


def test_relu_represents_two_then_all_five(geometry_cli):
    relu = json.loads((geometry_cli / "geometry.json").read_text())["results"]["relu"]
    S, norms = np.array(relu["sparsities"]), np.array(relu["norms"])
    represented = norms > REPRESENTED_THRESHOLD
    assert S[0] == 0.0 and S[-1] >= 0.9
    # S = 0: the two most important features, nothing else.
    assert represented[0].tolist() == [True, True, False, False, False]
    # High sparsity (S = 0.95): all five (the pentagon).
    assert represented[-1].all()


def test_linear_keeps_exactly_top_two(geometry_cli):
    lin = json.loads((geometry_cli / "geometry.json").read_text())["results"]["linear"]
    represented = np.array(lin["norms"]) > REPRESENTED_THRESHOLD
    assert (represented == np.array([True, True, False, False, False])).all()


def test_geometry_same_seed_same_numbers():
    cfg = GeometryConfig(sparsities=(0.0, 0.9), train=TrainConfig(num_steps=30, num_restarts=2))
    a = geometry(cfg, seed=3, progress=False)
    b = geometry(cfg, seed=3, progress=False)
    c = geometry(cfg, seed=4, progress=False)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.restart_losses, b.restart_losses)
    assert not np.array_equal(a.W, c.W)
    assert a.config["train"]["num_steps"] == 30 and a.seed == 3


# ------------------------------------------------------------------ swish


def test_swish_large_gamma_matches_relu_small_gamma_does_not():
    geo = GeometryConfig(
        sparsities=(0.0, 0.8, 0.95),
        train=TrainConfig(num_steps=3000, batch_size=512, lr=1e-2, num_restarts=3),
    )
    res = swish_comparison(SwishConfig(gammas=(0.5, 64.0), geometry=geo), seed=0, progress=False)
    # gamma = 64: same counts, columns within 10% (relative Procrustes) of ReLU's at every sparsity.
    assert res.matches[1].all(), (res.num_represented, res.relu_num_represented, res.distances)
    # Negative control: swish_0.5 is far from ReLU (z*sigmoid(z/2) is nearly linear near 0), so it must not
    # match everywhere and the matching gamma is the large one.
    assert not res.matches[0].all()
    assert res.matching_gamma == 64.0


# ------------------------------------------------------------------ dimensionality and measures


def test_feature_dimensionality_known_geometries():
    # Dedicated dimensions: D = 1; antipodal pair: 1/(1+1) = 1/2; unlearned: 0.
    assert feature_dimensionality(np.eye(2)).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(feature_dimensionality(np.array([[1.0, -1.0, 0.0]])), [0.5, 0.5, 0.0])
    # Regular pentagon of unit vectors: D = 1 / (1 + 2cos^2(72deg) + 2cos^2(144deg)) = 1 / (5/2) = 2/5.
    t = 2 * np.pi * np.arange(5) / 5
    pent = np.stack([np.cos(t), np.sin(t)])
    np.testing.assert_allclose(feature_dimensionality(pent), 0.4, rtol=1e-12)
    np.testing.assert_allclose(dimensions_per_feature(pent), 2 / 5, rtol=1e-12)


def test_procrustes_distance_invariance_and_sensitivity():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(2, 5))
    th = 0.7
    Q = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1.0, -1.0])
    assert float(procrustes_distance(Q @ B, B)) < 1e-12
    assert float(procrustes_distance(-B, B)) < 1e-12
    A = B.copy()
    A[:, 0] *= 0.0  # drop a feature: distance = |B_0| / |B|_F
    np.testing.assert_allclose(procrustes_distance(A, B), np.linalg.norm(B[:, 0]) / np.linalg.norm(B),
                               rtol=1e-9)


def test_dimensionality_quick_dense_and_sparse():
    res = dimensionality(DimensionalityConfig.quick(), seed=0, progress=False)
    # Dense data: ReLU with b=0 on non-negative inputs is a linear projection of rank m, ||W||_F^2 = m
    # (PCA-like), so D* = 1 (tolerance 0.05 for finite training).
    assert abs(res.dims_per_feature[0] - 1.0) < 0.05
    # Sparse: more features than dimensions (superposition), D* well below 1/2, and D* falls with sparsity.
    assert res.dims_per_feature[-1] < 0.5
    assert res.dims_per_feature[-1] < res.dims_per_feature[0]
    assert res.feature_dims.shape == (10, 40)


# ------------------------------------------------------------------ sampler


def test_sparse_uniform_sampler_statistics():
    dens = torch.tensor([1.0, 0.3, 0.02], dtype=torch.float64)
    n = 100_000
    x = sparse_uniform_sampler(dens, 3)(n, torch.Generator().manual_seed(0)).to(torch.float64)
    assert x.shape == (3, n, 3)
    for k, p in enumerate(dens.tolist()):
        nz = (x[k] > 0).to(torch.float64)
        frac, se = float(nz.mean()), math.sqrt(p * (1 - p) / (3 * n)) + 1e-12
        assert abs(frac - p) < 5 * se + 1e-9
        vals = x[k][x[k] > 0]
        # nonzero entries are U[0, 1]: mean 1/2, SE = sqrt(1/12 / count)
        assert abs(float(vals.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / vals.numel())
        assert float(vals.max()) <= 1.0


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_rejected(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        GeometryConfig(sparsities=(0.0, bad))


def test_other_bad_configs_rejected():
    with pytest.raises(ValueError, match="densities"):
        PhaseDiagramConfig(densities=(0.0, 0.5))
    with pytest.raises(ValueError, match="densities"):
        PhaseDiagramConfig(densities=(1.5,))
    with pytest.raises(ValueError, match="relative_importances"):
        PhaseDiagramConfig(relative_importances=(-1.0,))
    with pytest.raises(ValueError, match="gammas"):
        SwishConfig(gammas=(0.0,))
    with pytest.raises(ValueError, match=">= 1"):
        DimensionalityConfig(inverse_densities=(0.5,))
    with pytest.raises(ValueError, match="num_steps"):
        TrainConfig(num_steps=0)
    with pytest.raises(ValueError, match="activation"):
        geometry(GeometryConfig(train=TrainConfig(num_steps=1)), activation="tanh")
    with pytest.raises(ValueError, match="relative importance"):
        analytic_phase(0.0, 0.5)
    with pytest.raises(ValueError, match="density"):
        analytic_phase(1.0, 0.0)


def test_cli_unknown_figure_and_bad_seed(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["superposition", "pentagon", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "phase-diagram" in err
    with pytest.raises(ValueError, match="allowed: geometry, phase-diagram"):
        run_figure("pentagon", tmp_path)
    assert main(["superposition", "geometry", "--out", str(tmp_path), "--seed", "-1", "--quiet"]) == 2
    assert "non-negative" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written on failure
    assert FIGURES == ("geometry", "phase-diagram", "dimensionality", "swish")


# ------------------------------------------------------------------ reproduce


def test_reproduce_runs_all_stages_and_survives_a_failure(tmp_path):
    def good(out, profile, seed, quiet):
        path = out / "good.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{profile} {seed}")
        return [path]

    def bad(out, profile, seed, quiet):
        raise RuntimeError("boom")

    stages = [Stage("bad", "fails", bad), Stage("good", "works", good)]
    outcomes = run_stages(tmp_path, "quick", seed=5, quiet=True, stages=stages)
    assert [o.ok for o in outcomes] == [False, True]
    assert "boom" in outcomes[0].error
    assert (tmp_path / "good.txt").read_text() == "quick 5"
    with pytest.raises(ValueError, match="allowed: quick, paper"):
        run_stages(tmp_path, "full", stages=stages)
    with pytest.raises(ValueError, match="unknown stage"):
        run_stages(tmp_path, "quick", only=["nope"], stages=stages)
    names = [s.name for s in STAGES]
    for fig in FIGURES:
        assert f"superposition-{fig}" in names
