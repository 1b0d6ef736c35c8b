r"""The :class:`Potential` protocol and its generic implementation.

A potential is a loss :math:`L(w)` of a flat parameter vector :math:`w \in \mathbb{R}^d`, evaluated for
many chains at once (``w`` of shape ``(C, d)``), with

* ``w_star`` -- the anchor :math:`w^*` (shape ``(d,)``), e.g. a trained checkpoint or a critical point;
* ``n`` -- the number of training samples behind :math:`L = L_n` (None for a population loss without a
  nominal sample size); it sets the inverse temperature :math:`n\beta` of the estimators;
* ``data`` -- the :class:`~slt_tms.potentials.data.DataSource` of an empirical loss (None for a
  population loss);
* ``value_and_grad(w, batch)`` -- :math:`(L_B(w_k), \nabla L_B(w_k))_k` of shapes ``(C,)`` and ``(C, d)``
  on a :class:`~slt_tms.potentials.data.Batch` (None: population loss / no data); for data potentials
  :math:`L_B` is the MEAN loss over the batch rows, so that a random batch gives an unbiased estimate of
  :math:`L_n`;
* ``loss(w, batch)`` -- the value alone, without gradient;
* ``anchor_loss()`` -- :math:`L_n(w^*)` on the FULL data (exact, in chunks), or :math:`L(w^*)`.

Chains are independent: ``value_and_grad`` of chain ``k`` depends on ``w[k]`` (and ``batch.data[k]`` for a
per-chain batch) only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch.func import grad_and_value, vmap

from slt_tms.potentials.data import Batch, DataSource
from slt_tms.validation import GRAD_MODES, check_choice, check_device

__all__ = [
    "FunctionalPotential",
    "Potential",
    "RestrictedPotential",
    "check_anchor",
    "check_float_dtype",
    "from_callable",
    "restrict",
    "with_grad_mode",
]

#: Rows per chunk when :math:`L_n(w^*)` is evaluated on the full data (a memory bound, not accuracy).
ANCHOR_CHUNK = 8192


@runtime_checkable
class Potential(Protocol):
    """What the samplers and estimators consume (see the module docstring)."""

    @property
    def w_star(self) -> Tensor: ...

    @property
    def n(self) -> int | None: ...

    @property
    def data(self) -> DataSource | None: ...

    @property
    def description(self) -> str: ...

    def value_and_grad(self, w: Tensor, batch: Batch | None = None) -> tuple[Tensor, Tensor]: ...

    def loss(self, w: Tensor, batch: Batch | None = None) -> Tensor: ...

    def anchor_loss(self) -> float: ...


def check_anchor(w: Any, *, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
    """A detached copy of the anchor as a floating tensor of shape ``(d,)``; clear errors otherwise."""
    if not isinstance(w, Tensor):
        try:
            w = torch.as_tensor(w, dtype=torch.float64 if dtype is None else dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError("w_star must be a tensor of shape (d,)") from exc
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"w_star must be one flat parameter vector of shape (d,), got {tuple(w.shape)}")
    dt = dtype or (w.dtype if w.is_floating_point() else torch.get_default_dtype())
    check_float_dtype(dt, "w_star")
    w = w.detach().to(device=device, dtype=dt).clone()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w_star contains NaN or infinite values")
    return w


def check_float_dtype(dtype: torch.dtype, what: str) -> None:
    """Refuse half precision: the loss differences the LLC is made of vanish in float16/bfloat16."""
    if dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"{what}: {str(dtype).removeprefix('torch.')}; the LLC is a difference of losses of order "
            "1/n, which half precision cannot resolve: convert the model/anchor to float32 "
            "(e.g. return model.float() from the factory), or pass dtype=torch.float32 in Python"
        )
    if not dtype.is_floating_point:
        raise ValueError(f"{what} must be a floating-point tensor, got {dtype}")


@dataclass(frozen=True, eq=False)
class FunctionalPotential:
    r"""A :class:`Potential` made of loss functions of flat parameters.

    Parameters
    ----------
    w_star, n, data, description
        As in :class:`Potential`.
    single : callable, optional
        ``single(w (d,), rows) -> ()``: the loss of one parameter vector on a batch of rows (``rows`` is
        None for a population loss). Differentiated by ``vmap(grad_and_value(single))``.
    batched : callable, optional
        ``batched(w (C, d), rows) -> (C,)`` on rows shared by the chains; differentiated by reverse-mode
        autograd of the sum over chains (chains are independent). With ``batched_per_chain`` it also
        takes per-chain rows (leading chain axis).
    closed_form : callable, optional
        ``closed_form(w (C, d), rows) -> (loss (C,), grad (C, d))`` for shared and per-chain rows (a
        hand-derived gradient, e.g. the TMS); replaces the automatic gradients.
    full_batch : callable, optional
        ``full_batch(w (C, d)) -> (loss (C,), grad (C, d))`` on the FULL data only: an exact shortcut
        (e.g. the sufficient statistics of a linear model, :mod:`slt_tms.potentials.linear`) used for
        :meth:`value_and_grad`, :meth:`loss` and :meth:`anchor_loss` whenever the batch is the data's full
        batch; minibatches go through the other paths.
    grad_mode : {"vmap", "autograd", "loop"}
        Gradient path: ``"vmap"`` (``vmap(grad_and_value(single))``), ``"autograd"`` (reverse mode through
        ``batched``) or ``"loop"`` (a Python loop over chains with ``grad_and_value(single)``, for losses
        that ``vmap`` cannot trace, e.g. models with data-dependent control flow).
    grad_mode_per_chain : {None, "loop"}
        Per-chain batches (each chain its own rows, vmapped over the rows too) only: ``"loop"`` evaluates
        them chain by chain even when shared rows go through ``vmap`` (models whose control flow depends
        on the input data, e.g. HuggingFace models that inspect ``input_ids`` or the attention mask);
        None: as ``grad_mode``.
    row_losses : callable, optional
        ``row_losses(w (d,), rows) -> (m,)``: per-row terms :math:`r_k(w)` whose mean over a batch's rows is
        the batch loss, :math:`L_B(w) = \frac1{|B|}\sum_{k \in B} r_k(w)` (the named losses of
        :func:`~slt_tms.potentials.from_module`). Lets minibatch runs look the control variate
        :math:`L_B(w^*)` up in a table of the :math:`r_k(w^*)` instead of a forward pass per step
        (:class:`~slt_tms.samplers.CenterLoss`). None where the batch loss is not such a mean.
    info : dict
        Anything the constructor records (loss, selected parameters, evaluation mode ...).
    """

    w_star: Tensor
    n: int | None
    data: DataSource | None
    description: str
    single: Callable[[Tensor, Any], Tensor] | None = field(default=None, repr=False)
    batched: Callable[[Tensor, Any], Tensor] | None = field(default=None, repr=False)
    closed_form: Callable[[Tensor, Any], tuple[Tensor, Tensor]] | None = field(default=None, repr=False)
    full_batch: Callable[[Tensor], tuple[Tensor, Tensor]] | None = field(default=None, repr=False)
    batched_per_chain: bool = False
    grad_mode: str = "vmap"
    grad_mode_per_chain: str | None = None
    row_losses: Callable[[Tensor, Any], Tensor] | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.single is None and self.batched is None:
            raise ValueError("a FunctionalPotential needs a single-chain or a batched loss function")
        if self.grad_mode not in ("vmap", "autograd", "loop"):
            raise ValueError(f"grad_mode must be 'vmap', 'autograd' or 'loop', got {self.grad_mode!r}")
        if self.grad_mode_per_chain not in (None, "loop"):
            raise ValueError(f"grad_mode_per_chain must be None or 'loop', got {self.grad_mode_per_chain!r}")
        if "loop" in (self.grad_mode, self.grad_mode_per_chain) and self.single is None:
            raise ValueError("grad_mode='loop' needs the single-chain loss")
        if "grad_mode" in self.info:  # the record follows the path (also after dataclasses.replace)
            per_chain = self.grad_mode_per_chain or self.grad_mode
            modes = {"grad_mode": self.grad_mode, "grad_mode_per_chain": per_chain}
            object.__setattr__(self, "info", {**self.info, **modes})

    @property
    def _loop_per_chain(self) -> bool:
        return "loop" in (self.grad_mode, self.grad_mode_per_chain)

    @property
    def d(self) -> int:
        """Number of parameters."""
        return int(self.w_star.numel())

    @property
    def kind(self) -> str:
        """``"population"`` (no data), ``"data"`` (tensor rows) or ``"stream"`` (a DataLoader)."""
        if self.data is None:
            return "population"
        return "stream" if self.data.streaming else "data"

    # ------------------------------------------------------------------ gradient paths
    @functools.cached_property
    def _vg_shared(self) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]]:
        if self.grad_mode == "loop":
            return _looped(self.single, per_chain=False)
        if self.single is not None and (self.grad_mode == "vmap" or self.batched is None):
            gv = vmap(grad_and_value(self.single), in_dims=(0, None))
            return lambda w, rows: _swap(gv(w, rows))
        assert self.batched is not None
        return _autograd_vg(self.batched)

    @functools.cached_property
    def _vg_per_chain(self) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]]:
        if self._loop_per_chain:
            return _looped(self.single, per_chain=True)
        if (
            self.batched is not None
            and self.batched_per_chain
            and (self.grad_mode == "autograd" or self.single is None)
        ):
            return _autograd_vg(self.batched)
        single = self.single
        if single is None:
            batched = self.batched
            assert batched is not None

            def single(w: Tensor, rows: Any) -> Tensor:
                return batched(w.unsqueeze(0), _unsqueeze(rows))[0]

        gv = vmap(grad_and_value(single), in_dims=(0, 0))
        return lambda w, rows: _swap(gv(w, rows))

    @functools.cached_property
    def _loss_per_chain(self) -> Callable[[Tensor, Any], Tensor]:
        if self.batched is not None and self.batched_per_chain:
            return self.batched
        if self.single is not None:
            return vmap(self.single, in_dims=(0, 0))
        batched = self.batched
        assert batched is not None
        return vmap(lambda w, rows: batched(w.unsqueeze(0), _unsqueeze(rows))[0], in_dims=(0, 0))

    def _is_full(self, batch: Batch | None) -> bool:
        """True when ``batch`` is the data's full batch and an exact full-batch shortcut exists."""
        return (
            self.full_batch is not None
            and batch is not None
            and not batch.per_chain
            and self.data is not None
            and not self.data.streaming
            and batch.data is self.data.rows
        )

    def value_and_grad(self, w: Tensor, batch: Batch | None = None) -> tuple[Tensor, Tensor]:
        """Loss ``(C,)`` and gradient ``(C, d)`` of every chain (see :class:`Potential`)."""
        if self._is_full(batch):
            assert self.full_batch is not None
            with torch.no_grad():
                return self.full_batch(w)
        rows = None if batch is None else batch.data
        per_chain = batch is not None and batch.per_chain
        if self.closed_form is not None:
            return self.closed_form(w, rows)
        with torch.enable_grad():
            return (self._vg_per_chain if per_chain else self._vg_shared)(w, rows)

    def loss(self, w: Tensor, batch: Batch | None = None) -> Tensor:
        """Loss ``(C,)`` of every chain, without gradient."""
        rows = None if batch is None else batch.data
        per_chain = batch is not None and batch.per_chain
        with torch.no_grad():
            if self._is_full(batch):
                assert self.full_batch is not None
                return self.full_batch(w)[0]
            if self.grad_mode == "loop" or (per_chain and self._loop_per_chain):
                single = self.single
                assert single is not None
                return torch.stack(
                    [single(w[k], _row_k(rows, k) if per_chain else rows) for k in range(w.shape[0])]
                )
            if batch is not None and batch.per_chain:
                return self._loss_per_chain(w, rows)
            if self.batched is not None:
                return self.batched(w, rows)
            assert self.single is not None
            return vmap(self.single, in_dims=(0, None))(w, rows)

    def anchor_loss(self) -> float:
        r""":math:`L_n(w^*)` on the full data (exact mean over all rows, in chunks), or :math:`L(w^*)`."""
        w = self.w_star.unsqueeze(0)
        if self.data is None:
            return float(self.loss(w, None)[0])
        if self.full_batch is not None and not self.data.streaming:
            return float(self.loss(w, self.data.full())[0])  # the same arithmetic as the chains' losses
        total, rows = 0.0, 0
        for part, m in self.data.chunks(ANCHOR_CHUNK):
            total += float(self.loss(w, Batch(part, False))[0]) * m
            rows += m
        if rows == 0:
            raise ValueError("the data source yielded no rows")
        return total / rows


def _swap(gv: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    g, v = gv
    return v.detach(), g.detach()


def _row_k(rows: Any, k: int) -> Any:
    return pytree.tree_map(lambda t: t[k], rows)


def _looped(single: Any, *, per_chain: bool) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]]:
    gv = grad_and_value(single)

    def vg(w: Tensor, rows: Any) -> tuple[Tensor, Tensor]:
        grads, vals = [], []
        for k in range(w.shape[0]):
            g, v = gv(w[k], _row_k(rows, k) if per_chain else rows)
            grads.append(g)
            vals.append(v)
        return torch.stack(vals).detach(), torch.stack(grads).detach()

    return vg


def _unsqueeze(rows: Any) -> Any:
    return None if rows is None else pytree.tree_map(lambda t: t.unsqueeze(0), rows)


def _autograd_vg(fn: Callable[[Tensor, Any], Tensor]) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]]:
    def vg(w: Tensor, rows: Any) -> tuple[Tensor, Tensor]:
        wr = w.detach().requires_grad_(True)
        val = fn(wr, rows)
        if not val.requires_grad:  # a loss that does not depend on w
            return val.detach(), torch.zeros_like(wr)
        (g,) = torch.autograd.grad(val.sum(), wr, allow_unused=True)
        return val.detach(), torch.zeros_like(wr) if g is None else g

    return vg


def from_callable(
    fn: Callable[..., Tensor],
    w_star: Any,
    *,
    n: int | None = None,
    data: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    description: str | None = None,
) -> FunctionalPotential:
    r"""A potential from a loss function ``fn(w, batch=None) -> Tensor`` vectorised over leading axes.

    Parameters
    ----------
    fn : callable
        ``fn(w (..., d), rows) -> (...)``, differentiable; ``rows`` is None (population loss) or a batch of
        the data rows (same structure as ``data``) over which ``fn`` returns the MEAN loss.
    w_star : Tensor, shape ``(d,)``
        The anchor.
    n : int, optional
        Training-set size behind the loss (default: the number of data rows; required by the estimators
        for a population loss).
    data : optional
        Training rows (see :class:`~slt_tms.potentials.data.DataSource`).
    device, dtype : optional
        Where and in which precision to evaluate (default: those of ``w_star``).

    Examples
    --------
    >>> pot = from_callable(lambda w, rows=None: 0.5 * (w ** 2).sum(-1), torch.zeros(3), n=100)
    >>> loss, grad = pot.value_and_grad(torch.ones(2, 3))
    >>> loss.tolist(), grad.shape
    ([1.5, 1.5], torch.Size([2, 3]))
    """
    dev = None if device is None else check_device(device)
    w0 = check_anchor(w_star, dtype=dtype, device=dev)
    src = (
        None
        if data is None
        else (data if isinstance(data, DataSource) else DataSource(data, device=w0.device, dtype=w0.dtype))
    )
    probe_rows = None if src is None else src.head(2)

    def call(w: Tensor, rows: Any) -> Tensor:
        return fn(w, rows)

    with torch.no_grad():
        try:
            out = call(w0.unsqueeze(0).expand(2, -1), probe_rows)
        except Exception as exc:
            raise ValueError(
                f"calling the potential on w of shape (2, {w0.numel()}) failed: {type(exc).__name__}: {exc}. "
                "A potential must be vectorised over the leading axes of w and return one loss per row"
            ) from exc
    if not isinstance(out, Tensor) or out.shape != (2,):
        raise ValueError(
            "the potential must return a tensor of shape (...,) for w of shape (..., d); for w of shape "
            f"(2, {w0.numel()}) it returned {getattr(out, 'shape', type(out).__name__)}"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"the potential is not finite at w_star (got {out[0].item()}); check w_star")
    if n is None and src is not None:
        n = src.num_rows
    name = description or f"potential {getattr(fn, '__name__', type(fn).__name__)} (d={w0.numel()})"
    return FunctionalPotential(
        w_star=w0, n=n, data=src, description=name, single=call, batched=call, grad_mode="autograd"
    )


@dataclass(frozen=True, eq=False)
class RestrictedPotential:
    r"""A potential over a subset of the coordinates of another; the rest stay at :math:`w^*`.

    With index set :math:`S` (``index``), :math:`\tilde L(v) = L(w^*_{\bar S}, v)` for :math:`v \in
    \mathbb{R}^{|S|}`; its gradient is :math:`\nabla_S L`. The LLC of :math:`\tilde L` at :math:`w^*_S`
    is the *restricted* LLC of the selected parameters.
    """

    base: Any
    index: Tensor
    names: tuple[str, ...] = ()

    @property
    def w_star(self) -> Tensor:
        return self.base.w_star[self.index]

    @property
    def n(self) -> int | None:
        return self.base.n

    @property
    def data(self) -> DataSource | None:
        return self.base.data

    @property
    def kind(self) -> str:
        return getattr(self.base, "kind", "population" if self.base.data is None else "data")

    @property
    def d(self) -> int:
        return int(self.index.numel())

    @property
    def description(self) -> str:
        what = f" ({', '.join(self.names)})" if self.names else ""
        return (
            f"{self.base.description}, restricted to {self.d} of {self.base.w_star.numel()} parameters{what}"
        )

    @property
    def info(self) -> dict[str, Any]:
        return {
            **getattr(self.base, "info", {}),
            "restricted_to": self.d,
            "restricted_names": list(self.names),
        }

    def _full(self, w: Tensor) -> Tensor:
        full = self.base.w_star.to(w).expand(w.shape[0], -1)
        return full.index_copy(1, self.index, w)

    def value_and_grad(self, w: Tensor, batch: Batch | None = None) -> tuple[Tensor, Tensor]:
        loss, grad = self.base.value_and_grad(self._full(w), batch)
        return loss, grad[:, self.index]

    def loss(self, w: Tensor, batch: Batch | None = None) -> Tensor:
        return self.base.loss(self._full(w), batch)

    @property
    def row_losses(self) -> Callable[[Tensor, Any], Tensor] | None:
        """The base potential's per-row terms at the restricted point (None where it has none)."""
        rows_fn = getattr(self.base, "row_losses", None)
        if rows_fn is None:
            return None
        return lambda w, rows: rows_fn(self._full(w.unsqueeze(0))[0], rows)

    def anchor_loss(self) -> float:
        return self.base.anchor_loss()


def restrict(potential: Any, mask: Tensor, names: tuple[str, ...] = ()) -> RestrictedPotential:
    """Restrict ``potential`` to the coordinates where the boolean ``mask`` (shape ``(d,)``) is True.

    Examples
    --------
    >>> pot = from_callable(lambda w, rows=None: (w ** 2).sum(-1), torch.zeros(3), n=100)
    >>> sub = restrict(pot, torch.tensor([True, False, True]))
    >>> sub.w_star.shape, sub.value_and_grad(torch.ones(1, 2))[1].tolist()
    (torch.Size([2]), [[2.0, 2.0]])
    """
    d = potential.w_star.numel()
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (d,):
        raise ValueError(f"mask must be a boolean tensor of shape ({d},)")
    index = torch.nonzero(mask.to(potential.w_star.device)).flatten()
    if index.numel() == 0:
        raise ValueError("the restriction selects no parameter: at least one mask entry must be True")
    return RestrictedPotential(potential, index, tuple(names))


def with_grad_mode(potential: Any, mode: str) -> Any:
    r"""``potential`` with its gradients of all chains taken by ``vmap`` or by a loop over the chains.

    A model's potential (:func:`~slt_tms.potentials.from_module`) picks its gradient path by itself
    (``mode="auto"``): a multilayer perceptron goes through its batched closed form, any other model
    through ``torch.func.vmap`` over the chains, and a model that ``vmap`` cannot trace chain by chain.
    Where ``vmap`` traces the model only through torch's per-sample fallback (attention layers on CPU,
    with torch's "performance drop" warning) the loop can be faster or slower, by model size; so this
    choice is the user's, and the result records it (``config["potential"]["grad_mode"]``). The value and
    the gradient are the same function of :math:`w` on every path (to rounding), so is the estimand.

    Parameters
    ----------
    potential : Potential
        A potential of a model or a loss callable (a restriction of one is changed underneath).
    mode : {"auto", "vmap", "loop"}
        ``"auto"``: returned unchanged. ``"vmap"``: every batch the chains share goes through ``vmap``
        (per-chain minibatches of models whose control flow reads their input, which ``vmap`` cannot
        batch, still go chain by chain). ``"loop"``: a Python loop over the chains, one
        ``grad_and_value`` each. Either replaces a batched closed form; the exact full batch of linear
        models from sufficient statistics is kept.

    Returns
    -------
    Potential

    Raises
    ------
    ValueError
        An unknown mode; a potential with its own hand-derived gradient (the TMS) and no single-chain
        loss; ``"vmap"`` on a model that ``vmap`` cannot trace (use ``"loop"`` or ``"auto"``).

    Examples
    --------
    >>> pot = from_callable(lambda w, rows=None: (w ** 2).sum(-1), torch.zeros(3), n=100)
    >>> looped = with_grad_mode(pot, "loop")
    >>> looped.info["grad_mode"], looped.value_and_grad(torch.ones(2, 3))[1].tolist()
    ('loop', [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    """
    check_choice("grad_mode", mode, GRAD_MODES)
    if mode == "auto":
        return potential
    if isinstance(potential, RestrictedPotential):
        return dataclasses.replace(potential, base=with_grad_mode(potential.base, mode))
    if not isinstance(potential, FunctionalPotential) or potential.single is None:
        raise ValueError(
            f"grad_mode={mode!r} applies to a model (nn.Module) or a loss callable; this potential "
            f"({getattr(potential, 'description', type(potential).__name__)}) has its own gradient: leave "
            "grad_mode='auto'"
        )
    per_chain = None
    if mode == "vmap":
        probe = None if potential.data is None else potential.data.head(2)
        rows_too = probe is not None and not potential.data.streaming
        shared, per_chain_error = _vmap_errors(potential.single, potential.w_star, probe, rows_too)
        if shared is not None:
            raise ValueError(
                f"grad_mode='vmap': torch.func.vmap cannot trace this model over the chains ({shared}); "
                "use grad_mode='loop' (--grad-mode loop), or 'auto', which falls back to the loop by itself"
            )
        per_chain = None if per_chain_error is None else "loop"
    info = {**potential.info, "grad_mode_requested": mode, "grad_mode": mode}
    info.update({k: False for k in ("batched_perceptron", "manual_gradient") if k in info})
    return dataclasses.replace(
        potential, grad_mode=mode, grad_mode_per_chain=per_chain, batched=None, batched_per_chain=False,
        closed_form=None, info=info,
    )


def _vmap_errors(
    single: Callable[[Tensor, Any], Tensor], w_star: Tensor, probe: Any, per_chain_rows: bool
) -> tuple[str | None, str | None]:
    """Whether ``torch.func.vmap`` can evaluate the single-chain loss ``single`` for two chains on the
    ``probe`` rows: the first line of the error of the shared-rows path (the gradient, and the value alone,
    which takes other kernels: a fused GRU/LSTM has no batching rule for it), and, where that works and
    ``per_chain_rows``, of the per-chain path that vmaps over the rows too (models whose control flow reads
    their input, as HuggingFace models do); None where a path works."""
    w2 = w_star.unsqueeze(0).expand(2, -1)
    gv = grad_and_value(single)
    try:
        with torch.enable_grad():
            vmap(gv, in_dims=(0, None))(w2, probe)
        with torch.no_grad():
            vmap(single, in_dims=(0, None))(w2, probe)
    except Exception as exc:
        return _first_line(exc), None
    if not per_chain_rows:
        return None, None
    rows2 = pytree.tree_map(lambda t: t.unsqueeze(0).expand(2, *t.shape), probe)
    try:
        with torch.enable_grad():
            vmap(gv, in_dims=(0, 0))(w2, rows2)
    except Exception as exc:
        return None, _first_line(exc)
    return None, None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
