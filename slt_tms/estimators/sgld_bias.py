r"""The minibatch side of the estimator: block means of noisy traces, SGLD's step-size bias, measured by
coupled chains, and its Richardson-Romberg extrapolation to step zero.

SGLD never rejects a move, so the law its chains sample at step :math:`\epsilon` is not the target, and
the estimate :math:`\hat\lambda(\epsilon)` carries a bias :math:`b(\epsilon)` that vanishes with the step.
For a bias of first order, :math:`b(\epsilon) = c\,\epsilon + O(\epsilon^2)`, the coupled difference

.. math::

    D = \hat\lambda(\epsilon) - \hat\lambda(\epsilon/2) \approx c\,\epsilon/2

gives the Richardson-Romberg extrapolation (Durmus, Simsekli, Moulines, Badeau and Richard 2016,
"Stochastic Gradient Richardson-Romberg Markov Chain Monte Carlo")

.. math::

    \hat\lambda_{RR} = 2\,\hat\lambda(\epsilon/2) - \hat\lambda(\epsilon)
                     = \hat\lambda(\epsilon) - 2D, \qquad
    \mathrm{SE}_{RR} = \sqrt{\mathrm{SE}^2 + 4\,\mathrm{SE}_D^2},

whose bias is :math:`O(\epsilon^2)`. It is reliable only while the first-order term dominates: measured
(docs, Estimators) it stays within 0.4% of the exact answer where :math:`2|D|` is at most about 12% of
the estimate and drifts by 3-20% beyond about 20%. :func:`extrapolate` therefore marks it reliable only
where :math:`2|D| \le` :data:`EXTRAPOLATION_LIMIT` :math:`\times |\hat\lambda(\epsilon)|`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._rng import spawn_seeds
from slt_tms.estimators.config import LLCConfig
from slt_tms.samplers import BatchSupply, CenterLoss, ChainStreams, Draws, Tempered, run_chains
from slt_tms.samplers import diagnostics as diag

__all__ = ["CURVATURE_ITERS", "EXTRAPOLATION_LIMIT", "MAX_RAISE", "NOISY_BLOCK", "STEP_TARGET",
           "TRUSTED_READING", "bias_flag", "block_means", "coupled_bias_check", "extrapolate",
           "top_curvature", "tune_step"]

#: Draws per block mean when the trace comes from minibatches (SGLD on minibatches or a DataLoader).
NOISY_BLOCK = 20

#: The extrapolation to step zero is marked reliable where its correction 2|D| is at most this fraction of
#: the estimate (measured: within 0.4% of the exact answer at 11-12%, 3-4% off at 19-24%).
EXTRAPOLATION_LIMIT = 0.15

#: Power iterations of :func:`top_curvature` (two gradients each).
CURVATURE_ITERS = 12

#: :func:`tune_step` raises a step by at most this factor per round.
MAX_RAISE = 16.0

#: :func:`tune_step` lowers a step once, without measuring it again, where the correction read is too large
#: by at most this factor (the bias falls at least linearly with the step).
TRUSTED_READING = 4.0

#: :func:`tune_step` aims the step at a Richardson correction 2|D| of this fraction of the estimate: a
#: third of :data:`EXTRAPOLATION_LIMIT`, well inside the range where the bias is linear in the step.
STEP_TARGET = 0.05


def block_means(x: np.ndarray, m: int = NOISY_BLOCK) -> np.ndarray:
    r"""Means of consecutive blocks of ``m`` draws per chain (the first ``draws mod m`` draws dropped).

    A minibatch trace is :math:`n\beta(L_B(w_t) - L_B(w^*))`: the slowly moving
    :math:`n\beta(L_n(w_t) - L_n(w^*))` plus minibatch noise that is independent from step to step. That
    noise inflates the variance *and* makes the autocorrelation look short, so the ESS of the raw trace
    counts noise as information and R-hat / the Monte-Carlo error can pass while the chains have not
    mixed. Block means average the noise out (by :math:`\sqrt m`) and keep the slow part, so R-hat, ESS
    and the standard error of a minibatch estimate are computed on them (ESS then counts independent
    blocks, a conservative unit).

    Examples
    --------
    >>> block_means(np.arange(160.0).reshape(2, 80)).shape
    (2, 4)
    """
    draws = x.shape[1]
    if draws < 4 * m:
        return x
    k = draws // m
    return x[:, draws - k * m :].reshape(x.shape[0], k, m).mean(-1)


def coupled_bias_check(
    kernel: Any,
    target: Tempered,
    state: Any,
    eps: Tensor,
    metric: Tensor | None,
    batches: BatchSupply,
    cfg: LLCConfig,
    seed: int,
    draws: int,
    anchor_loss: float,
    nbeta: float,
    num_rows: int | None,
    *,
    ess: float = math.nan,
    bar: Any = None,
    center_loss: CenterLoss | None = None,
) -> tuple[dict[str, Any], np.ndarray, Any]:
    r"""The SGLD step's bias, measured by a coupled pair of chains at the step and at half the step.

    From the final ``state`` of a run (step sizes ``eps`` per chain, ``metric``), a coarse chain (SGLD at
    :math:`\epsilon`) and a fine chain (two SGLD steps at :math:`\epsilon/2`) move together: per coarse
    step the fine chain takes its two steps on minibatches :math:`B_1, B_2` with noises
    :math:`\xi_1, \xi_2`, and the coarse chain takes one step on :math:`B_1` with noise
    :math:`(\xi_1 + \xi_2)/\sqrt2` (the same Brownian increment; synchronous coupling, as in the multilevel
    Monte Carlo of Giles et al. 2016). Both chains record :math:`L_{B_1}` at the start of the coarse step,
    so the difference :math:`D_t = n\beta\,(L_{B_1}(x_t) - L_{B_1}(y_t))` keeps almost none of the Langevin
    or minibatch noise, and its mean estimates :math:`\mathrm{bias}(\epsilon) - \mathrm{bias}(\epsilon/2)`
    with a far smaller standard error than two independent runs would give (measured: docs, Estimators).
    A bias of order :math:`\epsilon^p` (:math:`p \ge 1`) is between this difference and twice it.
    Fresh streams derived from ``seed``; ``max(num_burnin // 2, 50)`` coupled steps are discarded, or
    where the run's ``ess`` (over its ``C`` chains and ``draws`` draws each) is given, two of its
    autocorrelation times, :math:`2 C \cdot draws / ESS`, if that is less (at least 50), and
    ``max(draws // 4, 200)`` are kept (three gradients each, recorded as ``gradients``). The fine chain
    starts at the coarse chain's point, and :math:`D_t` rises from 0 to its stationary value within about
    one autocorrelation time (measured on the 94k-parameter MLP: 25-50 steps where it is 51). ``bar`` (a
    progress bar, optional) grows by the coupled steps and advances with them.

    The coarse chain continues the run's chains from ``state`` at the same step (its noise
    :math:`(\xi_1 + \xi_2)/\sqrt2` is a fresh standard normal, its batch :math:`B_1` a fresh minibatch),
    so all its ``burn + keep`` steps are further draws of the run, returned for the caller to pool
    with the run's draws: the check's coarse gradients then buy draws instead of being spent on the
    comparison alone.

    Returns
    -------
    dict
        ``method`` ("coupled"), ``llc_half_step`` and ``se_half_step`` (the fine chain's estimate),
        ``difference`` and ``se_difference`` (:math:`D`), ``half_step_draws``, ``coupled_steps``,
        ``fine_burn_in`` (the discarded coupled steps), ``continued_draws`` (the coarse chain's draws per
        chain, burn-in included) and ``gradients``
        (gradient evaluations per chain the check spent).
    numpy.ndarray
        ``(C, burn + keep)``: the coarse chain's loss per step in the units of the run's trace,
        :math:`L_{B_1}(x_t) - L_{B_1}(w^*) + L_n(w^*)` on minibatches (``anchor_loss`` is
        :math:`L_n(w^*)`), :math:`L_n(x_t)` on the full batch.
    state
        The coarse chain's final kernel state (to continue the run from).
    """
    C, d = state.w.shape
    streams = ChainStreams(
        spawn_seeds(spawn_seeds(seed, 2)[1], C),
        d,
        state.w.dtype,
        state.w.device,
        num_rows=num_rows,
        batch_size=batches.batch_size,
    )
    burn, keep = max(cfg.num_burnin // 2, 50), max(draws // 4, 200)
    if math.isfinite(ess) and ess > 0:  # two autocorrelation times of the run's trace, C draws / ESS each
        burn = min(burn, max(math.ceil(2 * C * draws / ess), 50))
    anchor = torch.full((C,), anchor_loss, dtype=torch.float64, device=state.w.device)
    loss_c, loss_f, loss_0, coarse = _coupled(
        kernel, target, state.w, eps, metric, batches, streams, burn, keep, anchor, bar, center_loss, state
    )
    with np.errstate(invalid="ignore", over="ignore"):
        continued = loss_c - loss_0 + anchor_loss
    out: dict[str, Any] = {"method": "coupled", "half_step_draws": 2 * keep, "coupled_steps": keep,
                           "fine_burn_in": burn, "continued_draws": burn + keep,
                           "gradients": 3 * (burn + keep)}
    lc, lf, l0 = loss_c[:, burn:], loss_f[:, burn:], loss_0[:, burn:]
    ok = np.all(np.isfinite(lc) & np.isfinite(lf), axis=1)
    if not ok.any():
        nan = math.nan
        return {**out, "llc_half_step": nan, "se_half_step": nan, "difference": nan,
                "se_difference": nan}, continued, coarse
    diff = nbeta * (lc[ok] - lf[ok])
    fine_llc = nbeta * (lf[ok] - l0[ok])
    blocks = (lambda x: x) if batches.exact else block_means
    return {
        **out,
        "llc_half_step": float(np.mean(fine_llc)),
        "se_half_step": diag.mcse_mean(blocks(fine_llc)),
        "difference": float(np.mean(diff)),
        "se_difference": diag.mcse_mean(blocks(diff)),
    }, continued, coarse


def top_curvature(
    target: Tempered, w: Tensor, batches: BatchSupply, streams: ChainStreams, *, iters: int = CURVATURE_ITERS
) -> Tensor:
    r"""The largest curvature :math:`a_{\max}` of each chain's potential :math:`U_B` near ``w (C, d)``: power
    iteration on Hessian-vector products by central differences of the (minibatch) gradient,

    .. math::

        H v \approx \frac{\nabla U_B(w + h v) - \nabla U_B(w - h v)}{2h}, \qquad
        h = \frac{0.1}{\sqrt{n\beta + \gamma}},

    from a random unit vector, ``iters`` iterations, one batch per iteration (both differences on it),
    two gradients each; the estimate is :math:`\lVert H v\rVert` of the last unit vector. Langevin steps are
    stable below :math:`4/a_{\max}`; the SGLD step search starts at :math:`1/a_{\max}` where the warmup's
    step is smaller (:func:`tune_step`). ``streams`` is advanced by ``iters + 1`` draws.

    Examples
    --------
    >>> from slt_tms.samplers import BatchSupply, ChainStreams, Tempered
    >>> target = Tempered.gaussian(3, nbeta=10.0, localization=1.0)   # U = (10 + 1) |w|^2 / 2
    >>> streams = ChainStreams([1, 2], 3, torch.float64, torch.device("cpu"))
    >>> a = top_curvature(target, torch.zeros(2, 3, dtype=torch.float64), BatchSupply(None), streams)
    >>> [round(float(x), 6) for x in a]
    [11.0, 11.0]
    """
    C = w.shape[0]
    nb = (
        target.nbeta.to(w)
        if isinstance(target.nbeta, Tensor)
        else torch.full((C,), float(target.nbeta), dtype=w.dtype, device=w.device)
    )
    h = (0.1 / (nb + float(target.localization)).clamp_min(1e-12).sqrt()).unsqueeze(1)
    v = streams.next().normal.clone()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    a = torch.zeros(C, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        for _ in range(iters):
            b = batches(streams.next())
            hv = (target.evaluate(w + h * v, b).grad - target.evaluate(w - h * v, b).grad) / (2 * h)
            a = hv.norm(dim=1)
            ok = torch.isfinite(a) & (a > 0)
            v = torch.where(ok.unsqueeze(1), hv / a.clamp_min(1e-30).unsqueeze(1), v)
    return torch.where(torch.isfinite(a), a, torch.full_like(a, math.inf))


def tune_step(
    kernel: Any,
    target: Tempered,
    w: Tensor,
    eps: Tensor,
    metric: Tensor | None,
    batches: BatchSupply,
    streams: ChainStreams,
    groups: list[slice],
    anchor: Tensor,
    *,
    rounds: int = 8,
    burn: int = 50,
    keep: int = 150,
    bar: Any = None,
    center_loss: CenterLoss | None = None,
) -> tuple[Tensor, Tensor, int, list[list[dict[str, Any]]]]:
    r"""The SGLD step of each estimate, set by the bias it causes: coupled rounds until the Richardson
    correction :math:`2|D|` is close to :data:`STEP_TARGET` of the estimate.

    The acceptance a Metropolis test would give an SGLD move measures the discretisation error of the
    whole :math:`d`-dimensional law (and, on minibatches, of each batch's potential); it falls with the
    dimension and with the batch noise, and steps tuned to it stall large models (94 218 parameters,
    32-row batches: a step of :math:`2.5\times10^{-6}`, ESS 7 after 20 000 draws). The estimate needs only
    the bias of one number, :math:`n\beta\,\mathbb E[L - L^*]`, which the coupled pair of
    :func:`coupled_bias_check` measures directly. Per round (``burn`` + ``keep`` coupled steps, three
    gradients each) every estimate's step is scaled by :math:`\mathrm{clip}(r^*/r, 1/4, 16)`
    (:data:`MAX_RAISE`) with :math:`r = 2|D|/\hat\lambda_{\epsilon/2}` and :math:`r^*` = :data:`STEP_TARGET`
    (the bias is close to linear in the step there), one step for all of an estimate's chains (their median),
    until the factor is within :math:`[2/3, 3/2]` (the estimate's step is then settled). Once a step too large
    and one too small have been measured, the next is their geometric mean (:math:`r` is noisy where chains
    wander between basins). Out of rounds, an estimate keeps the largest step measured with :math:`r < r^*`
    and its chains take ``burn`` more steps at it. A reading of :math:`r` too large by a factor of at most
    :data:`TRUSTED_READING` (:math:`1.5\,r^* < r \le 4 r^*`; the first readings on the MLP above were
    0.13-0.15 from :math:`1/a_{\max}`), before any step was measured too small, is trusted: the bias falls
    at least linearly with the step, so the step is lowered by the factor and not measured again
    (:func:`coupled_bias_check` measures it after the draws), and the chains take ``burn`` steps at it.
    A chain below :math:`L(w^*)` on average, or one whose coarse chain left the finite numbers (it restarts
    from its last point), counts as a step too large. While the chains' :math:`\hat\lambda` still grows
    within a round (they have not spread to where the bias acts, e.g. under a weak localization) the step
    is not raised.

    Parameters
    ----------
    kernel, target, w, eps, metric, batches, streams
        The SGLD kernel, the (batched) tempered target, the chains' points ``(C, d)``, step sizes
        ``(C,)``, the preconditioner (or None), the batch supply and the chains' random streams (advanced).
    groups : list of slice
        The chains of each estimate (their rows of ``w``).
    anchor : Tensor
        :math:`L(w^*)` per chain ``(C,)`` (the full-batch control variate).
    rounds, burn, keep : int
        At most ``rounds`` rounds of ``burn`` discarded and ``keep`` measured coupled steps.
    bar : progress bar, optional
        Grows by each round's coupled steps and advances with them.

    Returns
    -------
    w, eps : Tensor
        The coarse chains' last points and the tuned step sizes.
    gradients : int
        Gradient evaluations per chain spent.
    history : list of list of dict
        Per estimate, per round: ``step_size``, ``relative_correction`` (None where not finite),
        ``factor`` and ``drifting``.
    """
    eps = eps.clone()
    for rows in groups:
        eps[rows] = eps[rows].median()
    nb = target.nbeta if isinstance(target.nbeta, Tensor) else torch.full_like(eps, float(target.nbeta))
    nb_np = nb.detach().double().cpu().numpy()[:, None]
    history: list[list[dict[str, Any]]] = [[] for _ in groups]
    lo: list[float | None] = [None] * len(groups)  # largest step measured with a small enough bias
    hi: list[float | None] = [None] * len(groups)  # smallest step measured with too large a bias
    settled = [False] * len(groups)
    lowered = [False] * len(groups)  # settled at a step lowered from a measured one (not measured itself)
    grads = 0
    for _ in range(rounds):
        lc, lf, l0, coarse = _coupled(
            kernel, target, w, eps, metric, batches, streams, burn, keep, anchor, bar, center_loss
        )
        w_new = coarse.w
        grads += 3 * (burn + keep)
        finite = torch.isfinite(w_new).all(dim=1)
        w = torch.where(finite.unsqueeze(1), w_new, w)
        for gi, rows in enumerate(groups):
            if settled[gi]:
                continue
            step = float(eps[rows][0])
            ok = bool(finite[rows].all()) and bool(np.isfinite(lc[rows]).all() & np.isfinite(lf[rows]).all())
            r, drifting = math.inf, False
            if ok:
                diff = float(np.mean(nb_np[rows] * (lc[rows] - lf[rows])))
                lam_c = nb_np[rows] * (lf[rows] - l0[rows])
                lam = float(np.mean(lam_c))
                r = 2 * abs(diff) / lam if lam > 0 else math.inf  # chains below L(w*): too large
                drifting = _drifting(lam_c)
            factor = min(max(STEP_TARGET / r, 0.25), MAX_RAISE) if r > 0 else MAX_RAISE
            history[gi].append({"step_size": step, "factor": factor, "drifting": drifting,
                                "relative_correction": r if math.isfinite(r) else None})
            if drifting and factor > 2 / 3:  # the chains still spread: this r is not the step's yet
                continue
            if 2 / 3 <= factor <= 1.5:
                settled[gi] = True
                continue
            if lo[gi] is None and not drifting and r <= TRUSTED_READING * STEP_TARGET and factor < 1:
                # a correction too large, by a factor of at most 4: the bias falls at least
                # linearly with the step (minibatch noise: first order; the integrator: second), so the
                # lowered step's correction is at most the target, and the final check measures it
                eps[rows] = step * factor
                settled[gi] = lowered[gi] = True
                continue
            if factor > 1:
                lo[gi] = step if lo[gi] is None else max(lo[gi], step)
            else:
                hi[gi] = step if hi[gi] is None else min(hi[gi], step)
            new = step * factor
            if lo[gi] is not None and hi[gi] is not None:  # bracketed: bisect in log scale
                new = math.sqrt(lo[gi] * hi[gi])
            eps[rows] = new
        if all(settled):
            break
    for gi, rows in enumerate(groups):  # out of rounds: the largest step measured small enough
        if not settled[gi] and lo[gi] is not None:
            eps[rows] = lo[gi]
    if not all(settled) or any(lowered):  # the chains move on at their final steps before the draws
        quiet = dataclasses.replace(kernel, diagnose=False)
        if bar is not None:
            bar.total += burn
        moved = run_chains(quiet, target, quiet.init(w, target, None), num_steps=burn, streams=streams,
                           batches=batches, step_size=eps, metric=metric, record=(), bar=bar)
        grads += moved.num_grads
        w = torch.where(torch.isfinite(moved.state.w).all(dim=1).unsqueeze(1), moved.state.w, w)
    return w, eps, grads, history


def _drifting(lam: np.ndarray) -> bool:
    r"""Whether the chains' :math:`\hat\lambda` draws ``(C, keep)`` still grow within the round: the
    second half's mean above the first's by more than 3 standard errors (over chains) and by more than
    10%. The bias measured then is not yet the step's (the chains have not spread to where it acts)."""
    h = lam.shape[1] // 2
    if lam.shape[0] < 2 or h < 2:
        return False
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging chain's huge draws: no verdict (NaN)
        first, second = lam[:, :h].mean(axis=1), lam[:, h:].mean(axis=1)
        d = second - first
        se = float(np.std(d, ddof=1)) / math.sqrt(len(d))
        return bool(d.mean() > 3 * se and d.mean() > 0.1 * max(float(second.mean()), 1e-12))


def _coupled(
    kernel: Any,
    target: Tempered,
    w: Tensor,
    eps: Tensor,
    metric: Tensor | None,
    batches: BatchSupply,
    streams: ChainStreams,
    burn: int,
    keep: int,
    anchor: Tensor,
    bar: Any = None,
    center_loss: CenterLoss | None = None,
    start: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """Coupled coarse (step ``eps``) and fine (two steps of ``eps / 2``) chains from ``w``: the losses of
    both at the start of each coarse step on its first batch, the control variate :math:`L_{B_1}(w^*)`
    (``anchor`` on the full batch; on minibatches from ``center_loss``, default one built for the
    steps), each ``(C, keep)``, and the coarse chain's last point. ``start`` (a kernel state at ``w``,
    optional) is the coarse chain's state, which it then continues (the Leimkuhler-Matthews integrator's
    last noise draw included), and the losses cover the ``burn`` steps too, ``(C, burn + keep)`` (the
    coarse chain's are draws of a chain in equilibrium; the fine chain's first ``burn`` are not). ``bar``
    (if given) grows by the ``burn + keep`` coupled steps and advances by one per step. The last item is
    the coarse chain's final kernel state."""
    C = w.shape[0]
    steps = burn + keep
    first = 0 if start is not None else burn  # the first step recorded
    if bar is not None:
        bar.total += steps
    quiet = dataclasses.replace(kernel, diagnose=False)  # the MALA diagnostic is not needed here
    coarse = quiet.init(w, target, None) if start is None else start
    fine = quiet.init(w, target, None)
    half = eps / 2
    loss_c = torch.empty(C, steps - first, dtype=torch.float64, device=w.device)
    loss_f = torch.empty_like(loss_c)
    loss_0 = anchor.to(loss_c).unsqueeze(1).expand(C, steps - first).clone()
    if not batches.exact and steps > first and center_loss is None:
        center_loss = CenterLoss(target, batches, C, steps - first)
    with torch.no_grad():
        for t in range(steps):
            d1, d2 = streams.next(), streams.next()
            b1, b2 = batches(d1), batches(d2)
            fine, info_f = quiet.step(fine, target, half, b1, d1, metric, same_batch=batches.exact)
            fine, _ = quiet.step(fine, target, half, b2, d2, metric, same_batch=batches.exact)
            shared = Draws((d1.normal + d2.normal) / math.sqrt(2.0), d1.uniform, d1.index)
            coarse, info_c = quiet.step(coarse, target, eps, b1, shared, metric, same_batch=batches.exact)
            if t >= first:
                loss_c[:, t - first] = info_c.loss
                loss_f[:, t - first] = info_f.loss
                if not batches.exact:
                    assert center_loss is not None
                    loss_0[:, t - first] = center_loss(b1, d1)
            if bar is not None:
                bar.update(1)
    return loss_c.cpu().numpy(), loss_f.cpu().numpy(), loss_0.cpu().numpy(), coarse


def extrapolate(bias: dict[str, Any], llc: float, se: float) -> dict[str, Any]:
    r"""The Richardson-Romberg extrapolation of an SGLD estimate to step zero (module docstring).

    Parameters
    ----------
    bias : dict
        A :func:`coupled_bias_check` result (``difference`` :math:`D`, ``se_difference``).
    llc, se : float
        The run's estimate :math:`\hat\lambda(\epsilon)` and its standard error.

    Returns
    -------
    dict
        ``llc_extrapolated`` :math:`= \hat\lambda(\epsilon) - 2D`, ``se_extrapolated``
        :math:`= \sqrt{\mathrm{SE}^2 + 4\mathrm{SE}_D^2}`, ``relative_correction``
        :math:`= 2|D| / |\hat\lambda(\epsilon)|` and ``extrapolation_reliable`` (the correction at most
        :data:`EXTRAPOLATION_LIMIT` of the estimate, where the bias is still close to linear in the step),
        and that limit as ``extrapolation_limit``.

    Examples
    --------
    >>> out = extrapolate({"difference": 16.0, "se_difference": 0.25}, 289.0, 0.45)
    >>> round(out["llc_extrapolated"], 1), round(out["se_extrapolated"], 2), out["extrapolation_reliable"]
    (257.0, 0.67, True)
    """
    diff, sd = float(bias["difference"]), float(bias["se_difference"])
    if not (math.isfinite(diff) and math.isfinite(llc)):
        return {"llc_extrapolated": math.nan, "se_extrapolated": math.nan, "relative_correction": math.nan,
                "extrapolation_reliable": False, "extrapolation_limit": EXTRAPOLATION_LIMIT}
    rel = 2 * abs(diff) / abs(llc) if llc != 0 else math.inf
    return {
        "llc_extrapolated": llc - 2 * diff,
        "se_extrapolated": math.hypot(se, 2 * sd),
        "relative_correction": rel,
        "extrapolation_reliable": bool(rel <= EXTRAPOLATION_LIMIT),
        "extrapolation_limit": EXTRAPOLATION_LIMIT,
    }


def bias_flag(bias: dict[str, Any] | None, se: float) -> str | None:
    r"""The flag of a measured SGLD bias, or None: raised when the coupled difference is significant (above
    3 of its standard errors) and the bias it implies (up to twice the difference) exceeds the estimate's
    standard error ``se``, so it matters at the precision the estimate reports; never when the estimate is
    the reliable extrapolation to step zero (``bias`` updated by :func:`extrapolate`), whose first-order
    bias is removed."""
    if bias is None or not math.isfinite(bias["difference"]) or bias.get("extrapolation_reliable"):
        return None
    d = abs(bias["difference"])
    if not (d > 3 * bias["se_difference"] and 2 * d > se):
        return None
    text = (
        f"SGLD discretisation bias: a coupled chain at half the step differs by {bias['difference']:.3g} "
        f"+/- {bias['se_difference']:.2g}, a bias of about {d:.3g}-{2 * d:.3g} against a standard error of "
        f"{se:.2g}; "
    )
    if "relative_correction" in bias:
        text += (
            f"too large to extrapolate (twice the difference is {bias['relative_correction']:.0%} of the "
            f"estimate, reliable up to {EXTRAPOLATION_LIMIT:.0%}); "
        )
    return text + "use a smaller step_size, a larger batch_size, or full batch"
