r"""The Metropolis-adjusted Langevin algorithm (MALA): exact sampling of :math:`e^{-U}` with Langevin moves.

Proposal for chain :math:`k` (step size :math:`\epsilon`, diagonal metric :math:`G`, :math:`\xi\sim N(0,I)`):

.. math::

    w' = w - \frac{\epsilon}{2} G \nabla U(w) + \sqrt{\epsilon G}\,\xi ,

accepted with probability :math:`\min(1, \alpha)`,

.. math::

    \log\alpha = U(w) - U(w') + \log q(w \mid w') - \log q(w' \mid w), \qquad
    \log q(a \mid b) = -\frac{1}{2\epsilon}\bigl\lVert G^{-1/2}\bigl(a - b
        + \tfrac{\epsilon}{2} G\nabla U(b)\bigr)\bigr\rVert^2 + \text{const}.

The Metropolis test removes the discretisation bias of the Langevin step exactly (Roberts & Tweedie
1996), so the chain leaves :math:`e^{-U}` invariant for any step size; the step size only trades
acceptance against move length (optimal acceptance about 0.57 in high dimension, Roberts & Rosenthal
1998). It needs the FULL loss at both points: use it for population and full-batch potentials. One
gradient evaluation per step (the gradient at the accepted point is cached in the state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from slt_tms.potentials import Batch
from slt_tms.samplers.base import Draws, Tempered

__all__ = ["MALA", "MALAInfo", "MALAState"]


class MALAState(NamedTuple):
    """Points ``w (C, d)`` with :math:`U` ``(C,)``, :math:`\\nabla U` ``(C, d)`` and :math:`L` ``(C,)``
    there."""

    w: Tensor
    potential: Tensor
    grad: Tensor
    loss: Tensor


class MALAInfo(NamedTuple):
    """Diagnostics of one transition (shapes ``(C,)``); ``loss`` is :math:`L` at the chain's new point."""

    loss: Tensor
    potential: Tensor
    grad: Tensor
    accept_prob: Tensor
    divergent: Tensor
    num_grads: int


@dataclass(frozen=True)
class MALA:
    """The MALA kernel (module docstring). Stateless: settings only.

    Parameters
    ----------
    max_energy_error : float
        A proposal whose :math:`-\\log\\alpha` exceeds this (or is not finite) is a divergence (rejected
        and counted).

    Examples
    --------
    >>> from slt_tms.potentials import from_callable
    >>> pot = from_callable(lambda w, rows=None: 0.5 * (w ** 2).sum(-1), torch.zeros(2), n=100)
    >>> target = Tempered(pot, nbeta=1.0, localization=0.0, center=torch.zeros(2))
    >>> kernel = MALA()
    >>> state = kernel.init(torch.zeros(4, 2), target, None)
    >>> draws = Draws(torch.randn(4, 2), torch.rand(4, 2), None)
    >>> state, info = kernel.step(state, target, 0.5, None, draws)
    >>> tuple(state.w.shape), bool(((info.accept_prob >= 0) & (info.accept_prob <= 1)).all())
    ((4, 2), True)
    """

    max_energy_error: float = 1000.0
    name: str = "mala"
    exact: bool = True

    def init(self, w0: Tensor, target: Tempered, batch: Batch | None) -> MALAState:
        """Evaluate :math:`U` and its gradient at the starting points ``w0 (C, d)``."""
        if w0.ndim != 2:
            raise ValueError(f"w0 must have shape (num_chains, d), got {tuple(w0.shape)}")
        ev = target.evaluate(w0.detach(), batch)
        return MALAState(w0.detach().clone(), ev.potential, ev.grad, ev.loss)

    def step(
        self,
        state: MALAState,
        target: Tempered,
        step_size: Tensor | float,
        batch: Batch | None,
        draws: Draws,
        metric: Tensor | None = None,
        *,
        same_batch: bool = True,
    ) -> tuple[MALAState, MALAInfo]:
        """One MALA transition of every chain (``draws.uniform[:, 0]`` decides acceptance)."""
        w, u, g = state.w, state.potential, state.grad
        eps = torch.as_tensor(step_size, dtype=w.dtype, device=w.device)
        eps = eps.reshape(-1, 1) if eps.ndim else eps
        G = torch.ones_like(w) if metric is None else metric
        xi = draws.normal
        w_new = w - (0.5 * eps) * G * g + (eps * G).sqrt() * xi
        ev = target.evaluate(w_new, batch)
        back = w - w_new + (0.5 * eps) * G * ev.grad
        log_q_back = -(back * back / G).sum(-1) / (2.0 * eps.reshape(-1))
        log_q_fwd = -0.5 * (xi * xi).sum(-1)
        log_a = (u - ev.potential) + (log_q_back - log_q_fwd)
        finite = torch.isfinite(log_a)
        divergent = ~finite | (-log_a > self.max_energy_error)
        log_a = torch.where(finite, log_a, torch.full_like(log_a, -torch.inf))
        accept_prob = torch.exp(torch.clamp(log_a, max=0.0))
        accepted = (torch.log(draws.uniform[:, 0]) < log_a) & ~divergent
        a = accepted[:, None]
        new = MALAState(
            torch.where(a, w_new, w),
            torch.where(accepted, ev.potential, u),
            torch.where(a, ev.grad, g),
            torch.where(accepted, ev.loss, state.loss),
        )
        return new, MALAInfo(new.loss, new.potential, new.grad, accept_prob, divergent, 1)
