r"""What the LLC engine keeps per estimate ("group") while its chains run: the group's definition, its
trace so far and its diagnostics, updated block by block."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from slt_tms.estimators.config import EXACT_LOCALIZATION_RATIO, LLCConfig
from slt_tms.estimators.result import Calibration
from slt_tms.estimators.sgld_bias import block_means
from slt_tms.samplers import diagnostics as diag

#: Consecutive draws of a chain with an unchanged loss from which it counts as stuck (every proposal
#: rejected): a chain that mixes at an acceptance of 0.3 rejects 50 in a row with probability 2e-8.
STUCK_BLOCK = 50

#: A chain that stopped moving after it had moved (every proposal rejected for :data:`STUCK_BLOCK` draws or
#: more at the end of a block) goes on at half its step size, at most this many times; then, or if it never
#: moved, a whole block without a move excludes it.
MAX_HALVINGS = 3

#: A rejected Metropolis proposal whose path reached below :math:`L(w^*)` (:math:`n\beta(L - L^*)` below
#: ``-LOWER_FLOOR``, a margin for rounding) and more than ``LOWER_MARGIN`` nats below every kept draw saw a
#: region of lower loss the chains do not enter (:func:`lower_region`).
LOWER_MARGIN = 0.5
LOWER_FLOOR = 0.01

__all__ = [
    "LOWER_FLOOR",
    "LOWER_MARGIN",
    "MAX_HALVINGS",
    "STUCK_BLOCK",
    "Group",
    "Track",
    "absorb",
    "draws_needed",
    "excluded",
    "llc_draws",
    "localization_hint",
    "lower_region",
    "next_block",
    "projected_draws",
    "projection",
    "warn_if_out_of_budget",
]


@dataclass
class Group:
    """One estimate of a batched run: its anchor, anchor loss, inverse temperature, seed (and start)."""

    center: Tensor
    anchor_loss: float
    nbeta: float
    seed: int
    init: Tensor | None = None
    label: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None


@dataclass
class Track:
    """What the engine collects for a group while its chains run."""

    chains: list[int]
    losses: list[np.ndarray] = field(default_factory=list)
    accepts: list[np.ndarray] = field(default_factory=list)
    # rejected Metropolis paths that went below L(w*): (chain, lowest nbeta (L - L*) of the path) per block,
    # and the transitions looked at per chain (lower_region)
    rejected_below: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    rejected_seen: int = 0
    bad: np.ndarray | None = None
    stuck: np.ndarray | None = None  # chains that did not move through a whole block (excluded, in `bad`)
    moved: np.ndarray | None = None  # chains whose loss has changed at least once
    halved: np.ndarray | None = None  # per chain, how often its step size was halved after it got stuck
    draws: int = 0
    grads: int = 0
    rhat: float = math.nan
    ess: float = math.nan
    final_state: Any = None
    final_eps: Tensor | None = None
    final_metric: Tensor | None = None
    calibration_used: dict[str, Any] | None = None
    step_search: list[dict[str, Any]] | None = None
    search_start: dict[str, float] | None = None
    #: wall seconds of the draw blocks and the draws per chain they produced (the rate of a projection)
    block_seconds: float = 0.0
    block_draws: int = 0
    projection_warned: bool = False  # the early warning that the budget will not reach the targets
    #: |grad L_n(w*)| and, per block, run_chains's "stein" projections on it (every 10th draw of the
    #: sampler's blocks; the draws the bias check pools carry none): gradient_term
    grad_norm: float = math.nan
    dir_u: list[np.ndarray] = field(default_factory=list)
    dir_grad: list[np.ndarray] = field(default_factory=list)

    def met(self, cfg: LLCConfig) -> bool:
        """Whether the trace so far meets the R-hat and ESS targets."""
        return bool(self.rhat <= cfg.target_rhat and self.ess >= cfg.target_ess)


def absorb(tr: Track, g: Group, block: Any, rows: slice, exact: bool, threshold: float) -> np.ndarray:
    """Append a block of draws to a group's trace (``block``: a :func:`run_chains` result, whose
    ``rows`` are the group's chains, or the losses ``(C, steps)`` themselves, already in the trace's
    units) and update its divergence flags, R-hat and ESS (on 20-draw block means unless ``exact``).

    Returns the factor ``(C,)`` by which each chain's step size is to change for the next block: 0.5 for a
    chain that had moved but rejected every proposal through the last :data:`STUCK_BLOCK` draws or more
    (at most :data:`MAX_HALVINGS` times per chain), else 1. A Metropolis kernel stays exact at any step,
    so such a chain is kept: on the TMS hexagon in 20 features (nbeta 8686) a chain whose metric was
    adapted in the flat region of the dead columns enters the narrow well at a dead bias just above 0
    (curvature 2 nbeta, depth nbeta / 4c^2), where its leapfrog step is unstable (step x sqrt(top
    eigenvalue of the metric-scaled Hessian) = 3.1 > 2). Excluding it dropped the well's mass from the
    estimate (11.0-11.1 passing as converged; NUTS gives 10.5); kept, its disagreement with the other
    chains shows in R-hat."""
    if isinstance(block, np.ndarray):
        loss, accept = block, np.full_like(block, np.nan)
    else:
        loss, accept = block.records["loss"][rows], block.records["accept_prob"][rows]
        if not exact:  # control variate: L_B(w) - L_B(w*) + L_n(w*), unbiased for L_n(w)
            loss = loss - block.records["center_loss"][rows] + g.anchor_loss
        if "dir_u" in block.records:
            tr.dir_u.append(block.records["dir_u"][rows])
            tr.dir_grad.append(block.records["dir_grad"][rows])
        if "rejected_min_loss" in block.records:  # only what lower_region can count: paths below L(w*)
            low = g.nbeta * (block.records["rejected_min_loss"][rows] - g.anchor_loss)
            chain, step = np.nonzero(low < -LOWER_FLOOR)
            tr.rejected_below.append((chain, low[chain, step]))
            tr.rejected_seen += low.shape[1]
    tr.losses.append(loss)
    tr.accepts.append(accept)
    tr.draws += loss.shape[1]
    C, steps = loss.shape
    with np.errstate(over="ignore", invalid="ignore"):
        block_bad = diag.divergence_flags(g.nbeta * (loss - g.anchor_loss), threshold)
    # a chain whose loss did not change through STUCK_BLOCK draws or more rejected every proposal there (a
    # Metropolis kernel at too large a step, at least where the chain is): it samples nothing, and its
    # constant trace would pass for a long, perfectly mixed one
    with np.errstate(invalid="ignore"):  # inf - inf: a diverged chain (flagged above)
        changed = np.diff(loss, axis=1) != 0
    moved = changed.any(axis=1)
    last = np.where(moved, steps - 2 - np.argmax(changed[:, ::-1], axis=1), -1)
    trailing = steps - 1 - last  # draws at the end of the block equal to the last one
    sticks = ~block_bad & np.isfinite(loss).all(axis=1) & (trailing >= STUCK_BLOCK)
    tr.moved = moved if tr.moved is None else (tr.moved | moved)
    tr.halved = np.zeros(C, dtype=int) if tr.halved is None else tr.halved
    halve = sticks & tr.moved & (tr.halved < MAX_HALVINGS)
    tr.halved = tr.halved + halve
    block_stuck = sticks & (trailing >= steps) & ~halve  # never moved, or no halving left: excluded
    tr.stuck = block_stuck if tr.stuck is None else (tr.stuck | block_stuck)
    block_bad = block_bad | block_stuck
    tr.bad = block_bad if tr.bad is None else (tr.bad | block_bad)
    if not tr.bad.all():
        x = llc_draws(tr, g)[~tr.bad]
        xd = x if exact else block_means(x)
        tr.rhat, tr.ess = diag.rhat(xd), diag.ess(xd)
    return np.where(halve, 0.5, 1.0)


def excluded(
    tr: Track, threshold: float, step_size: float, adapted: bool = False, anchor_loss: float = math.nan
) -> tuple[str | None, str | None]:
    """What a result says of the chains it excluded: the error when every chain is out (none sampled),
    else the flag naming the diverged and the stuck ones (None where there are none). ``adapted``: the
    step size came from the warmup's adaptation (a smaller one is then no remedy the user can give)."""
    bad = tr.bad if tr.bad is not None else np.zeros(0, dtype=bool)
    stuck = tr.stuck if tr.stuck is not None else np.zeros_like(bad)
    C = bad.shape[0]
    fix = f"at step size {step_size:.3g}; use a smaller step_size (or step_size=None to adapt it)"
    if C and bad.all() and stuck.all():
        if adapted:
            at = f" (L(w*) = {anchor_loss:.3g})" if math.isfinite(anchor_loss) else ""
            fix = (
                f"at the step size the warmup adapted ({step_size:.3g}): the loss changes too abruptly "
                f"around w*{at} for any step, e.g. a classifier so confident that its loss at w* rounds to "
                "0 and jumps at the smallest move; check the model at w* (its logits), or compute in "
                "float64 (dtype=torch.float64)"
            )
        return f"none of the {C} chains moved: every proposal of a block of draws was rejected {fix}", None
    if C and bad.all():
        why = f"non-finite loss or nbeta*(L - L*) > {threshold:g}" + (", or every proposal rejected"
                                                                      if stuck.any() else "")
        return (f"all {C} chains diverged ({why}) {fix}, a larger localization or divergence_threshold, or "
                "check the potential near w*"), None
    parts = []
    if (bad & ~stuck).any():
        parts.append(f"{int((bad & ~stuck).sum())} of {C} chains diverged (excluded: "
                     f"{np.flatnonzero(bad & ~stuck).tolist()})")
    if stuck.any():
        parts.append(f"{int(stuck.sum())} of {C} chains stopped moving, every proposal of a block rejected "
                     f"(excluded: {np.flatnonzero(stuck).tolist()}; a smaller step_size)")
    halved = tr.halved if tr.halved is not None else np.zeros(C, dtype=int)
    kept = (halved > 0) & ~bad
    if kept.any():
        parts.append(f"{int(kept.sum())} of {C} chains stopped moving (every proposal rejected for "
                     f"{STUCK_BLOCK} draws or more) and went on at a smaller step size (kept: chains "
                     f"{np.flatnonzero(kept).tolist()}, step halved {halved[kept].tolist()} times; the "
                     "target has regions of very different curvature, which the chains may not have mixed "
                     "between)")
    return None, ("; ".join(parts) or None)


def draws_needed(tr: Track, cfg: LLCConfig) -> int:
    """More draws per chain a group needs to reach the target ESS, if ESS grows linearly (+10%); a full
    block when the ESS is unknown or R-hat is the problem."""
    if not (math.isfinite(tr.ess) and tr.ess > 0) or tr.ess >= cfg.target_ess:
        return cfg.draws_per_block
    return math.ceil(1.1 * tr.draws * (cfg.target_ess / tr.ess - 1.0))


def llc_draws(tr: Track, g: Group) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return g.nbeta * (np.concatenate(tr.losses, axis=1) - g.anchor_loss)


def next_block(need: int, cfg: LLCConfig) -> int:
    """Draws per chain of the next block: what is still needed, at least ``min(100, draws_per_block)`` and
    at most ``draws_per_block``."""
    return max(min(need, cfg.draws_per_block), min(100, cfg.draws_per_block))


def projected_draws(ess: float, draws: int, target_ess: float) -> int | None:
    """Draws per chain in all that the ESS target needs at the run's rate: the ESS grows about linearly
    with the draws once the chains mix, so about ``draws * target_ess / ess``. None when the ESS is not
    the problem or is not measured."""
    if not (math.isfinite(ess) and 0 < ess < target_ess) or draws <= 0:
        return None
    return math.ceil(draws * target_ess / ess)


def projection(ess: float, draws: int, target_ess: float) -> str:
    """The not-converged flag's price of the ESS target: the draws per chain it needs in all (no time:
    a result's text depends on its seed only). Empty when the ESS is not the problem."""
    total = projected_draws(ess, draws, target_ess)
    if total is None:
        return ""
    return f"; at this run's rate the ESS target needs about {total} draws per chain in all"


def localization_hint(cfg: LLCConfig, nbeta: float, minibatch: bool, needed: int | None) -> str:
    r"""The slow-mixing run's second remedy, besides more draws: a stronger localization, named where the
    ESS target projected at the run's rate (``needed`` draws per chain, :func:`projected_draws`) lies
    beyond the default budget (``LLCConfig().max_draws``), :math:`\gamma < n\beta/4`
    (:data:`~slt_tms.estimators.config.EXACT_LOCALIZATION_RATIO`) and the potential is exact (full batch
    or closed form); empty otherwise. Under a weak pull the chains of a network wander along its flat
    directions, at the scale :math:`1/\sqrt\gamma`; a stronger pull shrinks that region, and from
    :math:`\gamma \ge n\beta/4` HMC integrates the pull exactly (measured on a 300-parameter CNN,
    cross-entropy, :math:`n = 2000`, :math:`n\beta = 263`: ESS 10 in 4 x 1500 draws at :math:`\gamma = 1`,
    a projected 61 700 draws per chain; 791 in 4 x 1133 at :math:`\gamma = 100`). It changes the
    estimand, and the text says so.

    Examples
    --------
    >>> localization_hint(LLCConfig(), 263.0, False, 61_700)[:46]
    ', or raise localization (--localization): a st'
    >>> localization_hint(LLCConfig(), 263.0, False, 5_000)  # more draws are enough
    ''
    >>> localization_hint(LLCConfig(localization=100.0), 263.0, False, 61_700)  # already >= nbeta / 4
    ''
    """
    cut = EXACT_LOCALIZATION_RATIO * nbeta
    if minibatch or cfg.localization >= cut or needed is None or needed <= LLCConfig.max_draws:
        return ""
    return (
        ", or raise localization (--localization): a stronger pull towards w* mixes faster but describes a "
        f"smaller neighbourhood of it, a different number (here gamma = {cfg.localization:g}; from "
        f"nbeta/4 = {cut:.3g} on, HMC integrates the pull exactly)"
    )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def warn_if_out_of_budget(tr: Track, cfg: LLCConfig, which: str, nbeta: float, minibatch: bool) -> None:
    """Warn once, while an adaptive run (``num_draws`` None) goes on, when the ESS target projected at the
    run's rate lies beyond its budget ``max_draws`` (draws per chain), or, with the ESS on course for the
    budget, when R-hat is still above its target at half the budget or later. The warning gives the time
    left to the budget at the seconds per draw of the run's draw blocks: the user can stop early and
    change the settings instead of waiting for a flagged result (:func:`localization_hint` of ``nbeta`` and
    ``minibatch`` names one)."""
    budget = cfg.max_draws
    total = projected_draws(tr.ess, tr.draws, cfg.target_ess)
    if total is not None and total > budget:
        state = (f" the ESS is {tr.ess:.0f} (R-hat {tr.rhat:.3f}); at this rate the ESS target "
                 f"{cfg.target_ess:.0f} needs about {total} draws per chain, more than the budget "
                 f"max_draws={budget}.")
        unless, needed = "the mixing improves", total
    elif 2 * tr.draws >= budget and math.isfinite(tr.rhat) and tr.rhat > cfg.target_rhat:
        # the ESS is on course for the budget: R-hat has no rate to project, so warn once the run is past
        # half its budget with R-hat still above its target (chains that disagree and stay apart)
        state = (f", half or more of the budget max_draws={budget}, R-hat is still {tr.rhat:.3f} (target <= "
                 f"{cfg.target_rhat}; ESS {tr.ess:.0f}): the chains disagree.")
        unless, needed = "they mix", 2 * budget
    else:
        return
    tr.projection_warned = True
    more = _duration(tr.block_seconds / max(tr.block_draws, 1) * (budget - tr.draws))
    warnings.warn(
        f"LLC run{which}: after {tr.draws} draws per chain{state} The run goes on to the budget (about "
        f"{more} more) and ends flagged not converged unless {unless}; stop it and raise max_draws"
        + (localization_hint(cfg, nbeta, minibatch, needed) or ", or change the settings"),
        RuntimeWarning,
        stacklevel=5,
    )


def lower_region(tr: Track, g: Group, good: np.ndarray, kept_loss: np.ndarray) -> dict[str, Any] | None:
    r"""Rejected proposals that reached a lower loss than every kept draw: a region the chains cannot enter.

    A Metropolis kernel rejects a proposal whose energy error is large; where the rejected path (HMC: any of
    its leapfrog points) went below :math:`L(w^*)` itself (by more than :data:`LOWER_FLOOR` nats of
    :math:`n\beta(L - L(w^*))`) and more than :data:`LOWER_MARGIN` below the lowest kept draw of the good
    chains, the chains stand next to a region of lower loss, and so of higher posterior density, that their
    step cannot integrate (a narrow, deep well: on the TMS hexagon in 20 features at :math:`2n\beta`, 3 of
    14000 proposals reached down to -1.0 nats while every draw stayed above +2.6; at the 5-gon in 6 features,
    beside the 5+ well, -20 against +0.7). R-hat cannot see such a region, as no chain is in it: the estimate
    describes the region the chains stayed in, not the whole localized posterior. Below :math:`L(w^*)` as well
    as below the draws: the intermediate points of a rejected HMC path are more dispersed than the draws (on a
    94k-parameter MLP one reached 223.9 where the lowest of its draws was 230.1), which the first condition
    sets aside wherever the draws themselves stay above :math:`L(w^*)`.

    ``kept_loss``: the group's kept losses ``(C, draws)``. Returns None when there is none (or no
    Metropolis kernel ran), else the count, the number of transitions looked at, the deepest value reached
    and the lowest kept draw (in nats).
    """
    if not tr.rejected_seen or not good.any():
        return None
    lowest = float(np.nanmin(g.nbeta * (kept_loss[good] - g.anchor_loss)))
    seen = np.concatenate([low[good[chain]] for chain, low in tr.rejected_below])  # all below -LOWER_FLOOR
    hits = seen < lowest - LOWER_MARGIN
    if not hits.any():
        return None
    return {"rejected_below": int(hits.sum()), "transitions": int(good.sum()) * tr.rejected_seen,
            "deepest": float(seen[hits].min()), "lowest_kept": lowest, "margin": LOWER_MARGIN}
