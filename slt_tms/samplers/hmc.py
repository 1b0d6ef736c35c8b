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

**Jittered trajectory length**: :math:`L_k` is drawn uniformly from
:math:`\{\lceil L(1-j)\rceil, \dots, \lfloor L(1+j)\rfloor\}` for every chain and transition (from the
chain's second uniform), chains that finish early are frozen while the others continue; jitter avoids the
periodic trajectories a fixed :math:`L\varepsilon` can produce. A transition whose energy error exceeds
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
        Mean number of leapfrog steps :math:`L` per transition.
    jitter : float
        Relative jitter :math:`j \\in [0, 1)` of the number of leapfrog steps (0 = fixed :math:`L`).
    max_energy_error : float
        Energy error beyond which a transition is a divergence.

    Examples
    --------
    >>> target, kernel = Tempered.gaussian(2), HMC(num_leapfrog=5)
    >>> state = kernel.init(torch.zeros(3, 2), target, None)
    >>> state, info = kernel.step(state, target, 0.3, None, Draws(torch.randn(3, 2), torch.rand(3, 2), None))
    >>> info.num_steps.tolist()[0] in range(4, 7)
    True
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

    @property
    def step_range(self) -> tuple[int, int]:
        """Smallest and largest number of leapfrog steps a transition can take."""
        lo = max(1, math.ceil(self.num_leapfrog * (1 - self.jitter)))
        hi = max(lo, math.floor(self.num_leapfrog * (1 + self.jitter)))
        return lo, hi

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
        lo, hi = self.step_range
        num_steps = (lo + torch.floor(draws.uniform[:, 1] * (hi - lo + 1))).long().clamp_(lo, hi)
        p0 = draws.normal / G.sqrt()
        kin0 = 0.5 * (p0 * p0 * G).sum(-1)
        w, u, g, loss = w0, u0, g0, l0
        p = p0 - 0.5 * eps * g
        eps_g = eps * G
        n_min, n_max = (int(v) for v in torch.aminmax(num_steps))
        for _ in range(n_min - 1):  # every chain moves and none takes its last (half) step: no masks
            w = w + eps_g * p
            u, g, loss = target.evaluate(w, batch)
            p = p - eps * g
        for s in range(max(n_min - 1, 0), n_max):
            active = (s < num_steps)[:, None]
            w = torch.where(active, w + eps_g * p, w)
            ev = target.evaluate(w, batch)
            u = torch.where(active[:, 0], ev.potential, u)
            g = torch.where(active, ev.grad, g)
            loss = torch.where(active[:, 0], ev.loss, loss)
            frac = torch.where((s == num_steps - 1)[:, None], 0.5, 1.0).to(dtype)
            p = torch.where(active, p - frac * eps * g, p)
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
            new.loss, new.potential, new.grad, accept_prob, divergent, n_max, num_steps, energy_error
        )
        return new, info
