r"""Hamiltonian Monte Carlo (HMC), many chains on the leading axis, one batched gradient per leapfrog step.

Target :math:`e^{-U}`; with a diagonal inverse mass :math:`M^{-1} = G` (the metric) and momentum
:math:`p \sim N(0, G^{-1})` the Hamiltonian is :math:`H(w, p) = U(w) + \tfrac12 p^\top G p`. One
transition is :math:`L` leapfrog steps of size :math:`\varepsilon`,

.. math::

    p_{1/2} = p_0 - \tfrac{\varepsilon}{2}\nabla U(w_0),\quad
    w_{j+1} = w_j + \varepsilon\, G\, p_{j+1/2},\quad
    p_{j+3/2} = p_{j+1/2} - \varepsilon \nabla U(w_{j+1}),

(the last momentum update is a half step), followed by a Metropolis test with acceptance probability
:math:`\min(1, e^{H(w_0, p_0) - H(w_L, p_L)})` (Duane et al. 1987; Neal 2011).

**Jittered trajectory length**: every chain and transition uses the step size
:math:`\varepsilon_k = \varepsilon\,(1 + j\,(2u_k - 1))` with :math:`u_k` uniform (the chain's second
uniform), so the trajectory length :math:`L\varepsilon_k` varies by :math:`\pm j` around
:math:`L\varepsilon`; this avoids the periodic trajectories a fixed length can produce (Neal 2011,
section 5.4.2.2), and the kernel stays reversible because :math:`\varepsilon_k` does not depend on the
state. The number of leapfrog steps is the same :math:`L` for every chain: chains evaluated together pay
for the longest trajectory, so jittering the number of steps instead (in
:math:`\{\lceil L(1-j)\rceil, \dots, \lfloor L(1+j)\rfloor\}`) costs :math:`\lfloor L(1+j)\rfloor`
gradients per transition once a handful of chains run (9 for :math:`L = 8`, :math:`j = 0.2`), a step-size
jitter exactly :math:`L`. A transition whose energy error exceeds
``max_energy_error`` (or is not finite) is a divergence: rejected and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from slt_tms.potentials import Batch
from slt_tms.samplers.base import Draws, Info, PointState, Tempered
from slt_tms.validation import check_float, check_int

__all__ = ["HMC", "HMCInfo", "HMCState"]


#: The state and the transition report of HMC (shared by the kernels, see :mod:`slt_tms.samplers.base`).
HMCState = PointState
HMCInfo = Info


@dataclass(frozen=True)
class HMC:
    """The HMC kernel (module docstring): settings only, no state.

    Parameters
    ----------
    num_leapfrog : int
        Number of leapfrog steps :math:`L` per transition (gradient evaluations per transition).
    jitter : float
        Relative jitter :math:`j \\in [0, 1)` of the step size, hence of the trajectory length (0 = fixed).
    max_energy_error : float
        Energy error beyond which a transition is a divergence.

    Examples
    --------
    >>> target, kernel = Tempered.gaussian(2), HMC(num_leapfrog=5)
    >>> state = kernel.init(torch.zeros(3, 2), target, None)
    >>> state, info = kernel.step(state, target, 0.3, None, Draws(torch.randn(3, 2), torch.rand(3, 2), None))
    >>> info.num_steps.tolist(), info.num_grads
    ([5, 5, 5], 5)
    """

    num_leapfrog: int = 8
    jitter: float = 0.2
    max_energy_error: float = 1000.0
    name: str = "hmc"
    exact: bool = True

    def __post_init__(self) -> None:
        check_int("num_leapfrog", self.num_leapfrog, minimum=1)
        if not 0.0 <= check_float("jitter", self.jitter) < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        check_float("max_energy_error", self.max_energy_error, positive=True)

    def init(self, w0: Tensor, target: Tempered, batch: Batch | None) -> HMCState:
        """Evaluate :math:`U` and its gradient at the starting points ``w0 (C, d)``."""
        if w0.ndim != 2:
            raise ValueError(f"w0 must have shape (num_chains, d), got {tuple(w0.shape)}")
        if not bool(torch.isfinite(w0).all()):
            raise ValueError("w0 must be finite")
        ev = target.evaluate(w0.detach(), batch)
        return HMCState(w0.detach().clone(), ev.potential, ev.grad, ev.loss)

    def step(
        self,
        state: HMCState,
        target: Tempered,
        step_size: Tensor | float,
        batch: Batch | None,
        draws: Draws,
        metric: Tensor | None = None,
        *,
        same_batch: bool = True,
    ) -> tuple[HMCState, HMCInfo]:
        """One HMC transition of every chain: momentum from ``draws.normal``, acceptance from
        ``draws.uniform[:, 0]``, trajectory length from ``draws.uniform[:, 1]``."""
        w0, u0, g0, l0 = state
        C = w0.shape[0]
        dtype = w0.dtype
        eps = torch.as_tensor(step_size, dtype=dtype, device=w0.device).expand(C).reshape(C, 1)
        G = torch.ones_like(w0) if metric is None else metric
        eps = eps * (1.0 + self.jitter * (2.0 * draws.uniform[:, 1:2].to(dtype) - 1.0))
        num_steps = torch.full((C,), self.num_leapfrog, dtype=torch.long, device=w0.device)
        p0 = draws.normal / G.sqrt()
        kin0 = 0.5 * (p0 * p0 * G).sum(-1)
        w, u, g, loss = w0, u0, g0, l0
        p = p0 - 0.5 * eps * g
        eps_g = eps * G
        for s in range(self.num_leapfrog):
            w = w + eps_g * p
            u, g, loss = target.evaluate(w, batch)
            p = p - (0.5 if s == self.num_leapfrog - 1 else 1.0) * eps * g
        kin = 0.5 * (p * p * G).sum(-1)
        energy_error = (u + kin) - (u0 + kin0)
        finite = torch.isfinite(energy_error)
        divergent = ~finite | (energy_error > self.max_energy_error)
        log_a = torch.where(finite, -energy_error, torch.full_like(energy_error, -math.inf))
        accept_prob = torch.exp(torch.clamp(log_a, max=0.0))
        accepted = (torch.log(draws.uniform[:, 0]) < log_a) & ~divergent
        a = accepted[:, None]
        new = HMCState(
            torch.where(a, w, w0),
            torch.where(accepted, u, u0),
            torch.where(a, g, g0),
            torch.where(accepted, loss, l0),
        )
        info = HMCInfo(
            new.loss, new.potential, new.grad, accept_prob, divergent, self.num_leapfrog, num_steps,
            energy_error,
        )
        return new, info
