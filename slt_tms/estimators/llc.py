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
   Metropolis-adjusted kernel (HMC with an adapted diagonal metric by default; MALA on request), which
   has no discretisation bias; for minibatches SGLD, whose bias is then measured by coupled chains at
   the step and half the step, its step set by that bias (a correction of about 5%) and its estimate
   extrapolated to step zero (Richardson-Romberg; :mod:`slt_tms.estimators.sgld_bias`). (MALA gives
   more effective samples per gradient on small well-conditioned problems, but at singular minima
   whose flat directions are not axis-aligned its chains under-explore while looking converged; docs:
   estimators.)
2. Warmup (``num_burnin`` transitions, discarded): a first step size from a doubling/halving search,
   then per-chain dual averaging towards a moderate acceptance (effective samples per gradient, not
   acceptance, is what matters) and a diagonal metric estimated in windows (MALA/HMC) or an RMSProp
   preconditioner (SGLD, frozen afterwards). A minibatch SGLD run whose step the bias search sets warms
   up at :math:`1/a_{\max}` instead (the largest curvature at :math:`w^*`), without adaptation.
3. Sampling in blocks (the first of ``draws_per_block`` draws, then what the ESS target still needs if
   the ESS grows linearly, +10%); after each block split R-hat and bulk ESS of the :math:`\hat\lambda`
   trace (ArviZ); stop when R-hat :math:`\le 1.01` and ESS :math:`\ge 400` or at the budget
   ``max_draws`` (or after exactly ``num_draws`` draws when given). A minibatch draw records
   :math:`L_B(w_t) - L_B(w^*) + L_n(w^*)`, the loss at the anchor on the same rows as a control variate
   (unbiased for :math:`L_n(w_t)`, without most of the row-sampling noise; one forward pass more per
   step). For minibatch traces the diagnostics and the standard error are computed on means of 20-draw
   blocks: the remaining step-to-step noise would otherwise count as independent information and let an
   unmixed run pass. SGLD's coupled bias check (item 1) continues the chains at their step; its coarse
   chain's draws join the trace (also after ``num_draws``), and the diagnostics are computed again on the
   whole.
4. Flags: not converged; chains that escaped to lower loss (more than ``escape_fraction`` of the draws
   below :math:`L(w^*)`, exact kernels: :math:`w^*` is not a local minimum at this temperature, the
   number is not an LLC of :math:`w^*`); diverged chains (excluded); an SGLD bias that is significant,
   larger than the standard error and too large to extrapolate away. Each flag is a warning, an entry
   of ``result.flags`` and a marker in every printed summary.

Standard error: the larger of the Monte-Carlo standard error of the mean over ``(chain, draw)`` (ArviZ,
accounting for autocorrelation) and the spread of the chain means.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms.estimators.config import LLCConfig, default_nbeta
from slt_tms.estimators.engine import Group, announce, rerun_flagged, run_groups
from slt_tms.estimators.result import (
    AsymptoticFit,
    Calibration,
    LLCResult,
    gradient_note_due,
    gradient_term_note,
    lower_region_note,
    precision_note,
)
from slt_tms.estimators.sgld_bias import STEP_TARGET, bias_flag
from slt_tms.potentials import as_potential
from slt_tms.validation import GRAD_MODES, check_choice, check_device, check_seed

__all__ = ["LLCConfig", "LLCResult", "default_nbeta", "estimate_llc", "fit_asymptotic"]

#: devinterp keyword names and how they map to ours (docs: migrating from devinterp).
_DEVINTERP_KEYWORDS = {"num_burnin_steps": "num_burnin", "lr": "step_size", "n_beta": "nbeta"}
#: keys of devinterp's optimizer_kwargs (1.x) / sampling_method_kwargs; "temperature" is 1.x's old nbeta.
_DEVINTERP_OPTIMIZER_KEYS = {
    "lr": "step_size",
    "nbeta": "nbeta",
    "temperature": "nbeta",
    "localization": "localization",
    "noise_level": None,
    "weight_decay": None,
    "llc_weight_decay": None,
    "bounding_box_size": None,
}
#: devinterp settings with no counterpart here, and the value at which they change nothing.
_DEVINTERP_NO_OPS = {
    "noise_level": 1.0,
    "weight_decay": 0.0,
    "llc_weight_decay": 0.0,
    "bounding_box_size": None,
    "num_steps_bw_draws": 1,
    "grad_accum_steps": 1,
    "gradient_accumulation_steps": 1,
    "cores": 1,
    "online": False,
}
#: devinterp 2.x sampling_method names.
_DEVINTERP_METHODS = {"sgmcmc_sgld": {}, "sgld": {}, "rmsprop_sgld": {"preconditioner": "rmsprop"}}


def _translate_optimizer_kwargs(key: str, value: Any, changes: dict[str, Any]) -> None:
    for k, v in dict(value or {}).items():
        if k not in _DEVINTERP_OPTIMIZER_KEYS:
            raise ValueError(
                f"{key}[{k!r}] is not a setting of this estimator; known: "
                f"{', '.join(k2 for k2, t in _DEVINTERP_OPTIMIZER_KEYS.items() if t)}"
            )
        target = _DEVINTERP_OPTIMIZER_KEYS[k]
        if target is None:
            if k in _DEVINTERP_NO_OPS and v == _DEVINTERP_NO_OPS[k]:
                continue  # devinterp's default: nothing to translate
            raise ValueError(
                f"{key}[{k!r}] = {v!r} changes the target density; this estimator samples the "
                "localized tempered posterior only (use nbeta and localization)"
            )
        if target in changes and changes[target] != v:
            raise ValueError(f"{key}: two values for {target} ({changes[target]!r} and {v!r})")
        changes[target] = v
    changes.setdefault("sampler", "sgld")  # devinterp's SGLD, translated


def _resolve_config(config: LLCConfig | None, overrides: Mapping[str, Any]) -> LLCConfig:
    cfg = config or LLCConfig()
    if config is not None and not isinstance(config, LLCConfig):
        raise ValueError(f"config must be an LLCConfig, got {type(config).__name__}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in ("optimizer_kwargs", "sampling_method_kwargs"):
            _translate_optimizer_kwargs(key, value, changes)
        elif key == "sampling_method":
            name = getattr(value, "__name__", str(value)).lower()
            if name in ("sgld_class",):
                name = "sgld"
            if name not in _DEVINTERP_METHODS:
                raise ValueError(
                    f"sampling_method={value!r}: only devinterp's SGLD ('sgmcmc_sgld', SGLD) and "
                    "'rmsprop_sgld' have an equivalent here (sampler='sgld', preconditioner='rmsprop'); "
                    "MALA and HMC are available as sampler='mala'/'hmc'"
                )
            changes["sampler"] = "sgld"
            changes.update(_DEVINTERP_METHODS[name])
        elif key in _DEVINTERP_NO_OPS:
            if value != _DEVINTERP_NO_OPS[key]:
                raise ValueError(
                    f"{key}={value!r} is devinterp's; here every step is kept (no thinning), chains run "
                    "batched in one process and diagnostics are always computed (summary() reports them)"
                )
        elif key in ("callbacks", "verbose"):
            raise ValueError(
                f"{key}= is devinterp's; diagnostics are always computed and summary() reports them "
                "(progress=False silences the progress bar)"
            )
        elif key in _DEVINTERP_KEYWORDS:
            changes[_DEVINTERP_KEYWORDS[key]] = value
        elif key in LLCConfig.field_names():
            changes[key] = value
        else:
            raise TypeError(
                f"estimate_llc() got an unexpected keyword argument {key!r}; LLCConfig fields: "
                f"{', '.join(LLCConfig.field_names())}"
            )
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
    calibration: Calibration | None = None,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    grad_mode: str = "auto",
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
        (``num_chains=8``). devinterp's keywords are translated: ``optimizer_kwargs`` /
        ``sampling_method_kwargs`` (``lr``, ``nbeta`` or its old name ``temperature``, ``localization``),
        ``lr``, ``n_beta``, ``num_burnin_steps``, ``sampling_method`` (SGLD, ``"sgmcmc_sgld"``,
        ``"rmsprop_sgld"``), and devinterp's defaults of settings that have no counterpart here
        (``num_steps_bw_draws=1``, ``noise_level=1``, ``weight_decay=0`` ...) are accepted and ignored;
        anything else of devinterp's is refused with the reason (docs: migrating from devinterp).
    w_star : Tensor, optional
        The anchor for a loss callable.
    loss, evaluate, params, masks, n, device, dtype
        How the potential is built (:func:`slt_tms.potentials.as_potential`): a named loss or
        ``evaluate(model, batch)``; ``params`` name patterns / ``masks`` for a restricted LLC; ``n`` the
        training-set size (required for a population loss).
    init : Tensor, shape ``(num_chains, d)``, optional
        Starting points of the chains (default: all at :math:`w^*`).
    calibration : Calibration, optional
        The adapted step size and metric of an earlier estimate on the same architecture
        (``earlier.calibration``; HMC and MALA only), e.g. the neighbouring checkpoint of a training run:
        the warmup then only re-tunes the step size, in ``max(num_burnin // 5, 20)`` transitions, and falls
        back to the full warmup when the re-tuned step size moves by more than a factor 3. It changes the
        cost, not the estimand (the kernel samples the same posterior at any step size and metric). A run
        from it that ends with a chain that stopped moving or diverged, or unconverged within the budget
        (unless ``num_draws`` fixes the length or the calibration's own run did not converge), is run again
        with its own full warmup and the same seed; ``config["calibration_used"]["retried"]`` keeps the
        first run.
    seed : int
        Root seed; chain :math:`k` uses ``spawn_seeds(seed, C)[k]``.
    progress : bool, optional
        One progress bar (None: on unless ``SLT_TMS_NO_PROGRESS=1``).
    grad_mode : {"auto", "vmap", "loop"}
        How the gradients of all chains of a model are taken (:func:`slt_tms.potentials.with_grad_mode`):
        the potential's own choice, ``torch.func.vmap`` over the chains, or a loop over them (faster than
        ``vmap``'s per-sample fallback for some models with attention). The same estimand on every path.

    Returns
    -------
    LLCResult
        ``result.ok`` is False (and a warning was issued) when the estimate is not trustworthy.

    Raises
    ------
    ValueError
        Bad input (shapes, dtypes, losses, ranges), a ``device`` this torch build cannot use (CUDA on a
        CPU-only build: one line naming the fix, before any data is moved or any chain runs), a
        ``device`` / ``dtype`` other than that of a ready-made Potential, a non-finite loss at
        :math:`w^*`, every chain diverged.

    Examples
    --------
    >>> from slt_tms.theory import regular_quadratic
    >>> res = estimate_llc(regular_quadratic(4, n=10_000), progress=False)
    >>> res.ok, abs(res.llc - 2.0) < 5 * res.se + 0.05
    (True, True)
    """
    check_seed(seed)
    check_choice("grad_mode", grad_mode, GRAD_MODES)
    if device is not None:
        check_device(device)  # one line naming the fix, before any data is moved or any chain runs
    cfg = _resolve_config(config, overrides)
    pot = as_potential(
        source,
        data,
        w_star=w_star,
        loss=loss,
        evaluate=evaluate,
        params=params,
        masks=masks,
        n=n,
        device=device,
        dtype=dtype,
        grad_mode=grad_mode,
    )
    n_eff = pot.n if n is None else n
    if n_eff is None:
        raise ValueError(
            "n (the number of training samples) is required for a population loss: it sets "
            "the temperature nbeta = n / log n"
        )
    n_eff = int(n_eff)
    if (
        cfg.batch_size is not None
        and pot.data is not None
        and not pot.data.streaming
        and n_eff == cfg.batch_size < pot.data.num_rows
    ):
        warnings.warn(
            f"n = {n_eff} equals the batch size but the data has {pot.data.num_rows} rows: n must be "
            "the number of training samples, not the batch size (nbeta = n / log n)",
            UserWarning,
            stacklevel=2,
        )
    nbeta0 = cfg.nbeta if cfg.nbeta is not None else default_nbeta(n_eff)
    anchor = pot.anchor_loss()
    if not math.isfinite(anchor):
        raise ValueError(
            f"the loss at the anchor w* is not finite ({anchor}); check w_star and the potential"
        )
    if init is not None and (
        not isinstance(init, Tensor) or init.shape != (cfg.num_chains, pot.w_star.numel())
    ):
        raise ValueError(
            f"init must be a tensor of shape (num_chains, d) = ({cfg.num_chains}, "
            f"{pot.w_star.numel()}), got {tuple(getattr(init, 'shape', ()))}"
        )
    if calibration is not None and not isinstance(calibration, Calibration):
        raise ValueError(
            f"calibration must be the Calibration of an earlier result (result.calibration), got "
            f"{type(calibration).__name__}"
        )
    if cfg.ladder is None:
        group = Group(pot.w_star, anchor, nbeta0, seed, init, {}, calibration)
        res = run_estimates(pot, [group], cfg, n_eff, progress)[0]
        announce(res, stacklevel=3)
        return res
    groups = [Group(pot.w_star, anchor, nbeta0 * m, seed, init, {"ladder_multiplier": m}, calibration)
              for m in cfg.ladder]
    first = run_estimates(pot, groups, cfg, n_eff, progress)
    rungs, fit, precision = _ladder_to_precision(pot, groups, first, cfg, n_eff, progress)
    main = next((r for r, m in zip(rungs, cfg.ladder, strict=True) if m == 1.0), rungs[0])
    spent = 0  # gradients of the runs a longer one replaced: their cost is the result's too
    if precision is not None:
        earlier = precision["earlier_runs"]
        spent = earlier["num_grads"]
        main = dataclasses.replace(
            main, config={**main.config, "asymptotic_precision": precision},
            seconds=main.seconds + earlier["seconds"], cpu_seconds=main.cpu_seconds + earlier["cpu_seconds"],
        )
    # each rung's flags, labelled by its nbeta (a flag shared by every rung is listed once)
    shared = set.intersection(*(set(r.flags) for r in rungs))
    flags = tuple(sorted(shared)) + tuple(
        f"rung {m:g} x nbeta: {f}"
        for r, m in zip(rungs, cfg.ladder, strict=True)
        for f in r.flags
        if f not in shared
    )
    if not all(r.ok for r in rungs):
        warnings.warn(
            f"LLC ladder: not every rung is trustworthy ({'; '.join(flags)}); the asymptotic fit "
            f"{fit.llc:.4g} +/- {fit.se:.4g} inherits that",
            RuntimeWarning,
            stacklevel=2,
        )
    _warn_notes([(f"rung {m:g} x nbeta", r) for r, m in zip(rungs, cfg.ladder, strict=True)])
    if precision is not None and precision.get("flagged"):
        warnings.warn(f"LLC ladder: {precision_note(precision, cfg.max_draws)}", RuntimeWarning, stacklevel=2)
    cfg_rec = {**main.config, "rungs": [r.to_dict(traces=False) for r in rungs]}
    return dataclasses.replace(
        main, asymptotic=fit, flags=flags, config=cfg_rec, num_grads=max(r.num_grads for r in rungs) + spent
    )


def _fit_rungs(rungs: list[LLCResult], cfg: LLCConfig) -> AsymptoticFit:
    return fit_asymptotic(
        [r.nbeta for r in rungs],
        [r.llc for r in rungs],
        [r.se for r in rungs],
        [r.converged for r in rungs],
        multiplicity=cfg.multiplicity,
        exponent=cfg.correction_exponent,
    )


def _ladder_to_precision(
    pot: Any, groups: list[Group], rungs: list[LLCResult], cfg: LLCConfig, n: int, progress: bool | None
) -> tuple[list[LLCResult], AsymptoticFit, dict[str, Any] | None]:
    r"""The asymptotic fit of the rungs, and where its standard error exceeds ``cfg.asymptotic_rse`` times
    :math:`|\hat\lambda|`, the rungs run again with :math:`D\,(\mathrm{SE}/\mathrm{target})^2 \times 1.2`
    draws per chain (:math:`D` the most any rung took; at most ``max_draws``): the intercept's error falls
    about as one over the square root of the draws. At most :data:`PRECISION_ROUNDS` such runs, each with
    the same seeds, so a longer run begins with the draws of the one before. Only for runs until converged
    whose rungs are all trustworthy (more draws do not mend a flagged rung), and for ``multiplicity=1``:
    with :math:`m > 1` the next terms of the fitted form fall like :math:`1/\log^2(n\beta)`, a model error
    that more draws do not shrink and the SE does not carry (the normal crossing :math:`w_1^2 w_2^2`,
    :math:`\lambda = 1/2`, :math:`m = 2`, over :math:`n\beta` = 1 086-8 686: 0.460-0.469 on four seeds at
    20 000 draws per chain, each with an SE of 1.2-2.4%). The record (None when nothing ran again) names
    the target, the first pass's fit and draws, the cost of the runs not kept (each longer run repeats
    them), the draws of the kept run, the longer runs kept and whether the target was reached."""
    fit = _fit_rungs(rungs, cfg)
    target = cfg.asymptotic_rse
    drawn = max(r.num_draws for r in rungs)
    if (target is None or cfg.num_draws is not None or cfg.multiplicity > 1 or not all(r.ok for r in rungs)
            or not (math.isfinite(fit.llc) and math.isfinite(fit.se)) or fit.se <= target * abs(fit.llc)
            or drawn >= cfg.max_draws):
        return rungs, fit, None
    record: dict[str, Any] = {
        "target": target, "draws": drawn, "reached": False, "rounds": 0,
        "first_pass": {"se": fit.se, "llc": fit.llc, "draws": drawn},
        "earlier_runs": {"seconds": 0.0, "cpu_seconds": 0.0, "num_grads": 0},
    }
    earlier = record["earlier_runs"]
    while record["rounds"] < PRECISION_ROUNDS and drawn < cfg.max_draws and fit.se > target * abs(fit.llc):
        want = math.ceil(drawn * (fit.se / (target * abs(fit.llc))) ** 2 * 1.2) if fit.llc else cfg.max_draws
        draws = min(max(want, drawn + 1), cfg.max_draws)
        longer = run_estimates(pot, groups, cfg.replace(num_draws=draws), n, progress)
        ok = all(r.ok for r in longer)  # (a longer run that flags what the shorter did not: keep the shorter)
        dropped = rungs if ok else longer  # its cost is the record's (the rungs run as one batch: one clock)
        earlier["seconds"] += dropped[0].seconds
        earlier["cpu_seconds"] += dropped[0].cpu_seconds
        earlier["num_grads"] += max(r.num_grads for r in dropped)
        if not ok:  # said in the summary and a warning: the kept run's own diagnostics were clean
            record["flagged"] = {"draws": draws, "flags": [  # (num_draws was set here, not by the user)
                f"rung {m:g} x nbeta: " + f.replace(" (raise num_draws or unset it)", "")
                for r, m in zip(longer, cfg.ladder, strict=True) for f in r.flags]}
            break
        rungs, fit, drawn = longer, _fit_rungs(longer, cfg), draws
        record["rounds"] += 1
        record["draws"] = draws
    record["reached"] = bool(fit.se <= target * abs(fit.llc))
    return rungs, fit, record


def _warn_notes(labelled: list[tuple[str, LLCResult]]) -> None:
    """One warning for the estimates whose rejected proposals reached below every kept draw, and one for
    those whose w* has a notable gradient (notes, not flags: the number is right for the region the chains
    sampled, and says what it is)."""
    for key, note, due in (("lower_region", lower_region_note, bool),
                           ("gradient_term", gradient_term_note, gradient_note_due)):
        found = [(label, r) for label, r in labelled if due(r.config.get(key))]
        if found:
            warnings.warn(
                "; ".join(f"LLC estimate {r.llc:.4g}{' (' + label + ')' if label else ''}: "
                          + note(r.config[key]) for label, r in found),
                RuntimeWarning,
                stacklevel=3,
            )


#: Longer runs of a ladder at most, for the asymptotic fit's precision (:func:`_ladder_to_precision`).
PRECISION_ROUNDS = 3

#: Re-runs of an SGLD estimate whose step search settled on a step the final bias check finds too large.
STEP_RETRIES = 2


def run_estimates(
    pot: Any, groups: list[Group], cfg: LLCConfig, n: int, progress: bool | None
) -> list[LLCResult]:
    r"""The estimates of ``groups``, one batched run, as single estimates, ladder rungs and the checkpoints
    of a series all get them: :func:`~slt_tms.estimators.engine.run_groups`, then the redo of estimates that
    a reused ``calibration`` left flagged (:func:`~slt_tms.estimators.engine.rerun_flagged`) and of SGLD
    estimates whose searched step the final check finds too large (:func:`_retry_biased_steps`). No
    warnings: the caller warns (:func:`~slt_tms.estimators.engine.announce`).

    Parameters
    ----------
    pot : Potential
        The potential every group's chains sample (their anchors in the groups).
    groups : list of Group
        One per estimate.
    cfg : LLCConfig
    n : int
        Rows of the data (for :math:`n\beta` and the records).
    progress : bool, optional
        Show progress bars (None: the package default).

    Returns
    -------
    list of LLCResult
        One per group, in order.
    """
    results = run_groups(pot, groups, cfg, n=n, progress=progress, warn=False)
    results = rerun_flagged(pot, groups, results, cfg, n=n, progress=progress)
    return _retry_biased_steps(pot, groups, results, cfg, n=n, progress=progress)


def _retry_biased_steps(
    pot: Any, groups: list[Group], results: list[LLCResult], cfg: LLCConfig, *, n: int, progress: bool | None
) -> list[LLCResult]:
    r"""For SGLD with a searched step (``step_size`` not set, the bias check on), run again each estimate
    whose final coupled check finds the correction too large to extrapolate (over 15% of the estimate),
    at its step times :math:`\mathrm{clip}(r^*/r, 1/8, 1/2)` (``r`` the measured correction, :math:`r^*` =
    :data:`~slt_tms.estimators.sgld_bias.STEP_TARGET`), at most :data:`STEP_RETRIES` times.

    The search's short rounds start near :math:`w^*` and can miss a bias that only appears once the
    chains have spread (a ReLU network under localization 1: 5% in the search, 65% at equilibrium); the
    final check, taken after the draws, sees it. Earlier attempts are kept in ``config["step_retry"]``
    and their cost is added to the result's. No warnings: the caller warns.

    Parameters
    ----------
    pot, groups, cfg, n, progress
        What :func:`~slt_tms.estimators.engine.run_groups` was given.
    results : list of LLCResult
        Its results, one per group (not modified).

    Returns
    -------
    list of LLCResult
        The same results, each retried one replaced by its last run.
    """
    results = list(results)
    if cfg.step_size is not None or not cfg.bias_check:
        return results
    for i, g in enumerate(groups):
        tried: list[dict[str, Any]] = []
        res = searched = results[i]
        while len(tried) < STEP_RETRIES and res.sampler == "sgld" and res.bias_check is not None:
            b = res.bias_check
            r = b.get("relative_correction", math.nan)
            # bias_flag is None where the extrapolation is reliable or the bias is below the estimate's SE
            if not math.isfinite(r) or bias_flag(b, res.se) is None:
                break
            step = float(res.config["step_size_mean"])
            tried.append({"step_size": step, "relative_correction": r, "llc": res.llc, "se": res.se,
                          "seconds": res.seconds, "cpu_seconds": res.cpu_seconds, "num_grads": res.num_grads})
            new = step * min(max(STEP_TARGET / r, 1 / 8), 1 / 2)
            res = run_groups(pot, [g], cfg.replace(step_size=new), n=n, progress=progress, warn=False)[0]
        if tried:
            res = dataclasses.replace(
                res,
                config={**res.config, "step_size": None, "step_retry": tried,
                        "step_search": searched.config.get("step_search")},
                seconds=res.seconds + sum(t["seconds"] for t in tried),
                cpu_seconds=res.cpu_seconds + sum(t["cpu_seconds"] for t in tried),
                num_grads=res.num_grads + sum(t["num_grads"] for t in tried),
            )
            results[i] = res
    return results


def fit_asymptotic(
    nbeta: Sequence[float],
    estimates: Sequence[float],
    errors: Sequence[float],
    converged: Sequence[bool] | None = None,
    *,
    multiplicity: int = 1,
    exponent: float = 1.0,
) -> AsymptoticFit:
    r"""Weighted least-squares extrapolation of finite-temperature estimates to :math:`n\beta \to \infty`.

    With :math:`s = n\beta` and :math:`Z(s) \propto s^{-\lambda}(\log s)^{m-1}(1 + \dots)` the estimand is
    :math:`\lambda_s = -\,d\log Z/d\log s`, so

    .. math::

        \lambda_s = \lambda + a\,s^{-p} \quad (m = 1), \qquad
        \lambda_s = \lambda - \frac{m - 1}{\log s} + \frac{a}{(\log s)^2} \quad (m > 1).

    :math:`p = 1` (the default) holds at regular and minimally singular minima (the TMS polygons); at
    other singularities :math:`p` is the gap to the next pole of the zeta function (e.g. 1/4 for
    :math:`K = w_1^2 w_2^4`). :math:`\lambda` and :math:`a` are fitted with weights :math:`1/\mathrm{se}_i^2`;
    the standard errors are those of the weighted fit, inflated by :math:`\sqrt{\chi^2/(k-2)}` when the
    residuals exceed their errors (:math:`k` rungs).

    Examples
    --------
    >>> fit = fit_asymptotic([1000, 2000, 4000], [7.7, 7.35, 7.175], [0.05, 0.05, 0.05])
    >>> round(fit.llc, 3), round(fit.slope, 1)
    (7.0, 700.0)
    """
    s = np.asarray(nbeta, dtype=float)
    y = np.asarray(estimates, dtype=float)
    se = np.asarray(errors, dtype=float)
    if len(s) < 2 or not (np.all(np.isfinite(y)) and np.all(se > 0) and np.all(s > 1)):
        raise ValueError(
            "the asymptotic fit needs two or more finite estimates with positive errors at nbeta > 1"
        )
    if multiplicity > 1:
        y = y + (multiplicity - 1) / np.log(s)
        x = 1.0 / np.log(s) ** 2
    else:
        x = s ** (-float(exponent))
    wts = 1.0 / se**2
    X = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(X.T @ (X * wts[:, None]))
    beta = cov @ (X.T @ (wts * y))
    chi2 = float(np.sum(wts * (y - X @ beta) ** 2))
    dof = len(x) - 2
    if dof > 0 and chi2 > dof:
        cov = cov * (chi2 / dof)
    conv = tuple(bool(c) for c in (converged if converged is not None else [True] * len(x)))
    if dof > 0:
        from scipy.special import gammaincc  # lazily: keeps the CLI's import light

        pvalue = float(gammaincc(dof / 2.0, chi2 / 2.0))  # the chi-square survival function
    else:
        pvalue = math.nan
    return AsymptoticFit(
        float(beta[0]),
        float(math.sqrt(cov[0, 0])),
        float(beta[1]),
        chi2,
        tuple(float(v) for v in nbeta),
        tuple(float(v) for v in estimates),
        tuple(float(v) for v in se),
        conv,
        pvalue,
    )
