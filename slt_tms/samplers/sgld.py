r"""Stochastic-gradient Langevin dynamics (SGLD): the unadjusted Langevin kernel, for minibatch potentials.

Update for chain :math:`k` with step size :math:`\epsilon`, diagonal preconditioner :math:`G`
(:math:`G = I` without one) and :math:`\xi \sim N(0, I)` from the chain's stream:

.. math::

    w_{t+1} = w_t - \frac{\epsilon}{2}\, G\, \nabla U_B(w_t) + \sqrt{\epsilon\, G}\;\xi_t ,
    \qquad U_B(w) = n\beta\, L_B(w) + \frac{\gamma}{2}\lVert w - w^*\rVert^2 ,

with :math:`L_B` the loss on the step's batch (Welling & Teh 2011; with an RMSProp :math:`G`, Li et al.
2016). SGLD never rejects: its stationary law differs from :math:`e^{-U}` by a bias of order
:math:`\epsilon` (the discretisation's and, on minibatches, the gradient noise's; with the
Leimkuhler-Matthews integrator below the discretisation's is of order :math:`\epsilon^2`). The estimators
measure it (coupled chains at the step and half the step) instead of assuming it away, and use the
Metropolis-adjusted kernels (:mod:`~slt_tms.samplers.mala`, :mod:`~slt_tms.samplers.hmc`) wherever the
full loss is available.

Leimkuhler-Matthews integrator
------------------------------
With ``integrator="lm"`` the step's noise is the mean of this step's and the previous step's draws
(Leimkuhler & Matthews 2013, "Rational construction of stochastic numerical methods for molecular
sampling"; the high-friction limit of their BAOAB scheme):

.. math::

    w_{t+1} = w_t - \frac{\epsilon}{2} G \nabla U_B(w_t) + \sqrt{\epsilon G}\,\frac{\xi_{t-1} + \xi_t}{2},

with :math:`\xi_{-1} = 0` at a chain's start. Same cost as Euler (one gradient and one normal draw per
step; the state keeps the last draw), but the bias of the law it samples is of second order in
:math:`\epsilon` where Euler's is of first, and it vanishes on a Gaussian. On :math:`U = a w^2/2` write
:math:`q = 1 - \epsilon a/2`, :math:`c = \sqrt\epsilon/2` and :math:`y_t = w_t - c\,\xi_{t-1}`; then
:math:`y_{t+1} = q\, y_t + c(1 + q)\,\xi_{t-1}` is an AR(1) chain with :math:`\xi_{t-1}` independent of
:math:`y_t`, so :math:`\mathrm{Var}(y) = c^2 (1+q)/(1-q)` and
:math:`\mathrm{Var}(w) = \mathrm{Var}(y) + c^2 = 2c^2/(1-q) = 1/a`: exact at every stable step
(:math:`\epsilon a < 4`), where Euler gives :math:`1/(a(1 - \epsilon a/4))`. What remains on minibatches
is the gradient noise's bias, still of first order, which the coupled check of the estimators measures.
The MALA diagnostic below is that of the Euler proposal and is not reported for this integrator (NaN).

MALA diagnostic
---------------
The SGLD proposal is :math:`q(w' \mid w) = N(w - \frac{\epsilon}{2} G\nabla U(w), \epsilon G)`. The
Metropolis-adjusted Langevin log acceptance ratio of the move :math:`w_{t-1} \to w_t`,

.. math::

    \log\alpha_t = U(w_{t-1}) - U(w_t) + \log q(w_{t-1}\mid w_t) - \log q(w_t\mid w_{t-1}),

needs :math:`U, \nabla U` at :math:`w_t`, which the next step evaluates anyway, so :func:`step` reports
:math:`\log\alpha_t` for the move INTO its current point at no extra gradient cost (NaN at the first
step). For minibatch potentials :math:`U(w_{t-1})` is re-evaluated on the current batch (one extra
forward pass, ``exact=False``) so that both terms use the same rows. The acceptance measures the
discretisation error (close to 1: the Langevin step is accurate); the step-size adaptation of SGLD
targets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from slt_tms.potentials import Batch
from slt_tms.samplers.base import Draws, Info, Tempered

__all__ = ["SGLD", "SGLDInfo", "SGLDState"]


class _Previous(NamedTuple):
    w: Tensor
    potential: Tensor
    grad: Tensor
    noise: Tensor
    metric: Tensor | None
    step_size: Tensor


@dataclass(frozen=True)
class SGLDState:
    """Current points ``w (C, d)``, the previous move (for the MALA diagnostic; None at the start) and the
    last normal draw ``(C, d)`` (Leimkuhler-Matthews integrator only; None at the start)."""

    w: Tensor
    prev: _Previous | None = None
    noise: Tensor | None = None


#: The transition report of SGLD (the kernels share one, see :mod:`slt_tms.samplers.base`).
SGLDInfo = Info


def _col(step_size: Tensor | float, w: Tensor) -> Tensor:
    eps = torch.as_tensor(step_size, dtype=w.dtype, device=w.device)
    return eps.reshape(-1, 1) if eps.ndim else eps


@dataclass(frozen=True)
class SGLD:
    """The SGLD kernel (module docstring). Stateless: settings only.

    Parameters
    ----------
    diagnose : bool
        Compute the MALA acceptance of every move (for step-size adaptation and reporting; Euler only).
    integrator : {"euler", "lm"}
        Euler-Maruyama (the classical SGLD update) or Leimkuhler-Matthews (the noise of two consecutive
        draws averaged; module docstring). The estimators use "lm" for minibatch draws.

    Examples
    --------
    >>> target, kernel = Tempered.gaussian(2, nbeta=10.0, localization=1.0), SGLD()
    >>> state = kernel.init(torch.zeros(3, 2), target, None)
    >>> state, info = kernel.step(state, target, 0.1, None, Draws(torch.zeros(3, 2), torch.rand(3, 2), None))
    >>> bool((state.w == 0).all())                           # zero noise, zero gradient: no move
    True
    """

    diagnose: bool = True
    integrator: str = "euler"
    name: str = "sgld"
    exact: bool = False

    def __post_init__(self) -> None:
        if self.integrator not in ("euler", "lm"):
            raise ValueError(f"integrator must be 'euler' or 'lm', got {self.integrator!r}")

    def init(self, w0: Tensor, target: Tempered, batch: Batch | None) -> SGLDState:
        """Start every chain at ``w0 (C, d)``."""
        if w0.ndim != 2:
            raise ValueError(f"w0 must have shape (num_chains, d), got {tuple(w0.shape)}")
        return SGLDState(w=w0.detach().clone())

    def step(
        self,
        state: SGLDState,
        target: Tempered,
        step_size: Tensor | float,
        batch: Batch | None,
        draws: Draws,
        metric: Tensor | None = None,
        *,
        same_batch: bool = True,
    ) -> tuple[SGLDState, SGLDInfo]:
        r"""One SGLD step of every chain.

        Parameters
        ----------
        state : SGLDState
        target : Tempered
        step_size : float or Tensor ``(C,)``
            :math:`\epsilon` (one per chain, or shared).
        batch : Batch or None
            The rows of this step.
        draws : Draws
            ``draws.normal`` is :math:`\xi_t` (zeros give a deterministic gradient step).
        metric : Tensor ``(C, d)``, optional
            Diagonal preconditioner :math:`G`.
        same_batch : bool
            False for minibatch potentials: :math:`U(w_{t-1})` of the MALA diagnostic is then re-evaluated
            on this step's batch.
        """
        w = state.w
        eps = _col(step_size, w)
        ev = target.evaluate(w, batch)
        accept = torch.full_like(ev.loss, math.nan)
        prev = state.prev
        grads = 1
        if self.diagnose and prev is not None and self.integrator == "euler":
            prev_u = prev.potential
            if not same_batch:
                prev_u, _ = target.energy(prev.w, batch)
            # back = w_{t-1} - w_t + (eps/2) G gU(w_t) = (eps/2) G (gU_{t-1} + gU_t) - sqrt(eps G) xi;
            # log q_back - log q_fwd = sum_i [ (sqrt(eps)/2) sqrt(G) s xi - (eps/8) G s^2 ],
            # with s = gU_{t-1} + gU_t
            s = prev.grad + ev.grad
            pe = prev.step_size
            if prev.metric is None:
                corr = ((prev.noise * pe.sqrt()) * s * 0.5 - (pe * 0.125) * s * s).sum(-1)
            else:
                g = prev.metric
                corr = ((prev.noise * (pe * g).sqrt()) * s * 0.5 - (pe * 0.125) * g * s * s).sum(-1)
            log_a = prev_u - ev.potential + corr
            accept = torch.exp(torch.clamp(log_a, max=0.0))
            accept = torch.where(torch.isfinite(log_a), accept, torch.zeros_like(accept))
        noise = draws.normal
        scale = eps.sqrt() if metric is None else (eps * metric).sqrt()
        if metric is None:  # one (C, d) allocation (see Tempered.evaluate)
            w_new = torch.addcmul(w, ev.grad, -0.5 * eps)
        else:
            w_new = torch.addcmul(w, metric * ev.grad, -0.5 * eps)
        if self.integrator == "lm":  # sqrt(eps G) (xi_{t-1} + xi_t) / 2, without a temporary
            scale = scale * 0.5
            if state.noise is not None:
                w_new.addcmul_(state.noise, scale)
        w_new.addcmul_(noise, scale)
        divergent = ~torch.isfinite(ev.potential)
        # the previous move is kept for the diagnostic only (a copy of the step's noise: its block is reused)
        last = (
            _Previous(w, ev.potential, ev.grad, noise.clone(), metric, eps.expand(w.shape[0], 1))
            if self.diagnose
            else None
        )
        new = SGLDState(w_new, last, noise.clone() if self.integrator == "lm" else None)
        return new, SGLDInfo(ev.loss, ev.potential, ev.grad, accept, divergent, grads)
