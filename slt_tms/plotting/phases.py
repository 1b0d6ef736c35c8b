r"""Figures of the Bayesian phases: local free energies with their crossovers, posterior occupancy over n."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from slt_tms.analysis.free_energy import PhaseLike, as_phases, crossovers, free_energy
from slt_tms.analysis.kgon_classify import UNCLASSIFIED
from slt_tms.analysis.switch import SwitchPoint
from slt_tms.experiments.occupancy import OccupancyResult
from slt_tms.plotting.style import LOSS_COLOR, REFERENCE_COLOR, phase_color

__all__ = ["plot_free_energy", "plot_occupancy"]


def _free_energy_axes(
    ax, phases: Sequence[PhaseLike], n_min: float, n_max: float, *, label: bool = True
) -> None:
    r""":math:`F_n(a) - \min_b F_n(b)` of every phase on a log-n axis, every crossover in the range marked.

    The y range (linear) runs from just below 0 (so the dominant phase's curve, at 0, is not hidden by
    the frame) to 1.3 times the highest of: every crossover's height, every curve at the left end of the
    range. Every crossover is therefore inside the frame; a curve that grows beyond it (for large n the
    gap grows like :math:`n\,\Delta L`) leaves through the top, which the axes say. A crossover where the
    dominant phase changes (height 0) gets a dotted vertical line and its label at the top; one between
    two phases that are not dominant there gets a cross at the crossing point, labelled beside it.
    """
    ps = as_phases(phases)
    nn = np.geomspace(max(n_min, 2.0), n_max, 400)
    rel = free_energy(ps, nn)
    rel = rel - rel.min(axis=0, keepdims=True)
    for i, p in enumerate(ps):
        ax.plot(
            nn,
            rel[i],
            color=phase_color(p.name),
            lw=1.8,
            label=f"{p.name} (L={p.loss:.4f}, λ={p.lambda_:.2f})" if label else p.name,
        )
    marks = []
    for x in crossovers(ps):
        if x.n_c is not None and nn[0] <= x.n_c <= nn[-1]:
            at = free_energy(ps, np.array([x.n_c]))[:, 0]
            marks.append((x, float(at[[q.name for q in ps].index(x.low_n)] - at.min())))
    heights = [h for _, h in marks] + [float(v) for v in rel[:, 0]]
    top = 1.3 * max([*heights, 1.0])
    for x, h in marks:
        text = f"{x.low_n}→{x.high_n}\nn={x.n_c:.0f}"
        if h <= 0.01 * top:  # the dominant phase changes here
            ax.axvline(x.n_c, color=REFERENCE_COLOR, ls=":", lw=0.7)
            ax.annotate(text, (x.n_c, top), xytext=(3, -4), textcoords="offset points", rotation=90,
                        fontsize=7, va="top", ha="left")
        else:
            ax.plot([x.n_c], [h], "x", color=REFERENCE_COLOR, ms=6, mew=1.2)
            ax.annotate(text, (x.n_c, h), xytext=(4, 3), textcoords="offset points", fontsize=7,
                        va="bottom")
    ax.set_xscale("log")
    ax.set_ylim(-0.03 * top, top)
    if float(rel.max()) > top:
        ax.text(0.99, 0.07, "curves leave the top: the gap grows like n ΔL", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color=LOSS_COLOR)
    ax.set_ylabel(r"$F_n(a) - \min_b F_n(b)$")


def plot_free_energy(phases: Sequence[PhaseLike], n_min: float, n_max: float, *, title: str = "") -> Figure:
    r"""Local free energies :math:`F_n(a) - \min_b F_n(b)` against :math:`n` (log x, linear y), with every
    crossover inside the range marked and labelled with its :math:`n_c` (the y range shows every crossover;
    see ``_free_energy_axes``).

    Examples
    --------
    >>> fig = plot_free_energy([("a", 0.1, 2.0), ("b", 0.05, 5.0)], 10, 10_000)
    >>> len(fig.axes)
    1
    """
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    _free_energy_axes(ax, phases, n_min, n_max)
    ax.set_xlabel("sample size n")
    ax.set_title(title or "local free energies (dotted: the dominant phase switches; ×: other crossings)",
                 fontsize=10)
    ax.legend(fontsize=7)
    return fig


def plot_occupancy(
    result: OccupancyResult,
    phases: Sequence[PhaseLike] | None = None,
    switches: Sequence[SwitchPoint] = (),
    *,
    min_share: float = 0.02,
) -> Figure:
    r"""Occupancy against :math:`n` (log axis) under the predicted free energies.

    Top (when ``phases`` are given): :math:`F_n(a) - \min_b F_n(b)` of each predicted phase with the
    crossovers; bottom: the observed share of each phase (phases whose share never exceeds ``min_share``
    are listed in the legend title as omitted), with observed switch points and bootstrap intervals.
    """
    grid = np.asarray(result.n_grid, dtype=float)
    prop = result.proportions
    shown = [i for i, nm in enumerate(result.phase_names) if prop[:, i].max() > min_share]
    hidden = [nm for i, nm in enumerate(result.phase_names) if i not in shown]
    fig = Figure(figsize=(8, 7 if phases else 4.2), layout="constrained")
    if phases:
        ax0, ax1 = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.4])
        _free_energy_axes(ax0, phases, grid.min() * 0.8, grid.max() * 1.25, label=False)
        ax0.legend(fontsize=7, ncol=4)
        ax0.set_title(f"c = {result.c}: predicted free energy (top), posterior occupancy (bottom)")
    else:
        ax1 = fig.subplots()
        ax1.set_title(f"c = {result.c}: posterior occupancy")
    for i in shown:
        nm = result.phase_names[i]
        ax1.plot(
            grid, prop[:, i], marker="o", color=phase_color(nm), label=nm,
            ls="--" if nm == UNCLASSIFIED else "-",
        )
    # switches close on the log axis (5->6, 4->5 and 4+->5 within n = 40-80 at c = 6) get their labels on
    # staggered levels: a label spans about a sixth of the axis
    placed = sorted((sw for sw in switches if sw.n_switch is not None), key=lambda sw: sw.n_switch)
    span = math.log10(grid.max() / grid.min()) if grid.size and grid.min() > 0 else 1.0
    levels: list[tuple[float, int]] = []  # (log10 n, level) of the labels placed so far
    for sw in placed:
        x = math.log10(sw.n_switch)
        taken = {lv for xp, lv in levels if abs(x - xp) < max(span, 1e-9) / 6}
        level = min(set(range(len(levels) + 1)) - taken)
        levels.append((x, level))
        lo, hi = sw.interval if sw.interval else (sw.n_switch, sw.n_switch)
        ax1.errorbar(
            [sw.n_switch],
            [0.5],
            xerr=[[sw.n_switch - lo], [hi - sw.n_switch]],
            fmt="s",
            color="k",
            capsize=3,
        )
        if level:  # a leader from the label down to its marker
            ax1.plot([sw.n_switch, sw.n_switch], [0.52, 0.52 + 0.08 * level], color="k", lw=0.5, ls=":",
                     zorder=1)
        ax1.text(sw.n_switch, 0.53 + 0.08 * level, f"observed {sw.low_n}→{sw.high_n}", fontsize=7,
                 ha="center", zorder=4, bbox={"fc": "white", "ec": "none", "pad": 0.5, "alpha": 0.85})
    ax1.set_xscale("log")
    ax1.set_ylim(0, 1.1)
    ax1.set_xlabel("sample size n")
    ax1.set_ylabel("share of posterior draws")
    title = f"omitted (share < {min_share:g}): {', '.join(hidden)}" if hidden else None
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=7, ncol=min(len(labels), 8), title=title,
               title_fontsize=7)  # below the axes: the shares reach 1 at the top of the panel
    return fig


#: Rows of :func:`plot_switch_comparison`, top to bottom: (key, label).
SWITCH_ROWS = (
    ("paper", "asymptotic, paper's constant"),
    ("full", "asymptotic, full constant"),
    ("finite_population", "finite-n prediction, L"),
    ("observed_population", "observed, L"),
    ("finite_empirical", "finite-n prediction, L_n"),
    ("observed_empirical", "observed, L_n"),
)


def _has_value(val: Any) -> bool:
    """Whether a row entry ``(n, lo, hi)`` of :func:`plot_switch_comparison` holds a switch."""
    return bool(val) and val[0] is not None


def plot_switch_comparison(
    rows: Sequence[dict], basins: dict | None = None, *, c: int | None = None
) -> Figure:
    r"""The switch points side by side, and the :math:`\lambda_{\mathrm{eff}}(n)` behind the finite-n
    prediction.

    Parameters
    ----------
    rows : sequence of dict
        One per switch: ``"low_n"``, ``"high_n"`` and, for each key of :data:`SWITCH_ROWS`, ``None`` or
        ``(n, lo, hi)`` (``lo``/``hi`` None for a point prediction). Switches with no value in any of
        these rows (neither predicted nor observed) are left out of the figure.
    basins : dict of str to BasinLadder, optional
        Left panel: :math:`\lambda_{\mathrm{eff}}(n)` of each sampled phase with 2-SE bars.
    c : int, optional
        For the title.
    """
    shown = [r for r in rows if any(_has_value(r.get(key)) for key, _ in SWITCH_ROWS)]
    rows = shown or list(rows)
    fig = Figure(figsize=(11 if basins else 6.5, 1.2 + 1.6 * max(len(rows), 1)), layout="constrained")
    if basins:
        ax_l, ax = fig.subplots(1, 2, width_ratios=[1, 1.3])
        for name, lad in basins.items():
            ax_l.errorbar(lad.n_grid, lad.lambda_eff, yerr=2 * lad.lambda_eff_se, marker="o", ms=3, capsize=2,
                          color=phase_color(name), label=name)
        ax_l.set_xscale("log")
        ax_l.set_xlabel("sample size n")
        ax_l.set_ylabel(r"$\lambda_{\mathrm{eff}}(n) = n\,(E_n[L] - L_a)$")
        ax_l.set_title("basin-restricted posterior (population loss)")
        ax_l.legend(fontsize=7)
    else:
        ax = fig.subplots()
    ticks, labels = [], []
    y = 0.0
    for row in rows:
        for key, lab in SWITCH_ROWS:
            val = row.get(key)
            y -= 1
            ticks.append(y)
            labels.append(f"{row['low_n']}→{row['high_n']}: {lab}")
            if not _has_value(val):
                ax.text(1.0, y, "  -", va="center", fontsize=7, transform=ax.get_yaxis_transform())
                continue
            n, lo, hi = val
            xerr = None if lo is None or hi is None else [[n - lo], [hi - n]]
            color = "k" if key.startswith("observed") else (REFERENCE_COLOR if key in ("paper", "full") else
                                                              LOSS_COLOR)
            ax.errorbar([n], [y], xerr=xerr, fmt="o" if key.startswith("observed") else "D", color=color,
                        capsize=3)
        y -= 0.5
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("sample size n of the switch")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"c = {c}: predicted and observed switches" if c is not None else "switches")
    return fig
