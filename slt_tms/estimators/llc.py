r"""Local learning coefficient (LLC) estimation that converges, or says loudly that it did not.

Estimator (Lau, Furman, Wang, Murfet & Wei 2023):

.. math::

    \hat\lambda(w^*) = n\beta\,\bigl(\mathbb{E}_{w \sim p}[L_n(w)] - L_n(w^*)\bigr), \qquad
    p(w) \propto \exp\Bigl(-n\beta L_n(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2\Bigr),

with :math:`n\beta = n/\log n` by default (:math:`n` = number of training samples, not the batch size).

Estimand. At finite :math:`n\beta` this is the mean of :math:`n\beta(L - L(w^*))` under the localized
tempered posterior, NOT the learning coefficient :math:`\lambda` itself: it approaches :math:`\lambda` like
:math:`\lambda + a/(n\beta)` (finite-temperature and localization corrections). With ``ladder`` the
estimator also fits that form over several :math:`n\beta` and reports the extrapolated :math:`\lambda`.

Algorithm
---------
1. The sampler: where every step can see the full loss (a population loss, or full-batch data) a
   Metropolis-adjusted kernel (MALA by default; HMC on request), which has no discretisation bias; for
   minibatches SGLD, whose bias is then measured by a second run at half the step.
2. Warmup (``num_burnin`` transitions, discarded): a first step size from a doubling/halving search,
   then per-chain dual averaging towards a moderate acceptance (effective samples per gradient, not
   acceptance, is what matters) and a diagonal metric estimated in windows (MALA/HMC) or an RMSProp
   preconditioner (SGLD, frozen afterwards).
3. Sampling in blocks of ``draws_per_block`` draws; after each block split R-hat and bulk ESS of the
   :math:`\hat\lambda` trace (ArviZ); stop when R-hat :math:`\le 1.01` and ESS :math:`\ge 400` or at the
   budget ``max_draws`` (or after exactly ``num_draws`` draws when given).
4. Flags: not converged; chains that escaped to lower loss (more than ``escape_fraction`` of the draws
   below :math:`L(w^*)`, exact kernels: :math:`w^*` is not a local minimum at this temperature, the
   number is not an LLC of :math:`w^*`); diverged chains (excluded); SGLD bias larger than 3 standard
   errors. Each flag is a warning, an entry of ``result.flags`` and a marker in every printed summary.

Standard error: the Monte-Carlo standard error of the mean over ``(chain, draw)`` (ArviZ, accounting for
autocorrelation).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._progress import progress_bar
from slt_tms._rng import spawn_seeds
from slt_tms.estimators.config import KERNEL_DEFAULT_ACCEPT, LLCConfig, default_nbeta
from slt_tms.estimators.result import AsymptoticFit, LLCResult
from slt_tms.potentials import as_potential
from slt_tms.samplers import HMC, MALA, SGLD, BatchSupply, ChainStreams, RMSProp, Tempered, Warmup, run_chains
from slt_tms.samplers import diagnostics as diag
from slt_tms.validation import check_seed

__all__ = ["LLCConfig", "LLCResult", "default_nbeta", "estimate_llc", "fit_asymptotic"]

#: devinterp keyword names and how they map to ours (see docs: migrating from devinterp).
_DEVINTERP_KEYWORDS = {"num_burnin_steps": "num_burnin", "lr": "step_size"}
_DEVINTERP_OPTIMIZER_KEYS = {"lr": "step_size", "nbeta": "nbeta", "localization": "localization",
                             "noise_level": None, "weight_decay": None, "bounding_box_size": None,
                             "temperature": None}


def _resolve_config(config: LLCConfig | None, overrides: Mapping[str, Any]) -> LLCConfig:
    cfg = config or LLCConfig()
    if config is not None and not isinstance(config, LLCConfig):
        raise ValueError(f"config must be an LLCConfig, got {type(config).__name__}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "optimizer_kwargs":
            for k, v in dict(value or {}).items():
                if k not in _DEVINTERP_OPTIMIZER_KEYS:
                    raise ValueError(f"optimizer_kwargs[{k!r}] is not a setting of this estimator; known: "
                                     f"{', '.join(k2 for k2, t in _DEVINTERP_OPTIMIZER_KEYS.items() if t)}")
                target = _DEVINTERP_OPTIMIZER_KEYS[k]
                if target is None:
                    if (k == "noise_level" and v == 1.0) or (k == "weight_decay" and v == 0.0) or \
                            (k == "temperature" and v is None):
                        continue  # devinterp's defaults: nothing to translate
                    raise ValueError(f"optimizer_kwargs[{k!r}] = {v!r} changes the target density; this "
                                     "estimator samples the localized tempered posterior only (use nbeta and "
                                     "localization)")
                changes[target] = v
            changes.setdefault("sampler", "sgld")  # devinterp's SGLD, translated
        elif key == "sampling_method":
            name = getattr(value, "__name__", str(value)).lower()
            if name not in ("sgld", "sgld_class"):
                raise ValueError(f"sampling_method={value!r}: only devinterp's SGLD has an equivalent here "
                                 "(sampler='sgld'); MALA and HMC are available as sampler='mala'/'hmc'")
            changes["sampler"] = "sgld"
        elif key in ("num_steps_bw_draws", "cores", "online", "callbacks", "verbose", "grad_accum_steps"):
            raise ValueError(
                f"{key}= is devinterp's; here every step is kept (no thinning), chains run batched in one "
                "process, diagnostics are always computed and summary() reports them"
            )
        elif key in _DEVINTERP_KEYWORDS:
            changes[_DEVINTERP_KEYWORDS[key]] = value
        elif key in LLCConfig.field_names():
            changes[key] = value
        else:
            raise TypeError(f"estimate_llc() got an unexpected keyword argument {key!r}; LLCConfig fields: "
                            f"{', '.join(LLCConfig.field_names())}")
    return cfg.replace(**changes) if changes else cfg


def estimate_llc(
    source: Any,
    data: Any = None,
    config: LLCConfig | None = None,
    *,
    w_star: Tensor | None = None,
    loss: str | Callable[[Tensor, Tensor], Tensor] | None = "mse",
    evaluate: Callable[..., Any] | None = None,
    params: Sequence[str] | None = None,
    masks: Mapping[str, Tensor] | Tensor | None = None,
    n: int | None = None,
    init: Tensor | None = None,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> LLCResult:
    r"""Estimate the local learning coefficient at an anchor :math:`w^*` (module docstring).

    Parameters
    ----------
    source : nn.Module, Potential, CriticalPoint, ground-truth problem or loss callable
        What to estimate; see :func:`slt_tms.potentials.as_potential`. An ``nn.Module`` is taken at its
        current parameters (the anchor) with ``data``.
    data : optional
        Training rows: tensors ``(X, Y)`` (``(X, Y, weights)``), a dict, a ``TensorDataset`` or a
        ``DataLoader`` (streamed minibatches).
    config : LLCConfig, optional
        Estimator settings (default ``LLCConfig()``); any field can also be passed as a keyword
        (``num_chains=8``). devinterp's ``optimizer_kwargs=dict(lr=..., nbeta=..., localization=...)``,
        ``num_burnin_steps`` and ``sampling_method=SGLD`` are translated.
    w_star : Tensor, optional
        The anchor for a loss callable.
    loss, evaluate, params, masks, n, device, dtype
        How the potential is built (:func:`slt_tms.potentials.as_potential`): a named loss or
        ``evaluate(model, batch)``; ``params`` name patterns / ``masks`` for a restricted LLC; ``n`` the
        training-set size (required for a population loss).
    init : Tensor, shape ``(num_chains, d)``, optional
        Starting points of the chains (default: all at :math:`w^*`).
    seed : int
        Root seed; chain :math:`k` uses ``spawn_seeds(seed, C)[k]``.
    progress : bool, optional
        One progress bar (None: on unless ``SLT_TMS_NO_PROGRESS=1``).

    Returns
    -------
    LLCResult
        ``result.ok`` is False (and a warning was issued) when the estimate is not trustworthy.

    Raises
    ------
    ValueError
        Bad input (shapes, dtypes, losses, ranges), a non-finite loss at :math:`w^*`, every chain diverged.

    Examples
    --------
    >>> from slt_tms.theory import regular_quadratic
    >>> res = estimate_llc(regular_quadratic(4, n=10_000), progress=False)
    >>> res.ok, abs(res.llc - 2.0) < 5 * res.se + 0.05
    (True, True)
    """
    check_seed(seed)
    cfg = _resolve_config(config, overrides)
    pot = as_potential(source, data, w_star=w_star, loss=loss, evaluate=evaluate, params=params, masks=masks,
                       n=n, device=device, dtype=dtype)
    n_eff = pot.n if n is None else n
    if n_eff is None:
        raise ValueError("n (the number of training samples) is required for a population loss: it sets "
                         "the temperature nbeta = n / log n")
    n_eff = int(n_eff)
    if cfg.batch_size is not None and pot.data is not None and not pot.data.streaming and \
            n_eff == cfg.batch_size < pot.data.num_rows:
        warnings.warn(f"n = {n_eff} equals the batch size but the data has {pot.data.num_rows} rows: n must be "
                      "the number of training samples, not the batch size (nbeta = n / log n)",
                      UserWarning, stacklevel=2)
    nbeta0 = cfg.nbeta if cfg.nbeta is not None else default_nbeta(n_eff)
    anchor = pot.anchor_loss()
    if not math.isfinite(anchor):
        raise ValueError(f"the loss at the anchor w* is not finite ({anchor}); check w_star and the potential")
    if init is not None and (not isinstance(init, Tensor) or init.shape != (cfg.num_chains, pot.w_star.numel())):
        raise ValueError(f"init must be a tensor of shape (num_chains, d) = ({cfg.num_chains}, "
                         f"{pot.w_star.numel()}), got {tuple(getattr(init, 'shape', ()))}")
    if cfg.ladder is None:
        return _estimate_at(pot, cfg, nbeta0, n_eff, anchor, init, seed, progress)
    rungs = [_estimate_at(pot, cfg, nbeta0 * m, n_eff, anchor, init, seed, progress, warn=False)
             for m in cfg.ladder]
    fit = fit_asymptotic([r.nbeta for r in rungs], [r.llc for r in rungs], [r.se for r in rungs],
                         [r.converged for r in rungs])
    main = next((r for r, m in zip(rungs, cfg.ladder, strict=True) if m == 1.0), rungs[0])
    flags = tuple(sorted({f for r in rungs for f in r.flags}))
    if not all(r.ok for r in rungs):
        warnings.warn(f"LLC ladder: not every rung is trustworthy ({'; '.join(flags)}); the asymptotic fit "
                      f"{fit.llc:.4g} +/- {fit.se:.4g} inherits that", RuntimeWarning, stacklevel=2)
    cfg_rec = {**main.config, "rungs": [r.to_dict(traces=False) for r in rungs]}
    return dataclasses.replace(main, asymptotic=fit, flags=flags, config=cfg_rec,
                               num_grads=sum(r.num_grads for r in rungs),
                               seconds=sum(r.seconds for r in rungs),
                               cpu_seconds=sum(r.cpu_seconds for r in rungs))


def fit_asymptotic(nbeta: Sequence[float], estimates: Sequence[float], errors: Sequence[float],
                   converged: Sequence[bool] | None = None) -> AsymptoticFit:
    r"""Weighted least-squares fit of :math:`\hat\lambda_i = \lambda + a / (n\beta)_i` (weights
    :math:`1/\mathrm{se}_i^2`).

    The standard errors are those of the weighted fit, inflated by :math:`\sqrt{\chi^2/(k-2)}` when the
    residuals exceed their errors (:math:`k` rungs; no inflation with two rungs).

    Examples
    --------
    >>> fit = fit_asymptotic([1000, 2000, 4000], [7.7, 7.35, 7.175], [0.05, 0.05, 0.05])
    >>> round(fit.llc, 3), round(fit.slope, 1)
    (7.0, 700.0)
    """
    x = 1.0 / np.asarray(nbeta, dtype=float)
    y = np.asarray(estimates, dtype=float)
    se = np.asarray(errors, dtype=float)
    if len(x) < 2 or not (np.all(np.isfinite(y)) and np.all(se > 0)):
        raise ValueError("the asymptotic fit needs at least two finite estimates with positive errors")
    wts = 1.0 / se**2
    X = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(X.T @ (X * wts[:, None]))
    beta = cov @ (X.T @ (wts * y))
    chi2 = float(np.sum(wts * (y - X @ beta) ** 2))
    dof = len(x) - 2
    if dof > 0 and chi2 > dof:
        cov = cov * (chi2 / dof)
    conv = tuple(bool(c) for c in (converged if converged is not None else [True] * len(x)))
    return AsymptoticFit(float(beta[0]), float(math.sqrt(cov[0, 0])), float(beta[1]), chi2,
                         tuple(float(v) for v in nbeta), tuple(float(v) for v in y),
                         tuple(float(v) for v in se), conv)


def _kernel(cfg: LLCConfig, batches: BatchSupply) -> Any:
    name = cfg.sampler
    if name == "auto":
        name = "mala" if batches.exact else "sgld"
    if name in ("mala", "hmc") and not batches.exact:
        raise ValueError(f"sampler={name!r} needs the full loss at every step, but the data are "
                         f"{'streamed from a DataLoader' if batches.kind == 'stream' else 'minibatched'}; "
                         "use sampler='sgld' (or full-batch tensors)")
    if name == "mala":
        return MALA()
    if name == "hmc":
        return HMC(num_leapfrog=cfg.num_leapfrog)
    return SGLD()


def _initial_step_size(kernel: Any, target: Tempered, w: Tensor, batches: BatchSupply,
                       streams: ChainStreams) -> Tensor:
    r"""Per-chain first step size: halve (or double) from :math:`1/n\beta` until the acceptance of one
    Langevin proposal from the anchor crosses 0.5 (Hoffman & Gelman 2014, Algorithm 4, for MALA)."""
    probe = MALA()
    C = w.shape[0]
    eps = torch.full((C,), 1.0 / max(target.nbeta, 1e-12), dtype=w.dtype, device=w.device)
    draws = streams.next()
    batch = batches(draws)
    state = probe.init(w, target, batch)
    _, info = probe.step(state, target, eps, batch, draws)
    direction = torch.where(info.accept_prob > 0.5, 2.0, 0.5).to(w.dtype)
    done = torch.zeros(C, dtype=torch.bool, device=w.device)
    for _ in range(60):
        trial = torch.where(done, eps, eps * direction)
        _, info = probe.step(state, target, trial, batch, draws)
        crossed = torch.where(direction > 1, info.accept_prob < 0.5, info.accept_prob >= 0.5)
        eps = torch.where(done | (crossed & (direction > 1)), eps, trial)
        done = done | crossed
        if bool(done.all()):
            break
    return eps


def _estimate_at(pot: Any, cfg: LLCConfig, nbeta: float, n: int, anchor: float, init: Tensor | None,
                 seed: int, progress: bool | None, *, warn: bool = True) -> LLCResult:
    t0, c0 = time.perf_counter(), time.process_time()
    w_star = pot.w_star
    d = int(w_star.numel())
    C = cfg.num_chains
    threshold = cfg.divergence_threshold if cfg.divergence_threshold is not None else max(1e4, 100.0 * d)
    batches = BatchSupply(pot.data, cfg.batch_size)
    kernel = _kernel(cfg, batches)
    target = Tempered(pot, float(nbeta), float(cfg.localization), w_star)
    chain_seeds = spawn_seeds(seed, C)
    streams = ChainStreams(chain_seeds, d, w_star.dtype, w_star.device,
                           num_rows=None if pot.data is None else pot.data.num_rows, batch_size=batches.batch_size)
    w0 = w_star.expand(C, d).clone() if init is None else init.detach().to(w_star)
    budget = cfg.num_draws if cfg.num_draws is not None else cfg.max_draws
    bias_steps = budget if (kernel.name == "sgld" and cfg.bias_check) else 0
    bar = progress_bar(total=cfg.num_burnin + budget, desc=f"LLC ({kernel.name}, nbeta={nbeta:.4g})",
                       enabled=progress)
    try:
        if cfg.step_size is not None:
            eps = torch.full((C,), float(cfg.step_size), dtype=w_star.dtype, device=w_star.device)
        else:
            eps = _initial_step_size(kernel, target, w0, batches, streams)
        first = batches(None) if batches.exact else None
        state = kernel.init(w0, target, first)
        grads = 0
        metric = None
        accept_target = cfg.target_accept or KERNEL_DEFAULT_ACCEPT[kernel.name]
        if cfg.num_burnin > 0:
            warm = Warmup(cfg.num_burnin, None if cfg.step_size is not None else accept_target,
                          adapt_metric=cfg.adapt_metric and kernel.exact,
                          rmsprop=RMSProp() if (kernel.name == "sgld" and cfg.preconditioner == "rmsprop") else None)
            res = run_chains(kernel, target, state, num_steps=cfg.num_burnin, streams=streams, batches=batches,
                             step_size=eps, warmup=warm, record=(), bar=bar)
            state, eps, metric, grads = res.state, res.step_size, res.metric, res.num_grads
        losses: list[np.ndarray] = []
        accepts: list[np.ndarray] = []
        bad = np.zeros(C, dtype=bool)
        total = 0
        rhat = ess = math.nan
        block = cfg.num_draws if cfg.num_draws is not None else cfg.draws_per_block
        while total < budget:
            steps = min(block, budget - total)
            res = run_chains(kernel, target, state, num_steps=steps, streams=streams, batches=batches,
                             step_size=eps, metric=metric, record=("loss", "accept_prob"), bar=bar)
            state, grads = res.state, grads + res.num_grads
            losses.append(res.records["loss"])
            accepts.append(res.records["accept_prob"])
            total += steps
            llc_block = nbeta * (res.records["loss"] - anchor)
            bad |= diag.divergence_flags(llc_block, threshold)
            if bad.all():
                break
            llc_all = nbeta * (np.concatenate(losses, axis=1)[~bad] - anchor)
            rhat, ess = diag.rhat(llc_all), diag.ess(llc_all)
            if cfg.num_draws is None and rhat <= cfg.target_rhat and ess >= cfg.target_ess:
                break
        bar.total = bar.n  # the budget was not all needed: close the bar at what ran
        loss_kept = np.concatenate(losses, axis=1)
        acc_kept = np.concatenate(accepts, axis=1)
        if bad.all():
            raise ValueError(
                f"all {C} chains diverged (non-finite loss or nbeta*(L - L*) > {threshold:g}) at step size "
                f"{float(eps.mean()):.3g}; use a smaller step_size (or step_size=None to adapt it), a larger "
                "localization, or check the potential near w*")
        good = ~bad
        with np.errstate(over="ignore", invalid="ignore"):
            llc_draws = nbeta * (loss_kept - anchor)
        x = llc_draws[good]
        llc_hat = float(np.mean(x))
        se = diag.mcse_mean(x)
        if not math.isfinite(rhat):
            rhat, ess = diag.rhat(x), diag.ess(x)
        with np.errstate(invalid="ignore"):
            per_chain = np.where(good, np.mean(llc_draws, axis=1), np.nan)
        frac_below = float(np.mean(loss_kept[good] < anchor))
        acceptance = diag.mala_acceptance(acc_kept[good])
        bias = None
        if bias_steps:
            bias = _bias_check(kernel, target, state, streams, batches, eps, metric, cfg, nbeta, anchor, llc_hat,
                               se, total, seed)
            grads += bias.pop("num_grads")
    finally:
        bar.close()
    converged = bool(rhat <= cfg.target_rhat and ess >= cfg.target_ess)
    flags = []
    if not converged:
        flags.append(f"not converged: R-hat {rhat:.3f} (target <= {cfg.target_rhat}), ESS {ess:.0f} "
                     f"(target >= {cfg.target_ess:.0f}) after {total} draws per chain")
    if batches.exact and frac_below > cfg.escape_fraction:
        flags.append(f"chains escaped: {frac_below:.0%} of the draws have L < L(w*): w* is not a local "
                     "minimum at this temperature; the number is not an LLC of w* (raise n/nbeta or the "
                     "localization, or move w* to a minimum)")
    elif llc_hat < 0:
        flags.append(f"negative estimate ({frac_below:.0%} of draws below L(w*)): w* is not near a minimum")
    if bad.any():
        flags.append(f"{int(bad.sum())} of {C} chains diverged (excluded: {np.flatnonzero(bad).tolist()})")
    if bias is not None and abs(bias["difference"]) > 3 * bias["se_difference"]:
        flags.append(f"SGLD discretisation bias: half the step gives {bias['llc_half_step']:.4g} "
                     f"(difference {bias['difference']:.3g} +/- {bias['se_difference']:.2g}); use a smaller "
                     "step_size, a larger batch_size, or full batch")
    if warn and flags:
        warnings.warn("LLC estimate " + f"{llc_hat:.4g} +/- {se:.2g} is not trustworthy: " + "; ".join(flags),
                      RuntimeWarning, stacklevel=3)
    idata = diag.inference_data({"llc": llc_draws, "loss": loss_kept}, {"accept_prob": acc_kept})
    eps_np = eps.detach().cpu().double().numpy()
    record = {
        **cfg.to_dict(),
        "description": pot.description,
        "potential": getattr(pot, "info", {}),
        "kind": batches.kind,
        "d": d,
        "n": n,
        "nbeta_used": nbeta,
        "anchor_loss": anchor,
        "divergence_threshold": threshold,
        "sampler_used": kernel.name,
        "step_size_per_chain": eps_np.tolist(),
        "step_size_mean": float(eps_np.mean()),
        "target_accept_used": cfg.target_accept or KERNEL_DEFAULT_ACCEPT[kernel.name],
        "chain_seeds": chain_seeds,
        "dtype": str(w_star.dtype),
        "device": str(w_star.device),
        "block": streams.block,
    }
    return LLCResult(
        llc=llc_hat, se=se, rhat=float(rhat), ess=float(ess), converged=converged, flags=tuple(flags),
        estimand=(f"localized tempered posterior mean of nbeta*(L - L(w*)) at nbeta = {nbeta:.6g}, "
                  f"localization {cfg.localization:g} (approaches lambda as nbeta grows)"),
        nbeta=float(nbeta), n=n, anchor_loss=anchor, sampler=kernel.name, acceptance=acceptance,
        frac_below_anchor=frac_below, llc_per_chain=per_chain, diverged=bad, num_draws=total, num_grads=grads,
        seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0, bias_check=bias,
        trace=idata, config=record, seed=seed,
    )


def _bias_check(kernel: Any, target: Tempered, state: Any, streams: ChainStreams, batches: BatchSupply,
                eps: Tensor, metric: Tensor | None, cfg: LLCConfig, nbeta: float, anchor: float,
                llc_hat: float, se: float, steps: int, seed: int) -> dict[str, Any]:
    """SGLD at half the step from the main run's final state (fresh streams from the same root seed)."""
    C, d = state.w.shape
    check_streams = ChainStreams(spawn_seeds(spawn_seeds(seed, 2)[1], C), d, state.w.dtype, state.w.device,
                                 num_rows=streams.num_rows, batch_size=batches.batch_size)
    half = eps / 2
    burn = run_chains(kernel, target, kernel.init(state.w, target, None), num_steps=max(cfg.num_burnin, 10),
                      streams=check_streams, batches=batches, step_size=half, metric=metric, record=())
    res = run_chains(kernel, target, burn.state, num_steps=steps, streams=check_streams, batches=batches,
                     step_size=half, metric=metric, record=("loss",))
    x = nbeta * (res.records["loss"] - anchor)
    x = x[np.all(np.isfinite(x), axis=1)]
    llc_half = float(np.mean(x)) if x.size else math.nan
    se_half = diag.mcse_mean(x) if x.size else math.nan
    return {"llc_half_step": llc_half, "se_half_step": se_half, "difference": llc_hat - llc_half,
            "se_difference": math.sqrt(se * se + se_half * se_half), "half_step_draws": steps,
            "num_grads": burn.num_grads + res.num_grads}
