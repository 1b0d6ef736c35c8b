r"""The LLC engine: several estimates ("groups") sampled as one batch of chains.

A group is one estimate: an anchor :math:`w^*_g` (the center of its localization), its loss
:math:`L(w^*_g)`, an inverse temperature :math:`n\beta_g` and a root seed. All groups share the potential
(the same model and data), so their ``num_chains`` chains each are stacked on one chain axis and every
gradient evaluation serves all of them (a ladder of temperatures, or checkpoints of one training run,
cost little more than one estimate for small models). Every per-chain operation (random streams, step-size
search, dual averaging, metric, Metropolis tests) is per chain, and a group's convergence and stopping
decisions use its own draws only, so a group's numbers equal those of a standalone run with the same seed
(up to floating-point summation order in batched arithmetic). Converged groups leave the batch.

The algorithm of one group is described in :mod:`slt_tms.estimators.llc`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._progress import progress_bar
from slt_tms._rng import spawn_seeds
from slt_tms.estimators.config import KERNEL_DEFAULT_ACCEPT, LLCConfig, exact_localization
from slt_tms.estimators.gradient_term import anchor_gradient, gradient_term
from slt_tms.estimators.result import (
    LLCResult,
    gradient_note_due,
    gradient_term_note,
    lower_region_note,
)
from slt_tms.estimators.reuse import (
    REUSE_STEP_FACTOR,
    calibration_of,
    check_reuse,
    retried,
    retry_due,
    reuse_warmup,
)
from slt_tms.estimators.sgld_bias import (
    CURVATURE_ITERS,
    bias_flag,
    block_means,
    coupled_bias_check,
    extrapolate,
    top_curvature,
    tune_step,
)
from slt_tms.estimators.steps import curvature_step, initial_step_size, rein_in
from slt_tms.estimators.tracks import (
    Group,
    Track,
    absorb,
    draws_needed,
    excluded,
    llc_draws,
    localization_hint,
    lower_region,
    next_block,
    projected_draws,
    projection,
    warn_if_out_of_budget,
)
from slt_tms.samplers import (
    HMC,
    MALA,
    SGLD,
    BatchSupply,
    CenterLoss,
    ChainStreams,
    RMSProp,
    Tempered,
    Warmup,
    run_chains,
    select_state,
)
from slt_tms.samplers import diagnostics as diag
from slt_tms.samplers.hmc import leapfrog_steps

__all__ = ["Group", "announce", "rerun_flagged", "run_groups"]


def _kernel(cfg: LLCConfig, batches: BatchSupply, exact_localization: bool = False) -> Any:
    name = cfg.sampler
    if name == "auto":
        name = "hmc" if batches.exact else "sgld"
    if name in ("mala", "hmc") and not batches.exact:
        raise ValueError(
            f"sampler={name!r} needs the full loss at every step, but the data are "
            f"{'streamed from a DataLoader' if batches.kind == 'stream' else 'minibatched'}; "
            "use sampler='sgld' (or full-batch tensors)"
        )
    if name == "mala":
        return MALA()
    if name == "hmc":
        return HMC(num_leapfrog=cfg.num_leapfrog, exact_localization=exact_localization)
    return SGLD()


def _fit_trajectory(kernel: Any, eps: Tensor, cfg: LLCConfig) -> Any:
    """HMC with the exact localization flow: leapfrog steps for the adapted step size (``leapfrog_steps``)."""
    if kernel.name != "hmc" or not kernel.exact_localization:
        return kernel
    return dataclasses.replace(kernel, num_leapfrog=leapfrog_steps(float(eps.median()), cfg.num_leapfrog))


def _uses_metric(cfg: LLCConfig, kernel: Any) -> bool:
    """Whether the warmup adapts a diagonal metric: as configured, else for HMC only (kernel default)."""
    return bool(cfg.adapt_metric if cfg.adapt_metric is not None else kernel.name == "hmc") and kernel.exact


def run_groups(
    pot: Any, groups: list[Group], cfg: LLCConfig, *, n: int, progress: bool | None = None, warn: bool = True
) -> list[LLCResult]:
    """Sample every group's chains in one batch until each group converges or spends its budget (``warn``:
    each result's flags at the end; a projected overrun of the budget is announced live in any case)."""
    t0, c0 = time.perf_counter(), time.process_time()
    d = int(pot.w_star.numel())
    C = cfg.num_chains
    G = len(groups)
    dev, dt = pot.w_star.device, pot.w_star.dtype
    batches = BatchSupply(pot.data, cfg.batch_size)
    kernel = _kernel(cfg, batches, exact_localization(cfg, [g.nbeta for g in groups]))
    adapt_metric = _uses_metric(cfg, kernel)
    seeds = [s for g in groups for s in spawn_seeds(g.seed, C)]
    streams = ChainStreams(
        seeds,
        d,
        dt,
        dev,
        num_rows=None if pot.data is None else pot.data.num_rows,
        batch_size=batches.batch_size,
    )
    centers = torch.stack([g.center.to(device=dev, dtype=dt) for g in groups]).repeat_interleave(C, 0)
    nbetas = torch.tensor([g.nbeta for g in groups], dtype=dt, device=dev).repeat_interleave(C)
    target = Tempered(pot, nbetas, float(cfg.localization), centers)
    w0 = torch.cat(
        [
            g.center.expand(C, d).to(device=dev, dtype=dt)
            if g.init is None
            else g.init.detach().to(device=dev, dtype=dt)
            for g in groups
        ]
    )
    threshold = cfg.divergence_threshold if cfg.divergence_threshold is not None else max(1e4, 100.0 * d)
    budget = cfg.num_draws if cfg.num_draws is not None else cfg.max_draws
    accept_target = cfg.target_accept or KERNEL_DEFAULT_ACCEPT[kernel.name]
    label = f"LLC ({kernel.name}" + (f", {G} estimates)" if G > 1 else ")")
    bar = progress_bar(total=cfg.num_burnin + budget, desc=label, enabled=progress)
    tracks = [Track(chains=list(range(i * C, (i + 1) * C))) for i in range(G)]
    anchor_grads = [anchor_gradient(pot, g.center) for g in groups]  # the first-order term's directions
    for tr, v in zip(tracks, anchor_grads, strict=True):
        tr.grad_norm = math.nan if v is None else float(v.norm())
    biases: list[dict[str, Any] | None] = []  # the SGLD bias check of each group (None: not run)
    # minibatch traces: L_B(w*) per step for the control variate, looked up from per-row losses at w*
    # where the loss allows it (no forward pass per step)
    all_centers = None if batches.exact else CenterLoss(target, batches, G * C, budget)
    centers_now = all_centers
    try:
        if cfg.step_size is not None:
            eps = torch.full((G * C,), float(cfg.step_size), dtype=dt, device=dev)
        else:
            eps = initial_step_size(target, w0, batches, streams)
        state = kernel.init(w0, target, batches(None) if batches.exact else None)
        metric: Tensor | None = None
        grads = 0
        full_warmup = cfg.num_burnin > 0
        reused = check_reuse(groups, cfg, kernel, d)  # earlier calibrations (kept unless refreshed)
        if reused:
            cals = [g.calibration for g in groups if g.calibration is not None]
            eps = torch.cat([torch.full((C,), c.step_size, dtype=dt, device=dev) for c in cals])
            if adapt_metric and all(c.metric is not None for c in cals):
                metric = torch.cat([torch.as_tensor(c.metric, dtype=dt).to(dev).expand(C, d) for c in cals])
            short = reuse_warmup(cfg)
            kernel = _fit_trajectory(kernel, eps, cfg)
            if short > 0:
                res = run_chains(
                    kernel,
                    target,
                    state,
                    num_steps=short,
                    streams=streams,
                    batches=batches,
                    step_size=eps,
                    metric=metric,
                    warmup=Warmup(short, accept_target),
                    record=(),
                    bar=bar,
                )
                state, eps, grads = res.state, res.step_size, res.num_grads
            ratios = [float(eps[i * C : (i + 1) * C].median()) / c.step_size for i, c in enumerate(cals)]
            full_warmup = any(not 1 / REUSE_STEP_FACTOR <= r <= REUSE_STEP_FACTOR for r in ratios)
            for tr, c, r in zip(tracks, cals, ratios, strict=True):
                tr.calibration_used = {
                    "source": dict(c.source),
                    "step_size_ratio": r,
                    "refreshed": full_warmup,
                    "warmup": short + (cfg.num_burnin if full_warmup else 0),
                }
            if full_warmup:
                bar.total += cfg.num_burnin
                kernel = _kernel(cfg, batches, getattr(kernel, "exact_localization", False))
            else:
                bar.total -= cfg.num_burnin - short
        lm = kernel.name == "sgld" and not batches.exact and cfg.bias_check
        # a minibatch run whose step the search sets: the warmup runs the Leimkuhler-Matthews kernel at
        # 1/a_max, where the search starts, without adapting the step (an Euler warmup adapted it to the
        # acceptance, which falls with the dimension: 2.3e-6 on a 94k-parameter MLP, 1/a_max = 2e-3)
        plain = lm and full_warmup and cfg.step_size is None and not cfg.preconditioner and not reused
        if plain:
            kernel = dataclasses.replace(kernel, diagnose=False, integrator="lm")
            eps = curvature_step(top_curvature(target, w0, batches, streams), eps, G, C, floor=False)
            grads += 2 * CURVATURE_ITERS
        if full_warmup:
            warm = Warmup(
                cfg.num_burnin,
                None if cfg.step_size is not None or plain else accept_target,
                adapt_metric=adapt_metric and kernel.exact,
                rmsprop=RMSProp() if kernel.name == "sgld" and cfg.preconditioner else None,
            )
            res = run_chains(
                kernel,
                target,
                state,
                num_steps=cfg.num_burnin,
                streams=streams,
                batches=batches,
                step_size=eps,
                metric=metric,
                warmup=warm,
                record=(),
                bar=bar,
            )
            state, eps, metric, grads = res.state, res.step_size, res.metric, grads + res.num_grads
        if lm:
            # (after a warmup that adapted the step to the Euler kernel's MALA diagnostic) the
            # Leimkuhler-Matthews integrator, whose bias is of second order in the step where Euler's is
            # of first (sgld.py), for the search, the draws and the coupled check; the check measures the
            # step's error, so the diagnostic (a forward pass per step on minibatches) is dropped
            kernel = dataclasses.replace(kernel, diagnose=False, integrator="lm")
        if kernel.name == "sgld" and cfg.step_size is None and cfg.bias_check:  # the step set by its bias
            anchors = torch.tensor([g.anchor_loss for g in groups], dtype=torch.float64, device=dev)
            bar.set_description(label + ": step search", refresh=False)
            if not batches.exact and metric is None and not (reused and not full_warmup):
                # per estimate (the median of its chains) 1 / a_max, a quarter of the stable step: after a
                # warmup at 1/a_max measured at w* (plain), the search starts at it measured now that the
                # chains have spread; after a warmup that adapted the step to the Euler acceptance (which
                # falls with the dimension: 2e-6 on a 94k-parameter MLP), no lower than it
                a_max = top_curvature(target, state.w, batches, streams)
                for i in range(G):
                    rows = slice(i * C, (i + 1) * C)
                    tracks[i].search_start = {"top_curvature": float(a_max[rows].median()),
                                              "warmup_step": float(eps[rows].median())}
                eps = curvature_step(a_max, eps, G, C, floor=not plain)
                grads += 2 * CURVATURE_ITERS
            w, eps, spent, searched = tune_step(
                kernel, target, state.w, eps, metric, batches, streams,
                [slice(i * C, (i + 1) * C) for i in range(G)], anchors.repeat_interleave(C), bar=bar,
                center_loss=all_centers,
            )
            bar.set_description(label, refresh=False)
            state, grads = kernel.init(w, target, batches(None) if batches.exact else None), grads + spent
            for tr, hist in zip(tracks, searched, strict=True):
                tr.step_search = hist
        if kernel.exact and cfg.step_size is None:
            eps = rein_in(eps, G, C)
            kernel = _fit_trajectory(kernel, eps, cfg)
        for tr in tracks:
            tr.grads = grads
        block = cfg.num_draws if cfg.num_draws is not None else cfg.draws_per_block
        active = list(range(G))
        while active:
            steps = min(block, budget - tracks[active[0]].draws)
            block = cfg.num_draws if cfg.num_draws is not None else cfg.draws_per_block
            t_block = time.perf_counter()
            res = _draws(kernel, target, state, steps, streams, batches, eps, metric, bar, centers_now,
                         _directions(anchor_grads, active, C))
            t_block = time.perf_counter() - t_block
            state = res.state
            retire: list[int] = []
            for pos, gi in enumerate(active):
                tr = tracks[gi]
                rows = slice(pos * C, (pos + 1) * C)
                factor = absorb(tr, groups[gi], res, rows, batches.exact, threshold)  # 0.5: stuck, had moved
                eps[rows] *= torch.from_numpy(factor).to(eps)
                tr.grads += res.num_grads
                tr.block_seconds, tr.block_draws = tr.block_seconds + t_block, tr.block_draws + steps
                converged = tr.met(cfg)
                if tr.bad.all() or tr.draws >= budget or (cfg.num_draws is None and converged):
                    idx = torch.arange(pos * C, (pos + 1) * C, device=dev)
                    tr.final_state = select_state(state, idx)
                    tr.final_eps = eps[idx]
                    tr.final_metric = None if metric is None else metric[idx]
                    retire.append(pos)
                elif cfg.num_draws is None and not tr.projection_warned:  # (whatever `warn`: it is live)
                    which = f" (nbeta {groups[gi].nbeta:g})" if G > 1 else ""
                    warn_if_out_of_budget(tr, cfg, which, groups[gi].nbeta, batches.kind == "minibatch")
            shown = [tracks[gi] for gi in active]  # the bar shows where convergence stands after each block
            rh = max((t.rhat for t in shown if math.isfinite(t.rhat)), default=math.nan)
            es = min((t.ess for t in shown if math.isfinite(t.ess)), default=math.nan)
            bar.set_postfix({"R-hat": f"{rh:.3f}", "ESS": f"{es:.0f}/{cfg.target_ess:g}"})
            if cfg.num_draws is None:  # the next block: what the slowest group still needs, +10%, capped
                need = [draws_needed(tracks[gi], cfg) for pos, gi in enumerate(active) if pos not in retire]
                if need:
                    block = next_block(max(need), cfg)
            if retire:
                keep = [pos for pos in range(len(active)) if pos not in retire]
                active = [active[pos] for pos in keep]
                if active:
                    idx = torch.tensor([pos * C + k for pos in keep for k in range(C)], device=dev)
                    state = select_state(state, idx)
                    target = target.select(idx)
                    centers_now = None if centers_now is None else centers_now.select(idx)
                    streams = streams.select(idx.tolist())
                    eps = eps[idx]
                    metric = None if metric is None else metric[idx]
        bar.total = bar.n
        for gi, (g, tr) in enumerate(zip(groups, tracks, strict=True)):
            bias = None
            if kernel.name == "sgld" and cfg.bias_check and tr.bad is not None and not tr.bad.all():
                bar.set_description(label + ": bias check", refresh=False)
                own = None if all_centers is None else all_centers.select(torch.arange(gi * C, (gi + 1) * C,
                                                                                          device=dev))
                own_target = Tempered(pot, g.nbeta, float(cfg.localization), g.center.to(dev, dt))
                bias, continued, coarse = coupled_bias_check(
                    kernel,
                    own_target,
                    tr.final_state,
                    tr.final_eps,
                    tr.final_metric,
                    batches,
                    cfg,
                    g.seed,
                    tr.draws,
                    g.anchor_loss,
                    g.nbeta,
                    streams.num_rows,
                    ess=tr.ess,
                    bar=bar,
                    center_loss=own,
                )
                tr.grads += bias["gradients"]  # (minibatches without a per-row table: a forward pass more)
                # the check's coarse chains continue the chains at their step: their draws join the trace;
                # where the whole trace then falls short of the targets, the chains go on within the budget
                absorb(tr, g, continued, slice(None), batches.exact, threshold)
                sampler_end = tr.draws
                _continue(tr, g, own_target, kernel, coarse, batches, streams.num_rows, cfg, budget,
                          threshold, bar, label, own, _directions(anchor_grads, [gi], C))
                bias["draws_after_check"] = tr.draws - sampler_end
            biases.append(bias)
    finally:
        bar.close()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0  # the bias checks included
    results = []
    for gi, (g, tr, bias) in enumerate(zip(groups, tracks, biases, strict=True)):
        own_seeds = seeds[gi * C : (gi + 1) * C]
        results.append(_result(pot, g, tr, cfg, kernel, batches, n, threshold, bias, own_seeds, streams.block,
                               seconds, cpu, warn))
    return results


def rerun_flagged(
    pot: Any, groups: list[Group], results: list[LLCResult], cfg: LLCConfig, *, n: int,
    progress: bool | None = None,
) -> list[LLCResult]:
    """``results`` (of ``run_groups(pot, groups, ...)``) with each estimate whose run a reused calibration
    left flagged (:func:`~slt_tms.estimators.reuse.retry_due`; the calibration's own run counts as
    converged unless its ``converged`` is False) run again, batched, with its own full warmup and the same
    seed: its result is that run, the first one kept in it (:func:`~slt_tms.estimators.reuse.retried`).
    No warnings: the caller warns."""
    redo = [i for i, (g, r) in enumerate(zip(groups, results, strict=True))
            if g.calibration is not None and retry_due(r, cfg, g.calibration.converged is not False)]
    if not redo:
        return results
    again = run_groups(pot, [dataclasses.replace(groups[i], calibration=None) for i in redo], cfg, n=n,
                       progress=progress, warn=False)
    out = list(results)
    for i, r in zip(redo, again, strict=True):
        out[i] = retried(r, out[i])
    return out


def announce(res: LLCResult, stacklevel: int = 2) -> None:
    """Warn what a result says: its flags in one warning (the number is not trustworthy), then its notes
    (``config["lower_region"]``: a lower region the rejected paths reached; ``config["gradient_term"]``: a
    first-order term that is not negligible)."""
    if res.flags:
        warnings.warn(
            f"LLC estimate {res.llc:.4g} +/- {res.se:.2g} is not trustworthy: " + "; ".join(res.flags),
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    lower, grad_term = res.config.get("lower_region"), res.config.get("gradient_term")
    notes = [lower_region_note(lower)] if lower is not None else []
    notes += [gradient_term_note(grad_term)] if gradient_note_due(grad_term) else []
    for note in notes:
        warnings.warn(f"LLC estimate {res.llc:.4g}: {note}", RuntimeWarning, stacklevel=stacklevel)


def _draws(
    kernel: Any,
    target: Tempered,
    state: Any,
    steps: int,
    streams: ChainStreams,
    batches: BatchSupply,
    eps: Tensor,
    metric: Tensor | None,
    bar: Any,
    center_loss: CenterLoss | None,
    directions: Tensor | None,
) -> Any:
    """``steps`` recorded draws of every chain (the loss, the acceptance diagnostic, on minibatches the
    loss at the anchor on the same rows, and with ``directions`` the projections of gradient_term)."""
    stein = () if directions is None else ("stein",)
    return run_chains(
        kernel,
        target,
        state,
        num_steps=steps,
        streams=streams,
        batches=batches,
        step_size=eps,
        metric=metric,
        record=("loss", "accept_prob", *stein, *(("rejected_min_loss",) if kernel.exact else ()))
        if batches.exact else ("loss", "accept_prob", *stein, "center_loss"),
        bar=bar,
        center_loss=center_loss,
        directions=directions,
    )


def _directions(grads: list[Tensor | None], which: list[int], C: int) -> Tensor | None:
    """The anchor gradients of the groups ``which``, one row per chain (None when one is missing)."""
    chosen = [v for v in (grads[gi] for gi in which) if v is not None and bool(v.isfinite().all())]
    return torch.stack(chosen).repeat_interleave(C, 0) if len(chosen) == len(which) else None


def _continue(
    tr: Track,
    g: Group,
    target: Tempered,
    kernel: Any,
    state: Any,
    batches: BatchSupply,
    num_rows: int | None,
    cfg: LLCConfig,
    budget: int,
    threshold: float,
    bar: Any,
    label: str,
    center_loss: CenterLoss | None,
    directions: Tensor | None,
) -> None:
    """More draws of one group's chains (``target``) from ``state`` (the bias check's coarse chains) at
    their step, in blocks of what the ESS target still needs, until R-hat and ESS meet their targets or the
    draws reach ``budget`` (adaptive runs only: a given ``num_draws`` is not extended). Fresh streams from
    the group's seed."""
    C = state.w.shape[0]
    converged = tr.met(cfg)
    if cfg.num_draws is not None or converged or tr.bad is None or tr.bad.all() or tr.draws >= budget:
        return
    streams = ChainStreams(
        spawn_seeds(spawn_seeds(g.seed, 3)[2], C),
        state.w.shape[1],
        state.w.dtype,
        state.w.device,
        num_rows=num_rows,
        batch_size=batches.batch_size,
    )
    bar.set_description(label + ": more draws", refresh=False)
    while not converged and tr.draws < budget and not tr.bad.all():
        steps = min(next_block(draws_needed(tr, cfg), cfg), budget - tr.draws)
        bar.total += steps
        res = _draws(kernel, target, state, steps, streams, batches, tr.final_eps, tr.final_metric, bar,
                     center_loss, directions)
        state = res.state
        absorb(tr, g, res, slice(None), batches.exact, threshold)  # (SGLD: never rejects, so never halved)
        tr.grads += res.num_grads
        converged = tr.met(cfg)


def _result(
    pot: Any,
    g: Group,
    tr: Track,
    cfg: LLCConfig,
    kernel: Any,
    batches: BatchSupply,
    n: int,
    threshold: float,
    bias: dict[str, Any] | None,
    chain_seeds: list[int],
    block: int,
    seconds: float,
    cpu: float,
    warn: bool,
) -> LLCResult:
    C = cfg.num_chains
    bad = tr.bad if tr.bad is not None else np.zeros(C, dtype=bool)
    error, excluded_flag = excluded(tr, threshold, float(tr.final_eps.mean()), adapted=cfg.step_size is None,
                                    anchor_loss=float(g.anchor_loss))
    if error is not None:
        raise ValueError(error)
    loss_kept = np.concatenate(tr.losses, axis=1)
    acc_kept = np.concatenate(tr.accepts, axis=1)
    draws = llc_draws(tr, g)
    good = ~bad
    x = draws[good]
    llc_hat = float(np.mean(x))
    xd = x if batches.exact else block_means(x)
    se, se_mcse, se_chains = diag.standard_error(xd)
    rhat, ess = diag.rhat(xd), diag.ess(xd)
    with np.errstate(invalid="ignore"):
        per_chain = np.where(good, np.mean(draws, axis=1), np.nan)
    frac_below = float(np.mean(loss_kept[good] < g.anchor_loss))
    acceptance = diag.mala_acceptance(acc_kept[good])
    converged = bool(rhat <= cfg.target_rhat and ess >= cfg.target_ess)
    flags = []
    if not converged:
        hint = "raise max_draws (--max-draws)" if cfg.num_draws is None else "raise num_draws or unset it"
        if batches.kind == "minibatch":
            hint += ", or drop batch_size for exact full-batch HMC"
        hint += localization_hint(cfg, g.nbeta, batches.kind == "minibatch",
                                  projected_draws(ess, tr.draws, cfg.target_ess))
        flags.append(
            f"not converged: R-hat {rhat:.3f} (target <= {cfg.target_rhat}), ESS {ess:.0f} "
            f"(target >= {cfg.target_ess:.0f}) after {tr.draws} draws per chain ({hint})"
            + projection(ess, tr.draws, cfg.target_ess)
        )
    if batches.exact and frac_below > cfg.escape_fraction:
        flags.append(
            f"chains escaped: {frac_below:.0%} of the draws have L < L(w*): w* is not a local "
            "minimum at this temperature, the number is not an LLC of w* (raise n/nbeta or the "
            "localization, or move w* to a minimum)"
        )
    elif llc_hat < 0:
        flags.append(f"negative estimate ({frac_below:.0%} of draws below L(w*)): w* is not near a minimum")
    if excluded_flag is not None:
        flags.append(excluded_flag)
    if bias is not None:  # SGLD: report the extrapolation to step 0 where the bias is linear in the step
        bias.update(extrapolate(bias, llc_hat, se), llc_step=llc_hat, se_step=se)
        if bias["extrapolation_reliable"]:
            llc_hat, se = bias["llc_extrapolated"], bias["se_extrapolated"]
    bias_text = bias_flag(bias, se)
    if bias_text:
        flags.append(bias_text)
    lower = lower_region(tr, g, good, loss_kept)  # notes, not flags: the number is right where the chains
    grad_term = gradient_term(tr, good, g.nbeta, llc_hat)  # sampled
    eps_np = tr.final_eps.detach().cpu().double().numpy()
    record = {
        **cfg.to_dict(),
        **g.label,
        "description": pot.description,
        "potential": getattr(pot, "info", {}),
        "kind": batches.kind,
        "d": int(pot.w_star.numel()),
        "n": n,
        "nbeta_used": g.nbeta,
        "anchor_loss": g.anchor_loss,
        "divergence_threshold": threshold,
        "sampler_used": kernel.name,
        "adapt_metric_used": _uses_metric(cfg, kernel),
        "num_leapfrog_used": getattr(kernel, "num_leapfrog", None),
        "exact_localization_used": bool(getattr(kernel, "exact_localization", False)),
        "step_size_per_chain": eps_np.tolist(),
        "step_size_mean": float(eps_np.mean()),
        "target_accept_used": cfg.target_accept or KERNEL_DEFAULT_ACCEPT[kernel.name],
        "seed": g.seed, "chain_seeds": chain_seeds,
        "dtype": str(pot.w_star.dtype), "device": str(pot.w_star.device),
        "se_mcse": se_mcse, "se_chains": se_chains,
        "block": block,
        "calibration_used": tr.calibration_used,
        "step_search": tr.step_search,
        "step_search_start": tr.search_start,
        "lower_region": lower, "gradient_term": grad_term,
    }
    idata = diag.inference_data({"llc": draws, "loss": loss_kept}, {"accept_prob": acc_kept})
    res = LLCResult(
        llc=llc_hat,
        se=se,
        rhat=float(rhat),
        ess=float(ess),
        converged=converged,
        flags=tuple(flags),
        estimand=(
            f"localized tempered posterior mean of nbeta*(L - L(w*)) at nbeta = {g.nbeta:.6g}, "
            f"localization {cfg.localization:g} (approaches lambda as nbeta grows)"
            + ("; SGLD extrapolated to step 0" if bias is not None and bias["extrapolation_reliable"] else "")
        ),
        nbeta=float(g.nbeta),
        n=n,
        anchor_loss=g.anchor_loss,
        sampler=kernel.name,
        acceptance=acceptance,
        frac_below_anchor=frac_below,
        llc_per_chain=per_chain,
        diverged=bad,
        num_draws=tr.draws,
        num_grads=tr.grads,
        seconds=seconds,
        cpu_seconds=cpu,
        bias_check=bias,
        calibration=calibration_of(tr, kernel, g, converged),
        trace=idata,
        config=record,
        seed=g.seed,
    )
    if warn:
        announce(res, stacklevel=5)
    return res
