"""Tests of slt_tms.dynamics: initialisation, classification, plateaus, transitions, a tiny end-to-end run."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from slt_tms.analysis.kgon_classify import UNCLASSIFIED, ClassifyTolerances, classify
from slt_tms.analysis.plateaus import (
    RunAnalysis,
    bayesian_ordering,
    detect_plateaus,
    dynamical_ordering,
    find_transitions,
    segments,
    transition_counts,
)
from slt_tms.cli import main
from slt_tms.experiments.sgd_dynamics import DynamicsConfig, initial_point, training_set
from slt_tms.tms import pack, unpack

C = 6
# (k, sigma, phi) of the families used here: every plateau family met in the quick runs at c = 6 plus a
# switched-off variant and a triangle (distinct geometries at nearby energy levels).
FAMILIES = [(6, 0, 0), (5, 1, 0), (5, 0, 0), (4, 2, 0), (4, 1, 0), (4, 0, 0), (4, 1, 1), (3, 2, 0)]


@pytest.fixture(scope="module")
def points():
    from slt_tms.theory.critical_points import kgon

    return [kgon(k, C, sigma, phi) for k, sigma, phi in FAMILIES]


def _rotate_permute(w: torch.Tensor, angle: float, perm: torch.Tensor) -> torch.Tensor:
    W, b = unpack(w, C, 2)
    R = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=w.dtype)
    return pack((R @ W)[:, perm], b[perm])


def test_exact_critical_points_classify_to_their_names(points):
    cl = classify(torch.stack([p.flat() for p in points]), points)
    assert list(cl.names) == [p.name for p in points], list(cl.reason)
    assert [(int(a), int(b), int(c)) for a, b, c in zip(cl.k, cl.sigma, cl.phi, strict=True)] == [
        (p.k, p.sigma, p.phi) for p in points
    ]
    assert np.all(np.abs(cl.loss_gap) < 1e-9)


def test_noisy_rotated_points_still_classify(points):
    g = torch.Generator().manual_seed(0)
    ws = []
    for p in points:
        w = _rotate_permute(p.flat(), 0.7, torch.randperm(C, generator=g))
        ws.append(w + 0.01 * torch.randn(w.shape, generator=g, dtype=w.dtype))
    assert list(classify(torch.stack(ws), points).names) == [p.name for p in points]


def test_unclassified_points_say_why(points):
    by = {p.name: p for p in points}
    # a bent polygon held still (no flow): right energy and counts, not a regular 5-gon
    W, b = unpack(by["5"].flat(), C, 2)
    W = W.clone()
    live = int(torch.argmax(W.norm(dim=0)))
    W[:, live] = (
        torch.tensor([[math.cos(1.0), -math.sin(1.0)], [math.sin(1.0), math.cos(1.0)]], dtype=W.dtype)
        @ W[:, live]
    )
    cl = classify(pack(W, b), points, tolerances=ClassifyTolerances(flow_steps=0))
    assert cl.names[0] == UNCLASSIFIED and "regular" in cl.reason[0]
    # the flow brings the bent polygon back into the basin of the 5-gon
    assert classify(pack(W, b), points).names[0] == "5"
    # negative control: a point far from every family (all columns long and random) is not named
    far = torch.randn(1, 18, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    far[0, 12:] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a flow that diverges is named in the reason, not in numpy warnings
        cl = classify(far, points)
    assert cl.names[0] == UNCLASSIFIED and cl.reason[0]
    assert math.isfinite(cl.loss[0]) or "gradient flow diverged" in cl.reason[0], cl.reason[0]
    with pytest.raises(ValueError, match="at least one"):
        classify(far, [])


def test_tighter_energy_tolerance_rejects_a_point_off_its_level(points):
    p = points[1]
    w = p.flat() + 0.05 * torch.randn(p.d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    no_flow = ClassifyTolerances(flow_steps=0, energy_tol=1.0)
    loose = classify(w, points, tolerances=no_flow)
    tight = classify(
        w, points, tolerances=ClassifyTolerances(flow_steps=0, energy_tol=abs(loose.loss_gap[0]) / 10)
    )
    assert loose.names[0] == p.name and tight.names[0] == UNCLASSIFIED


def _curve():
    """Three plateaus (0.15, 0.10, 0.06) joined by logistic drops centred at 10^2.5 and 10^4 steps."""
    t = np.unique(np.round(np.geomspace(1, 1e6, 400)).astype(int))
    x = np.log10(t)
    s = lambda u: 1 / (1 + np.exp(-u))  # noqa: E731
    return t, 0.06 + 0.05 * s(-(x - 2.5) * 12) + 0.04 * s(-(x - 4.0) * 12)


def test_detect_plateaus_on_synthetic_curve():
    t, L = _curve()
    plats = detect_plateaus(t, L)
    assert [round(p.loss, 3) for p in plats] == [0.15, 0.1, 0.06]
    # plateau 1 ends before the first drop, plateau 2 lies between the drops, plateau 3 after
    assert plats[0].end_step < 10**2.5 < plats[1].start_step
    assert plats[1].end_step < 10**4 < plats[2].start_step
    # negative control: a power law never flattens (slope -0.3 ln 10 = -0.69 per decade in log-loss)
    assert detect_plateaus(t, t**-0.3) == []


def test_segments_and_transitions():
    steps = np.arange(15) * 10
    labels = ["4++"] * 5 + [None] * 3 + ["5"] + [None] + ["5+"] * 4 + ["5+"]
    segs = segments(steps, labels)
    assert [(s.name, s.start_step, s.end_step) for s in segs] == [
        ("4++", 0, 40),
        (None, 50, 90),
        ("5+", 100, 140),
    ]
    tr = find_transitions(segs, k_of={"4++": 4, "5+": 5}, seed=3)
    assert [(t.source, t.target, t.step, t.source_k, t.target_k, t.seed) for t in tr] == [
        ("4++", "5+", 100, 4, 5, 3)
    ]
    # a single checkpoint counts when min_checkpoints = 1
    tr1 = find_transitions(segments(steps, labels, min_checkpoints=1))
    assert [(t.source, t.target) for t in tr1] == [("4++", "5"), ("5", "5+")]
    # a return to the same family after an unclassified stretch is no transition
    assert find_transitions(segments(np.arange(6), ["5", "5", None, None, "5", "5"])) == []


def _analysis(seed: int, labels: list[str | None]) -> RunAnalysis:
    steps = np.arange(len(labels)) * 100
    segs = segments(steps, labels)
    cls = classify(torch.zeros(0, 18, dtype=torch.float64), [_points_cache()[0]])
    return RunAnalysis(seed, steps, np.zeros(len(labels)), cls, segs, find_transitions(segs, seed=seed), [])


def _points_cache():
    from slt_tms.theory.critical_points import kgon

    return [kgon(6, C)]


def test_transition_counts_and_orderings(points):
    runs = [
        _analysis(0, ["4++"] * 3 + ["5+"] * 3),
        _analysis(1, ["5"] * 2 + ["5+"] * 4),
        _analysis(2, ["4++"] * 4 + [None] + ["5+"] * 2),
        _analysis(3, ["5+"] * 5),
    ]
    rows = transition_counts(runs)
    assert [(r["source"], r["target"], r["count"]) for r in rows] == [("4++", "5+", 2), ("5", "5+", 1)]
    order = [d["name"] for d in dynamical_ordering(runs)]
    assert order.index("4++") < order.index("5+") and order.index("5") < order.index("5+")
    by_loss = bayesian_ordering(points, ["5+", "4++", "5"])
    assert by_loss["order"] == ["4++", "5", "5+"]  # no lambda for the 4-gon (not C^2): order by loss
    with_lam = bayesian_ordering(points, ["5+", "4++"], lambdas={"4++": 4.5, "5+": 6.5, "5": 5.6})
    assert with_lam["order"][0] == "4++" and "free energy" in with_lam["method"]
    # a negative plateau estimate is no learning coefficient: not used (the order falls back to the loss)
    negative = bayesian_ordering(points, ["5+", "4++"], lambdas={"4++": -10.8})
    assert negative["method"] == "loss (decreasing)" and "4++" not in negative["lambdas"]


def test_config_validation_and_initial_point():
    with pytest.raises(ValueError, match="init"):
        DynamicsConfig(init="zeros")
    with pytest.raises(ValueError, match="batch_size"):
        DynamicsConfig(n=10, batch_size=20)
    with pytest.raises(ValueError, match="unknown"):
        DynamicsConfig.from_dict({"c": 6, "learning_rate": 1.0})
    cfg = DynamicsConfig(init_noise=0.0)
    W, b = unpack(initial_point(cfg, 0), 6, 2)
    assert torch.allclose(W.norm(dim=0), torch.tensor([1.0, 1, 1, 1, 0, 0]), atol=1e-6)
    assert torch.equal(b, torch.zeros(6))
    noisy = DynamicsConfig()
    assert torch.equal(initial_point(noisy, 5), initial_point(noisy, 5))
    assert not torch.equal(initial_point(noisy, 5), initial_point(noisy, 6))
    dev = (initial_point(noisy, 5) - initial_point(cfg, 5)).std()
    assert 0.005 < float(dev) < 0.02  # noise of std 0.01 on 18 coordinates
    assert torch.equal(training_set(noisy, 1), training_set(noisy, 1))
    assert torch.equal(
        training_set(DynamicsConfig(data_seed=7), 1), training_set(DynamicsConfig(data_seed=7), 2)
    )


def _tiny_run(out, seeds: int, first_seed: int = 0) -> list[str]:
    """``dynamics run`` with tiny settings (c = 6, n = 200, 400 steps, 12 checkpoints)."""
    tiny = "--c 6 --n 200 --steps 400 --num-checkpoints 12 --lr 0.01 --max-workers 1 --quiet".split()
    which = ["--seeds", str(seeds), "--first-seed", str(first_seed)]
    return ["dynamics", "run", *tiny, *which, "--out", str(out)]


def test_tiny_end_to_end_run_and_llc(tmp_path, capsys):
    args = _tiny_run(tmp_path, 2)
    assert main(args) == 0
    for name in (
        "config.json",
        "analysis.json",
        "transitions.csv",
        "transition_counts.csv",
        "loss_vs_step.png",
        "polygons.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "runs").glob("*.safetensors"))) == 2
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert len(analysis["runs"]) == 2 and len(analysis["runs"][0]["labels"]) == 12
    # from a 4-gon with b ~ 0 the runs start on the 4-gon levels (4, 4+ or 4++ depending on the bias signs)
    assert all(r["labels"][0] is not None and r["labels"][0].startswith("4") for r in analysis["runs"])
    first = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    # resuming loads the saved runs (no retraining); a second call with other seeds ADDS them
    more = _tiny_run(tmp_path, 1, first_seed=2)
    assert main(more) == 0
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert analysis["seeds"] == [0, 1, 2] and len(analysis["runs"]) == 3
    assert len(first["tasks"]) == 2
    assert (
        main(
            [
                "dynamics",
                "run",
                "--n",
                "200",
                "--steps",
                "401",
                "--num-checkpoints",
                "12",
                "--seeds",
                "1",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "different configuration" in capsys.readouterr().err
    assert (
        main(
            [
                "dynamics",
                "llc",
                str(tmp_path),
                "--extra",
                "2",
                "--max-draws",
                "100",
                "--max-workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "llc_summary.json").read_text())
    assert summary["points"] and all(math.isfinite(p["llc"]) for p in summary["points"])
    for name in ("llc.csv", "llc_transitions.csv", "llc_summary.json", "llc_vs_step.png"):
        assert (tmp_path / name).is_file(), name
    # a transition from or to a flagged or negative estimate is listed but not counted as an increase
    trans = summary["transitions"]
    assert all(not c["trusted"] for c in trans if min(c["llc_source"], c["llc_target"]) < 0)
    assert summary["num_increase"] == sum(c["increase"] for c in trans if c["trusted"])
    if not any(p["diagnostics"]["ok"] for p in summary["points"]):  # (100 draws: none converges)
        assert summary["num_trusted_transitions"] == 0 and summary["num_increase"] == 0
    # SGD checkpoints are not critical points: each point says what its gradient contributes
    header = (tmp_path / "llc.csv").read_text().splitlines()[0].split(",")
    assert {"grad_norm", "first_order_term", "first_order_term_se", "first_order_status"} <= set(header)
    assert all(p["diagnostics"]["first_order_status"] in ("notable", "negligible", "uncertain")
               and p["diagnostics"]["grad_norm"] >= 0 for p in summary["points"])


def test_cli_parser_has_dynamics_commands():
    from slt_tms.cli import build_parser

    args = build_parser().parse_args(
        [
            "dynamics",
            "run",
            "--quick",
            "--seeds",
            "2",
            "--out",
            "x",
            "--executor",
            "dask",
            "--dask-address",
            "tcp://h:8786",
        ]
    )
    assert args.quick and args.seeds == 2 and args.executor == "dask" and args.dask_address == "tcp://h:8786"
    args = build_parser().parse_args(["dynamics", "llc", "x", "--extra", "3"])
    assert args.dir == "x" and args.extra == 3


def test_a_checkpoint_on_its_way_down_is_unclassified_until_it_reaches_a_level(points):
    """The descent from a random start is not named after the basin it will reach: SGD checkpoints are
    classified by the short flow only (the second, accelerated stage, meant for thermal draws, carried a
    random initialisation at L = 0.247 to the 4++ level 0.097)."""
    from slt_tms.analysis.plateaus import SGD_TOLERANCES, analyze_run
    from slt_tms.theory.symbolic import population_loss_flat

    start = torch.stack([initial_point(DynamicsConfig(init="random"), s) for s in range(4)])
    loss = population_loss_flat(start.double(), C, 2)
    levels = [p.loss for p in points]
    assert float(loss.min()) > max(levels) + 0.04  # above every level: nothing to name yet
    on_level = torch.stack([p.flat() for p in points[:2]])  # two checkpoints at a critical point
    ck = torch.cat([start, on_level.to(start.dtype)])
    record = {"seed": 0, "checkpoint_steps": list(range(6)), "steps": list(range(6)),
              "losses": [float(x) for x in population_loss_flat(ck.double(), C, 2)],
              "tensors": {"checkpoints": ck}}
    names = analyze_run(record, points).classifications.names
    assert list(names[:4]) == [UNCLASSIFIED] * 4
    assert [str(n) for n in names[4:]] == [points[0].name, points[1].name]
    assert SGD_TOLERANCES.refine_steps == 0


def test_a_run_whose_sgd_diverged_says_so(tmp_path, capsys):
    args = _tiny_run(tmp_path, 1)
    args[args.index("--lr") + 1] = "1e6"
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "DIVERGED from step" in out and "warning: seed 0: SGD diverged" in err and "lower --lr" in err
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    reasons = [c["reason"] for c in analysis["runs"][0]["classifications"]]
    assert any("at the point itself" in r for r in reasons), reasons


def test_a_checkpoint_far_above_the_level_its_flow_reaches_is_on_its_way_down(points):
    """The short flow reaches a family's level and geometry from a point far above it (its polygon shrunk):
    the default classifier names the basin, the SGD settings only a point within one level spacing
    1/(4c^2) of the level; the threshold is on the point's own loss."""
    from slt_tms.analysis.plateaus import SGD_TOLERANCES
    from slt_tms.theory.symbolic import population_loss_flat

    spacing = 1 / (4 * C * C)
    for p in points[:4]:
        W, b = unpack(p.flat().double(), C, 2)
        for scale, far in ((0.8, True), (0.995, False)):
            w = pack(scale * W, b)[None]
            above = float(population_loss_flat(w, C, 2)[0]) - p.loss
            assert (above > spacing) is far, (p.name, scale, above)
            assert str(classify(w, points).names[0]) == p.name  # the basin: where the flow leads
            sgd = classify(w, points, tolerances=SGD_TOLERANCES)
            if far:
                assert sgd.names[0] == UNCLASSIFIED
                assert sgd.reason[0].startswith(f"on its way down to {p.name}")
            else:
                assert str(sgd.names[0]) == p.name
    with pytest.raises(ValueError, match="start_gap"):
        ClassifyTolerances(start_gap=0.0)
