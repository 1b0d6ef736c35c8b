r"""The :math:`O(1)` constant of the local free energy of a TMS phase, term by term.

Setting
-------
Prior :math:`\varphi = N(0, I_d)`, population loss :math:`L(w) = E\lVert x - f(x; w)\rVert^2` (squared
error **without** a factor :math:`\tfrac12`), tempered likelihood :math:`e^{-nL}`. For a phase
:math:`a` (all points of the parameter space that the classifier puts into phase :math:`a`) the local
evidence is

.. math::

    Z_a(n) = \int_{\text{phase } a} \varphi(w)\, e^{-nL(w)}\, dw, \qquad
    \log Z_a(n) = -n L_a - \lambda_a \log n + K_a + o(1),

so the local free energy is :math:`F_n(a) = -\log Z_a(n) = nL_a + \lambda_a\log n - K_a + o(1)`.
The asymptotic formula of the TMS paper puts :math:`K_a = \log\varphi(w^*_a)`; that is not the
constant. For a *minimally singular* (Morse--Bott) phase -- :math:`L` is :math:`C^2`, the Hessian
:math:`H = \nabla^2 L` has index 0, and its kernel is tangent to the set of minima -- the set of
minima near :math:`w^*_a` is a product of

* the rotation orbit :math:`\{(R_\theta W, b)\}` of the hidden plane (a circle), and
* for every *dead* column (:math:`W_i = 0`, :math:`b_i < 0`) a full-dimensional *flat region* in
  :math:`(W_i, b_i)` where feature :math:`i` never fires and nothing fires on it,

and :math:`H` is constant along it (inside the flat region the loss does not depend on the dead
coordinates at all). Integrating the Gaussian approximation transverse to this set and the prior along
it gives :math:`\lambda_a = d_{nz}/2` (:math:`d_{nz}` = number of non-zero Hessian eigenvalues) and

.. math::

    K_a = \underbrace{\log\varphi_{\text{nf}}(w^*_{\text{nf}})}_{\text{(i) prior}}
        + \underbrace{\tfrac{d_{nz}}2\log 2\pi - \tfrac12\log{\det}'H}_{\text{(ii) Laplace volume}}
        + \underbrace{\log(2\pi\lVert W^*\rVert_F)}_{\text{(iii) orbit length}}
        + \underbrace{\log N_a}_{\text{(iii) copies}}
        + \underbrace{\log P_\varphi(R_a)}_{\text{(iv) flat region}}.

(i) The log prior density at the *non-flat* coordinates (every coordinate except the dead columns'
:math:`(W_i, b_i)`), :math:`N(0, 1)` per coordinate. The prior varies along the rotation orbit not at
all (:math:`\lVert R_\theta W\rVert = \lVert W\rVert`).

(ii) The Gaussian integral over the :math:`d_{nz}` directions normal to the set of minima:
:math:`n(L(w^* + v) - L_a) = \tfrac n2 v^\top H v + O(n|v|^3)`, and
:math:`\int e^{-\frac n2 v^\top H v}\,dv = (2\pi/n)^{d_{nz}/2}\,{\det}'H^{-1/2}`, where
:math:`{\det}'` is the product of the non-zero eigenvalues of the Hessian **of L itself**. The factor
:math:`n^{-d_{nz}/2}` is the :math:`-\lambda_a\log n` term and is *not* part of :math:`K_a`. (With the
halved loss :math:`\tfrac12 E\lVert\cdot\rVert^2` and the same posterior :math:`e^{-nL}` the Hessian
would be halved and :math:`K_a` would grow by :math:`\tfrac{d_{nz}}2\log 2`: the convention matters.)
The zero eigenvalues are not in the determinant: their directions are integrated exactly by (iii) and
(iv).

(iii) The rotation :math:`\theta\mapsto(R_\theta W^*, b^*)` traces a circle of radius
:math:`\lVert W^*\rVert_F` (all columns), length :math:`2\pi\lVert W^*\rVert_F`, with speed
:math:`\lVert W^*\rVert_F` orthogonal to the flat dead coordinates, so the volume element of the set of
minima is :math:`\lVert W^*\rVert_F\,d\theta\,dW_{\text{dead}}\,db_{\text{dead}}`. Feature permutations
and the reflection of the hidden plane map the circle to other circles of equal loss, classified into
the same phase; :math:`N_a` counts the distinct ones, :math:`N_a = 2\,c!/|\mathrm{Stab}|` with the
stabiliser of a regular :math:`k`-gon of order :math:`2k\cdot\sigma!\,(c-k-\sigma)!` (the dihedral
relabellings of the polygon and the permutations of interchangeable dead columns), i.e.
:math:`N_a = c!/(k\,\sigma!\,(c-k-\sigma)!)` (:func:`num_symmetric_copies`; the tests re-count it by
brute force over :math:`S_c\times\{1, \text{reflection}\}`).

(iv) For the :math:`m` dead columns with negative bias the flat region is

.. math::

    R_a = \Bigl\{(W_d, b_d)_{d}:\ b_d \le 0,\ \ \lVert W_d\rVert^2 + b_d \le 0,\ \
    W_d\cdot W_j + b_d \le 0,\ \ W_j\cdot W_d + b_j \le 0\ \ (j \ne d)\Bigr\}

(with :math:`j` over the live columns and the other dead columns): feature :math:`d` never fires on any
input and no output fires on input :math:`d`, so :math:`L = L_a` exactly; :math:`b_d \le 0` is the
classifier's boundary between phase ``k`` and ``k+`` (for :math:`b_d > 0` the loss *decreases* towards
the ``+`` variant). :math:`\log P_\varphi(R_a)` is its prior mass, :math:`N(0,1)` per coordinate.
Integrating :math:`b_d` analytically,
:math:`P_\varphi(R_a) = E_W\bigl[\mathbf 1\{W_j\cdot W_d + b_j \le 0\}\prod_d \Phi(-m_d(W))\bigr]`,
:math:`m_d = \max(0, \lVert W_d\rVert^2, \max_{j\ne d} W_d\cdot W_j)`; for one dead column this is a
two-dimensional integral done by adaptive quadrature in polar coordinates (exact to ~1e-10), for
:math:`m \ge 2` a Monte Carlo average over :math:`W` uniform in a disc that contains the region, with
its standard error (:func:`flat_region_mass`). Outside :math:`R_a` the loss rises only *cubically* with
the distance (the ReLU switches on over a short interval of :math:`\mu`), which is why the approach to
the limit is slow (:math:`O(n^{-1/3})`, not :math:`O(n^{-1/2})`); the constant itself is the prior
mass. Evaluating the prior at one point of :math:`R_a` (e.g. :math:`b_d = -1`) instead is not a
constant of :math:`\log Z_a` at all.

Phases that are not minimally singular
--------------------------------------
For a point whose zero modes are *not* all tangent to a set of minima (a zero mode along which :math:`L`
grows at higher order, e.g. quartically) or where :math:`L` is not :math:`C^2` (the 4-gons), the
leading term of :math:`Z_a` is not Gaussian in those directions: e.g. in one dimension
:math:`\int e^{-nw^4}dw = 2\Gamma(5/4)\,n^{-1/4}`, with a constant that depends on the quartic
coefficient and is not a Hessian determinant. :func:`phase_constant` therefore refuses such points
(``lambda_theory`` is None for them): the formula above is only the constant of a minimally singular
phase, whose :math:`\lambda_a = d_{nz}/2` it uses. Pairing it with an *estimated* :math:`\lambda`
(``--lambda estimate``) mixes conventions and is flagged as such by the command line.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slt_tms.theory.critical_point import CriticalPoint

__all__ = [
    "VARIANTS",
    "PhaseConstant",
    "constant_terms",
    "dead_columns",
    "flat_region_mass",
    "log_normal_density",
    "num_symmetric_copies",
    "orbit_length",
    "phase_constant",
    "variant_log_constant",
]

_LOG_2PI = math.log(2.0 * math.pi)

#: The three treatments of the O(1) term, by key, with a human-readable label.
VARIANTS: dict[str, str] = {
    "full": "full constant",
    "paper": "paper (log phi at dead bias 0)",
    "point": "point prior at b = -1",
}


def log_normal_density(x: Any) -> float:
    r""":math:`\sum_i \log N(x_i; 0, 1)` (0 for an empty vector)."""
    arr = np.asarray(x, dtype=float).reshape(-1)
    return float(-0.5 * arr @ arr - 0.5 * arr.size * _LOG_2PI)


@dataclass(frozen=True)
class PhaseConstant:
    r"""The :math:`O(1)` constant :math:`K_a` of :math:`\log Z_a(n)`, term by term (module docstring).

    Attributes
    ----------
    name : str
    log_prior_nonflat : float
        (i) :math:`\log\varphi` at the non-flat coordinates of :math:`w^*`.
    laplace_volume : float
        (ii) :math:`\tfrac{d_{nz}}2\log 2\pi - \tfrac12\log{\det}'H`.
    log_det_nonzero : float
        :math:`\log{\det}'H` (product of the ``d_nz`` non-zero eigenvalues of the Hessian of L).
    d_nz : int
        Number of non-zero Hessian eigenvalues; :math:`\lambda = d_{nz}/2`.
    log_orbit_length : float
        (iii) :math:`\log(2\pi\lVert W^*\rVert_F)`; 0 when the set of minima has no continuous orbit.
    log_copies : float
        (iii) :math:`\log N_a`.
    log_flat_mass : float
        (iv) log prior mass of the flat region of the dead columns (0 if there are none).
    log_flat_mass_se : float
        Standard error of ``log_flat_mass`` (Monte Carlo for two or more dead columns, the quadrature's
        error estimate for one, 0 for none).
    num_flat_columns : int
    flat_method : str
        ``"none"``, ``"quadrature"`` or ``"monte carlo (N samples)"``.
    """

    name: str
    log_prior_nonflat: float
    laplace_volume: float
    log_det_nonzero: float
    d_nz: int
    log_orbit_length: float
    log_copies: float
    log_flat_mass: float = 0.0
    log_flat_mass_se: float = 0.0
    num_flat_columns: int = 0
    flat_method: str = "none"

    @property
    def lambda_(self) -> float:
        """The exponent of the Laplace approximation, :math:`d_{nz}/2`."""
        return self.d_nz / 2

    @property
    def total(self) -> float:
        """:math:`K_a`, the sum of the five terms."""
        return (self.log_prior_nonflat + self.laplace_volume + self.log_orbit_length + self.log_copies
                + self.log_flat_mass)

    @property
    def se(self) -> float:
        """Standard error of :attr:`total` (only the flat-region term is numerical)."""
        return self.log_flat_mass_se

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with every term, the total and its standard error."""
        out = asdict(self)
        out["total"] = self.total
        out["se"] = self.se
        out["lambda"] = self.lambda_
        return out


def constant_terms(
    name: str,
    w_nonflat: Any,
    hessian_eigenvalues: Any,
    d_nz: int,
    *,
    orbit: float | None = None,
    num_copies: int = 1,
    log_flat_mass: float = 0.0,
    log_flat_mass_se: float = 0.0,
    num_flat_columns: int = 0,
    flat_method: str = "none",
) -> PhaseConstant:
    r"""Assemble :math:`K_a` from its ingredients (any model; :func:`phase_constant` for the TMS).

    Parameters
    ----------
    name : str
    w_nonflat : array-like
        The non-flat coordinates of :math:`w^*` (prior :math:`N(0,1)` each).
    hessian_eigenvalues : array-like
        Spectrum of the Hessian of :math:`L` (the loss in the exponent :math:`e^{-nL}`) at :math:`w^*`.
    d_nz : int
        How many eigenvalues are non-zero: the ``d_nz`` largest in absolute value enter the determinant.
    orbit : float, optional
        Length of the continuous symmetry orbit through :math:`w^*` (:func:`orbit_length`), None if none.
    num_copies : int
        Number of distinct symmetric copies of the set of minima in the phase.
    log_flat_mass, log_flat_mass_se : float
        Log prior mass of the flat region and its standard error (:func:`flat_region_mass`).

    Examples
    --------
    One dimension, :math:`L = w^2` (Hessian 2), prior :math:`N(0,1)`:
    :math:`Z(n) = (1 + 2n)^{-1/2} \to n^{-1/2}/\sqrt2`, so :math:`K = -\tfrac12\log 2`.

    >>> k = constant_terms("q", [0.0], [2.0], 1)
    >>> round(k.total, 12) == round(-0.5 * math.log(2), 12)
    True
    """
    ev = np.sort(np.abs(np.asarray(hessian_eigenvalues, dtype=float).reshape(-1)))[::-1]
    if not 0 <= d_nz <= ev.size:
        raise ValueError(f"d_nz must be in 0..{ev.size}, got {d_nz}")
    nz = ev[:d_nz]
    if d_nz and not np.all(nz > 0):
        raise ValueError(f"{name}: {d_nz} non-zero Hessian eigenvalues requested, but the spectrum has zeros")
    log_det = float(np.log(nz).sum())
    if orbit is not None and not orbit > 0:
        raise ValueError(f"{name}: the orbit length must be > 0, got {orbit}")
    if isinstance(num_copies, bool) or int(num_copies) != num_copies or num_copies < 1:
        raise ValueError(f"{name}: num_copies must be an integer >= 1, got {num_copies!r}")
    return PhaseConstant(
        name=name,
        log_prior_nonflat=log_normal_density(w_nonflat),
        laplace_volume=0.5 * d_nz * _LOG_2PI - 0.5 * log_det,
        log_det_nonzero=log_det,
        d_nz=int(d_nz),
        log_orbit_length=0.0 if orbit is None else math.log(orbit),
        log_copies=math.log(int(num_copies)),
        log_flat_mass=float(log_flat_mass),
        log_flat_mass_se=float(log_flat_mass_se),
        num_flat_columns=int(num_flat_columns),
        flat_method=flat_method,
    )


# ----------------------------------------------------------------------------------------------------------
# the TMS ingredients
# ----------------------------------------------------------------------------------------------------------


def dead_columns(W: Any, b: Any) -> list[int]:
    """Indices of the dead columns with negative bias (``W_i = 0``, ``b_i < 0``): the flat ones."""
    W = np.asarray(W, dtype=float)
    b = np.asarray(b, dtype=float)
    norms = np.linalg.norm(W, axis=0)
    return [i for i in range(W.shape[1]) if norms[i] == 0.0 and b[i] < 0]


def orbit_length(W: Any) -> float:
    r"""Length :math:`2\pi\lVert W\rVert_F` of the rotation orbit :math:`\theta \mapsto R_\theta W`
    (r = 2): every point moves with speed :math:`\lVert JW\rVert_F = \lVert W\rVert_F`.

    Examples
    --------
    >>> round(orbit_length([[1.0, 0.0], [0.0, 1.0]]) / math.pi, 12)   # two unit columns: radius sqrt 2
    2.828427124746
    """
    W = np.asarray(W, dtype=float)
    if W.ndim != 2 or W.shape[0] != 2:
        raise ValueError(f"the rotation orbit is defined for W of shape (2, c), got {W.shape}")
    return float(2.0 * math.pi * np.linalg.norm(W))


def num_symmetric_copies(k: int, c: int, sigma: int = 0) -> int:
    r"""Number of distinct rotation orbits in the orbit of a regular k-gon phase under feature
    permutations and the reflection of the hidden plane: :math:`c!/(k\,\sigma!\,(c-k-\sigma)!)`.

    ``2 c!`` group elements; the stabiliser of one orbit has order :math:`2k\,\sigma!\,(c-k-\sigma)!`
    (the :math:`2k` relabellings of the polygon by its dihedral symmetries -- a reflection of the
    labels paired with the reflection of the plane -- and the permutations among interchangeable dead
    columns, whose flat regions are mapped onto themselves).

    Examples
    --------
    >>> num_symmetric_copies(6, 6), num_symmetric_copies(5, 6), num_symmetric_copies(5, 6, 1)
    (120, 144, 144)
    """
    if not (2 <= k <= c and 0 <= sigma <= c - k):
        raise ValueError(f"need 2 <= k <= c and 0 <= sigma <= c - k, got k={k}, c={c}, sigma={sigma}")
    return math.factorial(c) // (k * math.factorial(sigma) * math.factorial(c - k - sigma))


def _dead_constraints(
    W_live: np.ndarray, b_live: np.ndarray, Wd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For samples ``Wd`` of shape ``(N, m, 2)``: (allowed (N,), m_d (N, m)) (module docstring, (iv))."""
    proj = Wd @ W_live  # (N, m, k): W_d . W_j
    allowed = np.all(proj + b_live <= 0.0, axis=(1, 2))  # output j never fires on input d
    m_d = np.maximum(np.sum(Wd * Wd, axis=2), proj.max(axis=2, initial=0.0))  # own input, live inputs
    if Wd.shape[1] > 1:
        G = np.einsum("nai,nbi->nab", Wd, Wd)
        idx = np.arange(Wd.shape[1])
        G[:, idx, idx] = -np.inf
        m_d = np.maximum(m_d, G.max(axis=2))  # output d on input d' (and, by symmetry, d' on d)
    return allowed, np.maximum(m_d, 0.0)


def flat_region_mass(
    W_live: Any, b_live: Any, num_dead: int, *, num_samples: int = 400_000, seed: int = 0,
    method: str = "auto",
) -> tuple[float, float, str]:
    r"""Prior mass :math:`P_\varphi(R)` of the flat region of ``num_dead`` dead columns and its SE.

    :math:`R` (module docstring, (iv)): every dead column :math:`(W_d, b_d)` has :math:`b_d \le 0` and
    :math:`\lVert W_d\rVert^2 + b_d \le 0`, no output fires on it (:math:`W_j\cdot W_d + b_j \le 0`)
    and it fires on no input (:math:`W_d\cdot W_j + b_d \le 0`), :math:`j` over the live columns and the
    other dead columns. Prior :math:`N(0, 1)` per coordinate; :math:`b_d` is integrated analytically,
    :math:`P(b_d \le -m_d) = \Phi(-m_d)`.

    * ``num_dead == 1``: the remaining two-dimensional integral over :math:`W_d` in polar coordinates
      (angle split at the directions of the live columns and midway between them, radius at the kink
      :math:`\rho = \max_j \hat u\cdot W_j` and cut at the first live constraint), by
      :func:`scipy.integrate.quad`; the returned SE is the quadrature's error estimate.
    * ``num_dead >= 2``: Monte Carlo with :math:`W_d` uniform in the disc of radius
      :math:`\max_{\hat u} \min_j (-b_j / \hat u\cdot W_j)` (which contains every allowed :math:`W_d`),
      ``num_samples`` draws (numpy ``default_rng(seed)``); SE = sample sd / sqrt(N).

    ``method="monte carlo"`` forces the Monte Carlo also for one column (the tests compare the two).

    The live biases must be negative: otherwise no non-zero :math:`W_d` is allowed and the region has
    measure zero (the dead :math:`W_d` would not be a flat direction).

    Returns
    -------
    (mass, se, method) : (float, float, str)
    """
    W_live = np.asarray(W_live, dtype=float)
    b_live = np.asarray(b_live, dtype=float).reshape(-1)
    if W_live.ndim != 2 or W_live.shape[0] != 2 or W_live.shape[1] != b_live.size or b_live.size < 2:
        raise ValueError("W_live must have shape (2, k) with k >= 2 and b_live shape (k,)")
    if method not in ("auto", "monte carlo"):
        raise ValueError(f"method must be 'auto' or 'monte carlo', got {method!r}")
    if num_dead < 1:
        return 1.0, 0.0, "none"
    from scipy import integrate  # lazy import (start-up time)
    from scipy.special import ndtr

    if not np.all(b_live < 0):
        raise ValueError(
            "the flat region of a dead column has positive measure only if every live bias is < 0 "
            f"(got {b_live.tolist()}): otherwise some output fires on input d as soon as W_d != 0"
        )
    angles = np.sort(np.mod(np.arctan2(W_live[1], W_live[0]), 2 * math.pi))

    def radius(psi: float) -> tuple[float, float]:
        u = np.array([math.cos(psi), math.sin(psi)])
        proj = W_live.T @ u
        pos = proj > 0
        rmax = float(np.min(-b_live[pos] / proj[pos])) if pos.any() else math.inf
        return rmax, float(proj.max())

    if num_dead == 1 and method == "auto":

        def inner(psi: float) -> float:
            rmax, pm = radius(psi)

            def g(rho: float) -> float:
                m = rho * max(rho, pm)
                return rho * math.exp(-0.5 * rho * rho) / (2 * math.pi) * float(ndtr(-m))

            brk = [pm] if 0 < pm < rmax else None
            return integrate.quad(g, 0.0, rmax, points=brk, epsabs=1e-14, epsrel=1e-11, limit=200)[0]

        mids = np.mod(angles + math.pi / angles.size, 2 * math.pi)
        cuts = np.unique(np.concatenate([[0.0, 2 * math.pi], angles, mids]))
        total, err = 0.0, 0.0
        for a0, a1 in itertools.pairwise(cuts):
            v, e = integrate.quad(inner, float(a0), float(a1), epsabs=1e-14, epsrel=1e-11, limit=200)
            total += v
            err += e
        return float(total), float(err), "quadrature"

    psis = np.linspace(0.0, 2 * math.pi, 3601)
    R = max(radius(float(p))[0] for p in psis) * 1.01
    if not math.isfinite(R):
        raise ValueError("the live columns do not bound the dead columns' flat region")
    rng = np.random.default_rng(seed)
    rho = R * np.sqrt(rng.random((num_samples, num_dead)))
    ang = 2 * math.pi * rng.random((num_samples, num_dead))
    Wd = np.stack([rho * np.cos(ang), rho * np.sin(ang)], axis=2)  # (N, m, 2)
    allowed, m_d = _dead_constraints(W_live, b_live, Wd)
    dens = np.exp(-0.5 * np.sum(Wd * Wd, axis=2)) / (2 * math.pi)  # N(0, I_2) density per column
    vals = allowed * np.prod(dens * ndtr(-m_d), axis=1) * (math.pi * R * R) ** num_dead
    mean = float(vals.mean())
    se = float(vals.std(ddof=1) / math.sqrt(num_samples))
    return mean, se, f"monte carlo ({num_samples} samples, seed {seed})"


def phase_constant(point: CriticalPoint, *, num_samples: int = 400_000, seed: int = 0) -> PhaseConstant:
    r"""The full :math:`O(1)` constant :math:`K_a` of a minimally singular TMS k-gon phase, term by term.

    Parameters
    ----------
    point : CriticalPoint
        A k-gon point (r = 2) with ``lambda_theory`` (C^2, index 0, zero modes tangent to the set of
        minima) and no switched-off polygon columns (:math:`\varphi = 0`).
    num_samples, seed : int
        Monte Carlo of the flat region for two or more dead columns (:func:`flat_region_mass`).

    Raises
    ------
    ValueError
        For a point without a theoretical :math:`\lambda` (module docstring: the constant of a
        non-Gaussian direction is not a Hessian determinant), with switched-off vertices, or whose zero
        modes do not match the rotation plus three per dead column.
    """
    if point.lambda_theory is None or point.hessian_eigenvalues is None:
        raise ValueError(
            f"phase {point.name!r}: no Laplace constant: the point is not minimally singular "
            f"({point.lambda_reason or 'no theoretical lambda'})"
        )
    if point.phi:
        raise ValueError(f"phase {point.name!r}: switched-off polygon columns are not supported")
    W = np.asarray(point.W, dtype=float)
    b = np.asarray(point.b, dtype=float)
    dead = dead_columns(W, b)
    nonflat = [i for i in range(point.c) if i not in dead]
    live = [i for i in range(point.c) if np.linalg.norm(W[:, i]) > 0]
    d_nz = round(2 * point.lambda_theory)
    expected_zero = 1 + 3 * len(dead)
    if point.d - d_nz != expected_zero:
        raise ValueError(
            f"phase {point.name!r}: {point.d - d_nz} zero modes, expected {expected_zero} (rotation + 3 per "
            "dead column); the constant's terms would not account for them"
        )
    mass, mass_err, method = flat_region_mass(W[:, live], b[live], len(dead), num_samples=num_samples,
                                              seed=seed)
    if len(dead) and not mass > 0:
        raise ValueError(f"phase {point.name!r}: the flat region has zero prior mass")
    return constant_terms(
        point.name,
        np.concatenate([W[:, nonflat].reshape(-1), b[nonflat]]),
        point.hessian_eigenvalues,
        d_nz,
        orbit=orbit_length(W),
        num_copies=num_symmetric_copies(point.k, point.c, point.sigma),
        log_flat_mass=math.log(mass) if dead else 0.0,
        log_flat_mass_se=mass_err / mass if dead else 0.0,
        num_flat_columns=len(dead),
        flat_method=method,
    )


def variant_log_constant(point: CriticalPoint, variant: str, **kwargs: Any) -> tuple[float, float]:
    r"""The :math:`O(1)` term (``log_prior`` of a :class:`~slt_tms.analysis.free_energy.PhaseRecord`)
    of ``point`` in one of the three treatments, with its standard error.

    * ``"full"``: :math:`K_a` of :func:`phase_constant`.
    * ``"paper"``: :math:`\log\varphi(w^*)` at the representative with every dead column at
      :math:`(W_d, b_d) = (0, 0)` -- the point of the flat family closest to the origin. This is the
      prior term that reproduces the TMS paper's :math:`n_c = 601` for 5 -> 6 at :math:`c = 6`.
    * ``"point"``: :math:`\log\varphi(w^*)` at the representative of
      :mod:`slt_tms.theory.critical_points` (dead bias :math:`-1`): :math:`n_c = 573` there.

    Both point variants depend on an arbitrary choice inside the flat region; only ``"full"`` is the
    constant of :math:`\log Z_a(n)`.
    """
    W = np.asarray(point.W, dtype=float)
    b = np.asarray(point.b, dtype=float).copy()
    if variant == "full":
        k = phase_constant(point, **kwargs)
        return k.total, k.se
    if variant == "paper":
        b[dead_columns(W, b)] = 0.0
    elif variant != "point":
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    return log_normal_density(np.concatenate([W.reshape(-1), b])), 0.0

