r"""Warmup adaptation: step size by dual averaging, diagonal metric from windowed variance estimates.

Step size (per chain)
---------------------
Dual averaging (Nesterov 2009, in the form of Hoffman & Gelman 2014, Algorithm 5) drives the mean
acceptance probability :math:`\alpha_t` towards a target :math:`\delta`:

.. math::

    \bar H_t = \bigl(1 - \tfrac1{t+t_0}\bigr)\bar H_{t-1} + \tfrac1{t+t_0}(\delta - \alpha_t),\quad
    \log\varepsilon_t = \mu - \tfrac{\sqrt t}{\gamma}\bar H_t,\quad
    \log\bar\varepsilon_t = t^{-\kappa}\log\varepsilon_t + (1-t^{-\kappa})\log\bar\varepsilon_{t-1},

with the published constants :math:`\gamma = 0.05`, :math:`t_0 = 10`, :math:`\kappa = 0.75` and
:math:`\mu = \log(10\,\varepsilon_0)`. After warmup the step size is :math:`\bar\varepsilon`. Per chain,
because chains of a multimodal target may sit in basins of very different curvature.

Why a moderate acceptance target: for a Metropolis-adjusted kernel the stationary law is exact at any
step size, and the step size that maximises effective samples per gradient evaluation sits at a moderate
acceptance (about 0.57 for MALA, 0.65-0.8 for HMC; Roberts & Rosenthal 1998, Beskos et al. 2013). A
higher target only makes the chains move less. For the unadjusted SGLD (minibatch potentials) the target
is the MALA acceptance of its proposal, kept high (0.9) because there it also bounds the discretisation
bias; the estimator then measures the remaining bias with coupled chains at the step and half the step.

Metric (per chain)
------------------
The diagonal metric :math:`G` (inverse mass of HMC, proposal covariance of MALA) is set to the variance of
each coordinate over doubling windows in the middle of the warmup (after a 15% initial buffer, before a
10% final buffer; Stan's schedule), shrunk towards a small constant,

.. math:: G_i = \frac{m}{m + 5}\,\widehat{\mathrm{Var}}(w_i) + 10^{-3}\,\bar v\,\frac{5}{m + 5},

(:math:`m` draws in the window, :math:`\bar v` the chain's mean variance over coordinates: the shrinkage
target is relative, so that a posterior of width :math:`10^{-3}` is not floored at an absolute constant)

and the dual averaging restarts after each window. A preconditioned chain explores elongated targets
(steep and flat directions, as at singular minima) in fewer steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DualAveraging", "MetricWindows", "mass_windows"]

# dual-averaging constants (Hoffman & Gelman 2014, section 3.2): shrinkage gamma, stabiliser t0,
# decay kappa of the averaged iterate.
_DA_GAMMA = 0.05
_DA_T0 = 10.0
_DA_KAPPA = 0.75


@dataclass
class DualAveraging:
    r"""Per-chain dual averaging of :math:`\log\varepsilon` (module docstring).

    Parameters
    ----------
    step_size : Tensor, shape ``(C,)``
        Initial step sizes :math:`\varepsilon_0`.
    target_accept : float
        :math:`\delta \in (0, 1)`.

    Examples
    --------
    >>> da = DualAveraging(torch.full((2,), 0.1), target_accept=0.6)
    >>> for _ in range(50):
    ...     _ = da.update(torch.tensor([1.0, 0.0]))     # chain 0 accepts everything, chain 1 nothing
    >>> bool(da.final()[0] > 0.1 > da.final()[1])
    True
    """

    step_size: Tensor
    target_accept: float

    def __post_init__(self) -> None:
        self.restart(self.step_size)

    def restart(self, step_size: Tensor) -> None:
        """Start again from ``step_size`` (after a metric update)."""
        self.log_eps = torch.log(step_size.to(torch.float64))
        self.mu = self.log_eps + math.log(10.0)
        self.hbar = torch.zeros_like(self.log_eps)
        self.log_eps_bar = self.log_eps.clone()
        self.t = 0

    def update(self, accept_prob: Tensor) -> Tensor:
        """One update from the transition's acceptance probabilities ``(C,)``; returns the next step sizes."""
        acc = torch.nan_to_num(accept_prob.to(torch.float64), nan=0.0)
        self.t += 1
        t = float(self.t)
        self.hbar = (1 - 1 / (t + _DA_T0)) * self.hbar + (self.target_accept - acc) / (t + _DA_T0)
        self.log_eps = self.mu - math.sqrt(t) / _DA_GAMMA * self.hbar
        wgt = t ** (-_DA_KAPPA)
        self.log_eps_bar = wgt * self.log_eps + (1 - wgt) * self.log_eps_bar
        return torch.exp(self.log_eps)

    def current(self) -> Tensor:
        """The step sizes of the next warmup transition."""
        return torch.exp(self.log_eps)

    def final(self) -> Tensor:
        r"""The averaged step sizes :math:`\bar\varepsilon` to use after warmup."""
        return torch.exp(self.log_eps_bar if self.t > 0 else self.log_eps)


def mass_windows(num_warmup: int) -> list[int]:
    """Iterations (exclusive ends) at which a metric window closes: doubling windows (first 25) between a
    15% initial and a 10% terminal step-size-only buffer; empty for warmups shorter than 100.

    Examples
    --------
    >>> mass_windows(1000)
    [175, 225, 325, 900]
    """
    if num_warmup < 100:
        return []
    start = max(1, int(0.15 * num_warmup))
    end = num_warmup - max(1, int(0.10 * num_warmup))
    ends, size, pos = [], 25, start
    while pos + size <= end:
        nxt = pos + size
        if nxt + 2 * size > end:  # the last window absorbs the remainder
            nxt = end
        ends.append(nxt)
        pos, size = nxt, 2 * size
    return ends


class MetricWindows:
    """Windowed per-chain variance estimates of the position for the diagonal metric (module docstring).

    Parameters
    ----------
    num_warmup : int
        Length of the warmup; the windows follow :func:`mass_windows`.
    """

    def __init__(self, num_warmup: int) -> None:
        self.windows = mass_windows(num_warmup)
        self.start = max(1, int(0.15 * num_warmup))
        self.sum: Tensor | None = None
        self.sq: Tensor | None = None
        self.count = 0

    def observe(self, it: int, w: Tensor) -> Tensor | None:
        """Record the positions ``w (C, d)`` after warmup transition ``it``; returns a new metric
        ``(C, d)`` when a window closes (None otherwise)."""
        if not self.windows or not self.start <= it < self.windows[-1]:
            return None
        x = w.detach().to(torch.float64)
        if self.sum is None or self.sq is None:
            self.sum = torch.zeros_like(x)
            self.sq = torch.zeros_like(x)
        self.sum += x
        self.sq += x * x
        self.count += 1
        if it + 1 not in self.windows:
            return None
        m = self.count
        mean = self.sum / m
        var = (self.sq / m - mean * mean).clamp_min(0.0) * m / max(m - 1, 1)
        floor = 1e-3 * var.mean(-1, keepdim=True).clamp_min(torch.finfo(var.dtype).tiny)
        var = (m / (m + 5.0)) * var + floor * (5.0 / (m + 5.0))
        self.sum.zero_()
        self.sq.zero_()
        self.count = 0
        return var.to(w.dtype)
