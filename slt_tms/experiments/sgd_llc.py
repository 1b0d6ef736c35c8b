r"""The local learning coefficient along SGD training: estimates at the plateau checkpoints of the runs.

Each estimate is :func:`slt_tms.estimators.estimate_llc` (defaults from
:class:`~slt_tms.estimators.LLCConfig`: converged or flagged) on the empirical loss of the run's training
set, one resumable sweep task per checkpoint. Config -> run -> frozen result: no files, no plots.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from slt_tms._rng import spawn_seeds
from slt_tms.analysis.plateaus import RunAnalysis, Segment
from slt_tms.estimators import LLCConfig, estimate_llc
from slt_tms.experiments.sgd_dynamics import DynamicsConfig, DynamicsRun, training_set
from slt_tms.potentials import from_tms
from slt_tms.sweep import Executor, run_sweep

__all__ = ["GRADIENT_KEYS", "LLCAlongTraining", "LLCPoint", "llc_along_training", "llc_task", "plateau_index"]


# --------------------------------------------------------------------------------------------------
# LLC along training
# --------------------------------------------------------------------------------------------------


#: The first-order term's fields of an estimate (estimators.gradient_term) kept with each point.
GRADIENT_KEYS = ("grad_norm", "first_order_term", "first_order_term_se", "first_order_status")


def llc_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep function: :math:`\\hat\\lambda` at one checkpoint.

    ``task = {"config": DynamicsConfig dict, "seed": run seed, "step": checkpoint step, "w": flat parameters
    (list), "llc": LLCConfig fields given explicitly, "llc_seed": int}``. The potential is the empirical
    loss :math:`L_n` of the run's training set (closed-form gradient); the estimator's defaults come from
    :class:`~slt_tms.estimators.LLCConfig`. Returns the estimate, its standard error, diagnostics and flags.
    """
    config = DynamicsConfig.from_dict(task["config"])
    x = training_set(config, int(task["seed"])).to(torch.float64)
    w = torch.tensor(task["w"], dtype=torch.float64)
    pot = from_tms(w, c=config.c, r=config.r, data=x, name=f"step {task['step']}")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the flags are kept with the result instead of printed per task
        res = estimate_llc(pot, config=LLCConfig(**task["llc"]), seed=int(task["llc_seed"]), progress=False)
    t = res.config.get("gradient_term") or {}
    return {
        "seed": int(task["seed"]),
        "step": int(task["step"]),
        "llc": res.llc,
        "se": res.se,
        "seconds": time.perf_counter() - t0,
        "rhat": res.rhat,
        "ess": res.ess,
        "acceptance": res.acceptance,
        "frac_below_anchor": res.frac_below_anchor,
        "diverged": int(np.sum(res.diverged)),
        "ok": res.ok,
        "flags": list(res.flags),
        # an SGD checkpoint is not a critical point: what its gradient contributes (estimators.gradient_term)
        "grad_norm": t.get("grad_norm", math.nan),
        "first_order_term": t.get("term", math.nan),
        "first_order_term_se": t.get("se", math.nan),
        "first_order_status": t.get("status", ""),
    }


@dataclass(frozen=True)
class LLCPoint:
    """:math:`\\hat\\lambda` at one checkpoint of one run."""

    seed: int
    step: int
    index: int
    name: str | None
    loss: float
    llc: float
    se: float
    plateau: bool
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def usable(self) -> bool:
        """Trustworthy (no flag) and non-negative: a flagged or negative estimate is no learning
        coefficient."""
        return bool(self.diagnostics.get("ok", True)) and self.llc >= 0


def plateau_index(a: RunAnalysis, seg: Segment) -> int:
    """The checkpoint that stands for a named segment: its last checkpoint when the run ends in it (the
    most settled point), otherwise its middle checkpoint in index, i.e. the geometric middle in step for
    log-spaced checkpoints (the last one before a transition is already on its way out)."""
    if seg.end_index == len(a.checkpoint_steps) - 1:
        return seg.end_index
    return (seg.start_index + seg.end_index) // 2


def _select_checkpoints(a: RunAnalysis, extra: int) -> list[tuple[int, bool]]:
    """(checkpoint index, is_plateau) pairs: the plateau checkpoint of every named segment
    (:func:`plateau_index`), plus ``extra`` checkpoints evenly spaced in index (log-spaced in step) from
    the first named checkpoint of the run to its last one. Before the run first reaches a named family
    (e.g. the descent from a random start) the weights are near no critical point and an estimate there
    is not a learning coefficient, so no extra checkpoint is spent on it."""
    chosen: dict[int, bool] = {}
    for s in a.segments:
        if s.name is not None:
            chosen[plateau_index(a, s)] = True
    K = len(a.checkpoint_steps)
    if extra > 0:
        first = min((s.start_index for s in a.segments if s.name is not None), default=1)
        for i in np.unique(np.round(np.linspace(max(first, 1), K - 1, extra)).astype(int)):
            chosen.setdefault(int(i), False)
    return sorted(chosen.items())


def llc_along_training(
    run: DynamicsRun,
    *,
    work_dir: str | os.PathLike[str],
    llc: Mapping[str, Any] | None = None,
    extra_per_run: int = 0,
    executor: Executor = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
) -> LLCAlongTraining:
    r"""Estimate :math:`\hat\lambda` at the plateau checkpoints of the analysed seeds of ``run``.

    The plateau checkpoint of a named stretch is its middle checkpoint (geometric middle in step), or its
    last one when the run ends in it. ``extra_per_run`` adds log-spaced checkpoints from the run's first
    named checkpoint on (for the curve against step; at unclassified ones the point need not be critical
    and the estimate is flagged when the chains escape). One sweep task per checkpoint (resumable in
    ``work_dir``). ``llc`` holds :class:`~slt_tms.estimators.LLCConfig` fields to change (default: none,
    the estimator's defaults).
    For every transition the estimates at its source and target plateaus are compared: ``increase``
    when :math:`\hat\lambda_{\text{target}} > \hat\lambda_{\text{source}}`, ``significant`` when the
    difference exceeds :math:`2\sqrt{\mathrm{SE}_s^2 + \mathrm{SE}_t^2}`.
    """
    overrides = dict(llc or {})
    LLCConfig(**overrides)  # validates before any work
    tasks, meta = [], []
    for rec, a in zip(run.records, run.analyses, strict=True):
        ck = rec["tensors"]["checkpoints"]
        for i, plateau in _select_checkpoints(a, extra_per_run):
            tasks.append(
                {
                    "config": run.config.to_dict(),
                    "seed": a.seed,
                    "step": int(a.checkpoint_steps[i]),
                    "w": ck[i].double().tolist(),
                    "llc": overrides,
                    "llc_seed": int(spawn_seeds(a.seed, 4)[3] % (2**31) + i),
                }
            )
            meta.append((a, i, plateau))
    results = run_sweep(
        llc_task,
        tasks,
        out_dir=work_dir,
        executor=executor,
        max_workers=max_workers,
        dask_address=dask_address,
        progress=progress,
    )
    pts_out: list[LLCPoint] = []
    for (a, i, plateau), res in zip(meta, results, strict=True):
        diag = {
            k: res[k]
            for k in ("rhat", "ess", "acceptance", "frac_below_anchor", "diverged", "ok", "flags",
                      *GRADIENT_KEYS)
            if k in res
        }
        pts_out.append(
            LLCPoint(
                a.seed,
                int(a.checkpoint_steps[i]),
                i,
                a.labels[i],
                float(a.population_losses[i]),
                res["llc"],
                res["se"],
                plateau,
                diag,
            )
        )
    by_key = {(p.seed, p.index): p for p in pts_out}
    comparisons = []
    for a in run.analyses:
        named = [s for s in a.segments if s.name is not None]
        for s, t in itertools.pairwise(named):
            if s.name == t.name:
                continue
            ps, pt = by_key[(a.seed, plateau_index(a, s))], by_key[(a.seed, plateau_index(a, t))]
            diff = pt.llc - ps.llc
            se = math.hypot(ps.se, pt.se)
            trusted = ps.usable and pt.usable  # (otherwise the transition is listed, not counted)
            comparisons.append(
                {
                    "seed": a.seed,
                    "source": s.name,
                    "target": t.name,
                    "step": t.start_step,
                    "llc_source": ps.llc,
                    "se_source": ps.se,
                    "llc_target": pt.llc,
                    "se_target": pt.se,
                    "difference": diff,
                    "trusted": trusted,
                    "increase": bool(diff > 0),
                    "significant": bool(diff > 2 * se),
                }
            )
    fam: dict[str, list[float]] = {}
    for p in pts_out:  # a family's lambda from its trustworthy, non-negative plateau estimates only
        if p.plateau and p.name is not None and p.usable:
            fam.setdefault(p.name, []).append(p.llc)
    return LLCAlongTraining(
        tuple(pts_out),
        tuple(comparisons),
        {k: float(np.mean(v)) for k, v in fam.items()},
        {**LLCConfig(**overrides).to_dict()},
    )


@dataclass(frozen=True)
class LLCAlongTraining:
    """Estimates along training: every point, the transition comparisons, and per family the mean of its
    plateau estimates that are trustworthy and non-negative (a flagged or negative estimate is no learning
    coefficient; a family without such an estimate is absent)."""

    points: tuple[LLCPoint, ...]
    transitions: tuple[dict[str, Any], ...]
    lambda_by_family: dict[str, float]
    llc_config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "llc_config": self.llc_config,
            "points": [p.to_dict() for p in self.points],
            "transitions": list(self.transitions),
            "lambda_by_family": self.lambda_by_family,
            "num_transitions": len(self.transitions),
            "num_trusted_transitions": sum(c["trusted"] for c in self.transitions),
            "num_increase": sum(c["increase"] and c["trusted"] for c in self.transitions),
            "num_significant_increase": sum(c["significant"] and c["trusted"] for c in self.transitions),
            "num_not_trustworthy": sum(not p.diagnostics.get("ok", True) for p in self.points),
        }
