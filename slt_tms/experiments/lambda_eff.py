r"""Basin-restricted posterior sampling of the TMS: :math:`\lambda_{\mathrm{eff}}(n)` and the dataset effect.

For a phase :math:`a` (the basin of a critical-point family, named by the package's one classifier
:func:`slt_tms.analysis.kgon_classify.classify`) the *local* posterior under the population loss is

.. math:: p_a(w \mid n) \propto \varphi(w)\, e^{-nL(w)}\, \mathbf 1[w \in a],\qquad \varphi = N(0, I).

:func:`sample_basins` samples it at every :math:`n` of a grid with the package's HMC (dual averaging and a
diagonal metric in the warmup). The restriction is a Metropolis rule: after every transition each chain's
new state is classified, and a chain whose state left the basin returns to its previous state (the
proposal is accepted with probability :math:`\min(1, e^{-\Delta H})\,\mathbf 1[w' \in a]`, which keeps
:math:`p_a` invariant because the HMC proposal is reversible and volume-preserving). The share of such
returns is reported (``leave_rate``).

From the draws, the effective learning coefficient

.. math:: \lambda_{\mathrm{eff}}(n) = n\,(E_{p_a(\cdot\mid n)}[L] - L_a)

(its Monte-Carlo standard error from the bulk ESS across chains) gives the derivative of the local
evidence :math:`Z_a(n) = \int_a \varphi\,e^{-nL}` in the sample size,
:math:`\tfrac{d}{dn}\log Z_a(n) = -E_{p_a(\cdot\mid n)}[L] = -L_a - \lambda_{\mathrm{eff}}(n)/n`, which
:mod:`slt_tms.analysis.finite_n` integrates.

The empirical loss :math:`L_n` of a dataset :math:`D` enters through the *dataset effect*

.. math::

    \Delta_a(D, n) = \log\frac{\int_a \varphi\,e^{-nL_n}}{\int_a \varphi\,e^{-nL}}
    = \log \operatorname{mean}_{\pi}\, E_{p_a(\cdot\mid n)}\bigl[e^{-n(L_n^{D}(\pi w) - L(w))}\bigr],

an importance-sampling average over the kept draws and over random permutations :math:`\pi` of the
features (the phase is a union of copies of one critical point related by permutations, on which
:math:`L` is the same and :math:`L_n` is not: in a phase with a dead feature, the data decide which
feature is cheapest to drop). :func:`dataset_effect` evaluates it with the exact one-hot prefix sums
(:class:`slt_tms.tms.OneHotSums`) and reports the effective sample size of the weights.

Config -> run -> frozen result: no files, no plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._progress import progress_bar
from slt_tms._rng import spawn_seeds
from slt_tms.analysis.finite_n import anchor_log_odds, anchored_log_odds, predict_switch
from slt_tms.analysis.free_energy import check_n_values
from slt_tms.analysis.kgon_classify import ClassifyTolerances, classify
from slt_tms.experiments.posterior import HMCConfig, population_target
from slt_tms.io.serialize import to_jsonable
from slt_tms.samplers import sample
from slt_tms.samplers.diagnostics import ess, mcse_mean, rhat
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms import OneHotSums, num_params, unpack
from slt_tms.validation import check_int, check_seed

__all__ = ["BasinLadder", "FiniteNSwitch", "dataset_effect", "finite_n_switches", "sample_basins"]


@dataclass(frozen=True)
class BasinLadder:
    r"""Basin-restricted posterior draws of one phase over a grid of sample sizes (:func:`sample_basins`).

    Attributes
    ----------
    phase : str
    c : int
    loss_level : float
        :math:`L_a`, the population loss of the critical point.
    n_grid : ndarray of int, shape ``(G,)``
    lambda_eff, lambda_eff_se : ndarray, shape ``(G,)``
        :math:`n(\bar L - L_a)` and its Monte-Carlo standard error :math:`n\,\mathrm{MCSE}(\bar L)`.
    ess, rhat : ndarray, shape ``(G,)``
        Bulk ESS and split R-hat (ArviZ) of :math:`L` across chains.
    leave_rate : ndarray, shape ``(G,)``
        Share of transitions (after warmup) whose proposal left the basin and was undone.
    draws : Tensor, shape ``(G, K, D_keep, d)``
        Thinned draws kept for :func:`dataset_effect`.
    config : dict
    seed : int
    """

    phase: str
    c: int
    loss_level: float
    n_grid: np.ndarray
    lambda_eff: np.ndarray
    lambda_eff_se: np.ndarray
    ess: np.ndarray
    rhat: np.ndarray
    leave_rate: np.ndarray
    draws: Tensor
    config: dict[str, Any]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field but the draws (:func:`slt_tms.io.serialize.to_jsonable`)."""
        return to_jsonable({f.name: getattr(self, f.name) for f in fields(self) if f.name != "draws"})


def sample_basins(
    phases: Sequence[CriticalPoint],
    points: Sequence[CriticalPoint],
    n_grid: Sequence[int],
    *,
    num_chains: int = 4,
    num_draws: int = 400,
    num_warmup: int = 300,
    keep_draws: int = 100,
    config: HMCConfig | None = None,
    tolerances: ClassifyTolerances | None = None,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> dict[str, BasinLadder]:
    r"""Sample the basin-restricted population posterior of every phase in ``phases`` at every ``n``.

    All phases, sample sizes and chains run as one batch of :math:`P \times G \times K` chains (module
    docstring), started at the critical point, each restricted to its own basin.

    Parameters
    ----------
    phases : sequence of CriticalPoint
        The phases to sample (distinct names).
    points : sequence of CriticalPoint
        All families the classifier knows (e.g. ``critical_points(c)``), so that "left the basin" means
        "classified as anything else, or unclassified".
    n_grid : sequence of int
        Sample sizes, strictly increasing, >= 2.
    num_chains, num_draws, num_warmup : int
        Chains per (phase, n); kept transitions; warmup transitions.
    keep_draws : int
        Draws per chain kept (evenly thinned) for :func:`dataset_effect`.
    config : HMCConfig, optional
    tolerances : ClassifyTolerances, optional
        The classifier's settings (the definition of the basins).
    seed : int
        ``spawn_seeds(seed, 2)``: starting jitter and HMC.

    Returns
    -------
    dict of str to BasinLadder

    Examples
    --------
    >>> from slt_tms.theory.critical_points import kgon
    >>> six = kgon(6, 6)
    >>> res = sample_basins([six], [six, kgon(5, 6)], [200, 400], num_chains=2, num_draws=20,
    ...                     num_warmup=20, keep_draws=5, progress=False)
    >>> res["6"].lambda_eff.shape, res["6"].draws.shape
    ((2,), torch.Size([2, 2, 5, 18]))
    """
    phs = list(phases)
    pts = list(points)
    if not phs:
        raise ValueError("give at least one phase to sample")
    names = [p.name for p in phs]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be distinct, got {names}")
    c, r = phs[0].c, phs[0].r
    if any(p.c != c or p.r != r for p in [*phs, *pts]):
        raise ValueError("all phases and points must share c and r")
    known = {p.name for p in pts}
    if not set(names) <= known:
        raise ValueError(f"phases {sorted(set(names) - known)} are not among the classifier's points")
    vals = check_n_values(n_grid)
    if np.any(vals != np.round(vals)) or np.any(vals < 2) or np.any(np.diff(vals) <= 0):
        raise ValueError(f"n_grid must be strictly increasing integers >= 2, got {list(n_grid)}")
    grid = np.asarray(vals, dtype=np.int64)
    K = check_int("num_chains", num_chains, minimum=2)
    D = check_int("num_draws", num_draws, minimum=2)
    check_int("num_warmup", num_warmup, minimum=0)
    keep = min(check_int("keep_draws", keep_draws, minimum=1), D)
    check_seed(seed)
    tol = tolerances or ClassifyTolerances()
    cfg = config or HMCConfig()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    P, G, d = len(phs), grid.size, num_params(c, r)
    s_init, s_hmc = spawn_seeds(int(seed), 2)
    # chain index = (p * G + g) * K + k
    start = torch.stack([p.flat().to(torch.float64) for p in phs])  # (P, d)
    w0 = start.repeat_interleave(G * K, dim=0)
    w0 = w0 + 1e-3 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(s_init), dtype=w0.dtype)
    w0 = w0.to(dev)
    nbeta = torch.as_tensor(grid, dtype=torch.float64).repeat_interleave(K).repeat(P).to(dev)
    want = np.repeat(np.array(names, dtype=object), G * K)
    ok0 = classify(w0, pts, tolerances=tol).names == want
    if not ok0.all():
        bad = sorted(set(want[~ok0]))
        raise ValueError(f"the classifier does not name the critical point(s) {bad} as their own basin; "
                         "check the tolerances")
    target = population_target(c, r, nbeta, w0)
    prev = w0.clone()
    left = np.zeros(P * G * K)
    kernel = cfg.kernel()

    def hook(state: Any, it: int) -> Any:
        w = state.w
        inside = torch.from_numpy(classify(w, pts, tolerances=tol).names == want).to(dev)
        if bool(inside.all()):
            prev.copy_(w)
            return state
        if it >= num_warmup:
            left[~inside.cpu().numpy()] += 1
        new = torch.where(inside[:, None], w, prev)
        prev.copy_(new)
        return kernel.init(new, target, None)

    bar = progress_bar(total=num_warmup + D, desc=f"basin-restricted posterior ({', '.join(names)})",
                       enabled=progress)
    try:
        res = sample(
            kernel,
            target,
            w0,
            num_warmup=num_warmup,
            num_draws=D,
            chain_seeds=spawn_seeds(s_hmc, P * G * K),
            step_size=cfg.step_size,
            target_accept=cfg.target_accept if cfg.adapt_step_size else None,
            adapt_metric=cfg.adapt_mass,
            record=("w", "accept_prob", "divergent"),
            hook=hook,
            bar=bar,
        )
    finally:
        bar.close()
    from slt_tms.theory.symbolic import population_loss_flat  # lazy import (start-up time)

    W = torch.as_tensor(res.records["w"])  # (P G K, D, d)
    with torch.no_grad():
        L = population_loss_flat(W.reshape(-1, d), c, r).reshape(P, G, K, D).numpy()
    idx = np.unique(np.linspace(0, D - 1, keep).round().astype(int))
    kept = W.reshape(P, G, K, D, d)[:, :, :, idx]
    leave = left.reshape(P, G, K).mean(-1) / D
    acc = res.records["accept_prob"].reshape(P, G, K, D)
    out: dict[str, BasinLadder] = {}
    for p, ph in enumerate(phs):
        lam = np.array([grid[g] * (L[p, g].mean() - ph.loss) for g in range(G)])
        se = np.array([grid[g] * mcse_mean(L[p, g]) for g in range(G)])
        conf = {
            "c": c,
            "r": r,
            "phase": ph.name,
            "n_grid": grid.tolist(),
            "num_chains": K,
            "num_draws": D,
            "num_warmup": num_warmup,
            "keep_draws": int(idx.size),
            "target": "phi(w) exp(-n L(w)) 1[w in basin], population loss, prior N(0, I)",
            "restriction": "classify() after every transition; a chain that left returns to its last state",
            "tolerances": asdict(tol),
            "hmc": {**asdict(cfg), **res.config},
            "accept_prob": acc[p].mean(axis=(1, 2)).tolist(),
            "seeds": {"init": s_init, "hmc": s_hmc},
        }
        out[ph.name] = BasinLadder(
            phase=ph.name,
            c=c,
            loss_level=float(ph.loss),
            n_grid=grid.copy(),
            lambda_eff=lam,
            lambda_eff_se=se,
            ess=np.array([ess(L[p, g]) for g in range(G)]),
            rhat=np.array([rhat(L[p, g]) for g in range(G)]),
            leave_rate=leave[p],
            draws=kept[p].contiguous(),
            config=conf,
            seed=int(seed),
        )
    return out


def _permute(w: Tensor, perms: Tensor, c: int, r: int) -> Tensor:
    """Every row of ``w (M, d)`` with its features permuted by every row of ``perms (Q, c)``:
    shape ``(Q, M, d)``."""
    W, b = unpack(w, c, r)  # (M, r, c), (M, c)
    Wp = W[:, :, perms]  # (M, r, Q, c)
    bp = b[:, perms]  # (M, Q, c)
    Wp = Wp.permute(2, 0, 1, 3)  # (Q, M, r, c)
    bp = bp.permute(1, 0, 2)  # (Q, M, c)
    return torch.cat([Wp.reshape(*Wp.shape[:2], r * c), bp], dim=-1)


def dataset_effect(
    ladder: BasinLadder,
    X: Tensor,
    *,
    num_permutations: int = 24,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\Delta_a(D_k, n_g)` (module docstring) for every dataset ``X[k]`` and every ``n_g``.

    Parameters
    ----------
    ladder : BasinLadder
    X : Tensor, shape ``(K_data, n_max, c)``
        One-hot datasets; the effect at :math:`n_g` uses the first :math:`n_g` rows (nested, as in the
        posterior ladder of :func:`slt_tms.experiments.posterior.sample_posterior_ladder`).
    num_permutations : int
        Random feature permutations :math:`\pi` (the identity is always one of them).
    seed : int

    Returns
    -------
    effect : ndarray, shape ``(K_data, G)``
    weight_ess : ndarray, shape ``(K_data, G)``
        Kish effective sample size of the importance weights (out of draws x permutations).
    """
    c, r = ladder.c, 2
    if X.ndim != 3 or X.shape[-1] != c:
        raise ValueError(f"datasets must have shape (K, n_max, {c}); got {tuple(X.shape)}")
    grid = [int(v) for v in ladder.n_grid]
    if X.shape[1] < grid[-1]:
        raise ValueError(f"datasets have {X.shape[1]} rows, the ladder needs {grid[-1]}")
    Q = check_int("num_permutations", num_permutations, minimum=1)
    gen = torch.Generator().manual_seed(int(seed))
    perms = torch.stack([torch.arange(c)] + [torch.randperm(c, generator=gen) for _ in range(Q - 1)])
    from slt_tms.theory.symbolic import population_loss_flat  # lazy import (start-up time)

    Kd = X.shape[0]
    sums = OneHotSums(X.to(torch.float64), grid)
    G = len(grid)
    effect = np.zeros((Kd, G))
    wess = np.zeros((Kd, G))
    for g in range(G):
        w = ladder.draws[g].reshape(-1, ladder.draws.shape[-1]).to(torch.float64)  # (M, d)
        with torch.no_grad():
            pop = population_loss_flat(w, c, r)  # (M,)
            wp = _permute(w, perms, c, r).reshape(-1, w.shape[-1])  # (Q M, d)
            M = wp.shape[0]
            for k in range(Kd):
                emp = sums.total_one(wp, k, g, r)  # n L_n
                logw = -(emp - grid[g] * pop.repeat(Q))
                lse = torch.logsumexp(logw, 0)
                effect[k, g] = float(lse - math.log(M))
                wn = torch.exp(logw - lse)
                wess[k, g] = float(1.0 / (wn * wn).sum())
    return effect, wess


@dataclass(frozen=True)
class FiniteNSwitch:
    r"""Finite-n prediction of one switch ``low_n -> high_n`` (:func:`finite_n_switches`).

    Attributes
    ----------
    low_n, high_n : str
    anchor : dict
        ``n0``, ``log_odds`` and ``se`` of the population-loss occupancy at the anchor (or the reason
        there is none).
    n_grid : ndarray
        Sample sizes from :math:`n_0` on.
    log_odds, log_odds_se : ndarray
        :math:`\log Z_{high}/Z_{low}` of the population-loss posterior (anchored thermodynamic integration)
        and its Monte-Carlo standard error.
    effect : ndarray, shape ``(D, G)``
        Dataset effect :math:`\Delta_{high} - \Delta_{low}` of each dataset (empty without datasets).
    weight_ess_min : float
        Smallest effective sample size of the importance weights behind ``effect``.
    population, empirical : SwitchPrediction or None
        Predicted switch of the population-loss occupancy and of the :math:`L_n` occupancy (pooled over
        the datasets).
    diagnostics : dict
        Largest R-hat, smallest ESS and largest leave rate of the two phases' :math:`\lambda_{\mathrm{eff}}`
        estimates over the grid, and ``converged`` (R-hat <= 1.05 and ESS >= 100 everywhere).
    """

    low_n: str
    high_n: str
    anchor: dict[str, Any]
    n_grid: np.ndarray
    log_odds: np.ndarray
    log_odds_se: np.ndarray
    effect: np.ndarray
    weight_ess_min: float
    population: Any
    empirical: Any
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (:func:`slt_tms.io.serialize.to_jsonable`; the log-odds and the effect
        named for what they are)."""
        names = {"log_odds": "log_odds_population", "log_odds_se": "log_odds_population_se",
                 "effect": "dataset_effect"}
        return to_jsonable({names.get(f.name, f.name): getattr(self, f.name) for f in fields(self)})


#: The lambda_eff estimates behind a prediction count as converged with R-hat <= MAX_RHAT and ESS >= MIN_ESS
#: at every sample size (looser than an LLC's 1.01 / 400: they enter an integral over many n, and their
#: Monte-Carlo errors are in the interval).
MAX_RHAT = 1.05
MIN_ESS = 100


def _no_anchor(a: str, b: str, reason: str) -> FiniteNSwitch:
    z = np.zeros(0)
    return FiniteNSwitch(a, b, {"reason": reason}, z, z, z, np.zeros((0, 0)), math.nan, None, None)


def finite_n_switches(
    pairs: Sequence[tuple[str, str]],
    points: Sequence[CriticalPoint],
    pop_grid: Sequence[int],
    pop_counts: Any,
    pop_names: Sequence[str],
    *,
    datasets: Tensor | None = None,
    n_max: int | None = None,
    num_chains: int = 4,
    num_draws: int = 400,
    num_warmup: int = 300,
    keep_draws: int = 100,
    num_permutations: int = 24,
    min_share: float = 0.05,
    num_bootstrap: int = 1000,
    tolerances: ClassifyTolerances | None = None,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> tuple[list[FiniteNSwitch], dict[str, BasinLadder]]:
    r"""Finite-n predictions of the switches ``pairs`` (module docstring and
    :mod:`slt_tms.analysis.finite_n`).

    1. The anchor of each pair: the smallest :math:`n_0` of the population-loss occupancy run
       (``pop_grid``, ``pop_counts (G, K, P)``, ``pop_names``; replica exchange, well mixed at small
       :math:`n`) where both phases hold at least ``min_share`` of the draws, with its log-odds.
    2. :math:`\lambda_{\mathrm{eff}}(n)` of every phase of the pairs by :func:`sample_basins` on the rungs of
       ``pop_grid`` from the smallest anchor up to ``n_max``.
    3. The log-odds of the population posterior by :func:`~slt_tms.analysis.finite_n.anchored_log_odds`
       and, if ``datasets (D, n_max, c)`` are given, each dataset's log-odds with
       :func:`dataset_effect`; the predicted switches with
       :func:`~slt_tms.analysis.finite_n.predict_switch`.

    No occupancy at or near the switch enters: only the anchor at :math:`n_0`.

    Returns
    -------
    (list of FiniteNSwitch, dict of BasinLadder)
    """
    pts = {p.name: p for p in points}
    if not pairs:
        return [], {}
    grid = np.asarray([int(v) for v in pop_grid])
    top = int(n_max) if n_max is not None else int(grid[-1])
    anchors: dict[tuple[str, str], Any] = {}
    for a, b in pairs:
        if a not in pts or b not in pts:
            raise ValueError(f"unknown phase in the pair {(a, b)}; known: {sorted(pts)}")
        anchors[(a, b)] = anchor_log_odds(grid, pop_counts, list(pop_names), a, b, min_share=min_share,
                                          num_bootstrap=num_bootstrap, seed=seed)
    tol = tolerances or ClassifyTolerances()
    wanted = sorted({x for ab in pairs for x in ab})
    own = classify(torch.stack([pts[x].flat() for x in wanted]), points, tolerances=tol).names
    not_own = {x for x, nm in zip(wanted, own, strict=True) if nm != x}
    reasons = {}
    for (a, b), v in anchors.items():
        if not_own & {a, b}:
            reasons[(a, b)] = (f"the classifier does not name {sorted(not_own & {a, b})} as their own basin "
                               "(not a critical point of the population loss?)")
        elif v is None:
            reasons[(a, b)] = (f"no grid point where both phases hold >= {min_share:.0%} of the "
                               "population-loss draws")
    found = [v for ab, v in anchors.items() if ab not in reasons]
    if not found:
        return [_no_anchor(a, b, reasons[(a, b)]) for a, b in pairs], {}
    n_lo = min(v[0] for v in found)
    lam_grid = [int(v) for v in grid if n_lo <= v <= top]
    phases = sorted({x for ab in anchors if ab not in reasons for x in ab})
    basins = sample_basins([pts[x] for x in phases], points, lam_grid, num_chains=num_chains,
                           num_draws=num_draws, num_warmup=num_warmup, keep_draws=keep_draws,
                           tolerances=tol, seed=seed, progress=progress, device=device)
    effects: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if datasets is not None:
        for x in phases:
            effects[x] = dataset_effect(basins[x], datasets, num_permutations=num_permutations, seed=seed)
    out = []
    for a, b in pairs:
        if (a, b) in reasons:
            out.append(_no_anchor(a, b, reasons[(a, b)]))
            continue
        n0, lo0, se0 = anchors[(a, b)]
        sl = slice(lam_grid.index(int(n0)), None)
        ba, bb = basins[a], basins[b]
        n = ba.n_grid[sl].astype(float)
        lo, se = anchored_log_odds(
            n, ba.lambda_eff[sl], bb.lambda_eff[sl], ba.loss_level, bb.loss_level, lo0,
            lambda_eff_low_se=ba.lambda_eff_se[sl], lambda_eff_high_se=bb.lambda_eff_se[sl], log_odds0_se=se0,
        )
        pop = predict_switch(n, lo, se, num_bootstrap=num_bootstrap, seed=seed)
        emp, eff, wmin = None, np.zeros((0, n.size)), math.nan
        if effects:
            eff = effects[b][0][:, sl] - effects[a][0][:, sl]
            wmin = float(min(effects[a][1][:, sl].min(), effects[b][1][:, sl].min()))
            emp = predict_switch(n, lo[None, :] + eff, se, num_bootstrap=num_bootstrap, seed=seed)
        anchor = {"n0": n0, "log_odds": lo0, "se": se0, "min_share": min_share,
                  "source": "population-loss occupancy (replica exchange)"}
        rh = float(max(ba.rhat[sl].max(), bb.rhat[sl].max()))
        es = float(min(ba.ess[sl].min(), bb.ess[sl].min()))
        diag = {"max_rhat": rh, "min_ess": es, "converged": bool(rh <= MAX_RHAT and es >= MIN_ESS),
                "max_leave_rate": float(max(ba.leave_rate[sl].max(), bb.leave_rate[sl].max()))}
        out.append(FiniteNSwitch(a, b, anchor, n, lo, se, eff, wmin, pop, emp, diag))
    return out, basins
