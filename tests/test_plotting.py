"""Figures: one colour per phase everywhere, free energies that show every crossover, LLC curves along
training with error bars and a legend, polygon snapshots that state every omission."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from slt_tms.analysis.free_energy import as_phases, crossovers, free_energy
from slt_tms.plotting.phases import plot_free_energy
from slt_tms.plotting.style import LOSS_COLOR, PHASE_COLORS, REFERENCE_COLOR, UNCLASSIFIED, phase_color

#: The c = 6 phases (name, L, lambda, se, log prior at the paper's representative): crossovers at
#: n = 202 (5+ -> 6), 601 (5 -> 6, the dominant phase changes) and 1593 (5 -> 5+).
C6 = [("6", 0.04819237603150602, 8.5, 0.0, -22.919), ("5+", 0.061799133673189656, 8.5, 0.0, -20.169),
      ("5", 0.06874357811763411, 7.0, 0.0, -20.165)]


def test_phase_colours_come_from_one_table_and_never_collide():
    fixed = set(PHASE_COLORS.values())
    assert len(fixed) == len(PHASE_COLORS)  # no two fixed phases share a colour
    assert LOSS_COLOR not in fixed and REFERENCE_COLOR not in fixed
    assert phase_color(None) == phase_color(UNCLASSIFIED) == PHASE_COLORS[UNCLASSIFIED]
    others = [f"{k}{'+' * s},{p}-" for k in range(2, 9) for s in range(4) for p in range(1, 4)]
    assert all(phase_color(nm) not in fixed for nm in others)
    assert [phase_color(nm) for nm in others] == [phase_color(nm) for nm in others]  # stable


def test_free_energy_shows_every_crossover_inside_the_frame():
    fig = plot_free_energy(C6, 10, 1e5)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo < 0  # the dominant phase's curve, at 0, is not on the frame
    ps = as_phases(C6)
    texts = [t.get_text() for t in ax.texts]
    for x in crossovers(ps):
        at = free_energy(ps, np.array([x.n_c]))[:, 0]
        height = at[[p.name for p in ps].index(x.low_n)] - at.min()
        assert height < hi, (x.low_n, x.high_n, height, hi)
        assert f"{x.low_n}→{x.high_n}\nn={x.n_c:.0f}" in texts
    assert hi < 100  # not stretched to the n = 1e5 end of the curves (~2000) ...
    assert any("leave the top" in t for t in texts)  # ... which the axes say
    assert [line.get_color() for line in ax.get_lines()[:3]] == [phase_color(p[0]) for p in C6]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from slt_tms.experiments import sgd_dynamics as dyn

    config = dyn.DynamicsConfig(c=6, n=200, num_steps=400, num_checkpoints=12, lr=0.01)
    return dyn.run(config, [0, 1], work_dir=tmp_path_factory.mktemp("runs"), max_workers=1, progress=False)


def test_llc_along_training_is_a_curve_with_error_bars_and_one_legend(tiny_run):
    from slt_tms.experiments.sgd_llc import LLCPoint
    from slt_tms.plotting.dynamics import plot_llc

    points = []
    for a in tiny_run.analyses:
        for i in range(1, len(a.checkpoint_steps), 2):
            points.append(LLCPoint(a.seed, int(a.checkpoint_steps[i]), i, a.labels[i], 0.1, 4.0 + 0.1 * i,
                                   0.2, i == len(a.checkpoint_steps) - 1, {"ok": True, "flags": []}))
    escaped = {"ok": False, "flags": ["chains escaped: 100% of the draws have L < L(w*)"]}
    points.append(LLCPoint(0, 1, 0, None, 0.2, -40.0, 0.2, False, escaped))
    fig = plot_llc(tiny_run, points)
    panels = [ax for ax in fig.axes if ax.get_ylabel() == r"$\hat\lambda$"]
    assert len(panels) == 2 and len({ax.get_ylim() for ax in panels}) == 1  # one scale for every run
    lo, hi = panels[0].get_ylim()
    assert lo < 0 < 4.0 < hi and lo > -40  # the escaped estimate does not stretch the scale
    for ax in panels:
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) >= 5  # every estimate with its error bar ...
        assert any(len(line.get_xdata()) >= 5 for line in ax.get_lines())  # ... joined into a curve
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "beyond the frame (1, 1 with chains escaped: not an LLC)" in labels
    assert "population loss (right axis)" in labels


def test_polygons_state_every_omission(tiny_run):
    from slt_tms.plotting.dynamics import plot_polygons

    assert "first" not in plot_polygons(tiny_run).get_suptitle()
    title = plot_polygons(tiny_run, max_runs=1).get_suptitle()
    assert "first 1 of 2 runs shown" in title
    named = max(sum(s.name is not None for s in a.segments) for a in tiny_run.analyses)
    if named > 1:
        assert "not shown" in plot_polygons(tiny_run, max_snaps=1).get_suptitle()
