r"""The chain loop, written once: every sampler of the package runs through :func:`run_chains`.

One call advances all chains by ``num_steps`` transitions of a kernel (:mod:`~slt_tms.samplers.sgld`,
:mod:`~slt_tms.samplers.mala`, :mod:`~slt_tms.samplers.hmc`), taking each step's random numbers from the
chains' own streams (:class:`~slt_tms.samplers.base.ChainStreams`) and its rows from a
:class:`~slt_tms.samplers.base.BatchSupply`. Optionally it

* adapts during a warmup (:class:`Warmup`: per-chain dual averaging of the step size, windowed diagonal
  metric, or an RMSProp preconditioner that is frozen afterwards);
* applies a move between transitions (``hook``, e.g. replica exchange, :mod:`~slt_tms.samplers.exchange`);
* stops early when a rule says so (``stop_if`` sees the recent records every ``check_every`` steps: the
  only host synchronisation in the loop).

Memory is bounded by what is recorded: the records are preallocated buffers of shape ``(C, T)`` (or
``(C, T, d)`` for the positions ``"w"``), written in place; nothing else is kept from a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms.samplers.adaptation import DualAveraging, MetricWindows
from slt_tms.samplers.base import BatchSupply, CenterLoss, ChainStreams, Tempered
from slt_tms.samplers.preconditioners import RMSProp

__all__ = ["RunResult", "Warmup", "run_chains"]


@dataclass
class Warmup:
    """Adaptation during a warmup run (see :mod:`~slt_tms.samplers.adaptation`).

    Parameters
    ----------
    num_steps : int
        Length of the warmup (sets the metric windows).
    target_accept : float, optional
        Dual-averaging target of the mean acceptance probability (None: keep the step size).
    adapt_metric : bool
        Estimate a diagonal metric in windows (Metropolis-adjusted kernels).
    rmsprop : RMSProp, optional
        Adapt an RMSProp preconditioner from the gradients instead (SGLD); frozen after the warmup.
    """

    num_steps: int
    target_accept: float | None = None
    adapt_metric: bool = False
    rmsprop: RMSProp | None = None
    _da: DualAveraging | None = field(default=None, init=False, repr=False)
    _windows: MetricWindows | None = field(default=None, init=False, repr=False)
    _v: Tensor | None = field(default=None, init=False, repr=False)

    def start(self, step_size: Tensor, w: Tensor) -> None:
        if self.target_accept is not None:
            self._da = DualAveraging(step_size, self.target_accept)
        if self.adapt_metric:
            self._windows = MetricWindows(self.num_steps)
        if self.rmsprop is not None:
            self._v = self.rmsprop.init(w)

    def after(
        self, it: int, info: Any, w: Tensor, step_size: Tensor, metric: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Update from transition ``it``; returns the step sizes and metric for the next one."""
        if self._da is not None:
            step_size = self._da.update(info.accept_prob).to(step_size)
        if self._v is not None and self.rmsprop is not None:
            self._v = self.rmsprop.update(self._v, info.grad)
            metric = self.rmsprop.metric(self._v)
        if self._windows is not None:
            new = self._windows.observe(it, w)
            if new is not None:
                metric = new
                if self._da is not None:
                    self._da.restart(self._da.current())
        return step_size, metric

    def final_step_size(self, step_size: Tensor) -> Tensor:
        """The step sizes to keep after the warmup (the dual-averaging mean where it ran)."""
        return step_size if self._da is None else self._da.final().to(step_size)


@dataclass
class RunResult:
    """What :func:`run_chains` returns.

    Attributes
    ----------
    state : kernel state after the last step
    records : dict of ndarray
        Each recorded quantity, shape ``(C, T)`` (``"w"``: ``(C, T, d)``), ``T`` = steps taken.
    num_steps : int
        Steps taken (fewer than asked when ``stop_if`` fired).
    num_grads : int
        Batched gradient evaluations (a chain-step of HMC costs its leapfrog steps).
    step_size : Tensor, shape ``(C,)``
    metric : Tensor or None
    """

    state: Any
    records: dict[str, np.ndarray]
    num_steps: int
    num_grads: int
    step_size: Tensor
    metric: Tensor | None


#: Records that describe the current position: taken from the state when a hook may have moved it.
_STATE_FIELDS = ("loss", "potential")

#: The ``"stein"`` record projects every this-many-th step (the first included): two dot products of
#: (C, d) tensors per step would be a noticeable part of a minibatch step on a model of many parameters.
STEIN_EVERY = 10


def run_chains(
    kernel: Any,
    target: Tempered,
    state: Any,
    *,
    num_steps: int,
    streams: ChainStreams,
    batches: BatchSupply,
    step_size: Tensor,
    metric: Tensor | None = None,
    warmup: Warmup | None = None,
    record: Sequence[str] = ("loss", "accept_prob"),
    hook: Callable[[Any, int], Any] | None = None,
    stop_if: Callable[[dict[str, Tensor], int], bool] | None = None,
    check_every: int = 100,
    bar: Any = None,
    center_loss: CenterLoss | None = None,
    directions: Tensor | None = None,
) -> RunResult:
    r"""Advance every chain by ``num_steps`` kernel transitions (module docstring).

    Parameters
    ----------
    kernel : SGLD, MALA or HMC
    target : Tempered
    state : the kernel's state (``kernel.init``)
    num_steps : int
    streams : ChainStreams
    batches : BatchSupply
    step_size : Tensor, shape ``(C,)``
    metric : Tensor ``(C, d)``, optional
        Diagonal preconditioner / inverse mass.
    warmup : Warmup, optional
        Adapt step size / metric during these steps.
    record : sequence of str
        Info fields to keep per step (``loss``, ``potential``, ``accept_prob``, ``divergent``, ``num_steps``)
        and/or ``"w"`` (positions after the step) and/or ``"stein"``: at the steps ``0, k, 2k, ...``
        (``k =`` :data:`STEIN_EVERY`) the projections on ``directions`` of the displacement from the
        target's center, ``"dir_u"`` :math:`v_c\cdot(w - w_0)`, and of :math:`\nabla U` there,
        ``"dir_grad"`` :math:`v_c\cdot\nabla U(w)` (whose mean under the target is zero), both
        ``(C, ceil(T / k))``, at the point the kernel's ``info`` describes (the new point of MALA and HMC,
        the step's start for SGLD), and/or ``"center_loss"``: the loss at the target's
        center :math:`w_0` on the step's batch (a forward pass more per step, or a lookup: ``center_loss``;
        with the center at :math:`w^*` it is a control variate for minibatch traces, see
        :mod:`slt_tms.estimators.llc`).
    hook : callable ``(state, it) -> state``, optional
        A move applied after every transition (must return a consistent kernel state).
    stop_if : callable ``(recent records, steps taken) -> bool``, optional
        Checked every ``check_every`` steps on the last ``check_every`` records; True stops the run.
    bar : tqdm bar, optional
        Advanced by one per step (one bar can span several runs).
    center_loss : CenterLoss, optional
        Supplies the ``"center_loss"`` record (e.g. from a table of per-row losses at the center); default:
        a forward pass at the center per step.
    directions : Tensor ``(C, d)``, optional
        One vector per chain for the ``"stein"`` record (required by it).

    Returns
    -------
    RunResult
    """
    w = state.w
    C, d = w.shape
    dev = w.device
    step_size = step_size.to(device=dev, dtype=w.dtype).expand(C).clone()
    bufs: dict[str, Tensor] = {}
    for name in record:
        if name == "w":
            bufs[name] = torch.empty(C, num_steps, d, dtype=w.dtype, device=dev)
        elif name == "stein":
            if directions is None or tuple(directions.shape) != (C, d) or hook is not None:
                raise ValueError("the 'stein' record needs directions of shape (C, d) and no hook")
            for key in ("dir_u", "dir_grad"):
                bufs[key] = torch.empty(C, -(-num_steps // STEIN_EVERY), dtype=torch.float64, device=dev)
        elif name == "divergent":
            bufs[name] = torch.empty(C, num_steps, dtype=torch.bool, device=dev)
        elif name == "num_steps":
            bufs[name] = torch.empty(C, num_steps, dtype=torch.int64, device=dev)
        else:
            bufs[name] = torch.empty(C, num_steps, dtype=torch.float64, device=dev)
    if warmup is not None:
        if warmup.target_accept is not None and getattr(kernel, "integrator", "euler") != "euler":
            raise ValueError(
                "the step-size adaptation targets an acceptance, which the Leimkuhler-Matthews integrator "
                "does not report; adapt with SGLD(integrator='euler') or give the step size"
            )
        warmup.start(step_size, w)
    same_batch = batches.exact
    if "center_loss" in record and center_loss is None:
        center_loss = CenterLoss(target, batches, C, 0)  # a forward pass at the center per step
    grads = 0
    taken = num_steps
    with torch.no_grad():
        for it in range(num_steps):
            draws = streams.next()
            batch = batches(draws)
            start = state.w
            state, info = kernel.step(state, target, step_size, batch, draws, metric, same_batch=same_batch)
            grads += info.num_grads
            if hook is not None:
                state = hook(state, it)
            for name, buf in bufs.items():
                if name == "w":
                    buf[:, it].copy_(state.w)
                elif name in ("dir_u", "dir_grad"):
                    if it % STEIN_EVERY == 0:
                        assert directions is not None
                        at = start if kernel.name == "sgld" else state.w  # where info.grad was taken
                        v = at - target.center if name == "dir_u" else info.grad
                        buf[:, it // STEIN_EVERY].copy_(torch.linalg.vecdot(v, directions))
                elif name == "center_loss":
                    assert center_loss is not None
                    buf[:, it].copy_(center_loss(batch, draws))
                elif hook is not None and name in _STATE_FIELDS and hasattr(state, name):
                    buf[:, it].copy_(getattr(state, name))  # a hook may have moved the chain (e.g. a swap)
                else:
                    buf[:, it].copy_(getattr(info, name))
            if warmup is not None:
                step_size, metric = warmup.after(it, info, state.w, step_size, metric)
            if bar is not None:
                bar.update(1)
            if stop_if is not None and (it + 1) % check_every == 0:
                recent = {k: b[:, it + 1 - check_every : it + 1]
                          for k, b in bufs.items() if not k.startswith("dir_")}
                if stop_if(recent, it + 1):
                    taken = it + 1
                    break
    if warmup is not None:
        step_size = warmup.final_step_size(step_size)
    thinned = -(-taken // STEIN_EVERY)
    records = {k: b[:, : thinned if k.startswith("dir_") else taken].cpu().numpy() for k, b in bufs.items()}
    return RunResult(state, records, taken, grads, step_size, metric)


@dataclass(frozen=True)
class SampleResult:
    """Draws of :func:`sample`.

    Attributes
    ----------
    records : dict of ndarray
        The recorded quantities over the kept draws, shape ``(C, D)`` (``"w"``: ``(C, D, d)``).
    step_size : ndarray, shape ``(C,)``
        Step sizes after the warmup.
    metric : ndarray ``(C, d)`` or None
        Diagonal metric after the warmup.
    warmup_accept : ndarray, shape ``(C,)``
        Mean acceptance probability over the warmup.
    num_grads : int
        Batched gradient evaluations, warmup included.
    chain_seeds : list of int
    config : dict
    """

    records: dict[str, np.ndarray]
    step_size: np.ndarray
    metric: np.ndarray | None
    warmup_accept: np.ndarray
    num_grads: int
    chain_seeds: list[int]
    config: dict[str, Any]


def sample(
    kernel: Any,
    target: Tempered,
    w0: Tensor,
    *,
    num_warmup: int,
    num_draws: int,
    chain_seeds: Sequence[int],
    step_size: float = 0.1,
    target_accept: float | None = 0.8,
    adapt_metric: bool = True,
    batches: BatchSupply | None = None,
    record: Sequence[str] = ("w", "potential", "loss", "accept_prob", "divergent"),
    hook: Callable[[Any, int], Any] | None = None,
    bar: Any = None,
) -> SampleResult:
    """Warm up (adapt step size and metric), then keep ``num_draws`` transitions of every chain.

    ``hook(state, it)`` sees the iteration counted over warmup and draws (``it >= num_warmup`` after the
    warmup). Chain ``k`` takes its random numbers from ``chain_seeds[k]`` only.

    Examples
    --------
    >>> from slt_tms.potentials import from_callable
    >>> from slt_tms.samplers.hmc import HMC
    >>> pot = from_callable(lambda w, rows=None: 0.5 * (w ** 2).sum(-1), torch.zeros(2), n=1)
    >>> target = Tempered(pot, nbeta=1.0, localization=0.0, center=torch.zeros(2))
    >>> res = sample(HMC(), target, torch.zeros(4, 2), num_warmup=100, num_draws=200,
    ...              chain_seeds=[1, 2, 3, 4])
    >>> res.records["w"].shape
    (4, 200, 2)
    """
    batches = batches or BatchSupply(None)
    C, d = w0.shape
    if len(chain_seeds) != C:
        raise ValueError(f"need one chain seed per chain ({C}), got {len(chain_seeds)}")
    streams = ChainStreams(
        chain_seeds,
        d,
        w0.dtype,
        w0.device,
        num_rows=None if batches.data is None else batches.data.num_rows,
        batch_size=batches.batch_size,
    )
    state = kernel.init(w0, target, batches(None) if batches.kind in ("population", "full") else None)
    eps = torch.full((C,), float(step_size), dtype=w0.dtype, device=w0.device)
    warm = (
        run_chains(
            kernel,
            target,
            state,
            num_steps=num_warmup,
            streams=streams,
            batches=batches,
            step_size=eps,
            warmup=Warmup(num_warmup, target_accept, adapt_metric),
            record=("accept_prob",),
            hook=hook,
            bar=bar,
        )
        if num_warmup > 0
        else None
    )
    if warm is not None:
        state, eps, metric = warm.state, warm.step_size, warm.metric
        warm_acc = warm.records["accept_prob"].mean(1)
        grads = warm.num_grads
    else:
        metric, warm_acc, grads = None, np.full(C, np.nan), 0
    shifted = None if hook is None else (lambda s, it: hook(s, it + num_warmup))
    main = run_chains(
        kernel,
        target,
        state,
        num_steps=num_draws,
        streams=streams,
        batches=batches,
        step_size=eps,
        metric=metric,
        record=record,
        hook=shifted,
        bar=bar,
    )
    return SampleResult(
        records=main.records,
        step_size=main.step_size.cpu().double().numpy(),
        metric=None if main.metric is None else main.metric.cpu().double().numpy(),
        warmup_accept=warm_acc,
        num_grads=grads + main.num_grads,
        chain_seeds=[int(s) for s in chain_seeds],
        config={
            "kernel": kernel.name,
            "num_warmup": num_warmup,
            "num_draws": num_draws,
            "step_size_init": float(step_size),
            "target_accept": target_accept,
            "adapt_metric": adapt_metric,
            "num_chains": C,
            "dim": d,
        },
    )
