r"""Figures of LLC estimates: :math:`\hat\lambda` over training with error bars, beside the loss."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from slt_tms.estimators.series import LLCSeries

__all__ = ["plot_llc_series"]


def plot_llc_series(series: LLCSeries, *, title: str = "") -> Figure:
    r"""Two panels over the training step: :math:`\hat\lambda \pm 2\,\mathrm{SE}` (trustworthy estimates
    filled, flagged ones hollow and labelled) and the loss :math:`L_n(w^*_t)` at each checkpoint.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from slt_tms.estimators.series import estimate_llc_series
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(200, 2, generator=g); Y = X @ torch.randn(2, 1, generator=g)
    >>> sol = torch.linalg.lstsq(torch.cat([X, torch.ones(200, 1)], 1), Y).solution
    >>> minimum = {"weight": sol[:2].T, "bias": sol[2]}
    >>> s = estimate_llc_series([minimum, minimum], lambda: nn.Linear(2, 1), (X, Y), progress=False)
    >>> len(plot_llc_series(s).axes)
    2
    """
    rows = sorted(series.rows(), key=lambda r: r["step"])  # lines join the checkpoints in training order
    steps = np.array([r["step"] for r in rows], dtype=float)
    lam = np.array([r["lambda_hat"] for r in rows])
    se = np.array([r["se"] for r in rows])
    ok = np.array([r["ok"] for r in rows], dtype=bool)
    loss = np.array([r["anchor_loss"] for r in rows])
    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    kw: dict[str, Any] = {"fmt": "o-", "capsize": 3, "color": "C0", "lw": 1.2, "ms": 5}
    ax.errorbar(steps, lam, yerr=2 * se, label=r"$\hat\lambda \pm 2$ SE", **kw)
    if (~ok).any():
        ax.plot(steps[~ok], lam[~ok], "o", mfc="white", mec="C3", ms=9, mew=1.5,
                label="not trustworthy (see flags)")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\hat\lambda$")
    ax.set_title(title or "local learning coefficient over training")
    ax.legend(loc="best", fontsize=8)
    ax2.plot(steps, loss, "s-", color="C1", ms=4, label=r"$L_n(w^*_t)$")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("training loss at the checkpoint")
    if np.all(loss > 0):
        ax2.set_yscale("log")
    ax2.legend(loc="best", fontsize=8)
    if np.all(steps > 0) and steps.max() / max(steps.min(), 1) > 100:
        ax.set_xscale("log")
        ax2.set_xscale("log")
    return fig
