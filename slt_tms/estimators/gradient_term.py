r"""What a non-zero gradient at :math:`w^*` contributes to an LLC estimate.

The estimate is the localized tempered mean of :math:`n\beta\,(L_n(w) - L_n(w^*))` under
:math:`\pi(w) \propto \exp(-n\beta L_n(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2)`. A learning coefficient
belongs to a critical point; a checkpoint taken during training is usually not one. With
:math:`g = \nabla L_n(w^*)` and :math:`u = w - w^*` the estimate splits exactly into a first-order term and
the rest,

.. math:: \hat\lambda = \underbrace{n\beta\, g \cdot (\bar w - w^*)}_{T}
   + \overline{n\beta\,\bigl(L_n(w) - L_n(w^*) - g\cdot u\bigr)},

where :math:`\bar w` is the mean position of the draws; :math:`T` estimates :math:`n\beta\, g\cdot\mu` with
:math:`\mu = \mathbb E_\pi[w] - w^*`, and is negative where the chains drift downhill.
For a loss that is quadratic around :math:`w^*` with Hessian :math:`H \succeq 0` the law is Gaussian
with precision :math:`A = n\beta H + \gamma I` and mean :math:`\mu = -n\beta A^{-1} g`, and

.. math:: \mathbb E_\pi[n\beta(L_n(w) - L_n(w^*))] = \tfrac12 n\beta \operatorname{tr}(H A^{-1}) + \Delta,
   \qquad \Delta = \tfrac12 n\beta\, g\cdot\mu - \tfrac{\gamma}{2}\lVert\mu\rVert^2 .

The first term is the value the same curvature gives with a zero gradient. Since
:math:`0 \le \gamma\lVert\mu\rVert^2 \le \mu^\top A\mu = -n\beta\, g\cdot\mu`, the shift :math:`\Delta` lies
between :math:`T` and :math:`T/2` (:math:`T = n\beta\, g\cdot\mu`): the gradient lowers the estimate by
between half of :math:`|T|` and all of it.

**Estimating** :math:`T`. The draws' mean of :math:`a = n\beta\, g\cdot(w - w^*)` estimates it. Under any
law :math:`\pi \propto e^{-U}` the score has mean zero, :math:`\mathbb E_\pi[\nabla U] = 0`, so
:math:`b = g\cdot\nabla U(w)` is a control variate with a known mean: :math:`\hat T = \overline{a - c\,b}`
with :math:`c` the regression slope of :math:`a` on :math:`b`. On the exact Gaussian of a linear regression
taken off its minimum it cut the standard error 12-20 times. Where the chains wander slowly along the
gradient (a small CNN: per-chain means of :math:`a` from -13 to +16), the slow part of :math:`b`,
:math:`\gamma\, g\cdot(w - w^*)`, is small beside its fast part, the control variate does not help, and the
term comes out uncertain. The engine records :math:`a` and :math:`b` at every 10th draw (two dot products
with the full-data gradient :math:`g`, computed once per estimate; not for streamed data, which would take
another pass over the loader), and the standard error is of the estimate's kind (the larger of ArviZ's
MCSE and the chains' spread).

:func:`gradient_term` computes :math:`T` for an estimate and marks it notable where it is at least
:data:`NOTABLE_FRACTION` of the estimate and two of its standard errors, and uncertain where it is too
imprecise to rule that out; either way the estimate warns and its summary says so
(:func:`~slt_tms.estimators.result.gradient_term_note`). It is a note, not a flag: the number is the
estimand's, around a point that is not critical.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms.potentials.base import ANCHOR_CHUNK
from slt_tms.potentials.data import Batch
from slt_tms.samplers import diagnostics as diag

#: The first-order term is notable (a warning, a summary line) from this fraction of the estimate on.
NOTABLE_FRACTION = 0.05

__all__ = ["NOTABLE_FRACTION", "anchor_gradient", "gradient_term"]


def anchor_gradient(pot: Any, center: Tensor) -> Tensor | None:
    r""":math:`\nabla L_n` at ``center`` ``(d,)`` on all the data (in chunks of rows), or the population
    loss's gradient; ``None`` for streamed data (a DataLoader: it would take another pass over the
    loader)."""
    w = center.to(device=pot.w_star.device, dtype=pot.w_star.dtype).unsqueeze(0)
    data = pot.data
    if data is not None and data.streaming:
        return None
    with torch.no_grad():
        if data is None:
            return pot.value_and_grad(w, None)[1][0]
        if getattr(pot, "full_batch", None) is not None and not data.streaming:
            return pot.value_and_grad(w, data.full())[1][0]
        total, rows = torch.zeros_like(w[0]), 0
        for part, m in data.chunks(ANCHOR_CHUNK):
            total += pot.value_and_grad(w, Batch(part, False))[1][0] * m
            rows += m
    return total / rows if rows else None


def gradient_term(tr: Any, good: np.ndarray, nbeta: float, llc: float) -> dict[str, Any] | None:
    r"""The first-order term :math:`T = n\beta\,\nabla L_n(w^*)\cdot\mu` of an estimate (module docstring).

    Parameters
    ----------
    tr : Track
        The estimate's record: ``grad_norm`` and, per block, the projections ``dir_u``
        :math:`g\cdot(w - w^*)` and ``dir_grad`` :math:`g\cdot\nabla U(w)` ``(C, k)`` of every 10th draw.
    good : ndarray of bool, shape ``(C,)``
        The chains the estimate keeps.
    nbeta : float
    llc : float
        The estimate, to which the term is compared.

    Returns
    -------
    dict or None
        ``grad_norm`` :math:`\lVert\nabla L_n(w^*)\rVert`, ``term`` :math:`\hat T` (with the control
        variate), ``se``, ``term_plain`` (the draws' mean of :math:`n\beta\, g\cdot(w - w^*)` alone),
        ``rhat`` (split R-hat of those projections: how well the chains mixed along the gradient, which
        the loss trace may not show; NaN for one chain),
        ``fraction`` :math:`\hat T / \hat\lambda`, ``shift_range`` (the shift of a quadratic loss, between
        :math:`T` and :math:`T/2`; None where :math:`\hat T > 0`, outside that picture) and ``status``;
        ``None`` without recorded projections. ``status`` is ``"notable"`` where
        :math:`|\hat T|` is at least :data:`NOTABLE_FRACTION` of :math:`|\hat\lambda|` and two standard
        errors, ``"negligible"`` where :math:`|\hat T|` plus two standard errors stays below that fraction,
        and ``"uncertain"`` where neither can be said; a note is due unless it is ``"negligible"``.
    """
    if not tr.dir_u or not good.any():
        return None
    a = nbeta * np.concatenate(tr.dir_u, axis=1)[good]
    b = np.concatenate(tr.dir_grad, axis=1)[good]
    if a.shape[1] < 4 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    bc = b - b.mean()
    var_b = float(np.mean(bc * bc))
    c = float(np.mean((a - a.mean()) * bc) / var_b) if var_b > 0 else 0.0
    x = a - c * b  # E[b] = 0 under the sampled law: the same mean as a, with the wandering removed
    term = float(x.mean())
    se = float(diag.standard_error(x)[0])
    fraction = term / llc if llc != 0 else math.inf
    limit = NOTABLE_FRACTION * abs(llc)
    if abs(term) >= limit and abs(term) >= 2 * se:
        status = "notable"
    elif abs(term) + 2 * se < limit:
        status = "negligible"
    else:  # (a NaN standard error included)
        status = "uncertain"
    return {
        "grad_norm": float(tr.grad_norm),
        "term": term,
        "se": se,
        "term_plain": float(a.mean()),
        "rhat": float(diag.rhat(a)) if a.shape[0] > 1 else math.nan,
        "fraction": float(fraction),
        "shift_range": [term, term / 2] if term <= 0 else None,
        "status": status,
    }
