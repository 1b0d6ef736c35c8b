r"""Symmetries of the TMS population loss (:math:`r = 2`): canonical form, equivalence, polygon geometry.

:math:`L` is invariant under :math:`O(2)` acting on the hidden plane and under simultaneous permutation
of features; in addition, the bias of an output that never fires and a vector of negligible length
(:math:`< 10^{-3}`) whose output never fires are flat directions. Two points are the same when a
permutation matches their Gram matrices :math:`W^\top W` and the biases of firing outputs within
``1e-5`` (the Gram matrix determines :math:`W` up to :math:`O(2)`).

* :func:`clean` moves a point along flat directions to a tidy representative;
* :func:`canonical_form` gives a representative modulo :math:`O(2)`, feature permutations and flat
  directions;
* :func:`equivalent` decides whether two points coincide modulo these symmetries (a search for the
  permutation);
* :func:`describe_geometry` reads off the polygon geometry: :math:`k`, :math:`\sigma`,
  :math:`\varphi`, regularity, lengths, angles, biases.

Nothing here refers to the named k-gon families: :mod:`slt_tms.theory.discovery` uses these functions
to deduplicate the points it finds and to match them to the families.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from slt_tms.theory.symbolic import population_loss_flat

__all__ = [
    "ACCEPT_GRAD",
    "FIRE_TOL",
    "LENGTH_TOL",
    "MATCH_TOL",
    "canonical_form",
    "clean",
    "describe_geometry",
    "equivalent",
]

#: Vectors shorter than this count as zero (flat direction when their output never fires).
LENGTH_TOL = 1e-3
#: An output "fires" when b_i or max_j a_ij + b_i exceeds this.
FIRE_TOL = 1e-7
#: Gradient norm below which a numerically found point is accepted as critical.
ACCEPT_GRAD = 1e-8
#: Tolerance of the symmetry matching (Gram entries, biases, lengths, angles).
MATCH_TOL = 1e-5


# ----------------------------------------------------------------------------------------------------
# symmetry: canonical description and equivalence
# ----------------------------------------------------------------------------------------------------


def _roles(W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram matrix, which outputs fire, which columns carry a relevant (non-inert) vector.

    A vector is *inert* (a flat direction: shrinking it to 0 leaves L unchanged) when its own output
    never fires and, for every other output j, b_j <= 0 and a_ji + b_j <= 0 (so the pair term stays 0
    as a_ji -> 0), or W_j = 0 (a_ji = 0 whatever W_i is).
    """
    G = W.T @ W
    lengths = np.sqrt(np.clip(np.diag(G), 0, None))
    fires = (b > FIRE_TOL) | ((G + b[:, None]).max(axis=1) > FIRE_TOL)
    vec = lengths > LENGTH_TOL
    c = W.shape[1]
    for i in range(c):
        if not vec[i] or fires[i]:
            continue
        inert = True
        for j in range(c):
            if j == i or lengths[j] <= LENGTH_TOL:
                continue
            if b[j] > FIRE_TOL or G[j, i] + b[j] > FIRE_TOL:
                inert = False
                break
        if inert:
            vec[i] = False
    return G, fires, vec


def clean(W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Move along flat directions to a tidy representative of a critical point.

    Every column whose output never fires is tried, one at a time, at :math:`W_i = 0, b_i = -1`; the move
    is kept when it changes :math:`L` by at most ``1e-13`` and keeps :math:`\|\nabla L\| < 10^{-8}`.
    (Minimisers tend to stop such columns on the edge of their flat region.)
    """
    W = np.asarray(W, dtype=float).copy()
    b = np.asarray(b, dtype=float).copy()
    c = W.shape[1]
    fun = _value_grad(c)
    L0, _ = fun(np.concatenate([W.reshape(-1), b]))
    _, fires, _ = _roles(W, b)
    for i in np.flatnonzero(~fires):
        W2, b2 = W.copy(), b.copy()
        W2[:, i] = 0.0
        b2[i] = -1.0
        L2, g2 = fun(np.concatenate([W2.reshape(-1), b2]))
        if abs(L2 - L0) <= 1e-13 and np.linalg.norm(g2) < ACCEPT_GRAD:
            W, b = W2, b2
    return W, b


def canonical_form(W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""A representative of ``(W, b)`` modulo :math:`O(2)`, feature permutations and flat directions.

    Inert vectors (negligible, :math:`|W_i| < 10^{-3}`, or silent and never making another output fire,
    see ``_roles``) are set to 0; biases of
    outputs that never fire are replaced by NaN (any value that keeps them silent is equivalent);
    columns are sorted by (fires, length, bias); the largest vector is rotated onto the positive x-axis
    and the plane reflected so that the next non-collinear vector has positive y.

    Returns
    -------
    W : ndarray, shape ``(2, c)``
    b : ndarray, shape ``(c,)``
    perm : ndarray of int
        ``W_canon[:, i] = R W[:, perm[i]]``.
    """
    W = np.asarray(W, dtype=float)
    b = np.asarray(b, dtype=float)
    _, fires, vec = _roles(W, b)
    W = W.copy()
    W[:, ~vec & ~fires] = 0.0
    bb = np.where(fires, b, np.nan)
    lengths = np.linalg.norm(W, axis=0)
    key = [(-int(fires[i]), -round(lengths[i], 6), round(b[i], 6) if fires[i] else 0.0)
           for i in range(W.shape[1])]
    perm = np.array(sorted(range(W.shape[1]), key=lambda i: key[i]), dtype=int)
    W, bb = W[:, perm], bb[perm]
    j = int(np.argmax(np.linalg.norm(W, axis=0)))
    if np.linalg.norm(W[:, j]) > 0:
        th = math.atan2(W[1, j], W[0, j])
        R = np.array([[math.cos(-th), -math.sin(-th)], [math.sin(-th), math.cos(-th)]])
        W = R @ W
        for i in range(W.shape[1]):
            if abs(W[1, i]) > MATCH_TOL:
                if W[1, i] < 0:
                    W[1] = -W[1]
                break
    return W, bb, perm


def equivalent(
    W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray, tol: float = MATCH_TOL
) -> bool:
    r"""Whether two points coincide modulo :math:`O(2)`, feature permutations and flat directions.

    A backtracking search for a permutation :math:`\pi` with :math:`G_1 = \pi G_2 \pi^\top` and equal
    biases of firing outputs (entries within ``tol``), after zeroing negligible silent vectors. The
    Gram matrix determines :math:`W` up to :math:`O(2)`, so this is an exact test (up to ``tol``).
    """
    Wa, ba, _ = canonical_form(W1, b1)
    Wb, bb, _ = canonical_form(W2, b2)
    if Wa.shape != Wb.shape:
        return False
    Ga, Gb = Wa.T @ Wa, Wb.T @ Wb
    c = Ga.shape[0]
    fa, fb = ~np.isnan(ba), ~np.isnan(bb)

    def compatible(i: int, j: int) -> bool:
        if fa[i] != fb[j] or abs(Ga[i, i] - Gb[j, j]) > tol:
            return False
        return not (fa[i] and abs(ba[i] - bb[j]) > tol)

    assign: list[int] = []
    used = [False] * c

    def search(i: int) -> bool:
        if i == c:
            return True
        for j in range(c):
            if used[j] or not compatible(i, j):
                continue
            if any(abs(Ga[i, p] - Gb[j, assign[p]]) > tol for p in range(i)):
                continue
            used[j] = True
            assign.append(j)
            if search(i + 1):
                return True
            assign.pop()
            used[j] = False
        return False

    return search(0)


def describe_geometry(W: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    r"""Polygon geometry of a point: k, sigma, phi, regularity, lengths, angles, biases.

    Polygon vectors are the columns of length :math:`\ge 10^{-3}`; among them those whose output never
    fires are *switched off* (:math:`\varphi`); zero columns with positive bias count in
    :math:`\sigma`. The polygon is *regular* when all its vectors have the same length and the sorted
    angles are equally spaced by :math:`2\pi/k` (within ``1e-5``) and the live ones share one bias.
    """
    W = np.asarray(W, dtype=float)
    b = np.asarray(b, dtype=float)
    _, fires, vec = _roles(W, b)
    k = int(vec.sum())
    phi = int((vec & ~fires).sum())
    sigma = int((~vec & (b > FIRE_TOL)).sum())
    lengths = np.linalg.norm(W[:, vec], axis=0)
    angles = np.sort(np.mod(np.arctan2(W[1, vec], W[0, vec]), 2 * np.pi))
    regular = False
    if k >= 2:
        gaps = np.diff(np.append(angles, angles[0] + 2 * np.pi))
        live_b = b[vec & fires]
        regular = bool(
            np.ptp(lengths) < MATCH_TOL * max(1.0, lengths.max())
            and np.abs(gaps - 2 * np.pi / k).max() < MATCH_TOL
            and (live_b.size == 0 or np.ptp(live_b) < MATCH_TOL)
        )
    return {
        "k": k, "sigma": sigma, "phi": phi, "regular": regular,
        "lengths": lengths.tolist(), "angles": angles.tolist(),
        "live_biases": b[vec & fires].tolist(), "positive_dead_biases": b[~vec & (b > FIRE_TOL)].tolist(),
    }


def _b0_continuum(W: np.ndarray, b: np.ndarray) -> bool:
    G, fires, vec = _roles(W, b)
    live = np.flatnonzero(vec & fires)
    if live.size == 0:
        return False
    if np.abs(b[live]).max() > MATCH_TOL or np.abs(np.diag(G)[live] - 1).max() > MATCH_TOL:
        return False
    sub = G[np.ix_(live, live)] - np.diag(np.diag(G)[live])
    return bool(sub.max() <= MATCH_TOL)


def _value_grad(c: int):
    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        w = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        val = population_loss_flat(w, c, 2)
        (g,) = torch.autograd.grad(val, w)
        return float(val.detach()), g.numpy().copy()

    return fun
