r"""The one classifier of TMS parameters (posterior draws and SGD checkpoints) into critical-point families.

Phases are BASINS of the critical points, not tolerance windows around them. Each parameter vector
:math:`w = (W, b)` (``r = 2``) is first moved by a short gradient flow of the closed-form population loss

.. math:: w_{t+1} = w_t - \eta\,\nabla L(w_t), \qquad t = 0, \dots, T - 1

(:math:`\eta` = ``flow_lr``, :math:`T` = ``flow_steps``), which removes the thermal (posterior) or
stochastic (SGD) displacement from the critical point whose basin the sample sits in, while a point on
a saddle plateau, where the gradient is small, stays put (the flow is short: it does not escape a saddle).
The flowed point is then named by

1. **vertices**: columns with :math:`\lVert W_i\rVert \ge \theta \max_j \lVert W_j\rVert` (and the
   largest at least ``min_length``); :math:`k` = their number;
2. **geometry**: the vertices form a regular :math:`k`-gon modulo :math:`O(2)` (angular gaps within
   ``angle_tol`` of :math:`2\pi/k`, lengths within ``length_ratio``);
3. **signs**: :math:`\varphi` = vertices with :math:`b_j < -\tfrac12\lVert W_j\rVert^2` (switched off),
   :math:`\sigma` = non-vertex columns with :math:`b_i > 1/(4c)` (half the optimal dead bias
   :math:`1/(2c)`);
4. **energy**: among the families with the same :math:`(k, \sigma, \varphi)` the one whose level
   :math:`L_a` is nearest, accepted if :math:`|L(w_T) - L_a| \le` ``energy_tol`` (default
   :math:`1/(10c^2)`, 0.4 of the smallest spacing :math:`1/(4c^2)` between two levels of one polygon).

A sample that fits no family after this short flow gets a second, longer and accelerated flow (Nesterov
momentum :math:`\mu` = ``refine_momentum``, step ``refine_lr``, ``refine_steps`` steps) from where the
first one stopped, and is named again by the same rules:

.. math:: v_{t+1} = \mu v_t - \eta'\,\nabla L(w_t + \mu v_t), \qquad w_{t+1} = w_t + v_{t+1}.

The two stages serve the two kinds of input. A point near a saddle (an SGD checkpoint on a plateau) is
named by the short flow, which does not leave the saddle. A thermal posterior draw at small :math:`n`
sits far above its level along flat and quartic directions, where the short flow relaxes slowly: on
1600 draws at c = 6, n = 50..400, the short flow alone left 70-90% of them off their level
("unclassified"); with the second stage 2.8% stay unclassified and 97.5% agree with 4000 plain steps.

A sample that fits no family after both stages is ``"unclassified"`` with the reason. ``flow_steps=0``
(no flow at all, neither stage) gives the old tolerance-window classification (for comparisons).

5. **start** (optional, ``start_gap``; SGD checkpoints): the point itself, before the flow, lies at most
   ``start_gap`` level spacings :math:`1/(4c^2)` above the level, :math:`L(w_0) - L_a \le
   \texttt{start\_gap}/(4c^2)`. The flow says where the loss leads from a point, not whether the point is
   there yet: on the steep descent of a training run the short flow reaches a family's level from
   checkpoints far above it (at c = 6 from L = 0.26 to the 4+ level 0.104). A thermal posterior draw
   sits far above its level by nature, so posterior draws are classified without this rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms import num_params, unpack
from slt_tms.validation import check_float, check_int

__all__ = ["UNCLASSIFIED", "Classification", "ClassifyTolerances", "classify", "gradient_flow"]

#: Name given to samples that fit no family.
UNCLASSIFIED = "unclassified"


@dataclass(frozen=True)
class ClassifyTolerances:
    r"""Settings of :func:`classify` (module docstring).

    Parameters
    ----------
    flow_steps : int
        Gradient-descent steps on the population loss before naming (100).
    flow_lr : float
        Their step size :math:`\eta` (0.2; the population loss has curvatures below 2 at the families, so
        the descent is stable).
    refine_steps : int
        Steps of the second, accelerated flow for samples the first stage leaves unclassified (200;
        0 switches the second stage off; so does ``flow_steps=0``).
    refine_lr, refine_momentum : float
        Its step size :math:`\eta'` (0.3) and Nesterov momentum :math:`\mu \in [0, 1)` (0.9).
    live_threshold : float
        A column is a vertex iff its norm is at least this fraction of the largest (0.5).
    min_length : float
        Absolute floor of the largest vertex (0.1): below it ``k = 0``.
    angle_tol : float
        Every angular gap within ``angle_tol`` :math:`\times 2\pi/k` of :math:`2\pi/k` (0.35).
    length_ratio : float
        Shortest vertex / longest vertex at least this (0.5).
    energy_tol : float, optional
        Largest :math:`|L(w_T) - L_a|` (default :math:`1/(10c^2)`).
    start_gap : float, optional
        Largest :math:`L(w_0) - L_a` of the point before the flow, in level spacings :math:`1/(4c^2)`
        (default None: no limit; :data:`slt_tms.analysis.plateaus.SGD_TOLERANCES` uses 1).
    """

    flow_steps: int = 100
    flow_lr: float = 0.2
    refine_steps: int = 200
    refine_lr: float = 0.3
    refine_momentum: float = 0.9
    live_threshold: float = 0.5
    min_length: float = 0.1
    angle_tol: float = 0.35
    length_ratio: float = 0.5
    energy_tol: float | None = None
    start_gap: float | None = None

    def __post_init__(self) -> None:
        check_int("flow_steps", self.flow_steps, minimum=0)
        check_float("flow_lr", self.flow_lr, positive=True)
        check_int("refine_steps", self.refine_steps, minimum=0)
        check_float("refine_lr", self.refine_lr, positive=True)
        mom = check_float("refine_momentum", self.refine_momentum, nonnegative=True)
        if not mom < 1:
            raise ValueError(f"refine_momentum must be in [0, 1), got {mom!r}")
        for name in ("live_threshold", "angle_tol", "length_ratio"):
            v = check_float(name, getattr(self, name))
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1), got {v!r}")
        check_float("min_length", self.min_length, nonnegative=True)
        if self.energy_tol is not None:
            check_float("energy_tol", self.energy_tol, positive=True)
        if self.start_gap is not None:
            check_float("start_gap", self.start_gap, positive=True)


@dataclass(frozen=True)
class Classification:
    r"""Per-sample output of :func:`classify` (arrays of shape ``(N,)``, object arrays for strings).

    Attributes
    ----------
    names : family name or ``"unclassified"``
    reason : why (the matched family, or what did not fit)
    loss : population loss :math:`L(w_T)` after the flow
    loss_start : population loss :math:`L(w)` of the sample itself
    nearest : the family with the nearest energy level to :math:`L(w_T)`
    loss_gap : :math:`L(w_T) - L_{\text{nearest}}`
    k, sigma, phi : vertices, dead columns with positive bias, switched-off vertices (after the flow)
    regular : whether the vertices form a regular k-gon
    grad_norm : :math:`\lVert\nabla L(w_T)\rVert`
    """

    names: np.ndarray
    reason: np.ndarray
    loss: np.ndarray
    loss_start: np.ndarray
    nearest: np.ndarray
    loss_gap: np.ndarray
    k: np.ndarray
    sigma: np.ndarray
    phi: np.ndarray
    regular: np.ndarray
    grad_norm: np.ndarray

    def counts(self, names: Sequence[str]) -> np.ndarray:
        """Number of samples with each of ``names`` (shape ``(len(names),)``)."""
        return np.array([int(np.sum(self.names == nm)) for nm in names])

    @property
    def unclassified_share(self) -> float:
        """Fraction of samples left unclassified."""
        return float(np.mean(self.names == UNCLASSIFIED)) if self.names.size else 0.0


def gradient_flow(
    w: torch.Tensor, c: int, r: int, steps: int, lr: float, momentum: float = 0.0
) -> torch.Tensor:
    r""":math:`T` steps of the (Nesterov-accelerated, ``momentum`` :math:`\mu`) gradient flow of the
    population loss (module docstring) for every row of ``w (N, d)`` (float64); :math:`\mu = 0` is
    :math:`w \leftarrow w - \eta \nabla L(w)`."""
    from slt_tms.theory.symbolic import population_grad_flat  # lazy import (start-up time)

    x = w.detach().to(torch.float64).clone()
    v = torch.zeros_like(x)
    for _ in range(steps):  # the closed-form gradient: equal to autograd's, at less than half the cost
        g = population_grad_flat(x + momentum * v, c, r)
        v = momentum * v - lr * torch.nan_to_num(g, nan=0.0)
        x = x + v
    return x


def _regular_polygon(W: np.ndarray, live: np.ndarray, tol: ClassifyTolerances) -> np.ndarray:
    """Regular-k-gon test modulo O(2) for W (N, 2, c) with vertex mask live (N, c)."""
    N = W.shape[0]
    out = np.zeros(N, dtype=bool)
    norms = np.linalg.norm(W, axis=1)
    angles = np.arctan2(W[:, 1, :], W[:, 0, :])
    for s in range(N):
        idx = np.flatnonzero(live[s])
        k = idx.size
        if k == 0:
            continue
        lens = norms[s, idx]
        if lens.min() < tol.length_ratio * lens.max():
            continue
        if k == 1:
            out[s] = True
            continue
        a = np.sort(angles[s, idx])
        gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
        ideal = 2 * math.pi / k
        out[s] = bool(np.all(np.abs(gaps - ideal) <= tol.angle_tol * ideal))
    return out


def classify(
    w: torch.Tensor | np.ndarray,
    points: Sequence[CriticalPoint],
    *,
    tolerances: ClassifyTolerances | None = None,
) -> Classification:
    r"""Name the critical-point basin of every parameter vector (module docstring).

    Parameters
    ----------
    w : Tensor or ndarray, shape ``(..., d)``
        Flat parameters (any leading shape; flattened to ``(N, d)``).
    points : sequence of CriticalPoint
        The candidate families (e.g. ``critical_points(c)``), all with the same ``c`` and ``r = 2``.
    tolerances : ClassifyTolerances, optional

    Returns
    -------
    Classification

    Examples
    --------
    >>> from slt_tms.theory.critical_points import kgon
    >>> pts = [kgon(6, 6), kgon(5, 6, 1), kgon(5, 6)]
    >>> list(classify(torch.stack([p.flat() for p in pts]), pts).names)
    ['6', '5+', '5']
    """
    tol = tolerances or ClassifyTolerances()
    pts = list(points)
    if not pts:
        raise ValueError("classification needs at least one critical point (e.g. critical_points(c))")
    c, r = pts[0].c, pts[0].r
    if any(p.c != c or p.r != r for p in pts):
        raise ValueError("all critical points must share c and r")
    if r != 2:
        raise ValueError(f"classification into polygons needs r = 2 hidden dimensions, got r = {r}")
    d = num_params(c, r)
    wt = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w).detach()
    if wt.shape[-1:] != (d,):
        raise ValueError(f"parameters for c={c}, r={r} must have last dimension {d}; got {tuple(wt.shape)}")
    wt = wt.reshape(-1, d).to(torch.float64).cpu()
    if wt.shape[0] == 0:
        e = np.zeros(0)
        o = np.zeros(0, dtype=object)
        i0 = np.zeros(0, dtype=int)
        return Classification(
            o,
            o.copy(),
            e,
            e.copy(),
            o.copy(),
            e.copy(),
            i0,
            i0.copy(),
            i0.copy(),
            np.zeros(0, dtype=bool),
            e.copy(),
        )
    from slt_tms.theory.symbolic import population_loss_flat  # lazy import (start-up time)

    with torch.no_grad():
        loss_start = np.asarray(population_loss_flat(wt, c, r), dtype=float).reshape(-1)
    wf = gradient_flow(wt, c, r, tol.flow_steps, tol.flow_lr)
    out = _name(wf, pts, tol, loss_start)
    redo = np.flatnonzero(out.names == UNCLASSIFIED)
    if redo.size and tol.flow_steps > 0 and tol.refine_steps > 0:
        idx = torch.from_numpy(redo)
        wr = gradient_flow(wf[idx], c, r, tol.refine_steps, tol.refine_lr, tol.refine_momentum)
        second = _name(wr, pts, tol, loss_start[redo])
        for f in fields(Classification):
            getattr(out, f.name)[redo] = getattr(second, f.name)
    return out


def _name(
    wf: torch.Tensor, pts: list[CriticalPoint], tol: ClassifyTolerances, loss_start: np.ndarray
) -> Classification:
    """Name flowed points ``wf (N, d)`` by vertices, geometry, signs and energy (module docstring)."""
    from slt_tms.theory.symbolic import population_loss_flat  # lazy import (start-up time)

    c, r = pts[0].c, pts[0].r
    with torch.enable_grad():
        wr = wf.clone().requires_grad_(True)
        lf = population_loss_flat(wr, c, r)
        (g,) = torch.autograd.grad(lf.sum(), wr)
    loss = lf.detach().numpy().reshape(-1)
    grad_norm = g.norm(dim=-1).numpy()
    W_t, b_t = unpack(wf, c, r)
    W, b = W_t.numpy(), b_t.numpy()
    # a flow that diverged leaves inf/nan coordinates: their points are named by the loss check below
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(W, axis=1)  # (N, c)
        top = norms.max(axis=1, keepdims=True)
        live = (norms >= tol.live_threshold * top) & (top >= tol.min_length)
        k = live.sum(axis=1)
        phi = (live & (b < -0.5 * norms**2)).sum(axis=1)
        sigma = (~live & (b > 1.0 / (4 * c))).sum(axis=1)
        regular = _regular_polygon(W, live, tol)
        energy_tol = tol.energy_tol if tol.energy_tol is not None else 1.0 / (10 * c * c)
        start_limit = math.inf if tol.start_gap is None else tol.start_gap / (4 * c * c)
        levels = np.array([p.loss for p in pts])
        gaps = loss[:, None] - levels[None, :]
        j = np.abs(gaps).argmin(axis=1)
        nearest = np.array([pts[i].name for i in j], dtype=object)
        loss_gap = gaps[np.arange(loss.size), j]
    by_key: dict[tuple[int, int, int], list[CriticalPoint]] = {}
    for p in pts:
        by_key.setdefault((p.k, p.sigma, p.phi), []).append(p)
    names = np.full(loss.shape, UNCLASSIFIED, dtype=object)
    reason = np.empty(loss.shape, dtype=object)
    for s in range(loss.size):
        key = (int(k[s]), int(sigma[s]), int(phi[s]))
        cands = by_key.get(key, [])
        if not math.isfinite(loss_start[s]):
            reason[s] = "non-finite loss at the point itself (the training or sampling that made it diverged)"
        elif not math.isfinite(loss[s]):
            reason[s] = "non-finite loss: the gradient flow diverged (a start far from every critical point)"
        elif not cands:
            reason[s] = (
                f"no family with k={key[0]}, sigma={key[1]}, phi={key[2]} (nearest level: {nearest[s]}, "
                f"gap {loss_gap[s]:+.2e})"
            )
        elif not regular[s]:
            reason[s] = f"the {key[0]} vertices do not form a regular {key[0]}-gon"
        else:
            best = min(cands, key=lambda p, L=loss[s]: abs(p.loss - L))
            above = loss_start[s] - best.loss
            if abs(best.loss - loss[s]) > energy_tol:
                reason[s] = (
                    f"geometry of {best.name} but the energy after the flow is off its level by "
                    f"{loss[s] - best.loss:+.2e} (tolerance {energy_tol:.1e})"
                )
            elif above > start_limit:
                reason[s] = (
                    f"on its way down to {best.name}: the flow reaches its level and geometry, but the point "
                    f"itself lies {above:.2e} above that level (limit {start_limit:.1e}, {tol.start_gap:g} "
                    "level spacing 1/(4c^2))"
                )
            else:
                names[s] = best.name
                reason[s] = f"basin of {best.name}: energy level and geometry match"
    return Classification(
        names, reason, loss, loss_start, nearest, loss_gap, k, sigma, phi, regular, grad_norm
    )
