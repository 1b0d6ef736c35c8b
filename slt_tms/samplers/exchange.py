r"""Replica exchange (parallel tempering) as a move between transitions.

Chains are arranged as ``K`` replica sets times ``G`` rungs; rung :math:`g` targets its own density
:math:`p_g \propto e^{-U_g}` (a ladder of temperatures, or of sample sizes). After a transition,
neighbouring rungs :math:`(g, g+1)` (even :math:`g` on even iterations, odd on odd ones) propose to
exchange their states, accepted with probability

.. math::

    \min\Bigl(1, \frac{p_g(w_{g+1})\,p_{g+1}(w_g)}{p_g(w_g)\,p_{g+1}(w_{g+1})}\Bigr)
    = \min\bigl(1, e^{\,U_g(w_g) + U_{g+1}(w_{g+1}) - U_g(w_{g+1}) - U_{g+1}(w_g)}\bigr),

which keeps the product of the rung targets invariant (Swendsen & Wang 1986; Geyer 1991). Every rung
stays a valid chain for its own target; swaps carry states found at hot rungs (mixing across basins)
to cold rungs. The log ratio is supplied by the caller (it can often be computed more cheaply than four
energies, e.g. from the loss difference between two sample sizes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["exchange", "swap_rungs"]


def swap_rungs(num_rungs: int, iteration: int, device: torch.device | None = None) -> Tensor:
    """Lower rungs ``g`` of the pairs ``(g, g+1)`` proposed at this iteration (even/odd alternation).

    Examples
    --------
    >>> swap_rungs(5, 0).tolist(), swap_rungs(5, 1).tolist()
    ([0, 2], [1, 3])
    """
    return torch.arange(iteration % 2, num_rungs - 1, 2, device=device)


def exchange(
    w: Tensor,
    rungs: Tensor,
    log_ratio: Callable[[Tensor, Tensor, Tensor], Tensor],
    uniform: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""Propose the swaps ``(g, g+1)`` for every lower rung ``g`` in ``rungs`` and every replica set.

    Parameters
    ----------
    w : Tensor, shape ``(K, G, d)``
        States of the ``K`` replica sets at the ``G`` rungs.
    rungs : Tensor of int, shape ``(P,)``
        Lower rungs of the proposed pairs (e.g. :func:`swap_rungs`).
    log_ratio : callable ``(g (K*P,), w_lo (K*P, d), w_hi (K*P, d)) -> (K*P,)``
        Log acceptance ratio of exchanging ``w_lo`` (at rung ``g``) and ``w_hi`` (at rung ``g + 1``);
        rows are ordered replica set major.
    uniform : Tensor, shape ``(K, P)``
        Uniform numbers for the accept decisions (from the caller's own stream).

    Returns
    -------
    (new_w, accepted)
        ``new_w`` of shape ``(K, G, d)`` and the accept flags ``(K, P)``.

    Examples
    --------
    >>> w = torch.arange(4.0).reshape(1, 4, 1)
    >>> new, acc = exchange(w, swap_rungs(4, 0), lambda g, a, b: torch.zeros(len(g)), torch.zeros(1, 2))
    >>> new.flatten().tolist(), acc.tolist()
    ([1.0, 0.0, 3.0, 2.0], [[True, True]])
    """
    K, _, d = w.shape
    P = rungs.numel()
    if P == 0:
        return w, torch.zeros(K, 0, dtype=torch.bool, device=w.device)
    lo = w[:, rungs].reshape(-1, d)
    hi = w[:, rungs + 1].reshape(-1, d)
    g = rungs.repeat(K)
    ratio = log_ratio(g, lo, hi).reshape(K, P)
    acc = torch.log(uniform.to(ratio.dtype)) < ratio
    if not bool(acc.any()):
        return w, acc
    new = w.clone()
    a = acc[..., None]
    new[:, rungs] = torch.where(a, w[:, rungs + 1], w[:, rungs])
    new[:, rungs + 1] = torch.where(a, w[:, rungs], w[:, rungs + 1])
    return new, acc
