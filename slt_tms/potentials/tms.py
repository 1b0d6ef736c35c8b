r"""Potentials of the Toy Model of Superposition: the closed-form population loss and the empirical loss.

* :func:`from_tms` with ``data=None``: the population loss :math:`L(w)` of one-hot uniform inputs (ReLU),
  derived symbolically (:func:`slt_tms.theory.symbolic.population_loss_flat`); ``n`` is the nominal
  sample size that sets the temperature.
* :func:`from_tms` with inputs ``x`` of shape ``(n, c)``: the empirical loss
  :math:`L_n(w) = \frac1n \sum_k \lVert x_k - f(x_k; w)\rVert^2` with its closed-form gradient
  (:func:`slt_tms.tms.losses.empirical_value_and_grad`; no autograd), for shared and per-chain minibatches.
  When the rows are one-hot (the paper's data) the full-batch loss is evaluated exactly through sorted
  prefix sums (:class:`slt_tms.tms.losses.OneHotSums`) in :math:`O(c^2\log n)` per chain instead of
  :math:`O(nc)`, so a full-batch (Metropolis-adjusted) sampler costs about as much at ``n = 10^5`` as
  at ``n = 100``.
* :func:`from_critical_point`: the same at a :class:`~slt_tms.theory.critical_point.CriticalPoint`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from slt_tms.potentials.base import FunctionalPotential, check_anchor
from slt_tms.potentials.data import DataSource
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms.losses import OneHotSums, empirical_loss, empirical_value_and_grad
from slt_tms.tms.model import activation_fn, num_params
from slt_tms.validation import check_device

__all__ = ["from_critical_point", "from_tms"]


def from_tms(
    w_star: Any,
    *,
    c: int,
    r: int = 2,
    data: Tensor | None = None,
    n: int | None = None,
    activation: str = "relu",
    gamma: float = 1.0,
    name: str = "",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> FunctionalPotential:
    r"""The TMS loss around the flat parameters ``w_star`` (see the module docstring).

    Parameters
    ----------
    w_star : Tensor, shape ``(r c + c,)``
    c, r : int
    data : Tensor, shape ``(n, c)``, optional
        Training inputs (the target is the input); None for the closed-form population loss.
    n : int, optional
        Sample size (default ``len(data)``; required by the estimators for the population loss).
    activation, gamma
        The activation (the population loss is derived for ReLU only).
    name : str
        Shown in the description (e.g. the critical point's name).

    Examples
    --------
    >>> from slt_tms.theory import kgon
    >>> pot = from_tms(kgon(6, 6).flat(), c=6, n=1000)
    >>> round(pot.anchor_loss(), 6)
    0.048192
    """
    dev = None if device is None else check_device(device)
    w0 = check_anchor(w_star, dtype=dtype or torch.float64, device=dev)
    d = num_params(c, r)
    if w0.shape != (d,):
        raise ValueError(f"w_star must have shape ({d},) for c={c}, r={r}; got {tuple(w0.shape)}")
    activation_fn(activation, gamma)
    label = f" at {name}" if name else ""
    if data is None:
        if activation != "relu":
            raise ValueError("the closed-form population loss is derived for ReLU; give data= for "
                             f"activation {activation!r}")
        # sympy derives the closed form: imported here, not at module level, so that estimating the LLC of
        # an nn.Module (which imports this module) does not import sympy
        from slt_tms.theory.symbolic import population_loss_flat, population_value_and_grad_flat

        return FunctionalPotential(
            w_star=w0, n=n, data=None, batched=lambda w, rows: population_loss_flat(w, c, r),
            closed_form=lambda w, rows: population_value_and_grad_flat(w, c, r),
            description=f"TMS population loss{label} (c={c}, r={r})",
            info={"source": "tms", "loss": "population", "c": c, "r": r, "name": name},
        )
    if not isinstance(data, Tensor) or data.ndim != 2 or data.shape[1] != c:
        raise ValueError(f"TMS data must be one tensor of inputs with shape (n, {c}); got "
                         f"{getattr(data, 'shape', type(data).__name__)}")
    src = DataSource((data,), device=w0.device, dtype=w0.dtype)
    vg = empirical_value_and_grad(c, r, activation, gamma)
    full_x = src.rows[0]
    sums = OneHotSums(full_x[None], [src.num_rows]) if activation == "relu" and _one_hot(full_x) else None

    def closed_form(w: Tensor, rows: Any) -> tuple[Tensor, Tensor]:
        x = rows[0]
        if sums is not None and x is full_x:  # the full batch of one-hot rows: O(c^2 log n), not O(n c)
            return _one_hot_vg(sums, w, r, src.num_rows)
        return vg(w, x)

    def batched(w: Tensor, rows: Any) -> Tensor:
        return empirical_loss(w, rows[0], c, r, activation, gamma)

    return FunctionalPotential(
        w_star=w0, n=src.num_rows if n is None else int(n), data=src, batched=batched,
        batched_per_chain=True, closed_form=closed_form,
        description=f"TMS empirical loss{label} (c={c}, r={r}, {src.num_rows} rows)",
        info={"source": "tms", "loss": "empirical", "c": c, "r": r, "name": name, "activation": activation,
              "data": src.describe(), "one_hot_sums": sums is not None},
    )


def _one_hot(x: Tensor) -> bool:
    """Every row has at most one non-zero entry, and it is non-negative (the TMS data of the paper)."""
    return bool((x >= 0).all()) and bool(((x != 0).sum(-1) <= 1).all())


def _one_hot_vg(sums: OneHotSums, w: Tensor, r: int, n: int) -> tuple[Tensor, Tensor]:
    """:math:`L_n(w)` of all one-hot rows through :class:`~slt_tms.tms.losses.OneHotSums`, with its
    closed-form gradient (:meth:`~slt_tms.tms.losses.OneHotSums.value_and_grad_at`; no autograd)."""
    total, grad = sums.value_and_grad_at(w, 0, 0, r)
    return total.div_(n), grad.div_(n)


def from_critical_point(
    cp: CriticalPoint,
    data: Tensor | None = None,
    *,
    n: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> FunctionalPotential:
    """:func:`from_tms` at a critical point (population loss when ``data`` is None)."""
    if not isinstance(cp, CriticalPoint):
        raise ValueError(f"expected a CriticalPoint, got {type(cp).__name__}")
    pot = from_tms(cp.flat(dtype=dtype or torch.float64), c=cp.c, r=cp.r, data=data, n=n,
                   name=cp.name, device=device, dtype=dtype)
    info = {**pot.info, "critical_point": cp.name, "lambda_theory": cp.lambda_theory}
    return dataclasses.replace(pot, info=info)
