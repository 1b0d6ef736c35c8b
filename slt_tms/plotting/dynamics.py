r"""Figures of the SGD dynamics: loss against step with the energy levels, polygon snapshots at the
plateaus, :math:`\hat\lambda` along training, and the two orderings side by side. Every function returns
a matplotlib Figure; none chooses a backend or writes a file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from slt_tms.experiments.sgd_dynamics import DynamicsRun
from slt_tms.experiments.sgd_llc import LLCPoint, plateau_index
from slt_tms.plotting.style import phase_color
from slt_tms.tms import unpack

__all__ = ["plot_llc", "plot_losses", "plot_ordering", "plot_polygons"]


def _family_names(run: DynamicsRun) -> list[str]:
    seen = {n for a in run.analyses for n in a.labels if n is not None}
    return [p.name for p in sorted(run.points, key=lambda p: -p.loss) if p.name in seen]


def _grid(num: int) -> tuple[Figure, Any]:
    cols = min(4, max(num, 1))
    rows = math.ceil(max(num, 1) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[num:]:
        ax.set_visible(False)
    return fig, axes.flat


def _omitted(total: int, shown: int) -> str:
    return "" if shown >= total else f" (first {shown} of {total} runs shown)"


def plot_losses(run: DynamicsRun, max_runs: int | None = None) -> Figure:
    """Loss against step (log x) per run: training loss (line), population loss at the checkpoints
    (dots coloured by family, black crosses unclassified), the energy levels of the visited families
    (dashed) and the phase labels of the named stretches."""
    names = _family_names(run)
    col = {nm: phase_color(nm) for nm in names}
    level = {p.name: p.loss for p in run.points}
    n = len(run.records) if max_runs is None else min(len(run.records), max_runs)
    fig, axes = _grid(n)
    for ax, rec, a in zip(axes, run.records[:n], run.analyses[:n], strict=False):
        st = np.asarray(rec["steps"], dtype=float)
        ax.plot(np.maximum(st, 0.5), rec["losses"], color="0.6", lw=0.8, label="training loss")
        for nm in {x for x in a.labels if x is not None}:
            ax.axhline(level[nm], color=col[nm], ls="--", lw=0.8)
        cs = np.maximum(a.checkpoint_steps.astype(float), 0.5)
        for nm in names:
            m = np.array([x == nm for x in a.labels])
            if m.any():
                ax.scatter(cs[m], a.population_losses[m], s=9, color=col[nm], label=nm, zorder=3)
        m = np.array([x is None for x in a.labels])
        if m.any():
            ax.scatter(
                cs[m], a.population_losses[m], s=7, marker="x", color="k", lw=0.6, label="unclassified"
            )
        for s in a.segments:
            if s.name is not None:
                mid = math.sqrt(max(s.start_step, 0.5) * max(s.end_step, 0.5))
                ax.annotate(
                    s.name,
                    (mid, level[s.name]),
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                    fontsize=8,
                    color=col[s.name],
                )
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"seed {a.seed}: " + " → ".join(a.path), fontsize=9)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("loss against step" + _omitted(len(run.records), n), fontsize=10)
    return fig


def plot_polygons(run: DynamicsRun, max_runs: int | None = None, max_snaps: int = 6) -> Figure:
    """Polygon snapshots: the columns :math:`W_i` in the plane at the plateau checkpoint of every named
    stretch (its middle, or its end when the run ends in it; one row per run, every run unless
    ``max_runs``; an omission is said in the title)."""
    pairs = list(zip(run.records, run.analyses, strict=True))
    keep = pairs if max_runs is None else pairs[:max_runs]
    rows = []
    for rec, a in keep:
        snaps = [s for s in a.segments if s.name is not None][-max_snaps:]
        if not snaps:
            snaps = [a.segments[-1]]
        rows.append((rec, a, snaps))
    ncol = max(len(r[2]) for r in rows)
    fig = Figure(figsize=(2.3 * ncol, 2.4 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    cmap = colormaps["tab10"]
    c, r = run.config.c, run.config.r
    for ri, (rec, a, snaps) in enumerate(rows):
        for ci in range(ncol):
            ax = axes[ri, ci]
            if ci >= len(snaps):
                ax.set_visible(False)
                continue
            s = snaps[ci]
            idx = plateau_index(a, s)
            W, _ = unpack(rec["tensors"]["checkpoints"][idx].double(), c, r)
            lim = max(1.2, float(W.norm(dim=0).max()) * 1.15)
            for i in range(c):
                ax.annotate(
                    "",
                    xy=(float(W[0, i]), float(W[1, i]) if r > 1 else 0.0),
                    xytext=(0, 0),
                    arrowprops={"arrowstyle": "->", "color": cmap(i % 10), "lw": 1.4},
                )
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{s.name or 'unclassified'} @ {int(a.checkpoint_steps[idx])}", fontsize=8)
        axes[ri, 0].set_ylabel(f"seed {a.seed}", fontsize=8)
    fig.suptitle("the columns W_i at each plateau" + _omitted(len(pairs), len(keep)), fontsize=10)
    return fig


def plot_llc(run: DynamicsRun, points: Sequence[LLCPoint]) -> Figure:
    r""":math:`\hat\lambda` (± 2 SE) against step (log x) per run, beside the population loss; filled
    markers at plateau checkpoints (labelled with the family), hollow at other checkpoints, a red ring
    around estimates that are not trustworthy."""
    names = _family_names(run)
    col = {nm: phase_color(nm) for nm in names}
    n = len(run.analyses)
    # one lambda-hat scale for every panel (plateau estimates only: off-plateau ones can be far negative)
    ref = [p for p in points if p.plateau] or list(points)
    lo = min((p.llc - 2 * p.se for p in ref), default=0.0)
    hi = max((p.llc + 2 * p.se for p in ref), default=1.0)
    pad = 0.1 * max(hi - lo, 1.0)
    fig, axes = _grid(n)
    for ax, a in zip(axes, run.analyses[:n], strict=False):
        ps = sorted([p for p in points if p.seed == a.seed], key=lambda p: p.step)
        if not ps:
            continue
        x = np.array([max(p.step, 0.5) for p in ps], dtype=float)
        y = np.array([p.llc for p in ps])
        e = np.array([2 * p.se for p in ps])
        ax.plot(x, y, color="0.5", lw=0.8)
        for p, xi, yi, ei in zip(ps, x, y, e, strict=True):
            c = col.get(p.name, "k") if p.name else "k"
            ax.errorbar([xi], [yi], yerr=[ei], fmt="o", ms=5, color=c, mfc=c if p.plateau else "none",
                        label=(p.name or "unclassified") if p.plateau else None)
            if not p.diagnostics.get("ok", True):
                ax.plot([xi], [yi], "o", ms=11, mfc="none", mec="tab:red", mew=1.2)
            if p.plateau and p.name:
                ax.annotate(p.name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8, color=c)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\hat\lambda$")
        if not any(not p.plateau for p in ps):
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(0.5, 1.5 * max(float(a.checkpoint_steps[-1]), 1.0))
        ax2 = ax.twinx()
        ax2.plot(
            np.maximum(a.checkpoint_steps.astype(float), 0.5),
            a.population_losses,
            color="tab:red",
            lw=0.7,
            alpha=0.6,
        )
        ax2.set_ylabel("population loss", color="tab:red", fontsize=8)
        ax.set_title(f"seed {a.seed}", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower right")
    fig.suptitle(r"$\hat\lambda$ along training (red ring: not trustworthy; red line: population loss)",
                 fontsize=10)
    return fig


def plot_ordering(bayes: Mapping[str, Any], dyn: Sequence[Mapping[str, Any]]) -> Figure:
    """The Bayesian ordering (as n grows) beside the dynamical ordering (as the step grows); lines join
    the same family."""
    left = list(bayes["order"])
    right = [d["name"] for d in dyn]
    left = [nm for nm in left if nm in set(right)]
    seq = bayes.get("sequence")
    dominant = {row[0] for row in seq} if seq else set(left)
    fig = Figure(figsize=(5.5, 0.6 * max(len(right), 2) + 1.2), layout="constrained")
    ax = fig.subplots()
    for i, nm in enumerate(left):
        if nm in dominant:
            ax.text(0, -i, nm, ha="right", va="center", fontsize=11)
        else:
            ax.text(
                0,
                -i,
                f"{nm} (never dominant)",
                ha="right",
                va="center",
                fontsize=9,
                color="0.5",
                style="italic",
            )
    for i, d in enumerate(dyn):
        ax.text(
            1,
            -i,
            f"{d['name']}  (step ~{d['median_first_step']:.0f}, {d['runs']} runs)",
            ha="left",
            va="center",
            fontsize=10,
        )
    for nm in right:
        if nm in left:
            ax.plot([0.05, 0.95], [-left.index(nm), -right.index(nm)], color="0.6", lw=1)
    ax.text(0, 1, "Bayesian (n grows)", ha="right", fontsize=10, weight="bold")
    ax.text(1, 1, "SGD (step grows)", ha="left", fontsize=10, weight="bold")
    ax.set_xlim(-1.5, 2.2)
    ax.set_ylim(-len(right) - 0.2, 1.6)
    ax.axis("off")
    ax.set_title(f"orderings; Bayesian by {bayes['method']}", fontsize=9)
    return fig
