r"""The SGD (dynamical) transitions of the TMS: the protocol of the TMS paper, run for many seeds.

Minibatch SGD on a fixed training set of one-hot uniform inputs plateaus at the energy levels of the
k-gon critical points and jumps from high loss / low learning coefficient to low loss / high learning
coefficient. :func:`run` trains every seed through the one sweep executor (:func:`slt_tms.sweep.run_sweep`,
one task per seed, resumable, local processes or Dask; its records live in ``work_dir``) and analyses the
trajectories (:func:`slt_tms.analysis.plateaus.analyze_run`: the one classifier, plateaus, transitions).
No result files and no plots here: the command writes them.

The SGD update (batch :math:`B_t` of ``batch_size`` rows drawn from the ``n`` training samples):

.. math::

    w_{t+1} = w_t - \eta\, \nabla_w \frac{1}{|B_t|} \sum_{x \in B_t} \sum_i (x_i - f(x; w_t)_i)^2 .

References
----------
Chen, Lau, Mendel, Wei, Murfet, *Dynamical versus Bayesian Phase Transitions in a Toy Model of
Superposition*, arXiv 2310.06301 (2023), §6 (the protocol and the k-gon plateaus).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._rng import spawn_seeds
from slt_tms.analysis.kgon_classify import ClassifyTolerances
from slt_tms.analysis.plateaus import RunAnalysis, analyze_run, transition_counts
from slt_tms.sweep import Executor, load_result, run_sweep, task_key
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms import OneHotUniform, fixed_dataset, num_params, pack
from slt_tms.train import train

__all__ = [
    "DynamicsConfig",
    "DynamicsRun",
    "family_points",
    "initial_point",
    "load",
    "quick_config",
    "run",
    "run_seed",
    "training_set",
]


@dataclass(frozen=True)
class DynamicsConfig:
    r"""The SGD protocol ; defaults are the TMS paper's.

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
        plateaus before settling, see the dynamics page of the documentation).
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
    before 30 000 steps; see the dynamics page of the documentation for the measured counts.
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
    from slt_tms.theory.symbolic import population_loss_flat  # lazy import (start-up time)

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


@functools.lru_cache(maxsize=16)
def family_points(c: int) -> tuple[CriticalPoint, ...]:
    """The critical points of the TMS with ``c`` features (cached)."""
    from slt_tms.theory.critical_points import critical_points  # lazy import (start-up time)

    return tuple(critical_points(c, progress=False))


@dataclass(frozen=True)
class DynamicsRun:
    """The trained and analysed seeds of one protocol (from :func:`run` or :func:`load`)."""

    config: DynamicsConfig
    seeds: list[int]
    records: list[dict[str, Any]] = field(repr=False)
    analyses: list[RunAnalysis] = field(repr=False)
    points: tuple[CriticalPoint, ...] = field(repr=False)
    work_dir: Path

    @property
    def counts(self) -> list[dict[str, Any]]:
        """Transition counts across runs (:func:`slt_tms.analysis.plateaus.transition_counts`)."""
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


def _tasks(config: DynamicsConfig, seeds: Sequence[int]) -> list[dict[str, Any]]:
    return [{"config": config.to_dict(), "seed": int(s)} for s in seeds]


def run(
    config: DynamicsConfig,
    seeds: Sequence[int],
    *,
    work_dir: str | os.PathLike[str],
    executor: Executor = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
    points: Sequence[CriticalPoint] | None = None,
    tolerances: ClassifyTolerances | None = None,
) -> DynamicsRun:
    """Train every seed (one sweep task each, resumable in ``work_dir``) and analyse the trajectories."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
    records = run_sweep(
        run_seed,
        _tasks(config, seeds),
        out_dir=work_dir,
        executor=executor,
        max_workers=max_workers,
        dask_address=dask_address,
        progress=progress,
    )
    pts = tuple(points) if points is not None else family_points(config.c)
    analyses = [analyze_run(r, pts, tolerances=tolerances) for r in records]
    return DynamicsRun(config, seeds, records, analyses, pts, Path(work_dir))


def load(
    config: DynamicsConfig,
    seeds: Sequence[int],
    *,
    work_dir: str | os.PathLike[str],
    points: Sequence[CriticalPoint] | None = None,
    tolerances: ClassifyTolerances | None = None,
) -> DynamicsRun:
    """Load and re-analyse finished seeds from ``work_dir`` (no training); a missing seed is an error."""
    records = []
    for t in _tasks(config, seeds):
        rec = load_result(work_dir, task_key(t))
        if rec is None:
            raise FileNotFoundError(
                f"seed {t['seed']} in {work_dir} is not finished: rerun 'slt-tms dynamics run' to resume"
            )
        records.append(rec["result"])
    pts = tuple(points) if points is not None else family_points(config.c)
    analyses = [analyze_run(r, pts, tolerances=tolerances) for r in records]
    return DynamicsRun(config, [int(s) for s in seeds], records, analyses, pts, Path(work_dir))
