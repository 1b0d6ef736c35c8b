r"""What every kernel shares: the tempered target, explicit per-chain random streams, the batch supply.

Target
------
Every sampler of the package draws from a density :math:`p(w) \propto e^{-U(w)}` with

.. math::

    U(w) = n\beta\, L(w) + \frac{\gamma}{2}\,\lVert w - w_0 \rVert^2 ,

(:class:`Tempered`): the localized tempered posterior of the LLC (:math:`n\beta` the inverse
temperature times the sample size, :math:`\gamma` the localization, :math:`w_0 = w^*`) and the Bayesian
posterior with a Gaussian prior :math:`N(0, I)` (:math:`n\beta = n`, :math:`\gamma = 1`, :math:`w_0 = 0`)
are both of this form. :math:`L` is a potential's loss, evaluated on a batch (None for population losses).

Kernel convention
-----------------
A kernel is a pair of pure functions over explicit state (BlackJAX style), chains on the leading axis
``C`` of every tensor:

* ``init(w0 (C, d), target, batch) -> State``
* ``step(state, target, params, batch, draws, metric) -> (State, Info)``

``params`` (step size, leapfrog steps ...) are separate from the state; ``draws`` is the step's
:class:`Draws` (standard normals, uniforms, minibatch indices) taken from the per-chain streams;
``metric`` is a diagonal preconditioner :math:`G` of shape ``(C, d)`` (None = identity). Info carries at
least ``loss`` (:math:`L` at the new state, shape ``(C,)``) and ``accept_prob``.

Randomness
----------
:class:`ChainStreams` gives chain :math:`k` its own ``torch.Generator`` (seeded from one recorded root seed
by :func:`slt_tms._rng.spawn_seeds`) and pre-draws its numbers in blocks, in a documented order (per
block: normals ``(block, d)``, uniforms ``(block, 2)``, then minibatch indices ``(block, m)``), so running
:math:`C` chains in one batch gives exactly the numbers of :math:`C` separate runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from slt_tms.potentials import Batch, DataSource

__all__ = [
    "BatchSupply", "CenterLoss", "ChainStreams", "Draws", "Evaluation", "Info", "PointState", "Tempered",
    "default_block", "select_state",
]

#: Pre-drawn normal numbers per chain per block at most (1 MB per chain in float32). Small enough that the
#: block stays in the CPU's cache until its steps read it back: on the 94 218-parameter MLP (4 chains, one
#: thread) a step's noise, drawn and used, took 1.2 ms in blocks of 1-4 steps against 2.0 ms in blocks of
#: 44 (the 2**22 of earlier versions). Models with at most 1 024 parameters keep blocks of 256 steps.
_NOISE_ELEMENTS_PER_CHAIN = 2**18


class Evaluation(NamedTuple):
    """``U (C,)``, ``grad_U (C, d)`` and the loss ``L (C,)`` of every chain."""

    potential: Tensor
    grad: Tensor
    loss: Tensor


class PointState(NamedTuple):
    """State of a Metropolis-adjusted kernel: points ``w (C, d)`` with :math:`U` ``(C,)``,
    :math:`\nabla U` ``(C, d)`` and :math:`L` ``(C,)`` there (so a rejected move costs no gradient)."""

    w: Tensor
    potential: Tensor
    grad: Tensor
    loss: Tensor


class Info(NamedTuple):
    """What every kernel's ``step`` reports (shapes ``(C,)``, ``grad`` ``(C, d)``): ``loss``, ``potential``
    and ``grad`` at the point the chain holds for the record (the new point for MALA/HMC, the point the
    step started from for SGLD), the acceptance probability (SGLD: of its proposal had it been tested),
    divergences, gradient evaluations; HMC adds the leapfrog steps and the energy error; MALA and HMC add
    ``rejected_min_loss``: where the transition was rejected, the lowest loss its proposal (every leapfrog
    point of an HMC trajectory) reached, else inf."""

    loss: Tensor
    potential: Tensor
    grad: Tensor
    accept_prob: Tensor
    divergent: Tensor
    num_grads: int
    num_steps: Tensor | None = None
    energy_error: Tensor | None = None
    rejected_min_loss: Tensor | None = None


@dataclass(frozen=True, eq=False)
class Tempered:
    r""":math:`U(w) = n\beta L(w) + \frac{\gamma}{2}\lVert w - w_0\rVert^2` (module docstring).

    Parameters
    ----------
    potential : Potential
        Supplies ``value_and_grad(w, batch) -> (L, grad L)`` and ``loss(w, batch)``.
    nbeta : float or Tensor ``(C,)``
        :math:`n\beta > 0` (one per chain allows chains at different temperatures in one batch).
    localization : float
        :math:`\gamma \ge 0`.
    center : Tensor, shape ``(d,)`` or ``(C, d)``
        :math:`w_0` (one per chain allows chains around different anchors in one batch).
    """

    potential: Any
    nbeta: float | Tensor
    localization: float
    center: Tensor

    def _nbeta(self, like: Tensor) -> tuple[Tensor | float, Tensor | float]:
        nb = self.nbeta
        if isinstance(nb, Tensor):
            nb = nb.to(like)
            return nb, nb.unsqueeze(-1)
        return nb, nb

    def evaluate(self, w: Tensor, batch: Batch | None) -> Evaluation:
        """:math:`U`, :math:`\nabla U` and :math:`L` at ``w (C, d)``."""
        loss, grad = self.potential.value_and_grad(w, batch)
        nb, nb_col = self._nbeta(loss)
        # written to allocate one (C, d) tensor: on models with many parameters fresh (C, d) temporaries
        # cost more than the arithmetic (the allocator returns them to the OS and faults them back in)
        diff = w - self.center
        u = loss * nb + torch.linalg.vecdot(diff, diff) * (0.5 * self.localization)
        if not self.localization:
            g = grad * nb_col
        elif isinstance(nb_col, Tensor):
            g = diff.mul_(self.localization).addcmul_(grad, nb_col)
        else:
            g = diff.mul_(self.localization).add_(grad, alpha=nb_col)
        return Evaluation(u, g, loss)

    def energy(self, w: Tensor, batch: Batch | None) -> tuple[Tensor, Tensor]:
        """:math:`(U, L)` at ``w`` without gradient."""
        loss = self.potential.loss(w, batch)
        nb, _ = self._nbeta(loss)
        diff = w - self.center
        return loss * nb + (diff * diff).sum(-1) * (0.5 * self.localization), loss

    @classmethod
    def gaussian(cls, d: int, nbeta: float = 1.0, localization: float = 0.0) -> Tempered:
        r"""The target of :math:`L(w) = \frac12\lVert w\rVert^2` (a standard Gaussian at
        :math:`n\beta = 1`, :math:`\gamma = 0`) around :math:`w_0 = 0` in ``d`` dimensions: a target
        whose answer is known, for examples and tests of the kernels.

        Examples
        --------
        >>> target = Tempered.gaussian(2)
        >>> target.evaluate(torch.ones(3, 2), None).potential.tolist()
        [1.0, 1.0, 1.0]
        """
        from slt_tms.potentials import from_callable  # potentials sit below samplers; local: example helper

        pot = from_callable(lambda w, rows=None: 0.5 * (w**2).sum(-1), torch.zeros(d), n=100)
        return cls(pot, nbeta=nbeta, localization=localization, center=torch.zeros(d))

    def select(self, idx: Tensor) -> Tempered:
        """The target of the chains ``idx`` only (per-chain temperatures and centers sliced)."""
        nb = self.nbeta[idx] if isinstance(self.nbeta, Tensor) else self.nbeta
        center = self.center[idx] if self.center.ndim == 2 else self.center
        return Tempered(self.potential, nb, self.localization, center)


class Draws(NamedTuple):
    """The random numbers of one step, per chain: ``normal (C, d)``, ``uniform (C, 2)``, ``index (C, m)``."""

    normal: Tensor
    uniform: Tensor
    index: Tensor | None


def default_block(d: int) -> int:
    r"""Steps pre-drawn per refill: :math:`\min(256, \max(1, \lfloor 2^{18}/d\rfloor))` (depends on d
    only)."""
    return min(256, max(1, _NOISE_ELEMENTS_PER_CHAIN // d))


class ChainStreams:
    """Per-chain random streams, pre-drawn in blocks (module docstring).

    Parameters
    ----------
    seeds : sequence of int
        One seed per chain.
    d : int
        Dimension of the normal draws.
    dtype, device
        Of the normal and uniform draws.
    num_rows, batch_size : int, optional
        Draw minibatch indices in ``range(num_rows)`` (with replacement), ``batch_size`` per step.
    block : int, optional
        Steps per refill (default :func:`default_block`).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        d: int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        num_rows: int | None = None,
        batch_size: int | None = None,
        block: int | None = None,
    ) -> None:
        self.seeds = [int(s) for s in seeds]
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        self.block = default_block(d) if block is None else int(block)
        self.num_rows = num_rows
        C = len(self.gens)
        self.normal = torch.empty(C, self.block, d, dtype=dtype, device=device)
        self.uniform = torch.empty(C, self.block, 2, dtype=dtype, device=device)
        self.index = (
            None
            if batch_size is None
            else torch.empty(C, self.block, batch_size, dtype=torch.int64, device=device)
        )
        self.pos = self.block

    @property
    def num_chains(self) -> int:
        return len(self.gens)

    def _refill(self) -> None:
        dev = self.normal.device  # explicit: a default device (torch.set_default_device) must not apply
        for k, g in enumerate(self.gens):
            torch.randn(self.normal.shape[1:], generator=g, out=self.normal[k], device=dev)
            torch.rand(self.uniform.shape[1:], generator=g, out=self.uniform[k], device=dev)
            if self.index is not None:
                assert self.num_rows is not None
                torch.randint(0, self.num_rows, self.index.shape[1:], generator=g, out=self.index[k],
                              device=dev)
        self.pos = 0

    def select(self, idx: Sequence[int]) -> ChainStreams:
        """The streams of the chains ``idx`` only, at the same positions (a subset continues exactly as it
        would have in the full batch)."""
        sub = object.__new__(ChainStreams)
        sub.seeds = [self.seeds[i] for i in idx]
        sub.gens = [self.gens[i] for i in idx]
        sub.block, sub.num_rows, sub.pos = self.block, self.num_rows, self.pos
        t = torch.as_tensor(list(idx), dtype=torch.long, device=self.normal.device)
        sub.normal = self.normal[t].clone()
        sub.uniform = self.uniform[t].clone()
        sub.index = None if self.index is None else self.index[t].clone()
        return sub

    def next(self) -> Draws:
        """The draws of the next step (views into the block buffer: use them before the next call)."""
        if self.pos == self.block:
            self._refill()
        t = self.pos
        self.pos += 1
        return Draws(self.normal[:, t], self.uniform[:, t], None if self.index is None else self.index[:, t])


class BatchSupply:
    """Which rows a step evaluates: none (population), all (full batch), per-chain or streamed minibatches.

    Parameters
    ----------
    data : DataSource or None
    batch_size : int, optional
        Per-chain minibatches of this size drawn with replacement from tensor data (the indices come from
        the chains' streams); None means full batch. A DataLoader source is always streamed (its own
        batches, shared by the chains).
    """

    def __init__(self, data: DataSource | None, batch_size: int | None = None) -> None:
        self.data = data
        self.batch_size = None
        if data is None:
            self.kind = "population"
        elif data.streaming:
            self.kind = "stream"
        elif batch_size is None or batch_size >= data.num_rows:
            self.kind = "full"
            self._full = data.full()
        else:
            self.kind = "minibatch"
            self.batch_size = int(batch_size)

    @property
    def exact(self) -> bool:
        """True when every step sees the full loss (population or full batch): Metropolis tests are exact."""
        return self.kind in ("population", "full")

    def __call__(self, draws: Draws | None) -> Batch | None:
        if self.kind == "population":
            return None
        if self.kind == "full":
            return self._full
        assert self.data is not None
        if self.kind == "stream":
            return self.data.next_batch()
        assert draws is not None and draws.index is not None
        return self.data.take(draws.index)


#: Rows per forward pass when :class:`CenterLoss` tabulates the per-row terms at a center.
_TABLE_CHUNK = 4096

#: Largest :class:`CenterLoss` table (centers x rows; 128 MB in float32): beyond it, forward passes.
_TABLE_MAX_ELEMENTS = 2**25


class CenterLoss:
    r"""The loss of every chain's center on the chain's minibatch, :math:`L_B(w_0)` (``(C,)`` per step):
    the control variate of minibatch traces, :math:`L_B(w) - L_B(w^*) + L_n(w^*)`.

    Where the potential's batch loss is the mean of per-row terms (its ``row_losses``, e.g. the named
    losses of :func:`~slt_tms.potentials.from_module`) and the batches are index minibatches of tensor
    data, the terms :math:`r_k(w_0)` are computed once, for all :math:`n` rows and each distinct center,
    and :math:`L_B(w_0) = \frac1{|B|}\sum_{k \in B} r_k(w_0)` is looked up from the step's row indices:
    no forward pass per step. The table is built only where it costs fewer rows than the forward passes it
    replaces (``steps`` x chains x batch rows) and holds at most :data:`_TABLE_MAX_ELEMENTS` numbers (in
    the potential's dtype; the means are taken in float64), and the first lookup is checked against the
    forward pass
    (a relative difference above 1e-4, e.g. a model whose rows interact within a batch, switches back
    to the forward pass). Otherwise every call is the forward pass ``potential.loss(w_0, batch)``.

    Parameters
    ----------
    target : Tempered
        Supplies the potential and the centers (``(d,)`` or one per chain ``(C, d)``).
    batches : BatchSupply
    num_chains : int
    steps : int
        Steps the lookups are expected to serve (decides whether the table pays).

    Examples
    --------
    >>> from torch import nn
    >>> from slt_tms.potentials import from_module
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    >>> pot = from_module(net, (torch.randn(200, 3), torch.randn(200, 1)))
    >>> target = Tempered(pot, nbeta=10.0, localization=1.0, center=pot.w_star)
    >>> supply = BatchSupply(pot.data, batch_size=8)
    >>> cl = CenterLoss(target, supply, num_chains=2, steps=100)
    >>> draws = Draws(torch.zeros(2, 21), torch.zeros(2, 2), torch.randint(0, 200, (2, 8)))
    >>> batch = supply(draws)
    >>> bool(torch.allclose(cl(batch, draws), pot.loss(pot.w_star.expand(2, 21), batch).double()))
    True
    >>> cl.tabulated
    True
    """

    def __init__(self, target: Tempered, batches: BatchSupply, num_chains: int, steps: int) -> None:
        self.target = target
        self.num_chains = int(num_chains)
        self.table: Tensor | None = None  # (U, n): per-row terms at each distinct center
        self.which: Tensor | None = None  # (C,): the center of each chain (a row of the table)
        self._checked = False
        pot = target.potential
        rows_fn = getattr(pot, "row_losses", None)
        if batches.kind != "minibatch" or rows_fn is None or batches.batch_size is None:
            return
        data = batches.data
        assert data is not None
        budget = min(steps * self.num_chains * batches.batch_size, _TABLE_MAX_ELEMENTS)
        if data.num_rows > budget:  # not even one center's table pays
            return
        center = target.center if target.center.ndim == 2 else target.center.unsqueeze(0)
        distinct, which = torch.unique(center, dim=0, return_inverse=True)
        if distinct.shape[0] * data.num_rows > budget:
            return
        with torch.no_grad():
            self.table = torch.stack(
                [torch.cat([rows_fn(c, part) for part, _ in data.chunks(_TABLE_CHUNK)]) for c in distinct]
            )
        self.which = which.expand(self.num_chains) if center.shape[0] == 1 else which

    @property
    def tabulated(self) -> bool:
        """Whether lookups come from the table (True) or from a forward pass per call."""
        return self.table is not None

    def _forward(self, batch: Batch | None) -> Tensor:
        center = self.target.center.expand(self.num_chains, -1)
        return self.target.potential.loss(center, batch)

    def __call__(self, batch: Batch | None, draws: Draws) -> Tensor:
        """:math:`L_B(w_0)` of every chain on the step's ``batch`` (rows ``draws.index``)."""
        if self.table is None or draws.index is None:
            return self._forward(batch)
        assert self.which is not None
        looked_up = self.table[self.which.unsqueeze(1), draws.index].mean(1, dtype=torch.float64)
        if not self._checked:
            self._checked = True
            direct = self._forward(batch).double()
            if not torch.allclose(looked_up, direct, rtol=1e-4, atol=1e-12):
                self.table = None
                return direct
        return looked_up

    def select(self, idx: Tensor) -> CenterLoss:
        """The lookups of the chains ``idx`` only (with the target's chains selected alike)."""
        sub = object.__new__(CenterLoss)
        sub.target = self.target.select(idx)
        sub.num_chains = int(idx.numel())
        sub.table, sub._checked = self.table, self._checked
        sub.which = None if self.which is None else self.which[idx]
        return sub


def select_state(state: Any, idx: Tensor) -> Any:
    """The kernel state of the chains ``idx`` only: every tensor with a leading chain axis is sliced
    (kernel states are NamedTuples or dataclasses of such tensors, possibly nested)."""
    C = state.w.shape[0]

    def take(x: Any) -> Any:
        if isinstance(x, Tensor):
            return x[idx] if x.ndim >= 1 and x.shape[0] == C else x
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(take(v) for v in x))
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return dataclasses.replace(x, **{f.name: take(getattr(x, f.name)) for f in dataclasses.fields(x)})
        return x

    return take(state)
