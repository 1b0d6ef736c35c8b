r"""Figures of the Elhage et al. (2022) superposition experiments.

Every function takes the frozen result(s) of :mod:`slt_tms.experiments.superposition` and returns a
:class:`matplotlib.figure.Figure`. The figures are built without :mod:`matplotlib.pyplot`, so nothing here
chooses a backend or registers a window, and nothing is written: save with ``fig.savefig(path)`` (or
:func:`slt_tms.io.save_figure`, which writes atomically), or display the figure in a notebook.

* :func:`plot_geometry` -- the columns :math:`W_i` in the hidden plane, one row per result, one panel per
  sparsity;
* :func:`plot_phase_diagram` -- trained and analytic classes of 2 features in 1 dimension with the
  analytic boundaries :math:`r_{\rm low}(p) < I_2/I_1 < r_{\rm high}(p)`;
* :func:`plot_dimensionality` -- :math:`m / \|W\|_F^2` and the per-feature :math:`D_i` against
  :math:`1/(1-S)`, with the plateau fractions;
* :func:`plot_swish` -- distance to ReLU's geometry, represented features and dropped-column norms
  against the swish sharpness :math:`\gamma`.

Examples
--------
>>> from slt_tms.experiments.superposition import GeometryConfig, TrainConfig, geometry
>>> res = geometry(GeometryConfig(sparsities=(0.0, 0.9), train=TrainConfig(num_steps=10, num_restarts=1)),
...                progress=False)
>>> fig = plot_geometry([res])
>>> len(fig.axes)
2
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from slt_tms.analysis.superposition import PLATEAUS, REPRESENTED_THRESHOLD, column_norms
from slt_tms.experiments.superposition import (
    DimensionalityResult,
    GeometryResult,
    PhaseDiagramResult,
    SwishResult,
)
from slt_tms.theory.two_feature import PHASE_NAMES, analytic_boundaries, analytic_phase

__all__ = ["plot_dimensionality", "plot_geometry", "plot_phase_diagram", "plot_swish"]

# Cell colours of the phase diagram, indexed by class code (see PHASE_NAMES): not represented (light
# grey), dedicated dimension (blue), superposition (red).
_PHASE_COLORS = ("#f2f2f2", "#3b6fd6", "#d64541")


def _draw_columns(ax: Axes, W: np.ndarray, title: str, lim: float = 1.35) -> None:
    n = W.shape[-1]
    cmap = mpl.colormaps["viridis"]
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.85", lw=0.8, zorder=0)
    ax.axhline(0, color="0.92", lw=0.6, zorder=0)
    ax.axvline(0, color="0.92", lw=0.6, zorder=0)
    for i in range(n):
        col = cmap(i / max(n - 1, 1))
        x, y = W[0, i], (W[1, i] if W.shape[0] > 1 else 0.0)
        ax.plot([0, x], [0, y], color=col, lw=2)
        ax.scatter([x], [y], color=col, s=18, zorder=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _label(res: GeometryResult) -> str:
    return f"swish γ={res.gamma:g}" if res.activation == "swish" else res.activation


def plot_geometry(results: Sequence[GeometryResult]) -> Figure:
    r"""Draw the columns :math:`W_i \in \mathbb{R}^2` of each result in the hidden plane.

    One row per result (e.g. ReLU and linear, or ReLU and each swish :math:`\gamma`), one panel per
    sparsity :math:`S`, with the unit circle; colour = feature index (dark = most important, the legend
    gives :math:`I_i = \rho^i`); each panel title gives :math:`S` and the number :math:`k` of represented
    features (:math:`\|W_i\| >` :data:`slt_tms.analysis.superposition.REPRESENTED_THRESHOLD`).

    Parameters
    ----------
    results : sequence of GeometryResult
        From :func:`slt_tms.experiments.superposition.geometry`, all with :math:`m = 2`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if len(results) == 0:
        raise ValueError("plot_geometry needs at least one GeometryResult")
    if results[0].W.shape[-2] != 2:
        raise ValueError("plot_geometry draws columns in the plane: needs m = 2 hidden dimensions")
    ncol = max(len(r.sparsities) for r in results)
    size = (max(1.6 * ncol + 0.8, 7.5), 2.0 * len(results) + 1.1)
    lim = max(1.35, 1.1 * max(float(column_norms(r.W).max()) for r in results))
    fig = Figure(figsize=size)
    axes = fig.subplots(len(results), ncol, squeeze=False)
    for row, res in enumerate(results):
        for j in range(ncol):
            ax = axes[row, j]
            if j >= len(res.sparsities):
                ax.axis("off")
                continue
            _draw_columns(ax, res.W[j], f"S={res.sparsities[j]:.2f}  k={int(res.num_represented[j])}", lim)
        axes[row, 0].set_ylabel(_label(res), fontsize=10)
    n = results[0].W.shape[-1]
    rho = results[0].config.get("rho")
    cmap = mpl.colormaps["viridis"]
    handles = [Line2D([], [], color=cmap(i / max(n - 1, 1)), lw=2,
                      label=f"$W_{{{i + 1}}}$" + (f" ($I$={rho**i:.2f})" if rho is not None else ""))
               for i in range(n)]
    fig.legend(handles=handles, loc="lower center", ncol=min(n, 8), fontsize=8, frameon=False)
    fig.suptitle(f"Columns $W_i$ of W in the hidden plane (n={n}, m=2; k = #features with "
                 f"$\\|W_i\\| > {REPRESENTED_THRESHOLD}$)", fontsize=9)
    height = size[1]
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.35 / height))  # room for the legend and the title
    return fig


def _log_edges(v: np.ndarray) -> np.ndarray:
    """Cell edges (geometric midpoints) around the log-spaced centres ``v``."""
    lv = np.log10(v)
    if len(v) == 1:
        return 10 ** np.array([lv[0] - 0.1, lv[0] + 0.1])
    mids = (lv[1:] + lv[:-1]) / 2
    return 10 ** np.concatenate([[2 * lv[0] - mids[0]], mids, [2 * lv[-1] - mids[-1]]])


def plot_phase_diagram(result: PhaseDiagramResult) -> Figure:
    r"""Trained classes (left) and analytic classes on a fine grid (right) of 2 features in 1 dimension.

    Axes: relative importance :math:`I_2/I_1` (log, x) and density :math:`1 - S` (log, y). Both panels
    carry the analytic boundaries :math:`r_{\rm low}(p)`, :math:`r_{\rm high}(p) = 1/r_{\rm low}(p)` and,
    above the tip :math:`p_{\rm critical}`, the line :math:`r = 1`
    (:func:`slt_tms.theory.two_feature.analytic_boundaries`); the left title gives the agreement.

    Parameters
    ----------
    result : PhaseDiagramResult
        From :func:`slt_tms.experiments.superposition.phase_diagram`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    cmap = ListedColormap(_PHASE_COLORS)
    r, p = result.relative_importances, result.densities
    fine_r = np.logspace(np.log10(r.min()), np.log10(r.max()), 160)
    fine_p = np.logspace(np.log10(p.min()), np.log10(p.max()), 120)
    bnd = analytic_boundaries(fine_p)
    p_crit = float(bnd["p_critical"])

    fig = Figure(figsize=(10, 4.4))
    axes = fig.subplots(1, 2)
    panels = [
        (_log_edges(np.sort(r)), _log_edges(np.sort(p)), result.classes[np.argsort(r)][:, np.argsort(p)],
         f"trained (best of {result.config['train']['num_restarts']}); agreement {result.agreement:.0%}"),
        (_log_edges(fine_r), _log_edges(fine_p), analytic_phase(fine_r[:, None], fine_p[None, :]),
         "analytic"),
    ]
    for ax, (xe, ye, cls, title) in zip(axes, panels, strict=True):
        ax.pcolormesh(xe, ye, cls.T, cmap=cmap, vmin=-0.5, vmax=2.5, shading="flat")
        ax.plot(bnd["r_low"], fine_p, color="k", lw=1.5)
        ax.plot(bnd["r_high"], fine_p, color="k", lw=1.5)
        if math.isfinite(p_crit):
            ax.plot([1, 1], [p_crit, fine_p.max()], color="k", lw=1.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])  # density 1 at the top, sparse data at the bottom
        ax.set_xlabel("relative importance of feature 2,  $I_2/I_1$")
        ax.set_ylabel("feature density  $1-S$")
        ax.set_title(title, fontsize=10)
    handles: list = [Patch(facecolor=c, edgecolor="0.5", label=f"{nm} ({w})") for c, nm, w in
                     zip(_PHASE_COLORS, PHASE_NAMES, ("W=[1,0]", "W=[0,1]", "W=[1,-1]"), strict=True)]
    handles.append(Line2D([], [], color="k", lw=1.5, label="analytic boundary"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("2 features in 1 dimension: fate of feature 2", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_dimensionality(result: DimensionalityResult) -> Figure:
    r"""Dimensions per feature against :math:`1/(1-S)` (log x).

    The line is :math:`D^* = m/\|W\|_F^2`; the dots are the per-feature dimensionalities :math:`D_i` of the
    represented features (unlearned features, :math:`D_i \approx 0`, are not drawn; the dots are jittered
    horizontally for display with a fixed seed); dashed lines mark the plateau fractions of
    :data:`slt_tms.analysis.superposition.PLATEAUS`.

    Parameters
    ----------
    result : DimensionalityResult
        From :func:`slt_tms.experiments.superposition.dimensionality`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    x = result.inverse_densities
    for val, lab in PLATEAUS:
        ax.axhline(val, color="0.7", lw=0.8, ls="--", zorder=0)
        ax.text(x.max() * 1.15, val, lab, va="center", fontsize=8, color="0.4")
    fd = result.feature_dims
    xs = np.repeat(x[:, None], fd.shape[1], axis=1)
    jitter = np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, size=fd.shape))  # display only
    keep = column_norms(result.W) > REPRESENTED_THRESHOLD  # unlearned features (D_i ~ 0) are not drawn
    ax.scatter((xs * jitter)[keep], fd[keep], s=5, alpha=0.35, color="tab:orange",
               label="$D_i$ of represented features")
    ax.plot(x, result.dims_per_feature, "o-", color="tab:blue", lw=1.8, ms=4, label="$m/\\|W\\|_F^2$")
    ax.set_xscale("log")
    ax.set_xlim(x.min() / 1.1, x.max() * 1.4)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("$1/(1-S)$  (1 / feature density)")
    ax.set_ylabel("dimensions per feature")
    n, m = result.W.shape[-1], result.W.shape[-2]
    ax.set_title(f"Dimensionality, n={n} features in m={m} dimensions (uniform importance)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_swish(result: SwishResult) -> Figure:
    r"""Swish against ReLU, per sparsity, as functions of :math:`\gamma` (log2 x): three panels.

    Left: the median relative Procrustes distance to the ReLU columns, with the tolerance and the median
    ReLU restart-to-restart distance for scale. Middle: the number of represented features (dotted: ReLU;
    curves offset slightly so that equal counts stay visible). Right: the largest norm of a dropped column.
    The title states the matching :math:`\gamma`. The columns themselves are drawn by
    ``plot_geometry([result.relu, *result.swish])``.

    Parameters
    ----------
    result : SwishResult
        From :func:`slt_tms.experiments.superposition.swish_comparison`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    g = result.gammas
    cmap = mpl.colormaps["plasma"]
    S = result.sparsities
    for j, s in enumerate(S):
        col = cmap(j / max(len(S) - 1, 1) * 0.85)
        axes[0].plot(g, result.distances[:, j], "o-", color=col, ms=3, label=f"S={s:.2f}")
        off = 0.03 * (j - (len(S) - 1) / 2)  # small vertical offset so that equal counts stay visible
        axes[1].plot(g, result.num_represented[:, j] + off, "o-", color=col, ms=3)
        axes[1].axhline(result.relu_num_represented[j] + off, color=col, ls=":", lw=1)
        axes[2].plot(g, result.max_unrepresented_norm[:, j], "o-", color=col, ms=3)
    axes[0].axhline(result.config["tolerance"], color="k", ls="--", lw=1, label="tolerance")
    if np.isfinite(result.restart_spread).any():
        axes[0].axhline(float(np.nanmedian(result.restart_spread)), color="0.5", ls=":", lw=1.2,
                        label="ReLU restart-to-restart (median)")
    axes[0].set_ylabel("Procrustes distance to ReLU")
    axes[1].set_ylabel("# represented features (dotted: ReLU)")
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    axes[2].set_ylabel(f"largest dropped-column norm (< {REPRESENTED_THRESHOLD})")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("swish γ")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    mg = result.matching_gamma
    verdict = (f"matches ReLU for every γ ≥ {mg:g}" if mg is not None
               else "no γ in the grid matches ReLU at all sparsities")
    fig.suptitle("swish$_\\gamma$ vs ReLU geometry: " + verdict, fontsize=10)
    fig.tight_layout()
    return fig
