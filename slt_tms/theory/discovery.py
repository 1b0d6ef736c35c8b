r"""Numerical discovery of critical points of the TMS population loss (r = 2).

:func:`find_critical_points` searches the closed-form loss :math:`L(w)` of
:mod:`slt_tms.theory.symbolic` without using the k-gon families, then compares what it found with them:

1. **Multistart minimisation.** ``num_starts`` random starting points (a third unstructured, two thirds
   structured: a random number of live columns of length about 1 at random angles, the other columns
   dead with biases of random sign; see ``_random_starts``) are minimised together (batched Adam in
   torch float64, cosine-decayed step), then each is polished with scipy L-BFGS-B on the exact
   gradient (plus a few Levenberg--Marquardt steps where L-BFGS-B stalls). **Basin hopping**, lowest
   loss first: from every new (loss level, geometry type) the systematic single-column moves (revive
   each class of silent columns as a positive-bias dead column or as a live unit vector, silence each
   class of firing columns; ``_column_moves``) and
   ``num_hops`` random hops (noise, with the biases of silent outputs redrawn; ``_hop``) are polished
   again, and the new points found are hopped from in turn (at most ``max_hops``, default
   ``4 num_starts``). The
   column moves walk between the families that differ by one column (e.g. 4 -> 4+ -> 4++, 5 -> 5+, 6),
   whose basins are too small to be hit reliably from random starts.
2. **Root finding of the gradient.** To reach saddles, :math:`\|\nabla L\|^2` is minimised
   (Levenberg--Marquardt on the residual :math:`\nabla L` with the Hessian as Jacobian, scipy
   ``least_squares``) from perturbations (noise 0.15) of every distinct point found in step 1 and from
   fresh random points. Only points with :math:`\|\nabla L\| < 10^{-8}` are kept.
3. **Deduplication modulo symmetry** (:mod:`slt_tms.theory.canonical`). Two points are the same when
   they coincide modulo :math:`O(2)` acting on the hidden plane, simultaneous permutation of features
   and the flat directions of outputs that never fire
   (:func:`~slt_tms.theory.canonical.equivalent`: a permutation matches their Gram matrices
   :math:`W^\top W` and the biases of firing outputs within ``1e-5``).
4. **Classification.** Each distinct point is analysed with
   :func:`slt_tms.theory.point_analysis.analyse_point` (gradient, :math:`C^2`, Hessian index, zero
   modes, :math:`\lambda`) and matched to a named family :math:`k^{\sigma+,\varphi-}`: the polygon
   columns (non-negligible vectors) must form a regular k-gon with the family's :math:`(l^*, b^*)` and
   the loss must agree with the family's within ``1e-9``. Anything else is reported as new.

The symmetry tools (:func:`clean`, :func:`canonical_form`, :func:`equivalent`,
:func:`describe_geometry`) and the tolerances ``LENGTH_TOL``, ``FIRE_TOL``, ``ACCEPT_GRAD``,
``MATCH_TOL`` live in :mod:`slt_tms.theory.canonical` and are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares, minimize

from slt_tms._progress import progress as _progress
from slt_tms._rng import as_generator
from slt_tms.theory.canonical import (
    ACCEPT_GRAD,
    FIRE_TOL,
    LENGTH_TOL,
    MATCH_TOL,
    _b0_continuum,
    _roles,
    _value_grad,
    canonical_form,
    clean,
    describe_geometry,
    equivalent,
)
from slt_tms.theory.critical_points import family_parameters, family_point
from slt_tms.theory.kgon_families import family_name, solve_kgon_family
from slt_tms.theory.point_analysis import analyse_point, probe_local_minimum
from slt_tms.theory.symbolic import population_loss_flat

__all__ = [
    "ACCEPT_GRAD",
    "FIRE_TOL",
    "LENGTH_TOL",
    "MATCH_TOL",
    "DiscoveredPoint",
    "canonical_form",
    "clean",
    "describe_geometry",
    "equivalent",
    "find_critical_points",
    "recovered_names",
]


@dataclass(frozen=True)
class DiscoveredPoint:
    r"""A critical point found numerically, up to symmetry.

    Attributes
    ----------
    W : ndarray, shape ``(2, c)``
    b : ndarray, shape ``(c,)``
    c, r : int
    loss : float
    grad_norm : float
    kind : str
        ``"minimum"``, ``"saddle"`` (index > 0), ``"degenerate minimum"`` (index 0 but a zero mode not
        tangent to a manifold of minima), ``"non-C2 minimum"`` / ``"non-C2 saddle"`` (L is not
        :math:`C^2` there; decided by :func:`~slt_tms.theory.point_analysis.probe_local_minimum`).
    index, num_zero_modes : int or None
    is_c2 : bool
    lambda_theory : float or None
    k, sigma, phi : int
        Geometry: polygon vectors (live + switched off), dead columns with positive bias, switched-off
        polygon columns.
    regular : bool
        The polygon vectors have equal length and equally spaced angles :math:`2\pi/k`.
    name : str or None
        The matched family name, or None.
    family_class : str
        ``"named"`` (a k-gon family), ``"b=0 continuum"`` (live unit vectors with zero bias and pairwise
        non-positive inner products: every live feature is reconstructed exactly and never fires for
        another input, so any such arrangement is critical; contains the named 2-, 3- and 4-gons), or
        ``"new"``.
    is_new : bool
        ``family_class == "new"``.
    note : str
        How the match was decided, or what is new about the point.
    count : int
        How many searches converged to it (summed over the members of its group, see ``extra``).
    sources : tuple of str
        ``"minimise"`` and/or ``"root-find"``.
    extra : dict
        ``config`` (num_starts, seed, ...), ``geometry`` (lengths, angles, biases), ``lambda_reason``,
        ``distinct_members``: symmetry-inequivalent points found at exactly this loss (``1e-9``) with
        the same kind and (k, sigma, phi); more than one means a continuum of critical points;
        ``names_in_group``: every named family among them.
    """

    W: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)
    c: int
    r: int
    loss: float
    grad_norm: float
    kind: str
    index: int | None
    num_zero_modes: int | None
    is_c2: bool
    lambda_theory: float | None
    k: int
    sigma: int
    phi: int
    regular: bool
    name: str | None
    family_class: str
    is_new: bool
    note: str
    count: int
    sources: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def flat(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The point as a flat parameter vector (layout of :func:`slt_tms.tms.pack`)."""
        return torch.as_tensor(np.concatenate([self.W.reshape(-1), self.b]), dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# matching to the named k-gon families
# ----------------------------------------------------------------------------------------------------


def _continuum_names(m: int, sigma: int, loss: float, c: int) -> list[str]:
    """Named families with b* = 0 lying in the same b = 0 continuum (same live count m, sigma, loss)."""
    out = []
    for k, sg, phi in family_parameters(c):
        if sg != sigma or k - phi != m or not solve_kgon_family(k, c).roots:
            continue
        root = solve_kgon_family(k, c).roots[0]
        if root.bias != 0.0:
            continue
        Wf, bf = family_point(k, c, sg, phi)
        Lf = float(population_loss_flat(torch.as_tensor(np.concatenate([Wf.reshape(-1), bf])), c, 2))
        if abs(Lf - loss) < 1e-12:
            out.append(family_name(k, sg, phi))
    return out


def recovered_names(points: list[DiscoveredPoint]) -> set[str]:
    """Every named family recovered by a discovery run: matched directly, or in the same group or b = 0
    continuum (same loss, same number of live unit vectors and sigma) as a discovered point."""
    out: set[str] = set()
    for p in points:
        if p.name:
            out.add(p.name)
        out.update(p.extra.get("names_in_group", []))
    return out


def _match_family(W: np.ndarray, b: np.ndarray, loss: float, c: int) -> tuple[str | None, str]:
    """Name of the k-gon family the point is equivalent to (modulo symmetry and flat directions)."""
    geo = describe_geometry(W, b)
    for k, sigma, phi in family_parameters(c):
        if not solve_kgon_family(k, c).roots:
            continue
        offs = [list(range(4 - phi, 4))] if phi != 2 else [[2, 3], [1, 3]]  # phi = 2: adjacent / opposite
        for off in offs:
            Wf, bf = family_point(k, c, sigma, phi, off_positions=off)
            Lf = float(population_loss_flat(torch.as_tensor(np.concatenate([Wf.reshape(-1), bf])), c, 2))
            if abs(Lf - loss) < 1e-9 and equivalent(W, b, Wf, bf):
                name = family_name(k, sigma, phi)
                how = "" if phi != 2 else (" (switched-off vertices adjacent)" if off == [2, 3]
                                           else " (switched-off vertices opposite)")
                return name, f"equivalent to {name}{how} modulo O(2), permutations and flat directions"
    return None, (f"{geo['k']} vectors ({geo['phi']} switched off), sigma = {geo['sigma']}, "
                  f"regular = {geo['regular']}; matches no named family")


# ----------------------------------------------------------------------------------------------------
# search
# ----------------------------------------------------------------------------------------------------


def _random_starts(num: int, c: int, gen: torch.Generator) -> torch.Tensor:
    r"""Random starting points: a mixture of unstructured and structured configurations.

    * A third are **unstructured**: half with Gaussian columns (sd 0.7), half with columns of length
      U[0, 1.6] at uniform angles; each column shrunk by 0.05 with probability 0.3; biases U[-0.7, 0.3].
    * Two thirds are **structured** like the k-gon critical points without fixing any of them:
      a number :math:`m \sim U\{1, \dots, c\}` of random columns are *live*, of length
      :math:`1 + 0.1\,\mathcal N(0, 1)` (the scale of a perfectly reconstructed feature) at independent
      uniform angles with bias U[-0.3, 0.1]; the other columns are *dead*, a vector of sd 0.01 (so an
      unstable dead column can revive) with a bias of random sign: U[0, 1/c] (centred on the optimal
      positive dead bias :math:`1/(2c)`, ``kgon_families.dead_bias_optimum``) or U[-0.5, 0].
    """
    n1 = num // 3
    n1a = n1 // 2
    n1b = n1 - n1a
    n2 = num - n1
    f64 = torch.float64
    W1a = torch.randn(n1a, 2, c, generator=gen, dtype=f64) * 0.7
    R = 1.6 * torch.rand(n1b, 1, c, generator=gen, dtype=f64)
    th = 2 * math.pi * torch.rand(n1b, 1, c, generator=gen, dtype=f64)
    W1b = torch.cat([R * torch.cos(th), R * torch.sin(th)], dim=1)
    W1 = torch.cat([W1a, W1b], dim=0)
    shrink = torch.rand(n1, 1, c, generator=gen, dtype=f64) < 0.3
    W1 = torch.where(shrink, 0.05 * W1, W1)
    b1 = -0.7 + torch.rand(n1, c, generator=gen, dtype=f64)
    m = torch.randint(1, c + 1, (n2, 1), generator=gen)
    live = torch.rand(n2, c, generator=gen).argsort(dim=1).argsort(dim=1) < m  # m random columns
    length = 1.0 + 0.1 * torch.randn(n2, c, generator=gen, dtype=f64)
    th2 = 2 * math.pi * torch.rand(n2, c, generator=gen, dtype=f64)
    W_live = torch.stack([length * torch.cos(th2), length * torch.sin(th2)], dim=1)
    W_dead = 0.01 * torch.randn(n2, 2, c, generator=gen, dtype=f64)
    W2 = torch.where(live[:, None, :], W_live, W_dead)
    b_live = -0.3 + 0.4 * torch.rand(n2, c, generator=gen, dtype=f64)
    positive = torch.rand(n2, c, generator=gen) < 0.5
    b_dead = torch.where(positive, torch.rand(n2, c, generator=gen, dtype=f64) / c,
                         -0.5 * torch.rand(n2, c, generator=gen, dtype=f64))
    b2 = torch.where(live, b_live, b_dead)
    W = torch.cat([W1, W2], dim=0)
    b = torch.cat([b1, b2], dim=0)
    return torch.cat([W.reshape(num, 2 * c), b], dim=1)


def _column_moves(x: np.ndarray, c: int, gen: torch.Generator) -> list[np.ndarray]:
    r"""Systematic single-column moves from a (cleaned) point: one per class of equivalent columns.

    * *revive* a silent column, twice: as a dead column with positive bias (:math:`W_i` of sd 0.01,
      :math:`b_i \sim U[0, 1/c]`) and as a live vector (length 1 at a uniform angle,
      :math:`b_i \sim U[-0.3, 0.1]`, as in the structured starts of ``_random_starts``);
    * *silence* a firing column: :math:`W_i = 0`, :math:`b_i \sim U[-0.5, 0]` (a live vector or a dead
      column with positive bias).

    Columns are equivalent when they have the same (fires, length, bias) to 1e-4 (e.g. the vertices of
    a regular polygon, or the dead columns); one representative per class is moved.
    """
    W, b = x[: 2 * c].reshape(2, c), x[2 * c:]
    _, fires, _ = _roles(W, b)
    lengths = np.linalg.norm(W, axis=0)
    seen: set[tuple[bool, float, float]] = set()
    out = []
    for i in range(c):
        key = (bool(fires[i]), round(float(lengths[i]), 4), round(float(b[i]), 4) if fires[i] else 0.0)
        if key in seen:
            continue
        seen.add(key)
        noise = torch.randn(2, generator=gen, dtype=torch.float64).numpy()
        u = torch.rand(3, generator=gen, dtype=torch.float64).numpy()
        y = x.copy()
        if fires[i]:
            y[[i, c + i]] = 0.0
            y[2 * c + i] = -0.5 * u[0]
            out.append(y)
            continue
        y[[i, c + i]] = 0.01 * noise
        y[2 * c + i] = u[0] / c
        out.append(y)
        z = x.copy()
        z[[i, c + i]] = [math.cos(2 * math.pi * u[1]), math.sin(2 * math.pi * u[1])]
        z[2 * c + i] = -0.3 + 0.4 * u[2]
        out.append(z)
    return out


def _hop(x: np.ndarray, c: int, gen: torch.Generator, move: int) -> np.ndarray:
    """Random basin-hopping move number ``move``: Gaussian noise of sd 0.03 (even ``move``) or 0.15 (odd)
    on every coordinate, with the bias of every column whose output never fires (a flat direction)
    redrawn from U[-0.5, 0.5]."""
    W, b = x[: 2 * c].reshape(2, c), x[2 * c:]
    _, fires, _ = _roles(W, b)
    scale = 0.03 if move % 2 == 0 else 0.15
    y = x + scale * torch.randn(x.shape, generator=gen, dtype=torch.float64).numpy()
    fresh = (-0.5 + torch.rand(c, generator=gen, dtype=torch.float64)).numpy()
    y[2 * c:] = np.where(fires, y[2 * c:], fresh)
    return y


def _adam(w0: torch.Tensor, c: int, steps: int, lr: float) -> torch.Tensor:
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 1e-3)
    for _ in range(steps):
        opt.zero_grad()
        population_loss_flat(w, c, 2).sum().backward()
        opt.step()
        sched.step()
    return w.detach()


def _grad_np(x: np.ndarray, c: int) -> np.ndarray:
    return _value_grad(c)(x)[1]


def _hess_np(x: np.ndarray, c: int) -> np.ndarray:
    w = torch.as_tensor(x, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda v: population_loss_flat(v, c, 2), w, vectorize=True)
    return H.numpy()


def _polish_min(x0: np.ndarray, c: int) -> np.ndarray:
    r"""L-BFGS-B on the exact gradient, then, if it stopped with
    :math:`5 \cdot 10^{-9} \le \|\nabla L\| < 10^{-4}` (slow convergence where :math:`L` is only
    :math:`C^1`, e.g. the biases of the b = 0 polygons), at most 10 Levenberg--Marquardt steps on
    :math:`\nabla L` (``_root_find``); the refined point is kept only if its gradient is smaller and its
    loss not larger (by 1e-12). Without this, such minima are often rejected at the acceptance threshold
    :math:`\|\nabla L\| < 10^{-8}` (4++ at c = 6 stopped at 2e-8)."""
    fun = _value_grad(c)
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 3000, "gtol": 1e-11, "ftol": 1e-16, "maxcor": 30})
    x = res.x
    L, g = fun(x)
    gn = float(np.linalg.norm(g))
    if ACCEPT_GRAD / 2 <= gn < 1e-4:
        y = _root_find(x, c, max_nfev=10)
        Ly, gy = fun(y)
        if float(np.linalg.norm(gy)) < gn and Ly <= L + 1e-12:
            x = y
    return x


def _root_find(x0: np.ndarray, c: int, max_nfev: int = 60) -> np.ndarray:
    res = least_squares(lambda x: _grad_np(x, c), x0, jac=lambda x: _hess_np(x, c), method="lm",
                        xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=max_nfev)
    return res.x


def find_critical_points(
    c: int,
    r: int = 2,
    num_starts: int = 200,
    seed: int = 0,
    *,
    num_root_starts: int | None = None,
    perturb: bool = True,
    num_hops: int = 2,
    max_hops: int | None = None,
    adam_steps: int = 300,
    progress: bool | None = None,
) -> list[DiscoveredPoint]:
    r"""Find critical points of the closed-form population loss numerically and match them to families.

    See the module docstring for the method. The search never looks at the named families; the
    matching happens afterwards.

    Parameters
    ----------
    c : int
        Number of features, ``>= 2``.
    r : int
        Hidden dimensions; only ``r = 2`` is supported.
    num_starts : int
        Random starts of the multistart minimisation.
    seed : int
        Root seed of every random number used (starts and perturbations).
    num_root_starts : int, optional
        Random starts of the gradient root finding, in addition to one perturbation of every distinct
        point from the minimisation (default ``num_starts // 4``).
    num_hops : int
        Basin hopping: random hops (``_hop``: noise of sd 0.03 / 0.15 with the biases of silent outputs
        redrawn) from every new (loss level, geometry type), in addition to the systematic column moves
        (``_column_moves``: revive a silent column, silence a firing one), each minimised again.
    max_hops : int, optional
        Cap on the number of basin-hopping polishes (default ``4 * num_starts``; 0 disables hopping).
    perturb : bool
        Also root-find from one perturbation (noise 0.15) of every distinct point of the minimisation.
    adam_steps : int
        Batched Adam steps before polishing.
    progress : bool, optional
        Progress bars (None: unless ``SLT_TMS_NO_PROGRESS=1``).

    Returns
    -------
    list of DiscoveredPoint
        Distinct critical points, sorted by loss.

    Raises
    ------
    ValueError
        If ``r != 2``, ``c < 2``, or ``num_starts < 1``.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r != 2:
        raise ValueError(f"find_critical_points supports r = 2 hidden dimensions only, got r = {r!r}")
    if isinstance(c, bool) or not isinstance(c, int) or c < 2:
        raise ValueError(f"c (number of features) must be an integer >= 2, got {c!r}")
    if isinstance(num_starts, bool) or not isinstance(num_starts, int) or num_starts < 1:
        raise ValueError(f"num_starts must be a positive integer, got {num_starts!r}")
    if num_root_starts is None:
        num_root_starts = num_starts // 4
    if max_hops is None:
        max_hops = 4 * num_starts
    if isinstance(max_hops, bool) or not isinstance(max_hops, int) or max_hops < 0:
        raise ValueError(f"max_hops must be a non-negative integer or None, got {max_hops!r}")
    if isinstance(adam_steps, bool) or not isinstance(adam_steps, int) or adam_steps < 0:
        raise ValueError(f"adam_steps must be a non-negative integer, got {adam_steps!r}")
    gen = as_generator(seed)
    config = {"c": c, "r": r, "num_starts": num_starts, "seed": seed, "num_root_starts": num_root_starts,
              "perturb": perturb, "num_hops": num_hops, "max_hops": max_hops,
              "adam_steps": adam_steps}

    found: list[dict[str, Any]] = []  # distinct points: W, b, x, count, sources

    def add(x: np.ndarray, source: str) -> None:
        g = float(np.linalg.norm(_grad_np(x, c)))
        if not g < ACCEPT_GRAD:
            return
        W = x[: 2 * c].reshape(2, c)
        b = x[2 * c:]
        for f in found:
            if equivalent(W, b, f["W"], f["b"]):
                f["count"] += 1
                f["sources"].add(source)
                return
        found.append({"W": W.copy(), "b": b.copy(), "x": x.copy(), "count": 1, "sources": {source},
                      "loss0": float(population_loss_flat(torch.as_tensor(x), c, 2))})

    starts = _random_starts(num_starts, c, gen)
    ends = _adam(starts, c, adam_steps, lr=0.03) if adam_steps else starts
    for x in _progress(ends.numpy(), desc=f"minimise c={c}", enabled=progress):
        add(_polish_min(x, c), "minimise")
    # basin hopping over a queue, lowest loss first: from every new (loss level, geometry type), the
    # systematic column moves and num_hops random hops, each polished (at most max_hops in all)
    queue = list(range(len(found)))
    budget = max_hops
    hopped: set[tuple[float, int, int, int]] = set()
    while queue and budget > 0:
        queue.sort(key=lambda i: found[i]["loss0"])
        f = found[queue.pop(0)]
        Wc, bc = clean(f["W"], f["b"])
        geo = describe_geometry(Wc, bc)
        xc = np.concatenate([Wc.reshape(-1), bc])
        kind_key = (round(float(population_loss_flat(torch.as_tensor(xc), c, 2)), 9), geo["k"], geo["sigma"],
                    geo["phi"])
        if kind_key in hopped:  # one hop set per loss level and geometry type (continua are large)
            continue
        hopped.add(kind_key)
        moves = _column_moves(xc, c, gen) + [_hop(xc, c, gen, h) for h in range(num_hops)]
        for y in moves[:budget]:
            budget -= 1
            before = len(found)
            add(_polish_min(y, c), "minimise")
            queue.extend(range(before, len(found)))
    seeds = [f["x"] for f in found] if perturb else []
    noise_starts = [x + 0.15 * torch.randn(x.shape, generator=gen, dtype=torch.float64).numpy()
                    for x in seeds]
    fresh = list(_random_starts(max(num_root_starts, 0), c, gen).numpy()) if num_root_starts else []
    for x in _progress(noise_starts + fresh, desc=f"root-find c={c}", enabled=progress):
        add(_root_find(x, c), "root-find")

    # clean, then group symmetry-inequivalent points of one loss level and geometry type (continua);
    # only one representative per group (a named one if any) is analysed
    groups: list[list[dict[str, Any]]] = []
    for f in found:
        f["W"], f["b"] = clean(f["W"], f["b"])
        f["x"] = np.concatenate([f["W"].reshape(-1), f["b"]])
        f["loss"] = float(population_loss_flat(torch.as_tensor(f["x"]), c, 2))
        f["geo"] = describe_geometry(f["W"], f["b"])
        f["name"], f["note"] = _match_family(f["W"], f["b"], f["loss"], c)
        f["b0"] = _b0_continuum(f["W"], f["b"])
        m_live = f["geo"]["k"] - f["geo"]["phi"]
        f["cont"] = _continuum_names(m_live, f["geo"]["sigma"], f["loss"], c) if f["b0"] else []
        key = (f["geo"]["k"], f["geo"]["sigma"], f["geo"]["phi"])
        for g in groups:
            h = g[0]
            h_key = (h["geo"]["k"], h["geo"]["sigma"], h["geo"]["phi"])
            if abs(h["loss"] - f["loss"]) < 1e-12 and h_key == key:
                g.append(f)
                break
        else:
            groups.append([f])
    out = []
    for g in _progress(groups, desc=f"analyse c={c}", enabled=progress):
        g.sort(key=lambda q: q["name"] is None)
        f = g[0]
        an = analyse_point(f["x"], c)
        probe = None
        if not an.is_c2:
            probe = probe_local_minimum(f["x"], c)
            kind = "non-C2 minimum" if probe[0] else "non-C2 saddle"
        elif an.index and an.index > 0:
            kind = "saddle"
        elif an.zero_modes_flat is False:
            kind = "degenerate minimum"
        else:
            kind = "minimum"
        geo = f["geo"]
        names = sorted({q["name"] for q in g if q["name"]} | {n for q in g for n in q["cont"]})
        fclass = "named" if f["name"] else ("b=0 continuum" if any(q["b0"] for q in g) else "new")
        note = f["note"]
        if fclass == "b=0 continuum":
            m = geo["k"] - geo["phi"]
            note = (f"b = 0 arrangement of {m} unit vectors with pairwise non-positive inner products: "
                    "a continuum of critical points; " + note)
        if len(g) > 1:
            note += f" [{len(g)} symmetry-inequivalent points at this loss and type: a continuum]"
        if len(names) > 1 or (names and not f["name"]):
            note += f" [the group contains the named points {', '.join(names)}]"
        extra = {"config": config, "lambda_reason": an.lambda_reason, "geometry": geo,
                 "hessian_eigenvalues": an.hessian_eigenvalues, "eigenvalue_gap": an.gap,
                 "distinct_members": len(g), "names_in_group": names}
        if probe is not None:
            extra["local_min_probe"] = probe[1]
        out.append(DiscoveredPoint(
            W=f["W"], b=f["b"], c=c, r=2, loss=an.loss, grad_norm=an.grad_norm, kind=kind, index=an.index,
            num_zero_modes=an.num_zero_modes, is_c2=an.is_c2, lambda_theory=an.lambda_theory, k=geo["k"],
            sigma=geo["sigma"], phi=geo["phi"], regular=geo["regular"], name=f["name"], family_class=fclass,
            is_new=fclass == "new", note=note, count=sum(q["count"] for q in g),
            sources=tuple(sorted({s for q in g for s in q["sources"]})), extra=extra,
        ))
    out.sort(key=lambda p: (p.loss, p.name or ""))
    return out
