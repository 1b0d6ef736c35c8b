r"""Potentials: the one interface between what a user has and what the samplers consume.

A :class:`Potential` is a loss :math:`L(w)` of flat parameters, batched over chains, with an anchor
:math:`w^*`, a sample size :math:`n` and (for empirical losses) its data. Constructors:

=====================================  =================================================================
:func:`from_callable`                  a loss ``fn(w (..., d), rows) -> (...)`` vectorised over chains
:func:`from_module`                    an ``nn.Module`` + data, with a named loss or ``evaluate(model, b)``
:func:`from_torchscript`               a TorchScript module + data
:func:`from_tms`                       the TMS (closed-form population loss or empirical loss)
:func:`from_critical_point`            the TMS at a :class:`~slt_tms.theory.critical_point.CriticalPoint`
:func:`restrict`                       any potential restricted to a subset of its coordinates
:func:`with_grad_mode`                 a model's potential with its gradients by ``vmap`` or a loop
:func:`as_potential`                   whichever of the above fits the object given
=====================================  =================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from slt_tms.potentials.base import (
    FunctionalPotential,
    Potential,
    RestrictedPotential,
    check_anchor,
    check_float_dtype,
    from_callable,
    restrict,
    with_grad_mode,
)
from slt_tms.potentials.data import Batch, DataSource
from slt_tms.potentials.module import (
    LOSSES,
    causal_lm_loss,
    from_module,
    from_torchscript,
    nonfinite_parameters,
    select_parameters,
)
from slt_tms.potentials.tms import from_critical_point, from_tms
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.validation import check_device

__all__ = [
    "LOSSES",
    "Batch",
    "DataSource",
    "FunctionalPotential",
    "Potential",
    "RestrictedPotential",
    "as_potential",
    "causal_lm_loss",
    "check_anchor",
    "check_float_dtype",
    "from_callable",
    "from_critical_point",
    "from_module",
    "from_tms",
    "from_torchscript",
    "is_potential",
    "nonfinite_parameters",
    "restrict",
    "select_parameters",
    "with_grad_mode",
]


def is_potential(obj: Any) -> bool:
    """True for objects that already implement :class:`Potential`."""
    return all(hasattr(obj, k) for k in ("w_star", "value_and_grad", "loss", "anchor_loss", "data"))


def _check_placement(pot: Any, device: Any, dtype: torch.dtype | None) -> None:
    """A ready-made potential is evaluated where (and in the precision in which) it was built: a different
    ``device`` / ``dtype`` request is refused rather than ignored."""
    w = pot.w_star
    if device is not None:
        dev = check_device(device)
        if dev.type != w.device.type or (dev.index is not None and dev != w.device):
            raise ValueError(
                f"the potential was built on {w.device} and cannot be moved to device={str(dev)!r}; build it "
                f"there (e.g. from_module(..., device={str(dev)!r})) or leave device unset"
            )
    if dtype is not None and dtype != w.dtype:
        raise ValueError(
            f"the potential was built in {w.dtype} and cannot be converted to dtype={dtype}; build it in "
            "that dtype or leave dtype unset"
        )


def as_potential(
    source: Any,
    data: Any = None,
    *,
    w_star: Tensor | None = None,
    loss: str | Callable[[Tensor, Tensor], Tensor] | None = "mse",
    evaluate: Callable[..., Any] | None = None,
    params: Sequence[str] | None = None,
    masks: Mapping[str, Tensor] | Tensor | None = None,
    n: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    grad_mode: str = "auto",
) -> Any:
    r"""Build the :class:`Potential` of ``source``; the one place that dispatches on what a user has.

    Parameters
    ----------
    source : Potential, nn.Module, torch.jit.ScriptModule, CriticalPoint, ground-truth problem or callable
        * a :class:`Potential`: returned as is (restricted by ``masks`` if given);
        * an ``nn.Module`` with ``data``: :func:`from_module` (``loss`` / ``evaluate`` / ``params`` /
          ``masks``);
        * a TorchScript module with ``data``: :func:`from_torchscript`;
        * a :class:`~slt_tms.theory.critical_point.CriticalPoint`: :func:`from_critical_point`
          (population loss without ``data``);
        * an object with ``potential``, ``w_star`` and ``n`` (a
          :class:`~slt_tms.theory.ground_truth.GroundTruthProblem`): its potential at its anchor;
        * a callable ``fn(w, rows)`` with ``w_star``: :func:`from_callable`.
    data, w_star, loss, evaluate, params, masks, n, device, dtype
        As in the constructors. ``masks`` may also be a boolean tensor of shape ``(d,)`` for any
        potential.
    grad_mode : {"auto", "vmap", "loop"}
        How the gradients of all chains are taken (:func:`with_grad_mode`); ``"auto"`` leaves the
        constructor's choice.

    Examples
    --------
    >>> from slt_tms.theory import regular_quadratic
    >>> pot = as_potential(regular_quadratic(3, n=1000))
    >>> pot.n, tuple(pot.w_star.shape)
    (1000, (3,))
    """
    flat_mask = masks if isinstance(masks, Tensor) else None
    named_masks = None if isinstance(masks, Tensor) else masks
    if is_potential(source):
        _check_placement(source, device, dtype)
        pot = source
    elif isinstance(source, torch.jit.ScriptModule):
        if data is None:
            raise ValueError("a TorchScript module needs data=(X, Y)")
        if evaluate is not None or params is not None:
            raise ValueError("evaluate= and params= are not supported for TorchScript modules")
        pot = from_torchscript(source, data, loss=loss if isinstance(loss, str) else "mse", n=n,
                               device=device)
    elif isinstance(source, nn.Module):
        if data is None:
            raise ValueError("an nn.Module needs data (tensors (X, Y), a TensorDataset or a DataLoader)")
        pot = from_module(source, data, loss=loss, evaluate=evaluate, params=params, masks=named_masks, n=n,
                          device=device, dtype=dtype)
    elif isinstance(source, CriticalPoint):
        x = None if data is None else (data[0] if isinstance(data, tuple | list) else data)
        pot = from_critical_point(source, x, n=n, device=device, dtype=dtype)
    elif not callable(source) and all(hasattr(source, k) for k in ("potential", "w_star", "n")):
        pot = from_callable(source.potential, source.w_star if w_star is None else w_star,
                            n=source.n if n is None else n, data=data, device=device, dtype=dtype,
                            description=f"ground truth {getattr(source, 'name', '')}".strip())
    elif callable(source):
        if w_star is None:
            raise ValueError("w_star (the anchor, shape (d,)) is required with a loss callable")
        pot = from_callable(source, w_star, n=n, data=data, device=device, dtype=dtype)
    else:
        raise ValueError(
            "expected a Potential, an nn.Module (with data), a TorchScript module, a CriticalPoint, a "
            f"ground-truth problem or a loss callable fn(w, rows); got {type(source).__name__}"
        )
    if named_masks and not isinstance(source, nn.Module):
        raise ValueError("masks by parameter name need an nn.Module; give a boolean tensor of shape (d,)")
    if flat_mask is not None:
        pot = restrict(pot, flat_mask)
    return with_grad_mode(pot, grad_mode)
