r"""Gradient, :math:`C^2` status, Hessian, index, zero modes and :math:`\lambda` at one point (r = 2).

:func:`analyse_point` evaluates the gradient of the closed form in all :math:`3c` coordinates (torch
float64 autograd), decides whether :math:`L` is :math:`C^2` at the point (one-sided Hessians
:math:`H(w \pm h u)` must agree), and classifies the Hessian: index, number of zero modes (decided by
an eigenvalue gap), and

.. math::

    \lambda = \tfrac12 \operatorname{rank} \nabla^2 L(w^*)

when the point is minimally singular (:math:`C^2`, index 0, and every zero mode tangent to a manifold
of minima, checked by re-minimising transverse to it). Where the Hessian cannot decide (:math:`L` not
:math:`C^2`), :func:`probe_local_minimum` tests numerically for a local minimum (random steps and
descents from small perturbations). Used by :func:`slt_tms.theory.critical_points.kgon` to certify the
k-gon points and by :func:`slt_tms.theory.discovery.find_critical_points` to classify the points it
finds.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
import torch
from scipy.optimize import minimize

from slt_tms.theory._evaluate import loss_hessian_flat
from slt_tms.theory.learning_coefficients import minimally_singular_lambda
from slt_tms.theory.symbolic import pair_terms, population_loss_flat, symbols

try:
    import resource
except ImportError:  # pragma: no cover - Windows: no address-space limit to read
    resource = None  # type: ignore[assignment]

__all__ = [
    "PointAnalysis",
    "analyse_point",
    "analysis_memory_bytes",
    "check_analysis_memory",
    "probe_local_minimum",
]

#: Step of the one-sided Hessian probes H(w +- h u) used to decide C^2 (relative to max(1, |w|)).
_PROBE_STEP = 1e-6
#: Two one-sided Hessians differing by more than this (max-abs entry) mean L is not C^2. Inside one
#: piece they differ by ~2 h |third derivative| ~ 1e-5 at most for the points considered here; the
#: jumps at the 4-gon are of order 1/c.
_JUMP_TOL = 1e-3
#: Excess loss below which a zero mode counts as tangent to a manifold of minima (see _kernel_flat).
_FLAT_TOL = 1e-11
#: Step along a zero mode for the flatness test.
_FLAT_STEP = 0.05


#: Peak memory of :func:`analyse_point` in units of one d x d float64 array (d = 3c): the Hessian, the
#: one-sided probes, eigenvectors, LAPACK workspaces and the QR of the kernel complement, plus the c x c
#: temporaries of the loss evaluations (measured: 13 at the 4-gon, 15 at the 6-gon, c = 600).
_PEAK_D2_ARRAYS = 16
#: Fraction of the available memory an analysis may plan to use (see check_analysis_memory; the
#: message says "half").
_MEMORY_FRACTION = 0.5


# ----------------------------------------------------------------------------------------------------
# memory check
# ----------------------------------------------------------------------------------------------------


def analysis_memory_bytes(c: int) -> int:
    """Estimated peak memory (bytes) of :func:`analyse_point` for ``c`` features (r = 2, d = 3c):
    ``_PEAK_D2_ARRAYS`` float64 arrays of d x d (the Hessian and its eigendecomposition dominate)."""
    d = 3 * c
    return _PEAK_D2_ARRAYS * 8 * d * d


def _available_memory() -> tuple[int, str] | None:
    """(bytes, description) of the memory this process can still use, or None if unknown.

    ``MemAvailable`` of ``/proc/meminfo`` (free plus reclaimable), else free physical pages
    (``os.sysconf``); capped by the address-space limit (``ulimit -v``) minus the current size.
    """
    avail: tuple[int, str] | None = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = (int(line.split()[1]) * 1024, "available memory")
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free memory")
        except (AttributeError, ValueError, OSError):
            pass
    soft = -1
    if resource is not None:
        try:
            soft = resource.getrlimit(resource.RLIMIT_AS)[0]
            soft = -1 if soft == resource.RLIM_INFINITY else soft
        except (AttributeError, ValueError, OSError):
            soft = -1
    if soft >= 0:
        used = 0
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError, AttributeError):
            pass
        left = max(0, soft - used)
        if avail is None or left < avail[0]:
            avail = (left, "address space left under ulimit -v")
    return avail


def _bytes(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e6:.3g} MB"


def check_analysis_memory(c: int, what: str = "the Hessian analysis") -> None:
    r"""Refuse, before any work, an analysis whose Hessian would not fit in memory.

    :func:`analyse_point` forms the :math:`d \times d` float64 Hessian (:math:`d = 3c`) several times
    and its eigendecomposition: about :func:`analysis_memory_bytes` ``(c)`` bytes at the peak
    (:math:`128\, d^2`). That must be at most half of the memory the process can still use
    (``MemAvailable``, or the ``ulimit -v`` headroom if smaller); if the available memory cannot be
    determined, nothing is checked.

    Raises
    ------
    ValueError
        One line with the size, the estimated and the allowed memory, and the largest ``c`` that fits.
    """
    need = analysis_memory_bytes(c)
    avail = _available_memory()
    if avail is None:
        return
    budget = int(_MEMORY_FRACTION * avail[0])
    if need <= budget:
        return
    c_max = math.isqrt(budget // (_PEAK_D2_ARRAYS * 8 * 9))
    d = 3 * c
    hint = f"use a smaller c (at most about {c_max} here)" if c_max >= 2 else "free memory or use a smaller c"
    raise ValueError(
        f"{what} at c = {c} needs the {d} x {d} float64 Hessian and its eigendecomposition, about "
        f"{_bytes(need)} of memory, more than the {_bytes(budget)} allowed (half of the {_bytes(avail[0])} "
        f"of {avail[1]}); {hint}"
    )


# ----------------------------------------------------------------------------------------------------
# analysis of a point: gradient, C^2, Hessian, index, zero modes, lambda
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointAnalysis:
    r"""Gradient and Hessian analysis of the closed-form loss at one parameter vector.

    Attributes
    ----------
    loss : float
    grad_norm : float
        Euclidean norm of :math:`\nabla L` over all :math:`rc + c` coordinates (torch float64 autograd).
    is_c2 : bool
        Whether :math:`L` is twice continuously differentiable at the point: the Hessians
        :math:`H(w + h u)` and :math:`H(w - h u)` (a few random unit directions :math:`u`,
        :math:`h = 10^{-6}`) agree to ``1e-3``; at a boundary of the pieces with a jump in the second
        derivatives they differ by :math:`O(1/c)`.
    c2_reason : str
        Which pair terms :math:`(i, j)` sit on a boundary with a second-derivative jump, if any.
    hessian_jump : float
        The largest observed :math:`\max |H(w + hu) - H(w - hu)|`.
    hessian_eigenvalues : ndarray or None
        Spectrum of the Hessian (None if not :math:`C^2`).
    index : int or None
        Number of eigenvalues below :math:`-\tau` (:math:`\tau` the zero threshold of the gap decision).
    num_zero_modes : int or None
    rank : int or None
    gap : float or None
        The relative eigenvalue gap that decided the rank (smallest kept / largest discarded |eig|).
    zero_modes_flat : bool or None
        At a :math:`C^2` local minimum: whether every zero mode is tangent to a manifold of minima
        (moving :math:`0.05` along it and re-minimising transverse to the kernel returns to
        :math:`L(w^*)` within ``1e-11``).
    lambda_theory : float or None
    lambda_reason : str
    one_sided_spectra : list of ndarray
        At non-:math:`C^2` points, the spectra of the probed one-sided Hessians (direction-dependent).
    """

    loss: float
    grad_norm: float
    is_c2: bool
    c2_reason: str
    hessian_jump: float
    hessian_eigenvalues: np.ndarray | None
    index: int | None
    num_zero_modes: int | None
    rank: int | None
    gap: float | None
    zero_modes_flat: bool | None
    lambda_theory: float | None
    lambda_reason: str
    one_sided_spectra: list[np.ndarray] = field(default_factory=list, repr=False)


def _loss_fn(c: int):
    def f(w: torch.Tensor) -> torch.Tensor:
        return population_loss_flat(w, c, 2)

    return f


def _hessian(w: torch.Tensor, c: int) -> torch.Tensor:
    """Hessian of L at flat ``w`` (3c,), in closed form (:func:`slt_tms.theory._evaluate.loss_hessian_flat`).

    Equal to ``torch.autograd.functional.hessian(_loss_fn(c), w, vectorize=True)`` up to rounding
    (tested), which vectorises the backward pass over all d = 3c basis vectors and so holds several
    (d, c, c) temporaries at once (about 9 of them at its peak: 2 GB at c = 200, 24 GB for a single one
    at c = 1000); the closed form needs the d x d result and a few c x c arrays, in O(c^2) time.
    """
    w = w.detach().reshape(-1)
    return loss_hessian_flat(w[: 2 * c].reshape(2, c), w[2 * c:])


def _grad(w: torch.Tensor, c: int) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(population_loss_flat(w, c, 2), w)
    return g


def _rank_decision(eigs: np.ndarray) -> tuple[int, float, float]:
    """(rank, gap, zero threshold) from the eigenvalue gap (lambda engineer's rule, local fallback)."""
    mu = np.sort(np.abs(eigs))[::-1]
    top = float(mu[0]) if mu.size else 0.0
    if top == 0.0:
        return 0, math.inf, 0.0
    try:
        _, rank, gap = minimally_singular_lambda(eigs)
    except ValueError:
        # ambiguous by the strict rule: fall back to the largest gap among eigenvalues below 1e-6 * top
        floor = 1e-12 * top
        ext = np.append(np.maximum(mu, floor), floor)
        gaps = ext[:-1] / ext[1:]
        small = ext[1:] <= 1e-6 * top
        gaps = np.where(small, gaps, 0.0)
        rank = int(np.argmax(gaps)) + 1
        gap = float(gaps[rank - 1])
    thr = float(mu[rank]) if rank < mu.size else 0.0
    return int(rank), float(gap), thr


def _probe_directions(d: int, num: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(num, d, generator=g, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def _pair_boundaries(W: np.ndarray, b: np.ndarray, tol: float = 1e-9) -> list[str]:
    """Pairs (output i, input j) whose argument (a_ij, b_i) is where the pair term is not C^2.

    Decided numerically from the derived pair terms: the 2x2 Hessian of T_delta in (a, b) at points
    h away in four directions must agree (same rule as for the full loss).
    """
    fns = _pair_hessian_fns()
    G = W.T @ W
    c = W.shape[1]
    out = []
    seen: dict[tuple[int, float, float], bool] = {}
    for i in range(c):
        for j in range(c):
            delta = int(i == j)
            a, bi = float(G[i, j]), float(b[i])
            key = (delta, round(a, 12), round(bi, 12))
            if key not in seen:
                near = abs(bi) < tol or abs(a + bi) < tol
                seen[key] = near and not _pair_c2(fns[delta], a, bi)
            if seen[key]:
                out.append(f"(i={i}, j={j}): a_ij = {a:.3g}, b_i = {bi:.3g}")
    return out


@functools.cache
def _pair_hessian_fns() -> tuple[Any, Any]:
    """Per pair term: list of (lambdified 2x2 Hessian of the branch, lambdified branch condition)."""
    a, b, _ = symbols()
    fns = []
    for pw in pair_terms():
        pieces = []
        for expr, cond in pw.args:
            hess = [[sp.diff(expr, x, y) for y in (a, b)] for x in (a, b)]
            test = (lambda x, y: True) if cond is sp.true else sp.lambdify((a, b), cond, "math")
            pieces.append((sp.lambdify((a, b), hess, "math"), test))
        fns.append(pieces)
    return fns[0], fns[1]


def _pair_c2(pieces: list[tuple[Any, Any]], a0: float, b0: float, h: float = 1e-7) -> bool:
    hs = []
    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
        x, y = a0 + h * da, b0 + h * db
        for fn, test in pieces:
            if test(x, y):
                hs.append(np.array(fn(x, y), dtype=float))
                break
    return bool(max(np.abs(h1 - h2).max() for h1 in hs for h2 in hs) < _JUMP_TOL)


def _kernel_flat(w: torch.Tensor, c: int, kernel: np.ndarray, rng_seed: int = 0) -> bool:
    """Is every zero mode tangent to a manifold of minima? (see PointAnalysis.zero_modes_flat).

    For each kernel basis vector v (and one random combination) start at w + 0.05 v and minimise L over
    the orthogonal complement of the kernel with damped Newton steps; on a manifold of minima the
    minimum returns to L(w*) (to round-off), while a zero mode along which L grows at higher order
    (e.g. quartically) leaves an excess of order 0.05^4 times its coefficient.
    """
    L0 = float(population_loss_flat(w, c, 2))
    d = w.numel()
    q, _ = np.linalg.qr(np.concatenate([kernel, np.eye(d)], axis=1))
    basis = torch.as_tensor(q[:, kernel.shape[1]:d])  # orthonormal basis of the complement
    dirs = [kernel[:, i] for i in range(kernel.shape[1])]
    if kernel.shape[1] > 1:
        v = kernel @ np.random.default_rng(rng_seed).standard_normal(kernel.shape[1])
        dirs.append(v / np.linalg.norm(v))
    for v in dirs:
        x = w + _FLAT_STEP * torch.as_tensor(v)
        val = float(population_loss_flat(x, c, 2))
        for _ in range(30):
            g = basis.T @ _grad(x, c)
            if float(g.norm()) < 1e-14:
                break
            Hr = basis.T @ _hessian(x, c) @ basis
            evals, evecs = torch.linalg.eigh(Hr)
            step = -(evecs @ ((evecs.T @ g) / evals.abs().clamp_min(1e-8)))
            t = 1.0
            while t > 1e-6:
                xn = x + t * (basis @ step)
                vn = float(population_loss_flat(xn, c, 2))
                if vn <= val:
                    break
                t /= 2
            else:
                break
            x, val = xn, vn
        if val - L0 > _FLAT_TOL:
            return False
    return True


def analyse_point(w: torch.Tensor | np.ndarray, c: int, *, num_probes: int = 3) -> PointAnalysis:
    r"""Gradient, :math:`C^2` status, Hessian spectrum, index, zero modes and :math:`\lambda` at ``w``.

    .. math::

        \lambda_{\mathrm{theory}} = \tfrac12 \operatorname{rank} \nabla^2 L(w^*)

    is returned only for minimally singular points: :math:`L` is :math:`C^2` at :math:`w^*`, the Hessian
    has index 0, and every zero mode is tangent to a manifold of minima (Morse--Bott). Otherwise
    ``lambda_theory`` is None and ``lambda_reason`` says why.

    Parameters
    ----------
    w : Tensor or ndarray, shape ``(3c,)``
        Flat parameters (layout of :func:`slt_tms.tms.pack`), :math:`r = 2`.
    c : int
        Number of features.
    num_probes : int
        Number of random directions for the one-sided Hessian probes.

    Returns
    -------
    PointAnalysis
    """
    w = torch.as_tensor(np.asarray(w, dtype=float) if not isinstance(w, torch.Tensor) else w,
                        dtype=torch.float64).detach().reshape(-1)
    if w.numel() != 3 * c:
        raise ValueError(f"w must have 3c = {3 * c} entries for c = {c}, r = 2; got {w.numel()}")
    check_analysis_memory(c, "the analysis of a point")
    loss = float(population_loss_flat(w, c, 2))
    grad_norm = float(_grad(w, c).norm())
    d = w.numel()
    h = _PROBE_STEP * max(1.0, float(w.abs().max()))
    jump = 0.0
    spectra = []
    for u in _probe_directions(d, num_probes):
        Hp, Hm = _hessian(w + h * u, c), _hessian(w - h * u, c)
        jump = max(jump, float((Hp - Hm).abs().max()))
        spectra += [np.linalg.eigvalsh(Hp.numpy()), np.linalg.eigvalsh(Hm.numpy())]
    W = w[: 2 * c].reshape(2, c).numpy()
    b = w[2 * c:].numpy()
    if jump > _JUMP_TOL:
        culprits = _pair_boundaries(W, b)
        reason = ("direction-dependent Hessian: L is C^1 but not C^2 here (one-sided Hessians differ by "
                  f"{jump:.3g}); pair terms on a non-C^2 boundary: " + ("; ".join(culprits) or "none found"))
        return PointAnalysis(loss, grad_norm, False, reason, jump, None, None, None, None, None, None, None,
                             reason, spectra)
    H = _hessian(w, c).numpy()
    H = (H + H.T) / 2
    eigs, vecs = np.linalg.eigh(H)
    rank, gap, thr = _rank_decision(eigs)
    order = np.argsort(np.abs(eigs))
    zero_idx = order[: d - rank]
    tau = thr if rank < d else 0.0
    index = int(np.sum(eigs < -max(tau, 1e-300))) if rank < d else int(np.sum(eigs < 0))
    flat: bool | None = None
    lam: float | None = None
    if grad_norm > 1e-8:
        why = f"not a critical point (|grad L| = {grad_norm:.3g})"
    elif index > 0:
        why = f"saddle of index {index}: the local learning coefficient is defined at local minima"
    else:
        flat = _kernel_flat(w, c, vecs[:, zero_idx]) if rank < d else True
        if flat:
            lam = rank / 2
            why = (f"minimally singular: C^2, index 0, {d - rank} zero modes all tangent to a manifold of "
                   f"minima; lambda = rank(H)/2 = {rank}/2 (eigenvalue gap {gap:.3g})")
        else:
            why = ("degenerate beyond a manifold of minima (a zero mode raises L at higher order): "
                   "lambda < rank(H)/2, not determined by the Hessian")
    return PointAnalysis(loss, grad_norm, True, "", jump, eigs, index, d - rank, rank, gap, flat, lam, why,
                         [])


def probe_local_minimum(
    w: torch.Tensor | np.ndarray, c: int, *, num_directions: int = 256, num_descents: int = 4, seed: int = 0
) -> tuple[bool, str]:
    r"""Numerical local-minimum test for points where the Hessian cannot decide (e.g. not :math:`C^2`).

    1. :math:`L(w + \rho u)` for ``num_directions`` random unit :math:`u` and
       :math:`\rho \in \{10^{-4}, 10^{-3}\}`: a value below :math:`L(w) - 10^{-13}` proves that
       :math:`w` is not a local minimum.
    2. ``num_descents`` L-BFGS descents from :math:`w + 10^{-3} u`: ending below :math:`L(w) - 10^{-9}`
       shows a descent path out of every small neighbourhood.

    Passing both is evidence, not proof, of a local minimum.

    Returns
    -------
    (is_min, evidence) : (bool, str)
    """
    w = torch.as_tensor(np.asarray(w, dtype=float) if not isinstance(w, torch.Tensor) else w,
                        dtype=torch.float64).detach().reshape(-1)
    L0 = float(population_loss_flat(w, c, 2))
    u = _probe_directions(w.numel(), num_directions, seed)
    worst = math.inf
    for rho in (1e-4, 1e-3):
        vals = population_loss_flat(w + rho * u, c, 2) - L0
        worst = min(worst, float(vals.min()))
    if worst < -1e-13:
        return False, f"a random step of size <= 1e-3 lowers L by {-worst:.3g}"

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
        val = population_loss_flat(xt, c, 2)
        (g,) = torch.autograd.grad(val, xt)
        return float(val.detach()), g.numpy().copy()

    for v in u[:num_descents]:
        res = minimize(fun, (w + 1e-3 * v).numpy(), jac=True, method="L-BFGS-B",
                       options={"maxiter": 400, "gtol": 1e-12, "ftol": 1e-15})
        if res.fun < L0 - 1e-9:
            return False, f"a descent from a 1e-3 perturbation reaches L = {res.fun:.10f} < L* = {L0:.10f}"
    return True, (f"no random step of size 1e-4 or 1e-3 ({num_directions} directions) lowers L and "
                  f"{num_descents} descents from 1e-3 perturbations return to L*")
