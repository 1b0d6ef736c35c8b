r"""Posterior sampling of the TMS at one sample size, or over a ladder of sample sizes with replica exchange.

Target (prior :math:`\varphi = N(0, I)`, the TMS paper's convention):
:math:`p(w \mid D_n) \propto \varphi(w)\, e^{-n L_n(w)}`, i.e. the potential
:math:`U(w) = n L_n(w) + \tfrac12\lVert w\rVert^2` (:func:`slt_tms.tms.losses.posterior_potential`),
sampled with the package's HMC kernel (:mod:`slt_tms.samplers`; per-chain dual averaging and diagonal
metric in the warmup). :math:`n L_n` is evaluated exactly with the one-hot prefix sums of
:class:`slt_tms.tms.losses.OneHotSums` (:math:`O(c^2 \log n)` per chain, independent of :math:`n`).

Over a ladder :math:`n_1 < \dots < n_G` (:func:`sample_posterior_ladder`), each of ``num_chains``
replica sets :math:`k` draws ONE dataset of :math:`n_G` rows; the chain at rung :math:`g` targets the
posterior on its first :math:`n_g` rows (nested datasets), and after every transition neighbouring rungs
propose to exchange their states (:mod:`slt_tms.samplers.exchange`), accepted with probability

.. math::

    \min\Bigl(1, \exp\bigl(T(w_{g+1}) - T(w_g)\bigr)\Bigr),\qquad
    T(w) = \sum_{n_g < s \le n_{g+1}} \lVert x_s - f(x_s; w)\rVert^2 ,

(the prior and the first :math:`n_g` terms cancel). Every rung is a valid chain for its own posterior;
swaps carry states found at small :math:`n` (mixing across phases) to large :math:`n`, where independent
chains stay in the basin they meet first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._progress import progress_bar
from slt_tms._rng import spawn_seeds
from slt_tms.analysis.free_energy import check_n_values
from slt_tms.potentials import FunctionalPotential
from slt_tms.samplers import HMC, Tempered, exchange, sample, swap_rungs
from slt_tms.samplers.diagnostics import inference_data, summary_stats, within_chain_rhat
from slt_tms.tms import OneHotSums, OneHotUniform, num_params, unpack, validate_shape
from slt_tms.validation import check_float, check_int, check_seed

__all__ = [
    "HMCConfig",
    "LadderSamples",
    "PosteriorSamples",
    "ladder_datasets",
    "population_swap_log_ratio",
    "population_target",
    "sample_posterior",
    "sample_posterior_ladder",
    "sample_size_ladder",
    "swap_log_ratio",
]


@dataclass(frozen=True)
class HMCConfig:
    r"""Settings of the posterior HMC (kernel and warmup).

    Parameters
    ----------
    step_size : float
        Initial leapfrog step size :math:`\varepsilon_0` (adapted during warmup if ``adapt_step_size``).
    num_leapfrog : int
        Leapfrog steps per transition.
    jitter : float
        Relative jitter of the step size (hence of the trajectory length), per chain and transition.
    target_accept : float
        Dual-averaging target of the mean acceptance probability.
    adapt_step_size, adapt_mass : bool
        Tune the step size / a diagonal metric per chain during warmup.
    max_energy_error : float
        Energy error beyond which a transition is a divergence.
    """

    step_size: float = 0.1
    num_leapfrog: int = 16
    jitter: float = 0.2
    target_accept: float = 0.8
    adapt_step_size: bool = True
    adapt_mass: bool = True
    max_energy_error: float = 1000.0

    def __post_init__(self) -> None:
        check_float("step_size", self.step_size, positive=True)
        HMC(self.num_leapfrog, self.jitter, self.max_energy_error)  # validates
        if not 0.0 < check_float("target_accept", self.target_accept) < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")

    def kernel(self) -> HMC:
        """The :class:`~slt_tms.samplers.hmc.HMC` kernel of these settings."""
        return HMC(self.num_leapfrog, self.jitter, self.max_energy_error)


def sample_size_ladder(
    n_grid: Sequence[int], *, max_ratio: float = 1.3, n_floor: int | None = None
) -> list[int]:
    r"""The grid, filled with geometrically spaced sample sizes so that consecutive ratios are at most
    ``max_ratio`` (and extended down to ``n_floor`` if given).

    Why: swaps between :math:`n` and :math:`n'` are accepted with probability about
    :math:`\exp(-(n'-n)\,\Delta L)`; within one phase :math:`\Delta L` fluctuates by about
    :math:`\sqrt{\lambda}/n`, so :math:`n'/n - 1 \approx 1/\sqrt{\lambda}` (0.3 for :math:`\lambda \approx 9`)
    keeps swaps frequent.

    Examples
    --------
    >>> sample_size_ladder([100, 200], max_ratio=1.3)
    [100, 126, 159, 200]
    """
    grid = sorted({int(v) for v in check_n_values(n_grid)})
    if not max_ratio > 1:
        raise ValueError(f"max_ratio must be > 1, got {max_ratio}")
    pts = list(grid)
    if n_floor is not None:
        if not 2 <= n_floor <= grid[0]:
            raise ValueError(f"n_floor must be in [2, {grid[0]}], got {n_floor}")
        pts = sorted({int(n_floor), *pts})
    out = [pts[0]]
    for hi in pts[1:]:
        lo = out[-1]
        m = math.ceil(math.log(hi / lo) / math.log(max_ratio) - 1e-12)
        for j in range(1, m):
            v = round(lo * (hi / lo) ** (j / m))
            if out[-1] < v < hi:
                out.append(v)
        out.append(hi)
    return out


def _invariants(samples: Tensor, loss: Tensor, c: int, r: int) -> dict[str, np.ndarray]:
    W, b = unpack(samples, c, r)
    return {
        "loss": loss.double().cpu().numpy(),
        "W_sq": (W * W).sum((-1, -2)).double().cpu().numpy(),
        "b_sq": (b * b).sum(-1).double().cpu().numpy(),
    }


def _diagnostics(
    potential: np.ndarray,
    invariants: dict[str, np.ndarray],
    accept: np.ndarray,
    divergent: np.ndarray,
    step_size: np.ndarray,
) -> dict[str, Any]:
    """R-hat / ESS (ArviZ) of the potential and of symmetry-invariant scalars (raw coordinates are not
    identified: rotations and feature permutations leave the posterior unchanged); acceptance, divergences.

    ``rhat`` compares the chains; where each chain samples its own dataset (the replica sets), the datasets'
    own losses differ and that R-hat exceeds 1 however well each chain mixed. ``rhat_within`` is each
    chain's own split R-hat (its two halves compared), a convergence check that holds either way."""
    out = summary_stats(inference_data({"potential": potential, **invariants}))
    out["rhat_within"] = {k: within_chain_rhat(v) for k, v in (("potential", potential), *invariants.items())}
    out["mean_accept"] = accept.mean(axis=1).tolist()
    out["num_divergent"] = divergent.sum(axis=1).astype(int).tolist()
    out["step_size"] = np.asarray(step_size).tolist()
    return out


@dataclass(frozen=True)
class _ChainDraws:
    """The fields the single-n and the ladder samples share (shapes: see the two classes)."""

    samples: Tensor
    empirical_loss: Tensor
    potential: np.ndarray
    accept_prob: np.ndarray
    divergent: np.ndarray
    step_size: np.ndarray
    c: int
    r: int
    seed: int
    config: dict[str, Any]


@dataclass(frozen=True)
class PosteriorSamples(_ChainDraws):
    r"""Posterior draws of the TMS at sample size ``n`` (from :func:`sample_posterior`).

    Attributes
    ----------
    samples : Tensor, shape ``(K, D, d)``
    empirical_loss : Tensor, shape ``(K, D)``
        :math:`L_n` at each draw.
    potential, accept_prob : ndarray, shape ``(K, D)``
    divergent : ndarray of bool, shape ``(K, D)``
    step_size : ndarray, shape ``(K,)``
    c, r, seed, n : int
    config : dict
    """

    n: int

    def diagnostics(self) -> dict[str, Any]:
        """R-hat and ESS of the potential and the invariants; acceptance; divergences."""
        inv = _invariants(self.samples, self.empirical_loss, self.c, self.r)
        return _diagnostics(self.potential, inv, self.accept_prob, self.divergent, self.step_size)


@dataclass(frozen=True)
class LadderSamples(_ChainDraws):
    r"""Draws of the posterior at every sample size of a ladder (from :func:`sample_posterior_ladder`).

    Attributes
    ----------
    samples : Tensor, shape ``(K, G, D, d)``
        Draws of replica set ``k`` at sample size ``n_g``.
    empirical_loss : Tensor, shape ``(K, G, D)``
        The loss in the target at each draw: :math:`L_{n_g}` on replica set ``k``'s dataset
        (``config["loss"] == "empirical"``), or the population loss :math:`L(w)` (``"population"``).
    potential, accept_prob : ndarray, shape ``(K, G, D)``
    divergent : ndarray of bool, shape ``(K, G, D)``
    step_size : ndarray, shape ``(K, G)``
    c, r, seed : int
    config : dict
    ladder : list of int
        The sample sizes :math:`n_1 < \dots < n_G`.
    swap_accept : ndarray, shape ``(G - 1,)``
        Acceptance rate of swaps between :math:`n_g` and :math:`n_{g+1}` (after warmup).
    """

    ladder: list[int]
    swap_accept: np.ndarray

    def diagnostics_at(self, g: int) -> dict[str, Any]:
        """R-hat / ESS (ArviZ) across replica sets of the invariants at ladder index ``g``."""
        inv = _invariants(self.samples[:, g], self.empirical_loss[:, g], self.c, self.r)
        return _diagnostics(
            self.potential[:, g], inv, self.accept_prob[:, g], self.divergent[:, g], self.step_size[:, g]
        )


def _target(sums: OneHotSums, kk: Tensor, hh: Tensor, r: int, like: Tensor) -> Tempered:
    """:math:`U = n_g L_{n_g}(w) + |w|^2/2` for chains on datasets ``kk`` at ladder rungs ``hh``."""

    def total(w: Tensor, rows: Any = None) -> Tensor:
        return sums.total(w, kk, hh, r)

    def total_and_grad(w: Tensor, rows: Any = None) -> tuple[Tensor, Tensor]:
        return sums.value_and_grad(w, kk, hh, r)

    zero = torch.zeros(like.shape[-1], dtype=like.dtype, device=like.device)
    pot = FunctionalPotential(
        w_star=zero,
        n=None,
        data=None,
        description="TMS n L_n (one-hot prefix sums)",
        batched=total,
        closed_form=total_and_grad,
    )
    return Tempered(pot, 1.0, 1.0, zero)


def _run(
    target: Tempered,
    w0: Tensor,
    cfg: HMCConfig,
    num_warmup: int,
    num_draws: int,
    chain_seeds: list[int],
    hook: Any,
    progress: bool | None,
    desc: str,
) -> Any:
    bar = progress_bar(total=num_warmup + num_draws, desc=desc, enabled=progress)
    try:
        res = sample(
            cfg.kernel(),
            target,
            w0,
            num_warmup=num_warmup,
            num_draws=num_draws,
            chain_seeds=chain_seeds,
            step_size=cfg.step_size,
            target_accept=cfg.target_accept if cfg.adapt_step_size else None,
            adapt_metric=cfg.adapt_mass,
            hook=hook,
            bar=bar,
        )
    finally:
        bar.close()
    return res


def swap_log_ratio(sums: OneHotSums, k: Tensor, g: Tensor, w_lo: Tensor, w_hi: Tensor, r: int) -> Tensor:
    r"""Log Metropolis ratio of exchanging ``w_lo`` (rung ``g``) and ``w_hi`` (rung ``g + 1``) of dataset
    ``k``: :math:`T(w_{hi}) - T(w_{lo})` with :math:`T(w) = S_{g+1}(w) - S_g(w)` the sum of squared errors
    over rows :math:`n_g < s \le n_{g+1}` (module docstring). All arguments have one row per proposed pair."""
    t_hi = sums.total(w_hi, k, g + 1, r) - sums.total(w_hi, k, g, r)
    t_lo = sums.total(w_lo, k, g + 1, r) - sums.total(w_lo, k, g, r)
    return t_hi - t_lo


def population_swap_log_ratio(
    n_ladder: Tensor, g: Tensor, w_lo: Tensor, w_hi: Tensor, c: int, r: int
) -> Tensor:
    r"""Log Metropolis ratio of exchanging ``w_lo`` (rung ``g``) and ``w_hi`` (rung ``g + 1``) under the
    population loss: :math:`(n_{g+1} - n_g)(L(w_{hi}) - L(w_{lo}))` (the prior cancels)."""
    from slt_tms.theory.symbolic import population_loss_flat  # lazy import (start-up time)

    dn = n_ladder[g + 1] - n_ladder[g]
    return dn * (population_loss_flat(w_hi, c, r) - population_loss_flat(w_lo, c, r))


def _checks(
    c: int, r: int, num_chains: int, num_draws: int, num_warmup: int, init_scale: float, seed: int
) -> None:
    validate_shape(c, r)
    check_int("num_chains", num_chains, minimum=1)
    check_int("num_draws", num_draws, minimum=1)
    check_int("num_warmup", num_warmup, minimum=0)
    check_float("init_scale", init_scale, positive=True)
    check_seed(seed)


def sample_posterior(
    c: int,
    n: int,
    *,
    r: int = 2,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_warmup: int = 1000,
    config: HMCConfig | None = None,
    init_scale: float = 1.0,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> PosteriorSamples:
    r"""Sample :math:`p(w \mid D_n) \propto \varphi(w)\, e^{-n L_n(w)}` for the TMS with HMC.

    One dataset :math:`D_n` of ``n`` one-hot-uniform inputs is drawn per call (shared by the chains, so
    that R-hat compares chains on the same target); chains start at dispersed points
    :math:`w_0 \sim N(0, s^2 I)` (``s = init_scale``; the prior itself for ``s = 1``). Seeds:
    ``spawn_seeds(seed, 3)`` gives the dataset, start and HMC root seeds.

    Returns
    -------
    PosteriorSamples
    """
    n = check_int("sample size n", n, minimum=2)
    _checks(c, r, num_chains, num_draws, num_warmup, init_scale, seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    s_data, s_init, s_hmc = spawn_seeds(int(seed), 3)
    x = OneHotUniform(c).sample(n, torch.Generator().manual_seed(s_data)).to(device=dev, dtype=dtype)
    d = num_params(c, r)
    w0 = init_scale * torch.randn(num_chains, d, generator=torch.Generator().manual_seed(s_init), dtype=dtype)
    cfg = config or HMCConfig()
    zeros = torch.zeros(num_chains, dtype=torch.long, device=dev)
    target = _target(OneHotSums(x[None], [n]), zeros, zeros, r, w0)
    res = _run(
        target,
        w0.to(dev),
        cfg,
        num_warmup,
        num_draws,
        spawn_seeds(s_hmc, num_chains),
        None,
        progress,
        f"posterior n={n}",
    )
    samples = torch.as_tensor(res.records["w"])
    loss = torch.as_tensor(res.records["loss"]) / n
    conf = {
        "c": c,
        "r": r,
        "n": n,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_warmup": num_warmup,
        "init_scale": init_scale,
        "dtype": str(dtype),
        "hmc": {**asdict(cfg), **res.config},
        "prior": "N(0, I)",
        "dataset": "OneHotUniform",
        "seeds": {"data": s_data, "init": s_init, "hmc": s_hmc},
    }
    rec = res.records
    return PosteriorSamples(
        samples=samples,
        empirical_loss=loss,
        potential=rec["potential"],
        accept_prob=rec["accept_prob"],
        divergent=rec["divergent"],
        step_size=res.step_size,
        c=c,
        r=r,
        seed=int(seed),
        config=conf,
        n=n,
    )


def ladder_datasets(
    c: int,
    n_max: int,
    num_chains: int,
    seed: int,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""The datasets of :func:`sample_posterior_ladder` (``loss="empirical"``) with the same ``c``,
    ``num_chains``, ``seed`` and largest rung ``n_max``: shape ``(num_chains, n_max, c)``, one
    one-hot-uniform dataset per replica set (its first :math:`n_g` rows are the data at rung :math:`g`).

    Use it to recompute :math:`L_n` on the very datasets of a ladder or an occupancy run (e.g.
    ``ladder_datasets(c, occ.n_grid[-1], K, occ.seed)`` for an
    :class:`~slt_tms.experiments.occupancy.OccupancyResult` ``occ``).
    ``n_max`` must be the ladder's largest rung: the first rows of a longer dataset are not the same rows
    (feature indices are drawn before magnitudes). ``dtype`` and ``device`` only cast the result.

    Parameters
    ----------
    c : int
        Number of features.
    n_max : int
        Rows per dataset (the largest rung of the ladder).
    num_chains : int
        Number of replica sets :math:`K`.
    seed : int
        The ``seed`` of :func:`sample_posterior_ladder`.

    Returns
    -------
    Tensor, shape ``(num_chains, n_max, c)``

    Examples
    --------
    >>> ladder_datasets(3, 10, 2, seed=0).shape
    torch.Size([2, 10, 3])
    """
    check_int("n_max", n_max, minimum=1)
    check_int("num_chains", num_chains, minimum=1)
    check_seed(seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    s_data = spawn_seeds(int(seed), 4)[0]
    gens = [torch.Generator().manual_seed(s) for s in spawn_seeds(s_data, num_chains)]
    return torch.stack([OneHotUniform(c).sample(n_max, g) for g in gens]).to(device=dev, dtype=dtype)


def population_target(c: int, r: int, n_chain: Tensor, like: Tensor) -> Tempered:
    r"""The tempered target :math:`U = n_g L(w) + |w|^2/2` of the closed-form population loss :math:`L`,
    with one :math:`n_g` per chain (``n_chain``, shape ``(C,)``); ``like`` gives dtype, device and
    :math:`d`."""
    from slt_tms.theory.symbolic import (  # lazy import (start-up time)
        population_loss_flat,
        population_value_and_grad_flat,
    )

    zero = torch.zeros(like.shape[-1], dtype=like.dtype, device=like.device)
    pot = FunctionalPotential(
        w_star=zero,
        n=None,
        data=None,
        description=f"TMS population loss (c={c}, r={r})",
        batched=lambda w, rows: population_loss_flat(w, c, r),
        closed_form=lambda w, rows: population_value_and_grad_flat(w, c, r),
    )
    return Tempered(pot, n_chain, 1.0, zero)


def sample_posterior_ladder(
    c: int,
    n_grid: Sequence[int],
    *,
    r: int = 2,
    num_chains: int = 4,
    num_draws: int = 500,
    num_warmup: int = 500,
    config: HMCConfig | None = None,
    max_ratio: float = 1.3,
    n_floor: int | None = None,
    swap: bool = True,
    init_scale: float = 1.0,
    loss: str = "empirical",
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> LadderSamples:
    r"""Sample the TMS posterior at a ladder of sample sizes at once, with replica exchange (module
    docstring).

    Parameters
    ----------
    c : int
    n_grid : sequence of int
        Sample sizes of interest (filled to a ladder by :func:`sample_size_ladder`).
    num_chains : int
        Number of independent replica sets :math:`K` (each with its own dataset and starts).
    num_draws, num_warmup : int
    config : HMCConfig, optional
    max_ratio, n_floor : see :func:`sample_size_ladder`
    swap : bool
        Replica exchange on/off (off: independent chains at every rung).
    init_scale : float
        Starts :math:`w_0 \sim N(0, s^2 I)`.
    loss : {"empirical", "population"}
        ``"empirical"``: the posterior of the data, :math:`U = n_g L_{n_g}(w) + |w|^2/2` (module
        docstring). ``"population"``: the closed-form population loss instead,
        :math:`U = n_g L(w) + |w|^2/2` (no data; swaps accepted with
        :math:`\min(1, \exp((n_{g+1} - n_g)(L(w_{hi}) - L(w_{lo}))))`); ``empirical_loss`` of the result
        then holds :math:`L(w)`.
    seed : int
        ``spawn_seeds(seed, 4)``: datasets, starts, HMC, swaps.

    Returns
    -------
    LadderSamples
    """
    _checks(c, r, num_chains, num_draws, num_warmup, init_scale, seed)
    if loss not in ("empirical", "population"):
        raise ValueError(f"loss must be 'empirical' or 'population', got {loss!r}")
    ladder = sample_size_ladder(n_grid, max_ratio=max_ratio, n_floor=n_floor)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    K, G, n_max = num_chains, len(ladder), ladder[-1]
    s_data, s_init, s_hmc, s_swap = spawn_seeds(int(seed), 4)
    d = num_params(c, r)
    w0 = init_scale * torch.randn(K * G, d, generator=torch.Generator().manual_seed(s_init), dtype=dtype)
    swap_gen = torch.Generator().manual_seed(s_swap)
    tried = np.zeros(max(G - 1, 0))
    accepted = np.zeros(max(G - 1, 0))
    cfg = config or HMCConfig()
    kernel = cfg.kernel()
    if loss == "empirical":
        sums = OneHotSums(ladder_datasets(c, n_max, K, seed, device=dev, dtype=dtype), ladder)
        kk = torch.arange(K, device=dev).repeat_interleave(G)
        hh = torch.arange(G, device=dev).repeat(K)
        target = _target(sums, kk, hh, r, w0.to(dev))

        def log_ratio(g: Tensor, w_lo: Tensor, w_hi: Tensor) -> Tensor:
            return swap_log_ratio(
                sums, torch.arange(K, device=dev).repeat_interleave(len(g) // K), g, w_lo, w_hi, r
            )
    else:
        n_t = torch.tensor(ladder, dtype=dtype, device=dev)
        target = population_target(c, r, n_t.repeat(K), w0.to(dev))

        def log_ratio(g: Tensor, w_lo: Tensor, w_hi: Tensor) -> Tensor:
            return population_swap_log_ratio(n_t, g, w_lo, w_hi, c, r)

    def hook(state: Any, it: int) -> Any:
        if not swap or G < 2:
            return state
        rungs = swap_rungs(G, it, device=dev)
        if rungs.numel() == 0:
            return state
        u = torch.rand(K, rungs.numel(), generator=swap_gen, dtype=torch.float64).to(dev)
        with torch.no_grad():
            new, acc = exchange(state.w.reshape(K, G, d), rungs, log_ratio, u)
        if it >= num_warmup:
            tried[rungs.cpu().numpy()] += K
            accepted[rungs.cpu().numpy()] += acc.sum(0).cpu().numpy()
        if not bool(acc.any()):
            return state
        return kernel.init(new.reshape(K * G, d), target, None)

    res = _run(
        target,
        w0.to(dev),
        cfg,
        num_warmup,
        num_draws,
        spawn_seeds(s_hmc, K * G),
        hook,
        progress,
        f"posterior ladder ({G} sample sizes)",
    )
    D = num_draws
    samples = torch.as_tensor(res.records["w"]).reshape(K, G, D, d)
    if loss == "empirical":
        n_col = torch.tensor(ladder, dtype=samples.dtype)[None, :, None]
        loss_draws = torch.as_tensor(res.records["loss"]).reshape(K, G, D) / n_col
    else:
        loss_draws = torch.as_tensor(res.records["loss"]).reshape(K, G, D)
    conf = {
        "c": c,
        "r": r,
        "n_grid": sorted({int(v) for v in n_grid}),
        "ladder": ladder,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_warmup": num_warmup,
        "swap": swap,
        "max_ratio": max_ratio,
        "n_floor": n_floor,
        "init_scale": init_scale,
        "dtype": str(dtype),
        "hmc": {**asdict(cfg), **res.config},
        "prior": "N(0, I)",
        "loss": loss,
        "dataset": "OneHotUniform, nested per replica set" if loss == "empirical" else None,
        "seeds": {"data": s_data, "init": s_init, "hmc": s_hmc, "swap": s_swap},
    }
    swap_acc = np.divide(accepted, tried, out=np.full_like(accepted, np.nan), where=tried > 0)
    rec = res.records
    return LadderSamples(
        samples=samples,
        empirical_loss=loss_draws,
        potential=rec["potential"].reshape(K, G, D),
        accept_prob=rec["accept_prob"].reshape(K, G, D),
        divergent=rec["divergent"].reshape(K, G, D),
        step_size=res.step_size.reshape(K, G),
        c=c,
        r=r,
        seed=int(seed),
        config=conf,
        ladder=ladder,
        swap_accept=swap_acc,
    )
