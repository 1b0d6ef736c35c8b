r"""Elhage et al. (2022) superposition experiments, each trained as ONE batched run of many instances.

Four experiments, every one a function ``Config -> frozen Result`` that records its configuration, seed
and run time (figures: :mod:`slt_tms.plotting.superposition`; files: ``slt-tms superposition``):

* :func:`geometry` -- :math:`n = 5` features in :math:`m = 2` hidden dimensions, importance
  :math:`I_i = 0.9^i`, a grid of sparsities :math:`S`: the columns :math:`W_i` in the plane, for ReLU and
  for the linear baseline.
* :func:`phase_diagram` -- 2 features in 1 hidden dimension over relative importance
  :math:`I_2 / I_1 \in [0.1, 10]` and density :math:`1 - S \in [0.01, 1]`; every trained model is
  classified (:func:`slt_tms.analysis.superposition.classify_two_feature`) and compared with the analytic
  phase (:func:`slt_tms.theory.two_feature.analytic_phase`), whose boundaries come from the population
  losses of :math:`W = [1, 0]`, :math:`[0, 1]`, :math:`[1, -1]` with optimal biases.
* :func:`dimensionality` -- dimensions per feature :math:`m / \|W\|_F^2` against :math:`1/(1-S)` and the
  per-feature dimensionality :math:`D_i`.
* :func:`swish_comparison` -- the geometry experiment with :math:`\mathrm{swish}_\gamma` at several
  :math:`\gamma` beside ReLU, measuring how far the geometry is from ReLU's (Procrustes distance,
  number of represented features).

The model is :math:`f(x) = \mathrm{act}(W^\top W x + b)` (:mod:`slt_tms.tms`), the data are sparse uniform
(each :math:`x_i` is 0 with probability :math:`S`, else :math:`U[0, 1]`) and the loss is
:math:`\sum_i I_i (x_i - f(x)_i)^2` (:mod:`slt_tms.tms.losses`). Training is :func:`slt_tms.train.train` with
AdamW on fresh samples: all instances of an experiment (sparsities x restarts, or the whole grid) are
stacked on the batch axis and each gets its own gradient. Each instance sees its own samples (the data
callable draws per instance). Of the ``num_restarts`` random initialisations per setting, the one with the
lowest final loss (on ``eval_size`` fresh samples drawn once per instance) is kept, as Elhage et al.
discard their worst runs.

The configurations (``*Config``, each with ``.quick()``) and the frozen results (``*Result``, each with
``to_dict()``) are defined in a private sibling module and exported from here.

References
----------
N. Elhage et al., *Toy Models of Superposition*, Transformer Circuits Thread (2022).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch
from torch import Tensor

from slt_tms._progress import progress as _progress
from slt_tms._rng import spawn_seeds
from slt_tms.analysis.superposition import (
    REPRESENTED_THRESHOLD,
    classify_two_feature,
    column_norms,
    count_represented,
    dimensions_per_feature,
    feature_dimensionality,
    max_unrepresented_norm,
    procrustes_distance,
)
from slt_tms.experiments import _superposition_types
from slt_tms.experiments._superposition_types import (
    DimensionalityConfig,
    DimensionalityResult,
    GeometryConfig,
    GeometryResult,
    PhaseDiagramConfig,
    PhaseDiagramResult,
    SwishConfig,
    SwishResult,
    TrainConfig,
)
from slt_tms.theory.two_feature import PHASE_NAMES, analytic_phase
from slt_tms.tms import activation_fn, unpack
from slt_tms.train import train
from slt_tms.validation import check_seed

__all__ = [  # the configs and results, and the experiments
    *_superposition_types.__all__,
    "dimensionality",
    "geometry",
    "phase_diagram",
    "sparse_uniform_sampler",
    "swish_comparison",
]


# ============================================================================ training helpers


def sparse_uniform_sampler(
    densities: Tensor, c: int
) -> Callable[[int, torch.Generator], Tensor]:
    r"""Data callable for :func:`slt_tms.train.train`: per-instance sparse uniform samples.

    Instance :math:`k` has density :math:`p_k` (``densities`` of shape ``(B,)``). One uniform draw
    :math:`u` per entry gives

    .. math:: x = \max\Bigl(\frac{u - (1 - p_k)}{p_k}, 0\Bigr),

    which is 0 with probability :math:`1 - p_k` and, given :math:`u > 1 - p_k`, uniform on
    :math:`(0, 1]`: exactly the sparse uniform law, with half the random numbers of drawing the mask and
    the value separately. Returns ``(batch_size, generator) -> Tensor (B, batch_size, c)`` on the
    generator's device.

    Examples
    --------
    >>> sample = sparse_uniform_sampler(torch.tensor([1.0, 0.1]), c=3)
    >>> x = sample(1000, torch.Generator().manual_seed(0))
    >>> x.shape, bool((x[0] > 0).all()), round(float((x[1] > 0).float().mean()), 1)
    (torch.Size([2, 1000, 3]), True, 0.1)
    """
    dens = torch.as_tensor(densities, dtype=torch.get_default_dtype()).reshape(-1)
    if dens.numel() == 0 or bool(((dens <= 0) | (dens > 1)).any()):
        raise ValueError("densities 1 - S must lie in (0, 1] (sparsity S in [0, 1))")
    B = dens.numel()
    cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def sample(batch_size: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        if dev not in cache:
            d = dens.to(dev)[:, None, None]
            cache[dev] = (1 - d, d)
        s, d = cache[dev]
        u = torch.rand(B, batch_size, c, generator=generator, device=dev)
        return torch.clamp_min((u - s) / d, 0.0)

    return sample


def _init_params(
    num: int, n: int, m: int, seed: int, device: str | torch.device | None
) -> Tensor:
    # Xavier-normal W (std sqrt(2 / (n + m)), as the Elhage et al. notebook) and zero biases.
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(num, m, n, generator=g) * math.sqrt(2.0 / (n + m))
    w = torch.cat([W.reshape(num, m * n), torch.zeros(num, n)], dim=-1)
    return w.to(device) if device is not None else w


def _train_batched(
    *,
    n: int,
    m: int,
    densities: np.ndarray,
    importance: np.ndarray,
    train_config: TrainConfig,
    activation: str,
    gamma: float,
    seed: int,
    progress: bool | None,
    device: str | torch.device | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train len(densities) instances in one run; return (W (B, m, n), b (B, n), final losses (B,))."""
    B = len(densities)
    init_seed, train_seed = spawn_seeds(seed, 2)
    w0 = _init_params(B, n, m, init_seed, device)
    data = sparse_uniform_sampler(torch.as_tensor(densities, dtype=torch.get_default_dtype()), n)
    traj = train(
        w0,
        c=n,
        r=m,
        activation=activation,
        gamma=gamma,
        data=data,
        importance=torch.as_tensor(importance, dtype=torch.get_default_dtype()),
        optimizer="adamw",
        lr=train_config.lr,
        batch_size=train_config.batch_size,
        num_steps=train_config.num_steps,
        weight_decay=0.0,
        num_checkpoints=3,  # steps 0, 1, num_steps (3: see the schedule function)
        log_every=train_config.num_steps,
        seed=train_seed,
        progress=progress,
        device=device,
        eval_size=train_config.eval_size,
    )
    W, b = unpack(traj.final.to(torch.float64), n, m)
    return W.numpy(), b.numpy(), np.asarray(traj.losses[-1], dtype=float)


# ============================================================================ experiments


def geometry(
    config: GeometryConfig | None = None,
    *,
    activation: str = "relu",
    gamma: float = 1.0,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> GeometryResult:
    r"""Train the :math:`n`-feature, :math:`m`-dimension model at every sparsity (Elhage et al. Fig. 2-3).

    All ``len(sparsities) * num_restarts`` instances train in one batched run; per sparsity the restart
    with the lowest final loss is kept. With ReLU, at :math:`S = 0` only the two most important features
    get (orthogonal) columns; as :math:`S` grows less important features enter in superposition (about 4
    at intermediate sparsity, a pentagon of all 5 at :math:`S \gtrsim 0.85`). The linear baseline
    (``activation="linear"``) keeps the top-:math:`m` features at every sparsity.

    Parameters
    ----------
    config : GeometryConfig, optional
        Default: the full settings ``GeometryConfig()``; ``GeometryConfig.quick()`` for a fast run.
    activation : {"relu", "linear", "swish"}
    gamma : float
        Swish sharpness.
    seed : int
        Root seed (initialisations and samples); the same seed gives the same initialisations for every
        activation.
    progress : bool, optional
        Training progress bar.
    device : str or torch.device, optional

    Returns
    -------
    GeometryResult

    Examples
    --------
    >>> cfg = GeometryConfig(sparsities=(0.0,), train=TrainConfig(num_steps=20, num_restarts=1))
    >>> geometry(cfg, progress=False).W.shape
    (1, 2, 5)
    """
    config = GeometryConfig() if config is None else config
    seed = check_seed(seed)
    activation_fn(activation, gamma)  # validates
    t0 = time.perf_counter()
    tc, n, m = config.train, config.n, config.m
    S = np.asarray(config.sparsities)
    R = tc.num_restarts
    dens = np.repeat(1.0 - S, R)
    imp = np.tile(config.rho ** np.arange(n), (len(dens), 1))
    W, b, losses = _train_batched(
        n=n, m=m, densities=dens, importance=imp, train_config=tc, activation=activation, gamma=float(gamma),
        seed=seed, progress=progress, device=device,
    )
    W, b, losses = W.reshape(len(S), R, m, n), b.reshape(len(S), R, n), losses.reshape(len(S), R)
    best = np.argmin(losses, axis=1)
    idx = np.arange(len(S))
    Wb, bb = W[idx, best], b[idx, best]
    return GeometryResult(
        sparsities=S,
        W=Wb,
        b=bb,
        losses=losses[idx, best],
        restart_losses=losses,
        restart_W=W,
        norms=column_norms(Wb),
        num_represented=count_represented(Wb),
        activation=activation,
        gamma=float(gamma),
        config={**asdict(config), "activation": activation, "gamma": float(gamma),
                "represented_threshold": REPRESENTED_THRESHOLD},
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


def phase_diagram(
    config: PhaseDiagramConfig | None = None,
    *,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> PhaseDiagramResult:
    r"""Train 2-feature, 1-dimension ReLU models over (relative importance, density) and classify them.

    Feature 1 has importance 1, feature 2 importance :math:`r`; both have density :math:`p`. All
    ``I * P * num_restarts`` instances train in one batched run; per grid point the lowest-loss restart is
    kept and classified by :func:`slt_tms.analysis.superposition.classify_two_feature`;
    :func:`slt_tms.theory.two_feature.analytic_phase` gives the analytic class.

    Returns
    -------
    PhaseDiagramResult
        With ``agreement`` = fraction of grid points where trained and analytic classes agree.

    Examples
    --------
    >>> cfg = PhaseDiagramConfig(relative_importances=(0.1,), densities=(1.0,),
    ...                          train=TrainConfig(num_steps=10, num_restarts=1))
    >>> phase_diagram(cfg, progress=False).classes.shape
    (1, 1)
    """
    config = PhaseDiagramConfig() if config is None else config
    seed = check_seed(seed)
    t0 = time.perf_counter()
    tc = config.train
    r = np.asarray(config.relative_importances)
    p = np.asarray(config.densities)
    R = tc.num_restarts
    rr, pp = np.meshgrid(r, p, indexing="ij")  # (I, P)
    dens = np.repeat(pp.reshape(-1), R)
    imp = np.stack([np.ones_like(dens), np.repeat(rr.reshape(-1), R)], axis=-1)
    W, b, losses = _train_batched(
        n=2, m=1, densities=dens, importance=imp, train_config=tc, activation="relu", gamma=1.0,
        seed=seed, progress=progress, device=device,
    )
    I, P = rr.shape
    W = W.reshape(I, P, R, 2)
    b = b.reshape(I, P, R, 2)
    losses = losses.reshape(I, P, R)
    best = np.argmin(losses, axis=-1)
    ii, jj = np.meshgrid(np.arange(I), np.arange(P), indexing="ij")
    Wb, bb = W[ii, jj, best], b[ii, jj, best]
    classes = classify_two_feature(Wb)
    analytic = analytic_phase(rr, pp)
    return PhaseDiagramResult(
        relative_importances=r,
        densities=p,
        classes=classes,
        analytic_classes=analytic,
        agreement=float((classes == analytic).mean()),
        W=Wb,
        b=bb,
        losses=losses[ii, jj, best],
        config={**asdict(config), "represented_threshold": REPRESENTED_THRESHOLD,
                "phase_names": list(PHASE_NAMES)},
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


def dimensionality(
    config: DimensionalityConfig | None = None,
    *,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> DimensionalityResult:
    r"""Dimensions per feature :math:`m / \|W\|_F^2` and per-feature :math:`D_i` against :math:`1/(1-S)`.

    Uniform importance :math:`I_i = 1`; one instance per sparsity (``num_restarts`` > 1 keeps the best),
    all trained in one batched run. Elhage et al. find :math:`m/\|W\|_F^2` "sticky" at 1 and 1/2 and the
    :math:`D_i` clustering at the fractions of :data:`slt_tms.analysis.superposition.PLATEAUS`.

    Examples
    --------
    >>> cfg = DimensionalityConfig(n=6, m=2, inverse_densities=(1.0, 10.0),
    ...                            train=TrainConfig(num_steps=10, num_restarts=1))
    >>> dimensionality(cfg, progress=False).feature_dims.shape
    (2, 6)
    """
    config = DimensionalityConfig() if config is None else config
    seed = check_seed(seed)
    t0 = time.perf_counter()
    tc, n, m = config.train, config.n, config.m
    S = np.asarray(config.sparsities)
    R = tc.num_restarts
    dens = np.repeat(1.0 - S, R)
    W, _, losses = _train_batched(
        n=n, m=m, densities=dens, importance=np.ones((len(dens), n)), train_config=tc, activation="relu",
        gamma=1.0, seed=seed, progress=progress, device=device,
    )
    W, losses = W.reshape(len(S), R, m, n), losses.reshape(len(S), R)
    best = np.argmin(losses, axis=1)
    idx = np.arange(len(S))
    Wb = W[idx, best]
    fro = (Wb**2).sum((-1, -2))
    return DimensionalityResult(
        sparsities=S,
        inverse_densities=np.asarray(config.inverse_densities),
        frobenius_sq=fro,
        dims_per_feature=dimensions_per_feature(Wb),
        feature_dims=feature_dimensionality(Wb),
        W=Wb,
        losses=losses[idx, best],
        config=asdict(config),
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


def swish_comparison(
    config: SwishConfig | None = None,
    *,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> SwishResult:
    r"""How large must :math:`\gamma` be before :math:`\mathrm{swish}_\gamma` gives ReLU's geometry?

    :math:`\mathrm{swish}_\gamma(z) = z\,\sigma(\gamma z) \to \mathrm{ReLU}(z)` as :math:`\gamma \to \infty`.
    The geometry experiment (:func:`geometry`) runs for ReLU and for each :math:`\gamma` with the same seed
    (same initialisations, same samples), so differences come from the activation alone; restart
    :math:`k` of swish is compared with restart :math:`k` of ReLU. Per :math:`(\gamma, S)` we record the
    number of represented features, the relative Procrustes distance of the columns to ReLU's modulo
    :math:`O(m)` (:func:`slt_tms.analysis.superposition.procrustes_distance`, median over restarts) and
    the largest norm of a dropped column (:func:`slt_tms.analysis.superposition.max_unrepresented_norm`).
    For scale, the distance between ReLU solutions from different initialisations (the restarts) is
    recorded as ``restart_spread``. A restart *matches* when its count equals ReLU's and its distance is
    below ``config.tolerance``; :math:`(\gamma, S)` matches when more than half of the restarts do;
    ``matching_gamma`` is the smallest :math:`\gamma` of the grid from which on every sparsity matches.

    Examples
    --------
    >>> geo = GeometryConfig(sparsities=(0.0,), train=TrainConfig(num_steps=10, num_restarts=1))
    >>> swish_comparison(SwishConfig(gammas=(4.0,), geometry=geo), progress=False).distances.shape
    (1, 1)
    """
    config = SwishConfig() if config is None else config
    seed = check_seed(seed)
    t0 = time.perf_counter()
    geo = config.geometry
    relu = geometry(geo, activation="relu", seed=seed, progress=progress, device=device)
    kept = np.argmin(relu.restart_losses, axis=1)
    spread = np.full(len(relu.sparsities), np.nan)
    for j in range(len(relu.sparsities)):
        others = [k for k in range(relu.restart_W.shape[1]) if k != kept[j]]
        if others:
            spread[j] = float(np.median(procrustes_distance(relu.restart_W[j, others], relu.W[j])))
    runs = [
        geometry(geo, activation="swish", gamma=g, seed=seed, progress=progress, device=device)
        for g in _progress(config.gammas, desc="swish gammas", enabled=progress)
    ]
    counts = np.stack([r.num_represented for r in runs])
    r_dist = np.stack([procrustes_distance(r.restart_W, relu.restart_W) for r in runs])  # (G, S, R)
    r_counts = np.stack([count_represented(r.restart_W) for r in runs])
    r_match = (r_counts == count_represented(relu.restart_W)[None]) & (r_dist < config.tolerance)
    matches = r_match.mean(-1) > 0.5
    all_match = matches.all(axis=1)
    matching_gamma = None
    for k in range(len(runs)):
        if all_match[k:].all():
            matching_gamma = float(config.gammas[k])
            break
    return SwishResult(
        gammas=np.asarray(config.gammas),
        sparsities=relu.sparsities,
        relu=relu,
        swish=runs,
        num_represented=counts,
        relu_num_represented=relu.num_represented,
        restart_distances=r_dist,
        restart_matches=r_match,
        distances=np.median(r_dist, axis=-1),
        restart_spread=spread,
        max_unrepresented_norm=np.stack([max_unrepresented_norm(r.W) for r in runs]),
        relu_max_unrepresented_norm=max_unrepresented_norm(relu.W),
        matches=matches,
        matching_gamma=matching_gamma,
        config=asdict(config),
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )
