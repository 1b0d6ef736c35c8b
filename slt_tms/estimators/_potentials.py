r"""Turn what the user has (a potential, an ``nn.Module`` plus data, a TMS critical point) into the batched
value-and-gradient functions the SGLD kernel consumes.

Every source ends as a loss of flat parameters ``w (C, d)`` (chains on the leading axis):

* **population / closed form**: ``potential(w, None)``, no data; ``n`` is nominal.
* **full batch**: ``potential(w, data)`` on the whole dataset, shared by every chain.
* **minibatch**: chain ``k`` sees its own minibatch ``data[idx_k]`` each step (rows drawn with
  replacement); the potential must be the *mean* loss over the rows of a batch, so that the chunked
  full-data evaluation of :math:`L_n(w^*)` is exact.

Gradients are taken by reverse-mode autograd on the sum over chains of a per-chain loss (chains are
independent, so :math:`\partial/\partial w_k \sum_j L(w_j) = \nabla L(w_k)`); for per-chain batches of a
single-chain loss the per-chain loss is a :func:`torch.func.vmap` of it. ``nn.Module`` losses
(``functional_call``) are differentiated by ``vmap(grad_and_value(f))`` (faster than autograd through a
vmapped forward). The TMS empirical loss uses its closed-form gradient
(:func:`tms_empirical_vg`, no autograd at all): with :math:`z = x W^\top W + b`, :math:`f = \mathrm{relu}(z)`
and :math:`\delta = \frac{2}{m} (f - x) \odot [z > 0]` on a batch of :math:`m` rows,

.. math::

    \nabla_b L_B = \sum_{k} \delta_k, \qquad
    \nabla_W L_B = W \bigl(x^\top \delta + \delta^\top x\bigr).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

__all__: list[str] = []

LOSSES = ("mse", "cross_entropy")
_CHUNK = 8192  # rows per chunk when L_n(w*) is evaluated on the full data (memory bound, not accuracy)


@dataclass(frozen=True)
class BuiltPotential:
    """Batched evaluation of a potential (internal record)."""

    grad_fn: Callable[[Tensor, Any], tuple[Tensor, Tensor]]
    loss_fn: Callable[[Tensor, Any], Tensor]
    make_batch: Callable[[Tensor | None], Any] | None
    w_star: Tensor
    n: int | None
    num_data: int | None
    batch_size: int | None
    anchor_loss: float
    kind: str
    description: str


def _as_data(data: Any, device: torch.device | None) -> tuple[Tensor, ...]:
    """Tensors / tuples / TensorDataset / DataLoader -> tuple of tensors sharing the leading axis n."""
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(data, Tensor):
        tensors: tuple[Tensor, ...] = (data,)
    elif isinstance(data, TensorDataset):
        tensors = tuple(data.tensors)
    elif isinstance(data, DataLoader):
        if isinstance(data.dataset, TensorDataset):
            tensors = tuple(data.dataset.tensors)
        else:
            parts: list[list[Tensor]] = []
            for b in data:
                items = (b,) if isinstance(b, Tensor) else tuple(b)
                if not all(isinstance(t, Tensor) for t in items):
                    raise ValueError("a DataLoader must yield tensors or tuples of tensors")
                if not parts:
                    parts = [[] for _ in items]
                for p, t in zip(parts, items, strict=True):
                    p.append(t)
            if not parts:
                raise ValueError("the DataLoader yielded no batches")
            tensors = tuple(torch.cat(p) for p in parts)
    elif isinstance(data, Sequence) and len(data) > 0 and all(isinstance(t, Tensor) for t in data):
        tensors = tuple(data)
    else:
        raise ValueError(
            "data must be a Tensor (n, ...), a tuple of tensors sharing the leading axis n (e.g. (X, Y)), "
            f"a TensorDataset or a DataLoader; got {type(data).__name__}"
        )
    n = tensors[0].shape[0] if tensors[0].ndim > 0 else 0
    if n < 1 or any(t.ndim == 0 or t.shape[0] != n for t in tensors):
        raise ValueError(
            "all data tensors must share a non-empty leading (sample) axis; got shapes "
            + ", ".join(str(tuple(t.shape)) for t in tensors)
        )
    if device is not None:
        tensors = tuple(t.to(device) for t in tensors)
    return tensors


def _resolve_loss(loss: str | Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(loss):
        return loss
    if loss == "mse":
        return torch.nn.functional.mse_loss
    if loss == "cross_entropy":
        return torch.nn.functional.cross_entropy
    raise ValueError(
        f"unknown loss {loss!r}; allowed: 'mse', 'cross_entropy', or a callable loss(pred, target) -> scalar "
        "(mean over the batch)"
    )


def module_potential(
    module: nn.Module, loss: str | Callable[[Tensor, Tensor], Tensor]
) -> tuple[Callable[[Tensor, tuple[Tensor, ...]], Tensor], Tensor]:
    r"""Single-chain loss ``f(w (d,), (X, Y)) -> ()`` of an ``nn.Module`` over a flat parameter vector.

    The flat layout concatenates ``module.named_parameters()`` (each flattened) in order; buffers are
    held fixed. With a single data tensor ``(X,)`` the target is ``X`` itself (autoencoder).
    Returns ``(f, w_star)`` with ``w_star`` the module's current parameters.
    """
    loss_fn = _resolve_loss(loss)
    named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the module has no trainable parameters")
    names = [k for k, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    buffers = {k: b.detach() for k, b in module.named_buffers()}
    w_star = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(w: Tensor, batch: Tensor | tuple[Tensor, ...]) -> Tensor:
        if isinstance(batch, Tensor):
            batch = (batch,)
        pieces = torch.split(w, sizes)
        params = {k: t.view(s) for k, t, s in zip(names, pieces, shapes, strict=True)}
        x = batch[0]
        y = batch[1] if len(batch) > 1 else batch[0]
        pred = functional_call(module, (params, buffers), (x,))
        return loss_fn(pred, y)

    return f, w_star


def _autograd_vg(
    f_batched: Callable[[Tensor, Any], Tensor],
) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]]:
    ones: dict[tuple, Tensor] = {}

    def vg(w: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            wr = w.detach().requires_grad_(True)
            val = f_batched(wr, batch)
            key = (val.shape, val.dtype, val.device)
            seed = ones.get(key)
            if seed is None:
                seed = ones[key] = torch.ones_like(val)
            (g,) = torch.autograd.grad(val, wr, grad_outputs=seed)
        return val.detach(), g

    return vg


def _vmap_vg(f_single: Callable[[Tensor, Any], Tensor], batch_dim: int | None):
    gv = vmap(grad_and_value(f_single), in_dims=(0, batch_dim))

    def vg(w: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        g, val = gv(w, batch)
        return val, g

    return vg


def build(
    *,
    f_batched: Callable[[Tensor, Any], Tensor] | None,
    f_single: Callable[[Tensor, Any], Tensor] | None,
    w_star: Tensor,
    data: tuple[Tensor, ...] | None,
    batch_size: int | None,
    n: int | None,
    description: str,
    grad_mode: str = "autograd",
    native_chain_batches: bool = False,
    vg_batched: Callable[[Tensor, Any], tuple[Tensor, Tensor]] | None = None,
) -> BuiltPotential:
    """Assemble the batched functions.

    ``f_batched(w (C, d), batch) -> (C,)`` is a loss vectorised over leading axes with a shared batch;
    ``f_single(w (d,), batch) -> ()`` a single-chain loss (vmapped where needed). At least one is given.
    ``native_chain_batches``: ``f_batched`` also accepts per-chain batches with a leading chain axis.
    ``grad_mode``: ``"autograd"`` (reverse mode through the batched loss) or ``"vmap"``
    (``vmap(grad_and_value(f_single))``, needs ``f_single``).
    ``vg_batched``: an explicit ``vg(w (C, d), batch) -> (loss (C,), grad (C, d))`` (e.g. a closed form)
    that accepts shared and per-chain (leading chain axis) batches; it replaces the gradient modes.
    """
    if f_batched is None and f_single is None:
        raise ValueError("internal: no loss function")
    unpack_single = data is not None and len(data) == 1

    def wrap(batch: Any) -> Any:
        return batch[0] if unpack_single and isinstance(batch, tuple) else batch

    def shared(fn):
        return lambda w, batch: fn(w, wrap(batch))

    if f_batched is None:
        assert f_single is not None
        fs = f_single
        f_shared = vmap(lambda w, b: fs(w, b), in_dims=(0, None))
    else:
        f_shared = f_batched

    if data is None:
        kind = "population"
        vg = _autograd_vg(shared(f_shared)) if (grad_mode == "autograd" or f_single is None) else _vmap_vg(
            lambda w, b: f_single(w, wrap(b)), None
        )
        loss_fn = shared(f_shared)
        make_batch = None
        num_data = None
        bs = None
        with torch.no_grad():
            anchor = float(loss_fn(w_star.unsqueeze(0), None)[0])
    else:
        num_data = data[0].shape[0]
        if batch_size is None or batch_size >= num_data:
            kind = "full-batch"
            bs = None
            full = data

            def make_batch(idx: Tensor | None) -> Any:
                return full

            if vg_batched is not None:
                vg = shared(vg_batched)
            elif grad_mode == "vmap" and f_single is not None:
                vg = _vmap_vg(lambda w, b: f_single(w, wrap(b)), None)
            else:
                vg = _autograd_vg(shared(f_shared))
            loss_fn = shared(f_shared)
        else:
            kind = "minibatch"
            bs = int(batch_size)

            def make_batch(idx: Tensor | None) -> Any:
                assert idx is not None
                return tuple(t[idx] for t in data)

            if native_chain_batches and f_batched is not None:
                f_chain = shared(f_batched)
            else:
                single = f_single if f_single is not None else f_batched
                assert single is not None
                f_chain = vmap(lambda w, b: single(w, wrap(b)), in_dims=(0, 0))
            if vg_batched is not None:
                vg = shared(vg_batched)
            elif grad_mode == "vmap" and f_single is not None:
                vg = _vmap_vg(lambda w, b: f_single(w, wrap(b)), 0)
            else:
                vg = _autograd_vg(f_chain)
            loss_fn = f_chain
        with torch.no_grad():
            total = 0.0
            for start in range(0, num_data, _CHUNK):
                chunk = tuple(t[start : start + _CHUNK] for t in data)
                total += float(shared(f_shared)(w_star.unsqueeze(0), chunk)[0]) * chunk[0].shape[0]
            anchor = total / num_data

    def loss_nograd(w: Tensor, batch: Any) -> Tensor:
        with torch.no_grad():
            return loss_fn(w, batch)

    return BuiltPotential(
        grad_fn=vg,
        loss_fn=loss_nograd,
        make_batch=make_batch,
        w_star=w_star,
        n=n,
        num_data=num_data,
        batch_size=bs,
        anchor_loss=anchor,
        kind=kind,
        description=description,
    )
