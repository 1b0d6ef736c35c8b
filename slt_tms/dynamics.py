r"""SGD (dynamical) transitions through the k-gon critical points, with the LLC along training.

THEORY.md §7. Minibatch SGD on a fixed training set of the TMS (one-hot uniform inputs) plateaus at the
energy levels of the k-gon critical points (:mod:`slt_tms.theory.critical_points`) and jumps from high
loss / low learning coefficient to low loss / high learning coefficient. This module

1. runs the protocol (:class:`DynamicsConfig`, defaults of the TMS paper) for many seeds through the
   one sweep executor :func:`slt_tms.sweep.run_sweep` (one task per seed, resumable, local or Dask);
2. classifies every checkpoint into a named critical-point family (:func:`classify`): nearest energy
   level of the population loss *and* matching geometry, else "unclassified";
3. finds plateaus of the loss curve (:func:`detect_plateaus`), the stretches of equal family
   (:func:`segments`), the transitions per run and their counts across runs
   (:func:`transition_counts`);
4. estimates the local learning coefficient :math:`\hat\lambda` at the plateau checkpoints with
   :func:`slt_tms.estimators.llc.estimate_llc` on the empirical loss of the training set
   (:func:`llc_along_training`), also through the sweep executor;
5. draws the figures (loss against step with the energy levels, :math:`\hat\lambda` against step,
   polygon snapshots, the Bayesian beside the dynamical ordering).

The SGD update (batch :math:`B_t` of ``batch_size`` rows drawn from the ``n`` training samples):

.. math::

    w_{t+1} = w_t - \eta\, \nabla_w \frac{1}{|B_t|} \sum_{x \in B_t} \sum_i (x_i - f(x; w_t)_i)^2 .

References
----------
Chen, Lau, Mendel, Wei, Murfet, *Dynamical versus Bayesian Phase Transitions in a Toy Model of
Superposition*, arXiv 2310.06301 (2023), §6 (the protocol and the k-gon plateaus).
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._rng import spawn_seeds
from slt_tms.io.atomic import atomic_write_text, save_figure
from slt_tms.sweep import Executor, load_result, run_sweep, task_key
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms import OneHotUniform, empirical_loss, fixed_dataset, num_params, pack, unpack

__all__ = [
    "Classification",
    "ClassifyConfig",
    "DynamicsConfig",
    "DynamicsRun",
    "LLCConfig",
    "LLCPoint",
    "Plateau",
    "RunAnalysis",
    "Segment",
    "Transition",
    "analyze_run",
    "bayesian_ordering",
    "classify",
    "classify_many",
    "detect_plateaus",
    "dynamical_ordering",
    "find_transitions",
    "initial_point",
    "llc_along_training",
    "llc_task",
    "load_dynamics",
    "plot_llc",
    "plot_losses",
    "plot_ordering",
    "plot_polygons",
    "quick_config",
    "run_dynamics",
    "run_seed",
    "segments",
    "training_set",
    "transition_counts",
]


# --------------------------------------------------------------------------------------------------
# configuration and one run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DynamicsConfig:
    r"""The SGD protocol (THEORY.md §7); defaults are the TMS paper's.

    Parameters
    ----------
    c, r : int
        Features and hidden dimensions (6, 2).
    n : int
        Size of the fixed training set of :class:`~slt_tms.tms.data.OneHotUniform` samples (1000).
    batch_size : int
        Minibatch size (20).
    lr : float
        SGD learning rate :math:`\eta` (0.005).
    num_steps : int
        Number of SGD steps (225 000, "about 2.25e5" in the paper).
    init : {"kgon", "random"}
        ``"kgon"``: ``init_k`` columns of length ``init_length`` at angles :math:`2\pi j/k`, the other
        columns 0, :math:`b = 0`, plus :math:`N(0, \text{init\_noise}^2)` on every parameter.
        ``"random"``: :math:`W_{ji} \sim N(0, \text{random\_scale}^2)`, :math:`b = 0`, plus the same noise.
    init_k, init_length, init_noise : int, float, float
        4, 1.0, 0.01 (the paper's "near a 4-gon").
    random_scale : float
        Standard deviation of :math:`W` for ``init="random"`` (0.3: our choice, not the paper's; at
        this scale the columns start at a third of the k-gon length and the runs pass through several
        plateaus before settling, see docs/dynamics.md).
    num_checkpoints : int
        Size of the log-spaced checkpoint schedule (150).
    data_seed : int, optional
        None: every seed draws its own training set; an int: all seeds share this training set.
    activation : str
        ``"relu"`` (the classification uses the closed-form ReLU population loss).
    """

    c: int = 6
    r: int = 2
    n: int = 1000
    batch_size: int = 20
    lr: float = 0.005
    num_steps: int = 225_000
    init: str = "kgon"
    init_k: int = 4
    init_length: float = 1.0
    init_noise: float = 0.01
    random_scale: float = 0.3
    num_checkpoints: int = 150
    data_seed: int | None = None
    activation: str = "relu"

    def __post_init__(self) -> None:
        for name in ("c", "r", "n", "batch_size", "num_steps", "init_k", "num_checkpoints"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DynamicsConfig.{name} must be a positive integer, got {v!r}")
        for name in ("lr", "init_length"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"DynamicsConfig.{name} must be a positive number, got {v!r}")
        for name in ("init_noise", "random_scale"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"DynamicsConfig.{name} must be a non-negative number, got {v!r}")
        if self.init not in ("kgon", "random"):
            raise ValueError(f"DynamicsConfig.init must be 'kgon' or 'random', got {self.init!r}")
        if self.init == "kgon" and self.init_k > self.c:
            raise ValueError(f"init_k = {self.init_k} must be at most c = {self.c}")
        if self.init == "kgon" and self.r != 2:
            raise ValueError("init='kgon' places a regular polygon in the plane: it needs r = 2")
        if self.batch_size > self.n:
            raise ValueError(f"batch_size = {self.batch_size} must be at most n = {self.n}")
        if self.num_checkpoints < 2:
            raise ValueError("num_checkpoints must be at least 2")
        if self.activation != "relu":
            raise ValueError(
                "only activation='relu' is supported: the energy levels are the ReLU closed form"
            )
        if self.data_seed is not None and (
            isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0
        ):
            raise ValueError(f"data_seed must be None or a non-negative integer, got {self.data_seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DynamicsConfig:
        """Inverse of :meth:`to_dict` (unknown keys are refused)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DynamicsConfig fields {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**dict(d))


def quick_config(c: int = 6) -> DynamicsConfig:
    r"""Settings of ``slt-tms dynamics run --quick``: random initialisation, 30 000 steps, 100 checkpoints.

    Everything else is the paper's protocol (n = 1000, batch 20, lr 0.005). From a random start
    (:math:`W \sim N(0, 0.3^2)`) the runs settle on k-gon plateaus within a few thousand steps and
    several leave one named family for another (at c = 6 e.g. ``4+ -> 4++ -> 5+`` and ``5 -> 5+``)
    before 30 000 steps; see docs/dynamics.md for the measured counts.
    """
    return DynamicsConfig(c=c, init="random", num_steps=30_000, num_checkpoints=100)


def _streams(config: DynamicsConfig, seed: int) -> tuple[int, int, int]:
    """Independent seeds (data, init, sgd) derived from one recorded seed."""
    data, init, sgd = spawn_seeds(seed, 3)
    if config.data_seed is not None:
        data = config.data_seed
    return data, init, sgd


def training_set(config: DynamicsConfig, seed: int, device: str | torch.device | None = None) -> Tensor:
    """The fixed training set ``(n, c)`` of the run with ``seed`` (deterministic, drawn on the CPU)."""
    x = fixed_dataset(OneHotUniform(config.c), config.n, _streams(config, seed)[0])
    return x.to(device) if device is not None else x


def initial_point(config: DynamicsConfig, seed: int, device: str | torch.device | None = None) -> Tensor:
    r"""The initial flat parameters ``(d,)`` of the run with ``seed``.

    ``init="kgon"``: :math:`W_j = l\,(\cos 2\pi j/k, \sin 2\pi j/k)` for :math:`j < k`, other columns 0,
    :math:`b = 0`, then :math:`w \leftarrow w + \epsilon`, :math:`\epsilon \sim N(0, s^2 I_d)` with
    :math:`s` = ``init_noise``. ``init="random"``: :math:`W_{ji} \sim N(0, \text{random\_scale}^2)`,
    :math:`b = 0`, plus the same noise.
    """
    g = torch.Generator().manual_seed(_streams(config, seed)[1])
    c, r = config.c, config.r
    W = torch.zeros(r, c)
    if config.init == "kgon":
        for j in range(config.init_k):
            ang = 2 * math.pi * j / config.init_k
            W[0, j] = config.init_length * math.cos(ang)
            W[1, j] = config.init_length * math.sin(ang)
    else:
        W = config.random_scale * torch.randn(r, c, generator=g)
    w = pack(W, torch.zeros(c)) + config.init_noise * torch.randn(num_params(c, r), generator=g)
    return w.to(device) if device is not None else w


def run_seed(task: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep function: train one seed of the protocol.

    ``task = {"config": DynamicsConfig dict, "seed": int}`` (optionally ``"device"``).

    Returns the JSON-able record (logged steps and training losses, checkpoint steps, population loss
    at the checkpoints, wall and CPU time of the training)
    with tensors ``checkpoints (K, d)`` and ``final (d,)``.
    """
    from slt_tms.theory.symbolic import population_loss_flat
    from slt_tms.train import train

    config = DynamicsConfig.from_dict(task["config"])
    seed = int(task["seed"])
    device = task.get("device")
    x = training_set(config, seed, device)
    w0 = initial_point(config, seed, device)
    t0, c0 = time.perf_counter(), time.process_time()
    traj = train(
        w0,
        c=config.c,
        r=config.r,
        activation=config.activation,
        data=x,
        optimizer="sgd",
        lr=config.lr,
        batch_size=config.batch_size,
        num_steps=config.num_steps,
        num_checkpoints=config.num_checkpoints,
        seed=_streams(config, seed)[2],
        progress=False,
        device=device,
    )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    ck = traj.checkpoints.detach().cpu()
    with torch.no_grad():
        pop = population_loss_flat(ck.to(torch.float64), config.c, config.r)
    return {
        "seed": seed,
        "config": config.to_dict(),
        "steps": np.asarray(traj.steps).tolist(),
        "losses": np.asarray(traj.losses, dtype=float).tolist(),
        "checkpoint_steps": np.asarray(traj.checkpoint_steps).tolist(),
        "population_losses": pop.tolist(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "train_seed": int(traj.seed),
        "tensors": {"checkpoints": ck.float(), "final": traj.final.detach().cpu().float()},
    }


# --------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifyConfig:
    r"""Tolerances of :func:`classify`.

    Parameters
    ----------
    loss_tol : float, optional
        Largest :math:`|L(w) - L(w^*_a)|` for the energy level of family :math:`a`. Default
        :math:`1/(10c^2)`: 0.4 of the spacing :math:`1/(4c^2)` between two levels that differ by one
        dead column with the positive bias :math:`1/(2c)` (THEORY.md §3), the closest pairs of levels of
        the same polygon. (SGD checkpoints on a plateau sat within :math:`6\cdot10^{-4}` of the level at
        c = 6, n = 1000 in our runs, far inside this.)
    norm_tol, norm_rel_tol : float
        A column is *live* when :math:`\|W_i\| > \max(\text{norm\_tol}, \text{norm\_rel\_tol}
        \cdot \max_j \|W_j\|)` (0.1 and 0.5: dead columns of the families are exactly 0, while a
        column that SGD is slowly growing or shrinking on a plateau stays below half the polygon length
        for most of the plateau and does not yet change the energy level).
    bias_tol : float, optional
        A dead column with :math:`b_i >` ``bias_tol`` counts as carrying the positive bias. Default
        :math:`1/(4c)`, half the optimal dead bias :math:`1/(2c)`.
    off_ratio : float
        A live column is *switched off* when :math:`b_j < -\text{off\_ratio}\,\|W_j\|^2` (0.5: it then
        cannot fire on its own input beyond half-way; at the families :math:`b_j \le -l^2`, and live
        polygon columns have :math:`b_j + l^2 > 0.5\,l^2`).
    angle_tol : float
        Largest deviation (radians) of a gap between consecutive live columns from :math:`2\pi/k` for
        a regular k-gon (0.5 rad, about 29 degrees). Generous on purpose: on the 4-gon plateaus at c = 6
        SGD sits in the non-:math:`C^2` region around the 4-gon where the live biases go slightly
        negative and the square bends (gaps of 82-111 degrees measured at loss 0.0984, 0.0012 above the
        4++ level) before the fifth column grows into the opening.
    length_tol : float
        Largest relative spread :math:`(\max - \min)/\max` of the live lengths (0.3).
    """

    loss_tol: float | None = None
    norm_tol: float = 0.1
    norm_rel_tol: float = 0.5
    bias_tol: float | None = None
    off_ratio: float = 0.5
    angle_tol: float = 0.5
    length_tol: float = 0.3

    def resolved(self, c: int) -> ClassifyConfig:
        """Fill the defaults that depend on ``c``."""
        return replace(
            self,
            loss_tol=self.loss_tol if self.loss_tol is not None else 1.0 / (10 * c * c),
            bias_tol=self.bias_tol if self.bias_tol is not None else 1.0 / (4 * c),
        )


@dataclass(frozen=True)
class Classification:
    """Classification of one parameter vector (see :func:`classify`).

    Attributes
    ----------
    name : str or None
        The family's name, or None (unclassified; ``reason`` says why).
    loss : float
        Population loss :math:`L(w)`.
    nearest : str or None
        The family with the nearest energy level (whatever the geometry).
    loss_gap : float
        :math:`L(w) - L(w^*_{\\text{nearest}})`.
    k, sigma, phi : int
        Observed live columns, dead columns with positive bias, switched-off live columns.
    regular : bool
        Whether the live columns form a regular k-gon.
    reason : str
    """

    name: str | None
    loss: float
    nearest: str | None
    loss_gap: float
    k: int
    sigma: int
    phi: int
    regular: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _geometry(W: np.ndarray, b: np.ndarray, cfg: ClassifyConfig) -> tuple[int, int, int, bool]:
    norms = np.linalg.norm(W, axis=0)
    live = norms > max(cfg.norm_tol, cfg.norm_rel_tol * float(norms.max(initial=0.0)))
    k = int(live.sum())
    assert cfg.bias_tol is not None
    sigma = int(((~live) & (b > cfg.bias_tol)).sum())
    phi = int((live & (b < -cfg.off_ratio * norms**2)).sum())
    regular = True
    if k >= 2:
        ln = norms[live]
        if (ln.max() - ln.min()) / ln.max() > cfg.length_tol:
            regular = False
        if W.shape[0] == 2:
            ang = np.sort(np.arctan2(W[1, live], W[0, live]))
            gaps = np.diff(np.concatenate([ang, ang[:1] + 2 * np.pi]))
            if np.max(np.abs(gaps - 2 * np.pi / k)) > cfg.angle_tol:
                regular = False
        else:  # r > 2: no polygon picture; only equal lengths are checked
            pass
    return k, sigma, phi, regular


def classify(
    w: Tensor | np.ndarray,
    points: Sequence[CriticalPoint],
    *,
    c: int,
    r: int = 2,
    config: ClassifyConfig | None = None,
    loss: float | None = None,
) -> Classification:
    r"""Name the critical-point family of ``w`` by energy level and geometry.

    ``w`` belongs to family :math:`a` when

    .. math::

        |L(w) - L(w^*_a)| \le \text{loss\_tol}, \quad k(w) = k_a,\ \sigma(w) = \sigma_a,\
        \varphi(w) = \varphi_a, \quad \text{live columns a regular } k\text{-gon},

    where :math:`k(w)` counts columns with :math:`\|W_i\| >` ``norm_tol``, :math:`\sigma(w)` dead columns
    with bias above ``bias_tol`` and :math:`\varphi(w)` live columns with :math:`b_j < -\text{off\_ratio}
    \|W_j\|^2` (see :class:`ClassifyConfig`). Among matching families the nearest level wins;
    otherwise the result is unclassified with the reason.

    Parameters
    ----------
    w : Tensor or ndarray, shape ``(d,)``
    points : sequence of CriticalPoint
        The named families (e.g. :func:`slt_tms.theory.critical_points.critical_points`).
    c, r : int
    config : ClassifyConfig, optional
    loss : float, optional
        :math:`L(w)` if already known (else computed with
        :func:`slt_tms.theory.symbolic.population_loss_flat`).
    """
    return classify_many(
        torch.as_tensor(np.asarray(w, dtype=np.float64))[None],
        points,
        c=c,
        r=r,
        config=config,
        losses=None if loss is None else [loss],
    )[0]


def classify_many(
    ws: Tensor | np.ndarray,
    points: Sequence[CriticalPoint],
    *,
    c: int,
    r: int = 2,
    config: ClassifyConfig | None = None,
    losses: Sequence[float] | np.ndarray | None = None,
) -> list[Classification]:
    """:func:`classify` for every row of ``ws (K, d)``."""
    if not points:
        raise ValueError("classification needs at least one critical point (points is empty)")
    cfg = (config or ClassifyConfig()).resolved(c)
    w = torch.as_tensor(np.asarray(ws, dtype=np.float64) if not isinstance(ws, Tensor) else ws.detach().cpu())
    w = w.to(torch.float64)
    if w.ndim != 2 or w.shape[-1] != num_params(c, r):
        raise ValueError(f"ws must have shape (K, {num_params(c, r)}) for c={c}, r={r}; got {tuple(w.shape)}")
    if losses is None:
        from slt_tms.theory.symbolic import population_loss_flat

        with torch.no_grad():
            lv = population_loss_flat(w, c, r).numpy()
    else:
        lv = np.asarray(losses, dtype=float)
    W, b = unpack(w, c, r)
    W, b = W.numpy(), b.numpy()
    levels = np.array([p.loss for p in points], dtype=float)
    out = []
    assert cfg.loss_tol is not None
    for i in range(w.shape[0]):
        L = float(lv[i])
        k, sigma, phi, regular = _geometry(W[i], b[i], cfg)
        gaps = L - levels
        j = int(np.argmin(np.abs(gaps)))
        nearest, gap = points[j].name, float(gaps[j])
        match = [
            m
            for m in range(len(points))
            if abs(gaps[m]) <= cfg.loss_tol
            and (points[m].k, points[m].sigma, points[m].phi) == (k, sigma, phi)
        ]
        if not math.isfinite(L):
            name, reason = None, "non-finite loss"
        elif match and regular:
            m = min(match, key=lambda m: abs(gaps[m]))
            name, reason = points[m].name, "energy level and geometry match"
        elif match:
            name, reason = (
                None,
                f"energy and counts match {points[match[0]].name} but the live columns are not "
                f"a regular {k}-gon",
            )
        elif abs(gap) <= cfg.loss_tol:
            name = None
            reason = (
                f"energy level of {nearest} (gap {gap:+.2e}) but geometry k={k}, sigma={sigma}, phi={phi} "
                f"differs from ({points[j].k}, {points[j].sigma}, {points[j].phi})"
            )
        else:
            name, reason = (
                None,
                f"no energy level within {cfg.loss_tol:.2e} (nearest {nearest}, gap {gap:+.2e})",
            )
        out.append(Classification(name, L, nearest, gap, k, sigma, phi, regular, reason))
    return out


@functools.lru_cache(maxsize=16)
def _critical_points(c: int) -> tuple[CriticalPoint, ...]:
    from slt_tms.theory.critical_points import critical_points

    return tuple(critical_points(c, progress=False))


# --------------------------------------------------------------------------------------------------
# plateaus, segments, transitions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plateau:
    """A stretch of the loss curve where log-loss is flat in log-step.

    Attributes
    ----------
    start_step, end_step : int
    start_index, end_index : int
        Indices into the curve (inclusive).
    loss : float
        Median loss over the stretch.
    name : str or None
        Family of the checkpoints inside it (majority), when classified.
    """

    start_step: int
    end_step: int
    start_index: int
    end_index: int
    loss: float
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_plateaus(
    steps: Sequence[int] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    window: float = 0.2,
    slope_tol: float = 0.05,
    min_decades: float = 0.25,
) -> list[Plateau]:
    r"""Plateaus of a loss curve: maximal stretches where :math:`\ln L` is flat against :math:`\log_{10} t`.

    At every logged step :math:`t_i > 0` the local slope :math:`s_i` is the least-squares slope of
    :math:`\ln L` against :math:`\log_{10} t` over the points with :math:`|\log_{10} t - \log_{10} t_i|
    \le` ``window``/2 (and at least its two neighbours).
    A point is flat when :math:`|s_i| \le` ``slope_tol`` (default 0.05: the loss
    changes by less than 5% per decade of steps); consecutive flat points spanning at least
    ``min_decades`` decades form a plateau.

    Returns
    -------
    list of Plateau, in order of step.
    """
    t = np.asarray(steps, dtype=float)
    L = np.asarray(losses, dtype=float)
    if t.shape != L.shape or t.ndim != 1:
        raise ValueError(f"steps and losses must be 1-D of equal length, got {t.shape} and {L.shape}")
    if not (window > 0 and slope_tol >= 0 and min_decades >= 0):
        raise ValueError("window must be > 0, slope_tol and min_decades >= 0")
    ok = (t > 0) & np.isfinite(L) & (L > 0)
    idx = np.flatnonzero(ok)
    if idx.size < 2:
        return []
    x, y = np.log10(t[idx]), np.log(L[idx])
    slope = np.zeros(idx.size)
    for i in range(idx.size):
        sel = np.abs(x - x[i]) <= window / 2
        sel[max(i - 1, 0) : i + 2] = True  # sparse early steps: at least the neighbours
        xs, ys = x[sel], y[sel]
        if xs.size >= 2 and np.ptp(xs) > 0:
            xc = xs - xs.mean()
            slope[i] = float((xc * (ys - ys.mean())).sum() / (xc * xc).sum())
    flat = np.abs(slope) <= slope_tol
    out: list[Plateau] = []
    i = 0
    while i < idx.size:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < idx.size and flat[j + 1]:
            j += 1
        if x[j] - x[i] >= min_decades:
            a, bb = int(idx[i]), int(idx[j])
            out.append(Plateau(int(t[a]), int(t[bb]), a, bb, float(np.median(L[a : bb + 1]))))
        i = j + 1
    return out


@dataclass(frozen=True)
class Segment:
    """Consecutive checkpoints with the same family (``name`` None: unclassified stretch)."""

    name: str | None
    start_step: int
    end_step: int
    start_index: int
    end_index: int
    loss_min: float
    loss_max: float

    @property
    def num_checkpoints(self) -> int:
        return self.end_index - self.start_index + 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "num_checkpoints": self.num_checkpoints}


def segments(
    steps: Sequence[int] | np.ndarray,
    labels: Sequence[str | None],
    losses: Sequence[float] | np.ndarray | None = None,
    *,
    min_checkpoints: int = 2,
) -> list[Segment]:
    """Split a run into stretches of equal label.

    A named stretch shorter than ``min_checkpoints`` checkpoints (a level crossed in passing) is
    relabelled unclassified; adjacent unclassified stretches are merged.
    """
    steps = np.asarray(steps)
    if len(labels) != steps.size:
        raise ValueError(f"need one label per step: {len(labels)} labels, {steps.size} steps")
    if min_checkpoints < 1:
        raise ValueError("min_checkpoints must be >= 1")
    L = np.full(steps.size, np.nan) if losses is None else np.asarray(losses, dtype=float)

    def runs(labs: list[str | None]) -> list[tuple[str | None, int, int]]:
        out: list[tuple[str | None, int, int]] = []
        for i, lab in enumerate(labs):
            if out and out[-1][0] == lab:
                out[-1] = (lab, out[-1][1], i)
            else:
                out.append((lab, i, i))
        return out

    labs = list(labels)
    for lab, a, bb in runs(labs):
        if lab is not None and bb - a + 1 < min_checkpoints:
            for i in range(a, bb + 1):
                labs[i] = None
    return [
        Segment(
            lab,
            int(steps[a]),
            int(steps[bb]),
            a,
            bb,
            float(np.nanmin(L[a : bb + 1])) if np.isfinite(L[a : bb + 1]).any() else math.nan,
            float(np.nanmax(L[a : bb + 1])) if np.isfinite(L[a : bb + 1]).any() else math.nan,
        )
        for lab, a, bb in runs(labs)
    ]


@dataclass(frozen=True)
class Transition:
    """A change of family along one run: ``source`` (last seen at ``source_end_step``) -> ``target``
    (first seen at ``step``)."""

    source: str
    target: str
    source_end_step: int
    step: int
    source_k: int | None = None
    target_k: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_transitions(
    segs: Sequence[Segment], *, k_of: Mapping[str, int] | None = None, seed: int | None = None
) -> list[Transition]:
    """Transitions between consecutive *named* segments (unclassified stretches in between are skipped;
    a return to the same family after an unclassified stretch is not a transition)."""
    named = [s for s in segs if s.name is not None]
    k_of = k_of or {}
    out = []
    for a, b in itertools.pairwise(named):
        if a.name != b.name:
            assert a.name is not None and b.name is not None
            out.append(
                Transition(a.name, b.name, a.end_step, b.start_step, k_of.get(a.name), k_of.get(b.name), seed)
            )
    return out


@dataclass(frozen=True)
class RunAnalysis:
    """Everything :func:`analyze_run` finds in one run."""

    seed: int
    checkpoint_steps: np.ndarray
    population_losses: np.ndarray
    classifications: list[Classification]
    segments: list[Segment]
    transitions: list[Transition]
    plateaus: list[Plateau]

    @property
    def labels(self) -> list[str | None]:
        return [c.name for c in self.classifications]

    @property
    def unclassified(self) -> list[Segment]:
        """The unclassified stretches."""
        return [s for s in self.segments if s.name is None]

    @property
    def path(self) -> list[str]:
        """Families visited, in order (the run's dynamical ordering)."""
        out: list[str] = []
        for s in self.segments:
            if s.name is not None and (not out or out[-1] != s.name):
                out.append(s.name)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "path": self.path,
            "checkpoint_steps": self.checkpoint_steps.tolist(),
            "population_losses": self.population_losses.tolist(),
            "labels": self.labels,
            "classifications": [c.to_dict() for c in self.classifications],
            "segments": [s.to_dict() for s in self.segments],
            "unclassified": [s.to_dict() for s in self.unclassified],
            "transitions": [t.to_dict() for t in self.transitions],
            "plateaus": [p.to_dict() for p in self.plateaus],
        }


def analyze_run(
    record: Mapping[str, Any],
    points: Sequence[CriticalPoint],
    *,
    config: ClassifyConfig | None = None,
    min_checkpoints: int = 2,
    plateau_kwargs: Mapping[str, Any] | None = None,
) -> RunAnalysis:
    """Classify every checkpoint of a run (a :func:`run_seed` result), find segments, transitions and
    plateaus (on the logged training-loss curve; each labelled by the majority family of the checkpoints
    inside it)."""
    cfg = DynamicsConfig.from_dict(record["config"])
    ck = record["tensors"]["checkpoints"]
    steps = np.asarray(record["checkpoint_steps"], dtype=np.int64)
    pop = np.asarray(record["population_losses"], dtype=float)
    cls = classify_many(ck, points, c=cfg.c, r=cfg.r, config=config, losses=pop)
    segs = segments(steps, [c.name for c in cls], pop, min_checkpoints=min_checkpoints)
    k_of = {p.name: p.k for p in points}
    trans = find_transitions(segs, k_of=k_of, seed=int(record["seed"]))
    plats = detect_plateaus(record["steps"], record["losses"], **dict(plateau_kwargs or {}))
    labelled = []
    for p in plats:
        inside = [c.name for s, c in zip(steps, cls, strict=True) if p.start_step <= s <= p.end_step]
        named = Counter(n for n in inside if n is not None)
        labelled.append(replace(p, name=named.most_common(1)[0][0] if named else None))
    return RunAnalysis(int(record["seed"]), steps, pop, cls, segs, trans, labelled)


def transition_counts(analyses: Sequence[RunAnalysis]) -> list[dict[str, Any]]:
    """Counts of each transition ``source -> target`` across runs, with ``k -> k'`` and the median step.

    Returns rows ``{"source", "target", "source_k", "target_k", "count", "median_step"}`` sorted by
    decreasing count.
    """
    bucket: dict[tuple[str, str], list[Transition]] = {}
    for a in analyses:
        for t in a.transitions:
            bucket.setdefault((t.source, t.target), []).append(t)
    rows = [
        {
            "source": s,
            "target": t,
            "source_k": ts[0].source_k,
            "target_k": ts[0].target_k,
            "count": len(ts),
            "median_step": float(np.median([x.step for x in ts])),
        }
        for (s, t), ts in bucket.items()
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["median_step"]))


def dynamical_ordering(analyses: Sequence[RunAnalysis]) -> list[dict[str, Any]]:
    """Families visited by SGD in the order the transitions imply.

    A family goes before another when more transitions lead from it to the other than back (Kahn's
    topological sort); ties (and families in a cycle) are ordered by the median, over the runs visiting
    it, of the first step of the visit. Rows ``{"name", "median_first_step", "runs"}``.
    """
    first: dict[str, list[int]] = {}
    for a in analyses:
        seen = set()
        for s in a.segments:
            if s.name is not None and s.name not in seen:
                seen.add(s.name)
                first.setdefault(s.name, []).append(s.start_step)
    med = {k: float(np.median(v)) for k, v in first.items()}
    flow: Counter[tuple[str, str]] = Counter((t.source, t.target) for a in analyses for t in a.transitions)
    before = {n: set() for n in med}
    for (s, t), m in flow.items():
        if m > flow.get((t, s), 0):
            before[t].add(s)
    order: list[str] = []
    left = set(med)
    while left:
        ready = [n for n in left if not (before[n] & left)] or list(left)  # a cycle: fall back to steps
        nxt = min(ready, key=lambda n: (med[n], n))
        order.append(nxt)
        left.remove(nxt)
    return [{"name": n, "median_first_step": med[n], "runs": len(first[n])} for n in order]


def bayesian_ordering(
    points: Sequence[CriticalPoint],
    names: Sequence[str] | None = None,
    lambdas: Mapping[str, float] | None = None,
    *,
    n_max: float = 1e6,
) -> dict[str, Any]:
    r"""Order of the families as the Bayesian posterior would visit them when ``n`` grows.

    With a learning coefficient for every family (``lambda_theory``, else ``lambdas[name]``, e.g. the
    :math:`\hat\lambda` measured at the plateaus) the order is the sequence of dominant phases of the
    free energy :math:`F_n = nL + \lambda\log n` (:func:`slt_tms.phases.phase_sequence`, without prior
    terms), listing the families never dominant after it by loss. Without them it is the order by
    decreasing loss (``method="loss"``).

    Returns
    -------
    dict with ``"order"`` (list of names), ``"method"`` and ``"lambdas"`` used.
    """
    sel = [p for p in points if names is None or p.name in set(names)]
    if not sel:
        raise ValueError("no families to order")
    lam: dict[str, float] = {}
    for p in sel:
        if p.lambda_theory is not None and math.isfinite(p.lambda_theory):
            lam[p.name] = float(p.lambda_theory)
        elif lambdas and p.name in lambdas and math.isfinite(lambdas[p.name]):
            lam[p.name] = float(lambdas[p.name])
    by_loss = [p.name for p in sorted(sel, key=lambda p: -p.loss)]
    if len(lam) == len(sel) and len(sel) >= 2:
        try:
            from slt_tms.phases import phase_sequence

            seq = phase_sequence(
                [(p.name, float(p.loss), lam[p.name]) for p in sel],
                n_max=n_max,
                include_prior=False,
                include_multiplicity=False,
            )
            order = [s[0] for s in seq]
            order += [nm for nm in by_loss if nm not in order]
            return {
                "order": order,
                "method": "free energy nL + lambda log n (slt_tms.phases)",
                "lambdas": lam,
                "sequence": [list(s) for s in seq],
            }
        except ImportError:  # pragma: no cover - phases is part of the package
            pass
    return {"order": by_loss, "method": "loss (decreasing)", "lambdas": lam}


# --------------------------------------------------------------------------------------------------
# the whole experiment
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DynamicsRun:
    """A finished (and analysed) dynamics experiment in ``out_dir``."""

    config: DynamicsConfig
    seeds: list[int]
    records: list[dict[str, Any]] = field(repr=False)
    analyses: list[RunAnalysis] = field(repr=False)
    points: tuple[CriticalPoint, ...] = field(repr=False)
    out_dir: Path

    @property
    def counts(self) -> list[dict[str, Any]]:
        return transition_counts(self.analyses)

    def counts_table(self) -> str:
        """Plain-text table of the transition counts."""
        rows = self.counts
        if not rows:
            return "no transitions between named families"
        lines = [f"{'transition':<16}{'k -> k':<10}{'count':>6}{'median step':>14}"]
        for r in rows:
            kk = f"{r['source_k']} -> {r['target_k']}"
            lines.append(
                f"{r['source'] + ' -> ' + r['target']:<16}{kk:<10}{r['count']:>6}{r['median_step']:>14.0f}"
            )
        return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]], header: list[str]) -> None:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    wr.writeheader()
    for r in rows:
        wr.writerow(r)
    atomic_write_text(path, buf.getvalue())


def run_dynamics(
    config: DynamicsConfig,
    seeds: Sequence[int],
    *,
    out_dir: str | os.PathLike[str],
    executor: Executor = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
    points: Sequence[CriticalPoint] | None = None,
    classify_config: ClassifyConfig | None = None,
    figures: bool = True,
) -> DynamicsRun:
    """Run the protocol for every seed (one sweep task each, resumable), analyse and write the outputs.

    Files in ``out_dir``: ``config.json``; ``runs/`` (the sweep: one JSON + safetensors per seed);
    ``analysis.json`` (classification, segments, unclassified stretches, transitions, plateaus per run);
    ``transitions.csv`` (every transition), ``transition_counts.csv``; ``ordering.csv``; figures
    ``loss_vs_step.png``, ``polygons.png``, ``ordering.png``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old.get("config") != config.to_dict():
            raise ValueError(
                f"{out} holds a run with a different configuration; choose another --out directory"
            )
    atomic_write_text(
        cfg_path,
        json.dumps(
            {
                "config": config.to_dict(),
                "seeds": seeds,
                "classify": asdict(classify_config or ClassifyConfig()),
            },
            indent=1,
        ),
    )
    tasks = [{"config": config.to_dict(), "seed": s} for s in seeds]
    records = run_sweep(
        run_seed,
        tasks,
        out_dir=out / "runs",
        executor=executor,
        max_workers=max_workers,
        dask_address=dask_address,
        progress=progress,
    )
    return _analyse_and_write(config, seeds, records, out, points, classify_config, figures)


def _analyse_and_write(config, seeds, records, out, points, classify_config, figures) -> DynamicsRun:
    pts = tuple(points) if points is not None else _critical_points(config.c)
    analyses = [analyze_run(r, pts, config=classify_config) for r in records]
    run = DynamicsRun(config, seeds, records, analyses, pts, out)
    atomic_write_text(
        out / "analysis.json",
        json.dumps(
            {
                "config": config.to_dict(),
                "cpu_seconds_per_seed": [r.get("cpu_seconds") for r in records],
                "seconds_per_seed": [r["seconds"] for r in records],
                "levels": [
                    {
                        "name": p.name,
                        "k": p.k,
                        "sigma": p.sigma,
                        "phi": p.phi,
                        "loss": p.loss,
                        "lambda_theory": p.lambda_theory,
                    }
                    for p in pts
                ],
                "runs": [a.to_dict() for a in analyses],
                "transition_counts": run.counts,
            },
            indent=1,
        ),
    )
    _write_csv(
        out / "transitions.csv",
        [t.to_dict() for a in analyses for t in a.transitions],
        ["seed", "source", "target", "source_k", "target_k", "source_end_step", "step"],
    )
    _write_csv(
        out / "transition_counts.csv",
        run.counts,
        ["source", "target", "source_k", "target_k", "count", "median_step"],
    )
    _write_ordering(run, lambdas=None)
    if figures:
        plot_losses(run, out / "loss_vs_step.png")
        plot_polygons(run, out / "polygons.png")
    return run


def load_dynamics(
    out_dir: str | os.PathLike[str],
    *,
    points: Sequence[CriticalPoint] | None = None,
    classify_config: ClassifyConfig | None = None,
) -> DynamicsRun:
    """Load and re-analyse a finished :func:`run_dynamics` directory (no training)."""
    out = Path(out_dir)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: run 'slt-tms dynamics run --out {out}' first")
    meta = json.loads(cfg_path.read_text())
    config = DynamicsConfig.from_dict(meta["config"])
    seeds = [int(s) for s in meta["seeds"]]
    records = []
    for s in seeds:
        rec = load_result(out / "runs", task_key({"config": config.to_dict(), "seed": s}))
        if rec is None:
            raise FileNotFoundError(
                f"seed {s} of {out} is not finished: rerun 'slt-tms dynamics run' to resume"
            )
        records.append(rec["result"])
    pts = tuple(points) if points is not None else _critical_points(config.c)
    analyses = [analyze_run(r, pts, config=classify_config) for r in records]
    return DynamicsRun(config, seeds, records, analyses, pts, out)


def _write_ordering(run: DynamicsRun, lambdas: Mapping[str, float] | None) -> dict[str, Any]:
    dyn = dynamical_ordering(run.analyses)
    names = [d["name"] for d in dyn]
    if not names:
        return {}
    bayes = bayesian_ordering(run.points, names, lambdas)
    rows = []
    for i in range(len(names)):
        rows.append(
            {
                "rank": i + 1,
                "bayesian": bayes["order"][i],
                "dynamical": names[i],
                "dynamical_median_first_step": dyn[i]["median_first_step"],
            }
        )
    _write_csv(
        run.out_dir / "ordering.csv", rows, ["rank", "bayesian", "dynamical", "dynamical_median_first_step"]
    )
    plot_ordering(bayes, dyn, run.out_dir / "ordering.png")
    return {"bayesian": bayes, "dynamical": dyn}


# --------------------------------------------------------------------------------------------------
# LLC along training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LLCConfig:
    r"""Settings of the LLC estimates along training (passed to
    :func:`slt_tms.estimators.llc.estimate_llc`).

    ``nbeta=None`` is the estimator's default :math:`n\beta = n/\log n`; the potential is the empirical
    loss :math:`L_n` on the run's training set, with ``n`` = the training-set size.

    Defaults (measured at c = 6, n = 1000 on SGD checkpoints, see docs/dynamics.md): ``localization``
    :math:`\gamma = 10` rather than the usual 100, because here :math:`n\beta \approx 145` and the
    curvatures :math:`h` of the polygons are O(0.1-1), so :math:`n\beta h \gg \gamma` fails at
    :math:`\gamma = 100` (5+ plateau: :math:`\hat\lambda \approx 3.1` at :math:`\gamma = 100`, 6.7 at 10,
    9.5 with R-hat 1.4 at 1; theory 8.5 for the population loss); ``step_size`` :math:`10^{-3}` gives
    MALA acceptance about 0.98 and R-hat below 1.07 with 4 chains x 1000 draws.
    """

    step_size: float = 1e-3
    localization: float = 10.0
    nbeta: float | None = None
    num_chains: int = 4
    num_draws: int = 1000
    num_burnin: int = 300
    batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _EmpiricalPotential:
    """:math:`L_n(w)` of the TMS on a fixed dataset; ``batch`` may be rows ``(m, c)`` or indices."""

    def __init__(self, x: Tensor, c: int, r: int) -> None:
        self.x, self.c, self.r = x, c, r

    def __call__(self, w: Tensor, batch: Tensor | None = None) -> Tensor:
        x = self.x
        if batch is not None:
            batch = torch.as_tensor(batch)
            x = self.x[batch] if not batch.dtype.is_floating_point else batch
        return empirical_loss(w, x.to(w), self.c, self.r)


def llc_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep function: :math:`\\hat\\lambda` at one checkpoint.

    ``task = {"config": DynamicsConfig dict, "seed": run seed, "step": checkpoint step,
    "w": flat parameters (list), "llc": LLCConfig dict, "llc_seed": int}``. Returns the estimate, its
    standard error, the estimator's diagnostics and the warnings it raised (as ``"warnings"``).
    """
    from slt_tms.estimators.llc import estimate_llc

    config = DynamicsConfig.from_dict(task["config"])
    lc = dict(task["llc"])
    x = training_set(config, int(task["seed"]))
    w = torch.tensor(task["w"], dtype=torch.float32)
    pot = _EmpiricalPotential(x, config.c, config.r)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_llc(pot, w, n=config.n, seed=int(task["llc_seed"]), progress=False, **lc)
    out = {
        "seed": int(task["seed"]),
        "step": int(task["step"]),
        "llc": float(res.llc),
        "se": float(res.se),
        "seconds": time.perf_counter() - t0,
    }
    for name in ("rhat", "ess", "mala_acceptance", "frac_below_anchor"):
        v = getattr(res, name, None)
        if v is not None:
            out[name] = float(np.nanmean(np.asarray(v, dtype=float)))
    div = getattr(res, "diverged", None)
    if div is not None:
        out["diverged"] = int(np.sum(np.asarray(div, dtype=bool)))
    # the estimator's diagnostics (e.g. draws below the anchor loss at a non-critical checkpoint) are kept
    # with the result instead of being printed once per task
    out["warnings"] = sorted({str(w.message) for w in caught})
    return out


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


def _plateau_index(a: RunAnalysis, seg: Segment) -> int:
    """The checkpoint that stands for a named segment: its last checkpoint when the run ends in it (the
    most settled point), otherwise its middle checkpoint in index, i.e. the geometric middle in step for
    log-spaced checkpoints (the last one before a transition is already on its way out)."""
    if seg.end_index == len(a.checkpoint_steps) - 1:
        return seg.end_index
    return (seg.start_index + seg.end_index) // 2


def _select_checkpoints(a: RunAnalysis, extra: int) -> list[tuple[int, bool]]:
    """(checkpoint index, is_plateau) pairs: the plateau checkpoint of every named segment
    (:func:`_plateau_index`), plus ``extra`` evenly spaced checkpoints in index (log-spaced in step)."""
    chosen: dict[int, bool] = {}
    for s in a.segments:
        if s.name is not None:
            chosen[_plateau_index(a, s)] = True
    K = len(a.checkpoint_steps)
    if extra > 0:
        for i in np.unique(np.round(np.linspace(1, K - 1, extra)).astype(int)):
            chosen.setdefault(int(i), False)
    return sorted(chosen.items())


def llc_along_training(
    out_dir: str | os.PathLike[str],
    *,
    llc: LLCConfig | None = None,
    extra_per_run: int = 0,
    executor: Executor = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
    points: Sequence[CriticalPoint] | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    r"""Estimate :math:`\hat\lambda` at the plateau checkpoints of a finished :func:`run_dynamics` directory.

    The plateau checkpoint of a named stretch is its middle checkpoint (geometric middle in step), or its
    last one when the run ends in it. ``extra_per_run`` adds log-spaced checkpoints (for the curve
    against step; at unclassified ones the point need not be critical and :math:`\hat\lambda` is only
    indicative). One sweep task per checkpoint (resumable, in ``out_dir/llc``). For every transition
    the estimates at its source and target plateaus are compared:
    ``increase`` when :math:`\hat\lambda_{\text{target}} >
    \hat\lambda_{\text{source}}`, ``significant`` when the difference exceeds
    :math:`2\sqrt{\mathrm{SE}_s^2 + \mathrm{SE}_t^2}`.

    Writes ``llc.csv``, ``llc_transitions.csv``, ``llc_summary.json``, ``llc_vs_step.png`` and updates
    ``ordering.csv``/``ordering.png`` with the measured :math:`\hat\lambda` per family.
    """
    run = load_dynamics(out_dir, points=points)
    lc = llc or LLCConfig()
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
                    "llc": lc.to_dict(),
                    "llc_seed": int(spawn_seeds(a.seed, 4)[3] % (2**31) + i),
                }
            )
            meta.append((a, i, plateau))
    results = run_sweep(
        llc_task,
        tasks,
        out_dir=run.out_dir / "llc",
        executor=executor,
        max_workers=max_workers,
        dask_address=dask_address,
        progress=progress,
    )
    pts_out: list[LLCPoint] = []
    for (a, i, plateau), res in zip(meta, results, strict=True):
        diag = {
            k: res[k]
            for k in ("rhat", "ess", "mala_acceptance", "frac_below_anchor", "diverged", "warnings")
            if k in res
        }
        pts_out.append(
            LLCPoint(
                a.seed,
                int(a.checkpoint_steps[i]),
                i,
                a.classifications[i].name,
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
            ps, pt = by_key[(a.seed, _plateau_index(a, s))], by_key[(a.seed, _plateau_index(a, t))]
            diff = pt.llc - ps.llc
            se = math.hypot(ps.se, pt.se)
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
                    "increase": bool(diff > 0),
                    "significant": bool(diff > 2 * se),
                }
            )
    fam: dict[str, list[float]] = {}
    for p in pts_out:
        if p.plateau and p.name is not None:
            fam.setdefault(p.name, []).append(p.llc)
    lam_by_family = {k: float(np.mean(v)) for k, v in fam.items()}
    _write_csv(
        run.out_dir / "llc.csv",
        [{**p.to_dict(), **p.diagnostics} for p in pts_out],
        [
            "seed",
            "step",
            "index",
            "name",
            "loss",
            "llc",
            "se",
            "plateau",
            "rhat",
            "ess",
            "mala_acceptance",
            "frac_below_anchor",
            "diverged",
            "warnings",
        ],
    )
    _write_csv(
        run.out_dir / "llc_transitions.csv",
        comparisons,
        [
            "seed",
            "source",
            "target",
            "step",
            "llc_source",
            "se_source",
            "llc_target",
            "se_target",
            "difference",
            "increase",
            "significant",
        ],
    )
    ordering = _write_ordering(run, lambdas=lam_by_family)
    summary = {
        "llc_config": lc.to_dict(),
        "points": [p.to_dict() for p in pts_out],
        "transitions": comparisons,
        "lambda_by_family": lam_by_family,
        "ordering": ordering,
        "num_transitions": len(comparisons),
        "num_increase": sum(c["increase"] for c in comparisons),
        "num_significant_increase": sum(c["significant"] for c in comparisons),
    }
    atomic_write_text(run.out_dir / "llc_summary.json", json.dumps(summary, indent=1, default=float))
    if figures:
        plot_llc(run, pts_out, run.out_dir / "llc_vs_step.png")
    return summary


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _colors(names: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _family_names(run: DynamicsRun) -> list[str]:
    seen = {n for a in run.analyses for n in a.labels if n is not None}
    return [p.name for p in sorted(run.points, key=lambda p: -p.loss) if p.name in seen]


def _grid(num: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, num)
    rows = math.ceil(num / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[num:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_losses(run: DynamicsRun, path: str | os.PathLike[str], max_runs: int = 12) -> Path:
    """Loss against step (log x) per run: training loss (line), population loss at the checkpoints
    (dots coloured by family, black crosses unclassified), the energy levels of the visited families
    (dashed) and the phase labels of the named stretches."""
    names = _family_names(run)
    col = _colors(names)
    level = {p.name: p.loss for p in run.points}
    n = min(len(run.records), max_runs)
    fig, axes = _grid(n)
    for ax, rec, a in zip(axes, run.records[:n], run.analyses[:n], strict=False):
        st = np.asarray(rec["steps"], dtype=float)
        ax.plot(np.maximum(st, 0.5), rec["losses"], color="0.6", lw=0.8, label="training loss")
        for nm in {x for x in a.labels if x is not None}:
            ax.axhline(level[nm], color=col[nm], ls="--", lw=0.8)
        cs = np.maximum(a.checkpoint_steps.astype(float), 0.5)
        for nm in names:
            m = np.array([x == nm for x in a.labels])
            if m.any():
                ax.scatter(cs[m], a.population_losses[m], s=9, color=col[nm], label=nm, zorder=3)
        m = np.array([x is None for x in a.labels])
        if m.any():
            ax.scatter(
                cs[m], a.population_losses[m], s=7, marker="x", color="k", lw=0.6, label="unclassified"
            )
        for s in a.segments:
            if s.name is not None:
                mid = math.sqrt(max(s.start_step, 0.5) * max(s.end_step, 0.5))
                ax.annotate(
                    s.name,
                    (mid, level[s.name]),
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                    fontsize=8,
                    color=col[s.name],
                )
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"seed {a.seed}: " + " → ".join(a.path), fontsize=9)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_polygons(
    run: DynamicsRun, path: str | os.PathLike[str], max_runs: int = 6, max_snaps: int = 6
) -> Path:
    """Polygon snapshots: the columns :math:`W_i` in the plane at the plateau checkpoint of every named
    stretch (its middle, or its end when the run ends in it; one row per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for rec, a in list(zip(run.records, run.analyses, strict=True))[:max_runs]:
        snaps = [s for s in a.segments if s.name is not None][-max_snaps:]
        if not snaps:
            snaps = [a.segments[-1]]
        rows.append((rec, a, snaps))
    ncol = max(len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.3 * ncol, 2.4 * len(rows)), squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    c, r = run.config.c, run.config.r
    for ri, (rec, a, snaps) in enumerate(rows):
        for ci in range(ncol):
            ax = axes[ri, ci]
            if ci >= len(snaps):
                ax.set_visible(False)
                continue
            s = snaps[ci]
            idx = _plateau_index(a, s)
            W, _ = unpack(rec["tensors"]["checkpoints"][idx].double(), c, r)
            lim = max(1.2, float(W.norm(dim=0).max()) * 1.15)
            for i in range(c):
                ax.annotate(
                    "",
                    xy=(float(W[0, i]), float(W[1, i]) if r > 1 else 0.0),
                    xytext=(0, 0),
                    arrowprops={"arrowstyle": "->", "color": cmap(i % 10), "lw": 1.4},
                )
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{s.name or 'unclassified'} @ {int(a.checkpoint_steps[idx])}", fontsize=8)
        axes[ri, 0].set_ylabel(f"seed {a.seed}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_llc(run: DynamicsRun, points: Sequence[LLCPoint], path: str | os.PathLike[str]) -> Path:
    r""":math:`\hat\lambda` (± 2 SE) against step (log x) per run, beside the loss; filled markers at
    plateau checkpoints (labelled with the family), hollow at other checkpoints."""
    names = _family_names(run)
    col = _colors(names)
    n = min(len(run.analyses), 12)
    # one lambda-hat scale for every panel (plateau estimates only: off-plateau ones can be far negative)
    ref = [p for p in points if p.plateau] or list(points)
    lo = min((p.llc - 2 * p.se for p in ref), default=0.0)
    hi = max((p.llc + 2 * p.se for p in ref), default=1.0)
    pad = 0.1 * max(hi - lo, 1.0)
    fig, axes = _grid(n)
    for ax, a in zip(axes, run.analyses[:n], strict=False):
        ps = sorted([p for p in points if p.seed == a.seed], key=lambda p: p.step)
        if not ps:
            continue
        x = np.array([max(p.step, 0.5) for p in ps], dtype=float)
        y = np.array([p.llc for p in ps])
        e = np.array([2 * p.se for p in ps])
        ax.plot(x, y, color="0.5", lw=0.8)
        for p, xi, yi, ei in zip(ps, x, y, e, strict=True):
            c = col.get(p.name, "k") if p.name else "k"
            ax.errorbar([xi], [yi], yerr=[ei], fmt="o", ms=5, color=c, mfc=c if p.plateau else "none")
            if p.plateau and p.name:
                ax.annotate(p.name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8, color=c)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(r"$\hat\lambda$")
        if not any(not p.plateau for p in ps):
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlim(0.5, 1.5 * max(float(a.checkpoint_steps[-1]), 1.0))
        ax2 = ax.twinx()
        ax2.plot(
            np.maximum(a.checkpoint_steps.astype(float), 0.5),
            a.population_losses,
            color="tab:red",
            lw=0.7,
            alpha=0.6,
        )
        ax2.set_ylabel("population loss", color="tab:red", fontsize=8)
        ax.set_title(f"seed {a.seed}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_ordering(
    bayes: Mapping[str, Any], dyn: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """The Bayesian ordering (as n grows) beside the dynamical ordering (as the step grows); lines join
    the same family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    left = list(bayes["order"])
    right = [d["name"] for d in dyn]
    left = [nm for nm in left if nm in set(right)]
    seq = bayes.get("sequence")
    dominant = {row[0] for row in seq} if seq else set(left)
    fig, ax = plt.subplots(figsize=(5.5, 0.6 * max(len(right), 2) + 1.2))
    for i, nm in enumerate(left):
        if nm in dominant:
            ax.text(0, -i, nm, ha="right", va="center", fontsize=11)
        else:
            ax.text(
                0,
                -i,
                f"{nm} (never dominant)",
                ha="right",
                va="center",
                fontsize=9,
                color="0.5",
                style="italic",
            )
    for i, d in enumerate(dyn):
        ax.text(
            1,
            -i,
            f"{d['name']}  (step ~{d['median_first_step']:.0f}, {d['runs']} runs)",
            ha="left",
            va="center",
            fontsize=10,
        )
    for nm in right:
        if nm in left:
            ax.plot([0.05, 0.95], [-left.index(nm), -right.index(nm)], color="0.6", lw=1)
    ax.text(0, 1, "Bayesian (n grows)", ha="right", fontsize=10, weight="bold")
    ax.text(1, 1, "SGD (step grows)", ha="left", fontsize=10, weight="bold")
    ax.set_xlim(-1.5, 2.2)
    ax.set_ylim(-len(right) - 0.2, 1.6)
    ax.axis("off")
    ax.set_title(f"orderings; Bayesian by {bayes['method']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
