r"""Diagonal preconditioners that adapt from gradients (for SGLD on minibatch potentials).

RMSProp (Li, Chen, Carlson & Carin 2016, without their :math:`\Gamma` correction term): with
:math:`g_t = \nabla U_B(w_t)`, decay :math:`\alpha` and jitter :math:`\delta`,

.. math::

    v_t = \alpha\, v_{t-1} + (1-\alpha)\, g_t \odot g_t \quad (v_{-1} = 1), \qquad
    G_t = \mathrm{diag}\bigl(1 / (\sqrt{v_t} + \delta)\bigr).

:math:`v` starts at 1 (the first steps are plain SGLD), not at :math:`g_0 \odot g_0`: at a minimum the
gradient vanishes and :math:`G` would start at :math:`1/\delta`. Because :math:`G_t` changes with
:math:`t` and the :math:`\Gamma` term is dropped, the chain is only approximately invariant while
:math:`v` adapts: the estimator adapts it during the warmup and then FREEZES it, after which the update
is the Euler discretisation of a Langevin diffusion with a constant metric that leaves the target
invariant (up to the step-size bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slt_tms.validation import check_float

__all__ = ["RMSProp"]


@dataclass(frozen=True)
class RMSProp:
    """The RMSProp diagonal preconditioner (module docstring): settings only; the state is ``v (C, d)``.

    Examples
    --------
    >>> pre = RMSProp()
    >>> v = pre.init(torch.zeros(2, 3))
    >>> v = pre.update(v, torch.ones(2, 3))
    >>> pre.metric(v).shape
    torch.Size([2, 3])
    """

    decay: float = 0.99
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if not 0.0 <= check_float("rmsprop decay", self.decay) < 1.0:
            raise ValueError(f"rmsprop decay must lie in [0, 1), got {self.decay!r}")
        check_float("rmsprop eps", self.eps, positive=True)

    def init(self, w: Tensor) -> Tensor:
        """The initial second moment, ones of the shape of ``w (C, d)``."""
        return torch.ones_like(w)

    def update(self, v: Tensor, grad: Tensor) -> Tensor:
        """:math:`v \\leftarrow \\alpha v + (1 - \\alpha) g \\odot g`."""
        return v * self.decay + grad * grad * (1.0 - self.decay)

    def metric(self, v: Tensor) -> Tensor:
        """:math:`G = 1 / (\\sqrt v + \\delta)`."""
        return (v.sqrt() + self.eps).reciprocal()
