r"""Figures of the SGD dynamics: loss against step with the energy levels, polygon snapshots at the
plateaus, :math:`\hat\lambda` along training, and the two orderings side by side. Every function returns
a matplotlib Figure; none chooses a backend or writes a file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from slt_tms.experiments.sgd_dynamics import DynamicsRun
from slt_tms.experiments.sgd_llc import LLCPoint, plateau_index
from slt_tms.plotting.style import LOSS_COLOR, phase_color
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
                cs[m], a.population_losses[m], s=7, marker="x", color=phase_color(None), lw=0.6,
                label="unclassified"
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
    seen = [nm for nm in names if any(nm in a.labels for a in run.analyses[:n])]
    handles = [Line2D([], [], color="0.6", lw=0.8, label="training loss")]
    handles += [Line2D([], [], marker="o", ls="", ms=4, color=col[nm], label=f"population loss: {nm}")
                for nm in seen]
    handles += [
        Line2D([], [], marker="x", ls="", ms=4, color=phase_color(None),
               label="population loss: unclassified"),
        Line2D([], [], color="0.3", ls="--", lw=0.8, label="energy level of a visited family"),
    ]
    fig.set_figheight(fig.get_figheight() + 0.4)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle("loss against step" + _omitted(len(run.records), n), fontsize=10)
    return fig


def plot_polygons(run: DynamicsRun, max_runs: int | None = None, max_snaps: int = 6) -> Figure:
    """Polygon snapshots: the columns :math:`W_i` in the plane at the plateau checkpoint of every named
    stretch (its middle, or its end when the run ends in it; one row per run, every run unless
    ``max_runs``; at most the last ``max_snaps`` plateaus of a run; every omission is said in the title).
    Arrows are numbered by feature (column); the panel's frame and title have the phase's colour."""
    pairs = list(zip(run.records, run.analyses, strict=True))
    keep = pairs if max_runs is None else pairs[:max_runs]
    rows = []
    cut = 0
    for rec, a in keep:
        named = [s for s in a.segments if s.name is not None]
        cut += max(len(named) - max_snaps, 0)
        snaps = named[-max_snaps:] or [a.segments[-1]]
        rows.append((rec, a, snaps))
    ncol = max(len(r[2]) for r in rows)
    fig = Figure(figsize=(2.3 * ncol, 2.4 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), ncol, squeeze=False)
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
                tip = (float(W[0, i]), float(W[1, i]) if r > 1 else 0.0)
                ax.annotate("", xy=tip, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": LOSS_COLOR,
                                                                    "lw": 1.3})
                if math.hypot(*tip) > 0.1 * lim:  # feature number at the tip (colour is the phase's)
                    ax.annotate(str(i + 1), tip, xytext=(3 * np.sign(tip[0]), 3 * np.sign(tip[1])),
                                textcoords="offset points", fontsize=6, ha="center", va="center")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            col = phase_color(s.name)
            ax.set_title(f"{s.name or 'unclassified'} @ step {int(a.checkpoint_steps[idx])}", fontsize=8,
                         color=col)
            for spine in ax.spines.values():  # the frame in the phase's colour, as in every figure
                spine.set_edgecolor(col)
                spine.set_linewidth(1.5)
        axes[ri, 0].set_ylabel(f"seed {a.seed}", fontsize=8)
    more = f"; the first {cut} plateau(s) of runs with more than {max_snaps} not shown" if cut else ""
    fig.suptitle(f"the columns W_i at each plateau, {len(keep)} runs" + _omitted(len(pairs), len(keep))
                 + more, fontsize=10)
    return fig


def _llc_range(run: DynamicsRun, points: Sequence[LLCPoint]) -> tuple[float, float]:
    """One y range for every panel: the trustworthy estimates (± 2 SE), the theory values of the visited
    families and 0. Estimates outside it (chains that escaped from a point that is no minimum: not an
    LLC, and often far negative) are drawn at the edge of the frame."""
    good = [p for p in points if p.diagnostics.get("ok", True)] or list(points)
    visited = {p.name for p in points if p.name}
    theory = [float(c.lambda_theory) for c in run.points if c.name in visited and c.lambda_theory]
    lo = min([0.0, *(p.llc - 2 * p.se for p in good)])
    hi = max([1.0, *theory, *(p.llc + 2 * p.se for p in good)])
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def plot_llc(run: DynamicsRun, points: Sequence[LLCPoint]) -> Figure:
    r""":math:`\hat\lambda` along training, one panel per run: the estimates at every checkpoint that was
    estimated (plateau checkpoints and the extra ones), joined in step order with :math:`\pm 2` SE error
    bars, beside the population loss (right axis) and the theoretical :math:`\lambda = \mathrm{rank}(H)/2`
    of the visited families that have one.

    Markers: filled in the family's colour at plateau checkpoints, hollow in the family's colour at other
    named checkpoints, hollow grey at unclassified ones; a red ring marks an estimate that is not
    trustworthy (its flags are in ``llc.csv``). Every panel has the same y range (:func:`_llc_range`);
    an estimate below or above it is drawn as a triangle on the frame's edge. One legend for the figure.
    """
    names = _family_names(run)
    theory = {c.name: float(c.lambda_theory) for c in run.points if c.lambda_theory}
    lo, hi = _llc_range(run, points)
    fig, axes = _grid(len(run.analyses))
    fig.set_figheight(fig.get_figheight() + 0.6)
    outside = 0
    for ax, a in zip(axes, run.analyses, strict=False):
        ps = sorted([p for p in points if p.seed == a.seed], key=lambda p: p.step)
        ax.set_xscale("log")
        ax.set_xlim(0.5, 1.5 * max(float(a.checkpoint_steps[-1]), 1.0))
        ax.set_ylim(lo, hi)
        ax2 = ax.twinx()
        ax2.plot(np.maximum(a.checkpoint_steps.astype(float), 0.5), a.population_losses, color=LOSS_COLOR,
                 lw=0.8, alpha=0.5, zorder=0)
        ax2.set_ylabel("population loss", color=LOSS_COLOR, fontsize=8)
        ax2.tick_params(axis="y", labelsize=7, colors=LOSS_COLOR)
        ax.set_zorder(ax2.get_zorder() + 1)  # the estimates above the loss curve
        ax.patch.set_visible(False)
        for nm in {p.name for p in ps if p.name in theory}:
            ax.axhline(theory[nm], color=phase_color(nm), ls="--", lw=0.9, alpha=0.8)
        ax.set_title(f"seed {a.seed}: " + (" → ".join(a.path) or "nothing classified"), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\hat\lambda$")
        if not ps:
            continue
        x = np.array([max(p.step, 0.5) for p in ps], dtype=float)
        y = np.array([p.llc for p in ps])
        shown = np.clip(y, lo, hi)
        ax.plot(x, shown, color=LOSS_COLOR, lw=1.0, alpha=0.8)
        for p, xi, yi in zip(ps, x, y, strict=True):
            col = phase_color(p.name)
            if not lo <= yi <= hi:
                outside += 1
                ax.plot([xi], [lo if yi < lo else hi], "v" if yi < lo else "^", ms=7, color=col,
                        mfc="none", mew=1.2, clip_on=False)
                continue
            ax.errorbar([xi], [yi], yerr=[2 * p.se], fmt="o", ms=5, color=col, ecolor=col, capsize=2,
                        mfc=col if p.plateau and p.name else "white", mew=1.2)
            if not p.diagnostics.get("ok", True):
                ax.plot([xi], [yi], "o", ms=11, mfc="none", mec="tab:red", mew=1.2)
    seen = [nm for nm in names if any(p.name == nm for p in points)]
    handles = [Line2D([], [], marker="o", ls="", color=phase_color(nm), label=nm) for nm in seen]
    handles += [
        Line2D([], [], marker="o", ls="", color="0.3", label=r"$\hat\lambda \pm 2$ SE, plateau checkpoint"),
        Line2D([], [], marker="o", ls="", color="0.3", mfc="white", label="other checkpoint"),
        Line2D([], [], marker="o", ls="", mfc="none", mec="tab:red", ms=10, label="not trustworthy"),
        Line2D([], [], color="0.3", ls="--", label=r"$\lambda = \mathrm{rank}(H)/2$"),
        Line2D([], [], color=LOSS_COLOR, alpha=0.5, label="population loss (right axis)"),
    ]
    if outside:
        escaped = sum(1 for p in points if not lo <= p.llc <= hi
                      and any("escaped" in str(f) for f in p.diagnostics.get("flags", [])))
        why = f", {escaped} with chains escaped: not an LLC" if escaped else ""
        handles.append(Line2D([], [], marker="v", ls="", color="0.3", mfc="none",
                              label=f"beyond the frame ({outside}{why})"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle(rf"$\hat\lambda$ along training, c = {run.config.c}: {len(points)} estimates in "
                 f"{len(run.analyses)} runs", fontsize=10)
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
            ax.text(0, -i, nm, ha="right", va="center", fontsize=11, color=phase_color(nm), weight="bold")
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
        ax.text(1, -i, d["name"], ha="left", va="center", fontsize=11, color=phase_color(d["name"]),
                weight="bold")
        ax.text(1.4, -i, f"(step ~{d['median_first_step']:.0f}, {d['runs']} runs)", ha="left", va="center",
                fontsize=10)
    for nm in right:
        if nm in left:
            ax.plot([0.05, 0.95], [-left.index(nm), -right.index(nm)], color="0.6", lw=1)
    ax.text(0, 1, "Bayesian (n grows)", ha="right", fontsize=10, weight="bold")
    ax.text(1, 1, "SGD (step grows)", ha="left", fontsize=10, weight="bold")
    ax.set_xlim(-1.5, 2.4)
    ax.set_ylim(-len(right) - 0.2, 1.6)
    ax.axis("off")
    ax.set_title(f"orderings; Bayesian by {bayes['method']}", fontsize=9)
    return fig
