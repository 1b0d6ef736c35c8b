r"""Reusing a calibration: the adapted step size and metric of one estimate start the chains of another
(:class:`~slt_tms.estimators.result.Calibration`; a series of checkpoints, or ``calibration=`` of
``estimate_llc``).

A run from a reused calibration warms up for :func:`reuse_warmup` transitions (a fifth of the full
warmup) and falls back to the full warmup where the re-tuned step size moves by more than
:data:`REUSE_STEP_FACTOR`. A run it leaves flagged is redone with its own full warmup and the same seed
(:func:`retry_due`, :func:`retried`): the short warmup sees less of a target whose curvature varies from
place to place (on the normal crossing :math:`w_1^2 w_2^2` at :math:`n\beta = 10^4` a chain stopped
moving in 3 of 10 runs from a reused calibration, in none of 30 with their own warmup).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from slt_tms.estimators.config import LLCConfig
from slt_tms.estimators.result import Calibration, LLCResult
from slt_tms.estimators.tracks import Group, Track

__all__ = ["REUSE_STEP_FACTOR", "calibration_of", "check_reuse", "retried", "retry_due", "reuse_warmup"]


#: A reused calibration is re-checked: a re-tuned step size beyond this factor of it refreshes the warmup.
REUSE_STEP_FACTOR = 3.0


def reuse_warmup(cfg: LLCConfig) -> int:
    """Warmup transitions of a run that starts from a reused calibration (see :class:`Calibration`)."""
    return max(cfg.num_burnin // 5, 20) if cfg.num_burnin > 0 else 0


def check_reuse(groups: list[Group], cfg: LLCConfig, kernel: Any, d: int) -> bool:
    """Whether the run starts from the groups' calibrations (all given, checked against this run)."""
    cals = [g.calibration for g in groups]
    if all(c is None for c in cals) or cfg.step_size is not None:
        return False
    if any(c is None for c in cals):
        raise ValueError("either every estimate of a batched run reuses a calibration or none does")
    for c in cals:
        assert c is not None
        if c.sampler != kernel.name:
            raise ValueError(
                f"the calibration was adapted for sampler {c.sampler!r} but this run uses {kernel.name!r}; "
                f"pass sampler={c.sampler!r} or drop calibration="
            )
        if c.metric is not None and np.shape(c.metric) != (d,):
            raise ValueError(
                f"the calibration's metric has shape {np.shape(c.metric)} but the model has {d} sampled "
                "parameters; a calibration is only reusable on the same architecture and parameter selection"
            )
        if not (math.isfinite(c.step_size) and c.step_size > 0):
            raise ValueError(f"the calibration's step size must be positive and finite, got {c.step_size}")
    return True


def calibration_of(tr: Track, kernel: Any, g: Group, converged: bool) -> Calibration | None:
    """The adapted settings of a finished group, pooled over its chains (exact kernels only)."""
    if not kernel.exact or tr.final_eps is None:
        return None
    metric = None if tr.final_metric is None else tr.final_metric.double().mean(0).cpu().numpy()
    return Calibration(kernel.name, float(tr.final_eps.double().median()), metric, dict(g.label), converged)


def retry_due(r: LLCResult, cfg: LLCConfig, source_converged: bool) -> bool:
    """Whether a run from a reused (not refreshed) calibration is redone with its own warmup: a chain
    stopped moving or diverged, or the run did not converge although it could run on (no fixed
    ``num_draws``) and the run the calibration came from did converge (where it did not, the model is
    hard to sample anyway, and a second run would double the cost for nothing). Flags that describe w*
    itself (escapes, a negative estimate) are not reasons."""
    used = r.config.get("calibration_used")
    if not used or used["refreshed"]:
        return False
    chains = bool(np.any(r.diverged)) or any("stopped moving" in f for f in r.flags)
    return chains or (not r.converged and cfg.num_draws is None and source_converged)


def retried(again: LLCResult, first: LLCResult) -> LLCResult:
    """The result of an estimate run again with its own warmup: the second run's numbers, the first
    run's summary in ``config["calibration_used"]["retried"]`` and its cost added to the result's."""
    used = dict(first.config["calibration_used"])
    used["retried"] = {
        "llc": first.llc, "se": first.se, "rhat": first.rhat, "ess": first.ess, "flags": list(first.flags),
        "num_draws": first.num_draws, "num_grads": first.num_grads, "warmup": used["warmup"],
    }
    used["warmup"] = int(again.config["num_burnin"])
    return dataclasses.replace(
        again,
        config={**again.config, "calibration_used": used},
        num_grads=again.num_grads + first.num_grads,
        seconds=again.seconds + first.seconds,
        cpu_seconds=again.cpu_seconds + first.cpu_seconds,
    )
