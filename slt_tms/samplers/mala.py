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

import torch
from torch import Tensor

from slt_tms.potentials import Batch
from slt_tms.samplers.base import Draws, Info, PointState, Tempered

__all__ = ["MALA", "MALAInfo", "MALAState"]


#: The state and the transition report of MALA (shared by the kernels, see :mod:`slt_tms.samplers.base`).
MALAState = PointState
MALAInfo = Info


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
    >>> target, kernel = Tempered.gaussian(2), MALA()
    >>> state = kernel.init(torch.zeros(4, 2), target, None)
    >>> state, info = kernel.step(state, target, 0.5, None, Draws(torch.randn(4, 2), torch.rand(4, 2), None))
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
        rejected_min = torch.where(accepted, torch.inf, ev.loss)  # the proposal's loss where it was rejected
        return new, MALAInfo(new.loss, new.potential, new.grad, accept_prob, divergent, 1, None, None,
                             rejected_min)
