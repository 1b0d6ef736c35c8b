r"""Bayesian phase transitions in the sample size :math:`n` (THEORY.md §6).

Three parts:

1. **Free energies and crossovers.** For phases :math:`a` (critical points with population loss
   :math:`L_a`, learning coefficient :math:`\lambda_a`, multiplicity :math:`m_a` and prior density
   :math:`\varphi(w^*_a)`) the local free energy is

   .. math::

       F_n(a) = n L_a + \lambda_a \log n - \log\varphi(w^*_a) \;[+ (m_a - 1)\log\log n],

   with the standard normal prior :math:`\varphi = N(0, I_d)`, so
   :math:`-\log\varphi(w) = \lVert w\rVert^2/2 + \tfrac d2 \log 2\pi` (the constant cancels between
   phases of equal :math:`d`). The posterior concentrates on the phase of lowest :math:`F_n`; two phases
   swap where :math:`F_n(b) - F_n(a) = 0`, solved in closed form with the Lambert W function
   (:func:`crossover`) and checked with a bracketing root finder.

2. **Posterior sampling** at sample size :math:`n` of
   :math:`p(w \mid D_n) \propto \varphi(w)\, e^{-n L_n(w)}` with our vectorised HMC
   (:mod:`slt_tms.estimators.hmc`), see :func:`sample_posterior`; over a ladder of sample sizes at once
   with replica exchange between neighbouring :math:`n`, see :func:`sample_posterior_ladder` (independent
   chains at large :math:`n` stay in the first basin they meet, so occupancies need the exchange moves).

3. **Classification** of posterior samples into phases (:func:`classify`) and the **occupancy** of each
   phase against :math:`n` (:func:`occupancy`), with observed switch points and bootstrap intervals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import lambertw

from slt_tms._rng import spawn_seeds
from slt_tms.estimators.hmc import HMCConfig, HMCResult, HMCState, diagnostics
from slt_tms.estimators.hmc import init as hmc_init
from slt_tms.estimators.hmc import sample as hmc_sample
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.tms import OneHotUniform, empirical_loss, num_params, unpack, validate_shape

__all__ = [
    "UNCLASSIFIED",
    "Classification",
    "ClassifyTolerances",
    "Crossover",
    "LadderSamples",
    "OccupancyResult",
    "PhaseRecord",
    "PosteriorSamples",
    "SwitchPoint",
    "as_phases",
    "classify",
    "crossover",
    "crossovers",
    "dominant_phase",
    "free_energy",
    "log_prior_density",
    "occupancy",
    "phase_sequence",
    "plot_occupancy",
    "sample_posterior",
    "sample_posterior_ladder",
    "sample_size_ladder",
    "switch_point",
    "tms_potential",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------------------
# Phase records
# ----------------------------------------------------------------------------------------------------------


def log_prior_density(w: Any) -> float:
    r"""Log density of the standard normal prior :math:`N(0, I_d)` at a flat parameter vector.

    .. math:: \log\varphi(w) = -\tfrac12\lVert w\rVert^2 - \tfrac d2 \log(2\pi)

    Parameters
    ----------
    w : array-like, shape ``(d,)``

    Examples
    --------
    >>> round(log_prior_density([0.0, 0.0]), 6) == round(-math.log(2 * math.pi), 6)
    True
    """
    arr = np.asarray(w, dtype=float).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("log_prior_density needs a non-empty finite parameter vector")
    return float(-0.5 * arr @ arr - 0.5 * arr.size * _LOG_2PI)


@dataclass(frozen=True)
class PhaseRecord:
    r"""What the free energy needs to know about one phase.

    Parameters
    ----------
    name : str
        Phase name (the TMS paper's, e.g. ``"5+"``).
    loss : float
        Population loss :math:`L(w^*)` of the critical point.
    lambda_ : float
        Learning coefficient :math:`\lambda` (theory, or an estimate).
    lambda_se : float
        Standard error of ``lambda_`` (0 for theory values).
    log_prior : float
        :math:`\log\varphi(w^*)`; 0 if unknown (then the prior term is left out for this phase, which
        is only sensible if every phase leaves it out).
    multiplicity : int
        :math:`m` (1 if unknown; then the :math:`\log\log n` term vanishes).
    """

    name: str
    loss: float
    lambda_: float
    lambda_se: float = 0.0
    log_prior: float = 0.0
    multiplicity: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a phase needs a non-empty string name, got {self.name!r}")
        for attr in ("loss", "lambda_", "log_prior"):
            v = getattr(self, attr)
            if v is None or not isinstance(v, int | float | np.floating | np.integer) or not math.isfinite(v):
                what = "lambda" if attr == "lambda_" else attr
                raise ValueError(
                    f"phase {self.name!r} has no finite {what} ({v!r}); give every phase a loss and a "
                    "learning coefficient (theory or estimate) before computing free energies"
                )
            object.__setattr__(self, attr, float(v))
        se = self.lambda_se
        if se is None or not math.isfinite(float(se)) or float(se) < 0:
            raise ValueError(f"phase {self.name!r}: lambda_se must be a finite number >= 0, got {se!r}")
        object.__setattr__(self, "lambda_se", float(se))
        m = self.multiplicity
        if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
            raise ValueError(f"phase {self.name!r}: multiplicity must be an integer >= 1, got {m!r}")
        object.__setattr__(self, "multiplicity", int(m))

    @classmethod
    def from_critical_point(
        cls,
        point: CriticalPoint,
        *,
        lambda_: float | None = None,
        lambda_se: float = 0.0,
        multiplicity: int = 1,
    ) -> PhaseRecord:
        """Build a record from a :class:`~slt_tms.theory.critical_point.CriticalPoint`.

        ``lambda_`` overrides ``point.lambda_theory`` (e.g. with an LLC estimate); the prior term is
        computed from the point's flat parameters with :func:`log_prior_density`.
        """
        lam = point.lambda_theory if lambda_ is None else lambda_
        if lam is None:
            reason = f" ({point.lambda_reason})" if point.lambda_reason else ""
            raise ValueError(
                f"critical point {point.name!r} has no learning coefficient{reason}; pass lambda_= "
                "(e.g. an LLC estimate) or drop the point"
            )
        return cls(
            name=point.name,
            loss=point.loss,
            lambda_=lam,
            lambda_se=lambda_se,
            log_prior=log_prior_density(point.flat().numpy()),
            multiplicity=multiplicity,
        )


PhaseLike = PhaseRecord | CriticalPoint | tuple


def as_phases(items: Iterable[PhaseLike]) -> list[PhaseRecord]:
    """Normalise critical points, records or tuples ``(name, loss, lambda[, lambda_se[, log_prior]])``.

    Raises
    ------
    ValueError
        On an empty list, duplicate names, or a phase without loss or learning coefficient.
    """
    out: list[PhaseRecord] = []
    for item in items:
        if isinstance(item, PhaseRecord):
            out.append(item)
        elif isinstance(item, CriticalPoint):
            out.append(PhaseRecord.from_critical_point(item))
        elif isinstance(item, tuple) and 3 <= len(item) <= 5:
            out.append(PhaseRecord(*item))
        else:
            raise ValueError(
                "phases must be CriticalPoint, PhaseRecord or tuples (name, loss, lambda[, lambda_se"
                f"[, log_prior]]); got {item!r}"
            )
    if not out:
        raise ValueError("need at least one phase (got an empty list)")
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique, got {names}")
    return out


def _check_n_values(n: Any) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(n, dtype=float))
    if arr.size == 0:
        raise ValueError("the grid of sample sizes n is empty; give at least one n >= 2")
    if not np.all(np.isfinite(arr)) or np.any(arr < 2):
        raise ValueError(f"sample sizes must be finite and >= 2 (log log n must be defined); got {n!r}")
    return arr


# ----------------------------------------------------------------------------------------------------------
# Free energy
# ----------------------------------------------------------------------------------------------------------


def free_energy(
    phases: Iterable[PhaseLike],
    n: float | Sequence[float] | np.ndarray,
    *,
    include_prior: bool = True,
    include_multiplicity: bool = True,
    lambda_shift: float | np.ndarray = 0.0,
) -> np.ndarray:
    r"""Local free energy of every phase at every sample size.

    .. math::

        F_n(a) = n L_a + \lambda_a \log n - \log\varphi(w^*_a) + (m_a - 1)\log\log n

    Parameters
    ----------
    phases : list of PhaseRecord, CriticalPoint or tuples
    n : float or array of floats >= 2
    include_prior : bool
        Include :math:`-\log\varphi(w^*_a)`.
    include_multiplicity : bool
        Include :math:`(m_a - 1)\log\log n`.
    lambda_shift : float or array of shape ``(P,)``
        Added to every :math:`\lambda_a` (used to propagate standard errors).

    Returns
    -------
    ndarray, shape ``(P, N)`` (``N = len(n)``; a scalar ``n`` gives ``N = 1``)

    Examples
    --------
    >>> F = free_energy([("a", 0.1, 2.0), ("b", 0.05, 5.0)], [10.0, 1000.0], include_prior=False)
    >>> F.argmin(axis=0).tolist()     # a wins at n = 10, b at n = 1000
    [0, 1]
    """
    ps = as_phases(phases)
    nn = _check_n_values(n)
    L = np.array([p.loss for p in ps])[:, None]
    lam = (np.array([p.lambda_ for p in ps]) + np.asarray(lambda_shift, dtype=float))[..., None]
    F = nn[None, :] * L + lam * np.log(nn)[None, :]
    if include_prior:
        F = F - np.array([p.log_prior for p in ps])[:, None]
    if include_multiplicity:
        m = np.array([p.multiplicity for p in ps], dtype=float)[:, None]
        F = F + (m - 1.0) * np.log(np.log(nn))[None, :]
    return F


def dominant_phase(
    phases: Iterable[PhaseLike],
    n: float | Sequence[float] | np.ndarray,
    *,
    include_prior: bool = True,
    include_multiplicity: bool = True,
) -> list[str]:
    """Name of the phase of lowest free energy at each ``n`` (see :func:`free_energy`).

    Examples
    --------
    >>> dominant_phase([("a", 0.1, 2.0), ("b", 0.05, 5.0)], [10, 1000], include_prior=False)
    ['a', 'b']
    """
    ps = as_phases(phases)
    F = free_energy(ps, n, include_prior=include_prior, include_multiplicity=include_multiplicity)
    return [ps[i].name for i in F.argmin(axis=0)]


# ----------------------------------------------------------------------------------------------------------
# Crossovers
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossover:
    r"""The sample size where phase ``high_n`` (lower loss) overtakes phase ``low_n`` for good.

    Attributes
    ----------
    low_n, high_n : str
        The phase of higher loss (favoured at small ``n``) and of lower loss (favoured at large ``n``).
    n_c : float or None
        The crossover :math:`n_c`: beyond it ``high_n`` has the lower free energy for all larger ``n``.
        None if ``high_n`` is favoured for every ``n >= n_min`` (then ``always_high`` is True) or if the
        two free energies never cross (``never`` is True: equal loss and equal :math:`\lambda`).
    n_c_lambert : float or None
        The closed-form value (Lambert W); None when the closed form does not apply (multiplicity
        term present, or over/underflow).
    n_c_root : float or None
        The same root found by :func:`scipy.optimize.brentq` in :math:`\log n`.
    branch : int or None
        Lambert W branch of ``n_c_lambert`` (0 or -1).
    interval : tuple of float
        ``(lo, hi)`` from evaluating the crossover at :math:`\Delta\lambda \mp k\,\mathrm{SE}`; equals
        ``(n_c, n_c)`` when no standard error is given. ``lo`` is ``n_min`` when at the lower end the
        ``high_n`` phase is favoured everywhere; ``hi`` is ``inf`` if it never wins.
    roots : tuple of float
        All real roots of :math:`F_n(b) - F_n(a)` in :math:`[n_{min}, n_{max}]`.
    """

    low_n: str
    high_n: str
    n_c: float | None
    n_c_lambert: float | None
    n_c_root: float | None
    branch: int | None
    interval: tuple[float, float]
    roots: tuple[float, ...] = field(default=())
    always_high: bool = False
    never: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "low_n": self.low_n,
            "high_n": self.high_n,
            "n_c": self.n_c,
            "n_c_lambert": self.n_c_lambert,
            "n_c_root": self.n_c_root,
            "branch": self.branch,
            "interval": list(self.interval),
            "roots": list(self.roots),
            "always_high": self.always_high,
            "never": self.never,
        }


def _lambert_root(A: float, B: float, C: float) -> tuple[float | None, int | None]:
    r"""Largest root of :math:`A n + B \log n + C = 0` for :math:`A < 0` (closed form).

    With :math:`n = e^t`: :math:`\log n = -(A n + C)/B` gives :math:`n e^{A n / B} = e^{-C/B}`, i.e.
    :math:`(A n/B) e^{A n/B} = z := (A/B) e^{-C/B}`, so :math:`n = (B/A)\, W(z)`.

    * :math:`B > 0`: :math:`z < 0`. The difference is concave with its maximum at :math:`n^* = -B/A`;
      real roots exist iff :math:`z \ge -1/e`. :math:`W_0(z) \in [-1, 0)` gives the root below
      :math:`n^*` and :math:`W_{-1}(z) \le -1` the root above :math:`n^*` -- the one after which the
      lower-loss phase wins for good. So the crossover uses branch :math:`-1`.
    * :math:`B < 0`: :math:`z > 0`, the difference is decreasing, one root, principal branch :math:`W_0`.
    * :math:`B = 0`: :math:`n = -C/A`.

    Returns ``(None, None)`` when there is no real root or the closed form over/underflows.
    """
    if B == 0.0:
        n = -C / A
        return (n, None) if n > 0 else (None, None)
    expo = -C / B
    if expo > 700.0 or expo < -700.0:
        return None, None
    z = (A / B) * math.exp(expo)
    if z == 0.0:
        return None, None
    if B > 0:
        if z < -1.0 / math.e:
            return None, None
        w = lambertw(z, k=-1)
        branch = -1
    else:
        w = lambertw(z, k=0)
        branch = 0
    if abs(w.imag) > 1e-9 * max(1.0, abs(w.real)):
        return None, None
    n = (B / A) * float(w.real)
    return (n, branch) if n > 0 else (None, None)


def _difference(A: float, B: float, C: float, M: float):
    def f(t: float) -> float:
        n = math.exp(t)
        extra = M * math.log(t) if M != 0.0 else 0.0
        return A * n + B * t + C + extra

    return f


def _all_roots(A: float, B: float, C: float, M: float, n_min: float, n_max: float) -> list[float]:
    """Roots of ``A n + B log n + C + M log log n`` in ``[n_min, n_max]``: sign scan in log n + brentq."""
    f = _difference(A, B, C, M)
    ts = np.linspace(math.log(n_min), math.log(n_max), 2000)
    vals = np.array([f(t) for t in ts])
    roots = []
    for i in range(len(ts) - 1):
        if vals[i] == 0.0:
            roots.append(math.exp(ts[i]))
        elif vals[i] * vals[i + 1] < 0:
            roots.append(math.exp(brentq(f, ts[i], ts[i + 1], xtol=1e-14, rtol=1e-14)))
    if vals[-1] == 0.0:
        roots.append(math.exp(ts[-1]))
    return roots


def _crossover_core(
    A: float, B: float, C: float, M: float, n_min: float, n_max: float
) -> tuple[float | None, float | None, float | None, int | None, list[float], bool, bool]:
    """(n_c, lambert, root, branch, roots, always_high, never) for ``D = A n + B log n + C + M loglog n``,
    ``A <= 0`` (and ``B <= 0`` when ``A == 0``) so that the second phase wins at large n."""
    if A == 0.0 and B == 0.0 and M == 0.0:
        return None, None, None, None, [], C < 0, C >= 0
    roots = _all_roots(A, B, C, M, n_min, n_max)
    lam, branch = (None, None) if M != 0.0 or A == 0.0 else _lambert_root(A, B, C)
    if A == 0.0 and M == 0.0:
        lam = math.exp(-C / B) if abs(C / B) < 700 else None
    f = _difference(A, B, C, M)
    # the crossover: the last sign change from + (low-n phase better) to - (high-n phase better)
    root = None
    for r in roots:
        t = math.log(r)
        if f(t - 1e-9) > 0 >= f(t + 1e-9) or (f(t - 1e-9) >= 0 > f(t + 1e-9)):
            root = r
    if root is None and lam is not None and lam > n_max:  # beyond the scanned range: closed form only
        return lam, lam, None, branch, roots, False, False
    if root is None:
        always = f(math.log(n_min)) < 0
        return None, (lam if lam is not None and lam >= n_min else None), None, branch, roots, always, False
    return root, lam, root, branch, roots, False, False


def crossover(
    a: PhaseLike,
    b: PhaseLike,
    *,
    include_prior: bool = True,
    include_multiplicity: bool = True,
    num_se: float = 1.96,
    n_min: float = 2.0,
    n_max: float = 1e12,
) -> Crossover:
    r"""Crossover sample size between two phases.

    With :math:`D(n) = F_n(b) - F_n(a) = A n + B \log n + C [+ M \log\log n]`,
    :math:`A = L_b - L_a`, :math:`B = \lambda_b - \lambda_a`,
    :math:`C = \log\varphi(w^*_a) - \log\varphi(w^*_b)`, :math:`M = m_b - m_a`, the phases are ordered so
    that :math:`A < 0` (``b`` = lower loss, favoured as :math:`n\to\infty`). Without the
    :math:`\log\log` term the root is in closed form,

    .. math:: n_c = \frac{B}{A}\, W_{-1}\!\Big(\frac AB e^{-C/B}\Big) \quad (B > 0),

    the :math:`W_{-1}` branch giving the larger of the two roots (the one after which ``b`` wins for
    good; the :math:`W_0` root lies below the maximiser :math:`-B/A` of :math:`D`, typically at
    :math:`n < 2`); for :math:`B < 0` the only root uses :math:`W_0`. Every root is re-found with
    :func:`scipy.optimize.brentq` on a sign scan in :math:`\log n` over ``[n_min, n_max]``.

    Standard errors: with :math:`\mathrm{SE}_B = \sqrt{\mathrm{SE}_a^2 + \mathrm{SE}_b^2}` (independent
    estimates), the interval is the crossover at :math:`B \mp k\,\mathrm{SE}_B`. At the larger root
    :math:`\partial D/\partial n = A + B/n < 0` and :math:`\partial D/\partial B = \log n > 0`, so
    :math:`dn_c/dB = \log n / |A + B/n| > 0`: :math:`n_c` is increasing in :math:`B` and the endpoints
    are the interval endpoints.

    Parameters
    ----------
    a, b : PhaseRecord, CriticalPoint or tuple
    include_prior, include_multiplicity : bool
        As in :func:`free_energy`. With the multiplicity term present (and :math:`m_a \ne m_b`) only the
        root finder is used.
    num_se : float
        :math:`k` (1.96 for a nominal 95% interval).
    n_min, n_max : float
        Search range for roots.

    Examples
    --------
    >>> x = crossover(("a", 0.1, 2.0), ("b", 0.05, 5.0))   # 0.05 n = 3 log n
    >>> x.low_n, x.high_n, round(x.n_c, 2), x.branch
    ('a', 'b', 351.78, -1)
    """
    pa, pb = as_phases([a, b])
    if not (n_min >= 2 and n_max > n_min):
        raise ValueError(f"need 2 <= n_min < n_max, got n_min={n_min}, n_max={n_max}")
    if pb.loss > pa.loss or (pb.loss == pa.loss and pb.lambda_ > pa.lambda_):
        pa, pb = pb, pa
    A = pb.loss - pa.loss
    B = pb.lambda_ - pa.lambda_
    C = (pa.log_prior - pb.log_prior) if include_prior else 0.0
    M = float(pb.multiplicity - pa.multiplicity) if include_multiplicity else 0.0
    n_c, lam, root, branch, roots, always, never = _crossover_core(A, B, C, M, n_min, n_max)
    se = math.hypot(pa.lambda_se, pb.lambda_se)
    if se > 0 and not never:
        ends = []
        for sgn in (-1.0, 1.0):
            Bs = B + sgn * num_se * se
            if A == 0.0 and Bs > 0:  # equal loss: the sign of B decides who wins at large n
                ends.append(math.inf if sgn > 0 else n_min)
                continue
            nc_s, _, _, _, _, always_s, _ = _crossover_core(A, Bs, C, M, n_min, n_max)
            ends.append(nc_s if nc_s is not None else (n_min if always_s else math.inf))
        interval = (float(ends[0]), float(ends[1]))
    elif n_c is not None:
        interval = (n_c, n_c)
    else:
        interval = (n_min, n_min) if always else (math.inf, math.inf)
    return Crossover(
        low_n=pa.name,
        high_n=pb.name,
        n_c=n_c,
        n_c_lambert=lam,
        n_c_root=root,
        branch=branch,
        interval=interval,
        roots=tuple(roots),
        always_high=always,
        never=never,
    )


def crossovers(phases: Iterable[PhaseLike], **kwargs: Any) -> list[Crossover]:
    """:func:`crossover` for every unordered pair of phases (keyword arguments passed on)."""
    ps = as_phases(phases)
    return [crossover(ps[i], ps[j], **kwargs) for i in range(len(ps)) for j in range(i + 1, len(ps))]


def phase_sequence(
    phases: Iterable[PhaseLike],
    *,
    n_min: float = 2.0,
    n_max: float = 1e6,
    include_prior: bool = True,
    include_multiplicity: bool = True,
) -> list[tuple[str, float, float]]:
    r"""The sequence of dominant phases as :math:`n` grows from ``n_min`` to ``n_max``.

    Breakpoints are all pairwise roots of :math:`F_n(a) - F_n(b)` (the dominant phase can change only
    there); the dominant phase is evaluated between consecutive breakpoints.

    Returns
    -------
    list of ``(name, n_start, n_end)``, consecutive and non-overlapping.

    Examples
    --------
    >>> phase_sequence([("a", 0.1, 2.0), ("b", 0.05, 5.0)], n_max=1e4)[0][:1]
    ('a',)
    """
    ps = as_phases(phases)
    _check_n_values([n_min, n_max])
    if not n_max > n_min:
        raise ValueError(f"need n_max > n_min, got {n_min}, {n_max}")
    cuts = {float(n_min), float(n_max)}
    for i in range(len(ps)):
        for j in range(i + 1, len(ps)):
            A = ps[j].loss - ps[i].loss
            B = ps[j].lambda_ - ps[i].lambda_
            C = (ps[i].log_prior - ps[j].log_prior) if include_prior else 0.0
            M = float(ps[j].multiplicity - ps[i].multiplicity) if include_multiplicity else 0.0
            cuts.update(r for r in _all_roots(A, B, C, M, n_min, n_max) if n_min < r < n_max)
    edges = sorted(cuts)
    mids = [math.sqrt(lo * hi) for lo, hi in itertools.pairwise(edges)]
    names = dominant_phase(ps, mids, include_prior=include_prior, include_multiplicity=include_multiplicity)
    seq: list[tuple[str, float, float]] = []
    for name, lo, hi in zip(names, edges[:-1], edges[1:], strict=True):
        if seq and seq[-1][0] == name:
            seq[-1] = (name, seq[-1][1], hi)
        else:
            seq.append((name, lo, hi))
    return seq


# ----------------------------------------------------------------------------------------------------------
# Posterior sampling
# ----------------------------------------------------------------------------------------------------------


def tms_potential(
    x: torch.Tensor, c: int, r: int = 2, n: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""Negative log posterior (up to a constant) of the TMS with prior :math:`N(0, I)`:

    .. math:: U(w) = n L_n(w) + \tfrac12 \lVert w\rVert^2,

    :math:`L_n` = :func:`slt_tms.tms.losses.empirical_loss` on the dataset ``x (n, c)``.

    Parameters
    ----------
    x : Tensor, shape ``(n, c)``
    c, r : int
    n : int, optional
        Multiplier of the loss (defaults to ``len(x)``; a different value tempers the posterior).
    """
    if x.ndim != 2 or x.shape[1] != c:
        raise ValueError(f"the dataset must have shape (n, c) with c = {c}; got {tuple(x.shape)}")
    nn_ = int(x.shape[0]) if n is None else int(n)

    def potential(w: torch.Tensor) -> torch.Tensor:
        return nn_ * empirical_loss(w, x.to(w), c, r) + 0.5 * (w * w).sum(-1)

    return potential


@dataclass(frozen=True)
class PosteriorSamples:
    r"""Posterior draws of the TMS at sample size ``n`` (from :func:`sample_posterior`).

    Attributes
    ----------
    samples : Tensor, shape ``(K, D, d)``
    empirical_loss : Tensor, shape ``(K, D)``
        :math:`L_n` at each draw.
    hmc : HMCResult
    n, c, r : int
    seed : int
    config : dict
    """

    samples: torch.Tensor
    empirical_loss: torch.Tensor
    hmc: HMCResult
    n: int
    c: int
    r: int
    seed: int
    config: dict[str, Any]

    def invariants(self) -> dict[str, np.ndarray]:
        r"""Symmetry-invariant scalars per draw ``(K, D)``: :math:`L_n`, :math:`\lVert W\rVert_F^2`,
        :math:`\lVert b\rVert^2`. Raw coordinates are not identified (rotations of the hidden plane and
        feature permutations leave the posterior unchanged), so R-hat/ESS are meaningful on these."""
        W, b = unpack(self.samples, self.c, self.r)
        return {
            "loss": self.empirical_loss.detach().cpu().double().numpy(),
            "W_sq": (W * W).sum((-1, -2)).detach().cpu().double().numpy(),
            "b_sq": (b * b).sum(-1).detach().cpu().double().numpy(),
        }

    def trace(self):
        """ArviZ ``InferenceData`` with dims ``(chain, draw)`` including :meth:`invariants`."""
        return self.hmc.trace(self.invariants())

    def diagnostics(self) -> dict[str, Any]:
        """R-hat and ESS (ArviZ) of the potential and the invariants; acceptance; divergences."""
        diag = diagnostics(self.trace())
        diag["rhat"].pop("w", None)
        diag["ess"].pop("w", None)
        return diag


def _fast_potential(
    x: torch.Tensor, c: int, r: int, num_chains: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    sums = _OneHotSums(x[None], [int(x.shape[0])])
    zeros = torch.zeros(num_chains, dtype=torch.long, device=x.device)

    def potential(w: torch.Tensor) -> torch.Tensor:
        return sums.total(w, zeros, zeros, r) + 0.5 * (w * w).sum(-1)

    return potential


def sample_posterior(
    c: int,
    n: int,
    *,
    r: int = 2,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_warmup: int = 1000,
    config: HMCConfig | None = None,
    init_scale: float = 1.0,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    fast_loss: bool = True,
) -> PosteriorSamples:
    r"""Sample :math:`p(w \mid D_n) \propto \varphi(w)\, e^{-n L_n(w)}` for the TMS with HMC.

    One dataset :math:`D_n` of ``n`` one-hot-uniform inputs is drawn per call (shared by the chains, so
    that R-hat compares chains on the same target); chains start at dispersed points
    :math:`w_0 \sim N(0, s^2 I)` (``s = init_scale``; the prior itself for ``s = 1``).

    Seeds: ``spawn_seeds(seed, 3)`` gives the dataset seed, the start seed and the HMC root seed.

    Parameters
    ----------
    c, n : int
        Features and sample size (``n >= 2``).
    r : int
        Hidden dimensions.
    num_chains, num_draws, num_warmup : int
    config : HMCConfig, optional
    init_scale : float
    seed : int
    progress : bool, optional
    device : str or torch.device, optional
    dtype : torch.dtype
        float64 by default (energy errors of ``n L_n`` stay accurate at large ``n``).
    fast_loss : bool
        Evaluate :math:`n L_n` with the exact one-hot prefix-sum evaluator (:math:`O(c^2 \log n)` per
        chain, equal to :func:`slt_tms.tms.losses.empirical_loss` in value and gradient; see
        :func:`sample_posterior_ladder`) instead of the dense :func:`tms_potential`.

    Returns
    -------
    PosteriorSamples
    """
    validate_shape(c, r)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"sample size n must be an integer >= 2, got {n!r}")
    n = int(n)
    if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be an integer >= 1, got {num_chains!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    s_data, s_init, s_hmc = spawn_seeds(int(seed), 3)
    x = OneHotUniform(c).sample(n, torch.Generator().manual_seed(s_data)).to(device=dev, dtype=dtype)
    d = num_params(c, r)
    w0 = init_scale * torch.randn(num_chains, d, generator=torch.Generator().manual_seed(s_init), dtype=dtype)
    cfg = config or HMCConfig()
    res = hmc_sample(
        _fast_potential(x, c, r, num_chains) if fast_loss else tms_potential(x, c, r),
        w0.to(dev),
        num_draws=num_draws,
        num_warmup=num_warmup,
        config=cfg,
        seed=s_hmc,
        progress=progress,
        device=dev,
    )
    with torch.no_grad():
        loss = empirical_loss(res.samples, x, c, r)
    conf = {
        "c": c,
        "r": r,
        "n": n,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_warmup": num_warmup,
        "init_scale": init_scale,
        "dtype": str(dtype),
        "hmc": res.config,
        "prior": "N(0, I)",
        "dataset": "OneHotUniform",
        "seeds": {"data": s_data, "init": s_init, "hmc": s_hmc},
    }
    return PosteriorSamples(res.samples, loss, res, n, c, r, int(seed), conf)


# ----------------------------------------------------------------------------------------------------------
# Classification of parameters into phases
# ----------------------------------------------------------------------------------------------------------

#: Name given to samples that fit no family within the tolerances.
UNCLASSIFIED = "unclassified"


@dataclass(frozen=True)
class ClassifyTolerances:
    r"""Tolerances of :func:`classify` (defaults chosen from the geometry of the families; see docs).

    Parameters
    ----------
    live_threshold : float
        A column is a polygon vertex iff :math:`\lVert W_i\rVert \ge` ``live_threshold`` times the
        largest column norm of the same sample (0.5: dead columns of posterior samples at
        :math:`n \ge 100` stay below about 0.4 of the vertex length, because any dead column of length
        :math:`\ell` has a positive overlap :math:`\ge \ell\, l \cos(\pi/k)` with some vertex and that
        interference costs :math:`n\,\ell^2 l^2 \cos^2(\pi/k) / (3c)` in :math:`nL`).
    min_length : float
        Absolute floor on vertex length (a sample whose largest column is shorter has ``k = 0``).
    angle_tol : float
        Regular k-gon test modulo :math:`O(2)`: every gap between angularly consecutive vertices must be
        within ``angle_tol`` :math:`\times 2\pi/k` of :math:`2\pi/k` (0.35: halfway-ish between the gap
        of a k-gon and of a (k +- 1)-gon, e.g. 72 +- 25 degrees for a pentagon, while 60 and 90 degree
        gaps of hexagons and squares fall outside).
    length_ratio : float
        Shortest vertex / longest vertex must be at least this (0.5, equal to ``live_threshold``).
    energy_tol : float
        Absolute tolerance on the population loss :math:`L(w)` around the family's level
        :math:`L_a`: accepted if :math:`L_a - \mathrm{tol} \le L(w) \le L_a + \mathrm{tol} + e(n)`.
    excess_sd : float
        With a sample size :math:`n`, the allowance :math:`e(n) = (d/2 + \mathrm{excess\_sd}\sqrt{d/2})/n`
        for the posterior's excess energy: near a regular minimum :math:`n(L(w) - L_a)` is about
        :math:`\mathrm{Gamma}(d/2, 1)` (mean :math:`d/2`, sd :math:`\sqrt{d/2}`), and
        :math:`\lambda \le d/2` in general.
    """

    live_threshold: float = 0.5
    min_length: float = 0.1
    angle_tol: float = 0.35
    length_ratio: float = 0.5
    energy_tol: float = 0.01
    excess_sd: float = 4.0

    def __post_init__(self) -> None:
        for name in ("live_threshold", "angle_tol", "length_ratio"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1), got {v!r}")
        for name in ("min_length", "energy_tol", "excess_sd"):
            v = getattr(self, name)
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")


@dataclass(frozen=True)
class Classification:
    r"""Per-sample output of :func:`classify` (arrays of shape ``(N,)``).

    Attributes
    ----------
    names : ndarray of str
        Family name, or ``"unclassified"``.
    k : ndarray of int
        Number of polygon vertices (columns above the length threshold).
    sigma : ndarray of int
        Dead columns with positive bias.
    phi : ndarray of int
        Vertices that never fire (:math:`\lVert W_i\rVert^2 + b_i \le 0`).
    regular : ndarray of bool
        Whether the vertices form a regular k-gon within the angle/length tolerances.
    loss : ndarray of float
        Population loss :math:`L(w)` of each sample.
    nearest_level : ndarray of str
        Name of the critical point whose loss is nearest to :math:`L(w)`.
    """

    names: np.ndarray
    k: np.ndarray
    sigma: np.ndarray
    phi: np.ndarray
    regular: np.ndarray
    loss: np.ndarray
    nearest_level: np.ndarray

    def counts(self, names: Sequence[str]) -> np.ndarray:
        """Number of samples with each of ``names`` (shape ``(len(names),)``)."""
        return np.array([int(np.sum(self.names == nm)) for nm in names])


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
    n: int | None = None,
    tolerances: ClassifyTolerances | None = None,
) -> Classification:
    r"""Assign each parameter vector to a critical-point family (or ``"unclassified"``).

    Steps, per sample :math:`w = (W, b)` (``r = 2``):

    1. **Vertices**: columns with :math:`\lVert W_i\rVert \ge \theta \max_j \lVert W_j\rVert` (and the
       largest at least ``min_length``); :math:`k` = their number.
    2. **Geometry**: the vertices must form a regular :math:`k`-gon modulo :math:`O(2)` (angular gaps
       and lengths within tolerance).
    3. **Signs**: :math:`\varphi` = vertices with :math:`\lVert W_i\rVert^2 + b_i \le 0` (never fire on
       their own feature); :math:`\sigma` = non-vertex columns with :math:`b_i > 0`.
    4. **Energy**: among ``points`` with the same :math:`(k, \sigma, \varphi)` take the one with the
       nearest loss :math:`L_a`; accept if :math:`L_a - \mathrm{tol} \le L(w) \le L_a + \mathrm{tol} + e(n)`
       (see :class:`ClassifyTolerances`), with :math:`L` from
       :func:`slt_tms.theory.symbolic.population_loss_flat`.

    Parameters
    ----------
    w : Tensor or ndarray, shape ``(..., d)``
        Flat parameters (any leading shape; flattened).
    points : list of CriticalPoint
        The candidate families (e.g. ``critical_points(c)``), all with the same ``c`` and ``r = 2``.
    n : int, optional
        Sample size of the posterior the samples come from (widens the upper energy tolerance).
    tolerances : ClassifyTolerances, optional

    Returns
    -------
    Classification
    """
    from slt_tms.theory.symbolic import population_loss_flat

    tol = tolerances or ClassifyTolerances()
    pts = list(points)
    if not pts:
        raise ValueError("classify needs a non-empty list of critical points (e.g. critical_points(c))")
    c, r = pts[0].c, pts[0].r
    if any(p.c != c or p.r != r for p in pts):
        raise ValueError("all critical points must share c and r")
    if r != 2:
        raise ValueError(f"classification into polygons needs r = 2 hidden dimensions, got r = {r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2):
        raise ValueError(f"n must be None or an integer >= 2, got {n!r}")
    wt = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w).detach()
    d = num_params(c, r)
    if wt.shape[-1:] != (d,):
        raise ValueError(f"parameters for c={c}, r={r} must have last dimension {d}; got {tuple(wt.shape)}")
    wt = wt.reshape(-1, d).to(torch.float64).cpu()
    with torch.no_grad():
        loss = np.asarray(population_loss_flat(wt, c, r), dtype=float).reshape(-1)
    W_t, b_t = unpack(wt, c, r)
    W, b = W_t.numpy(), b_t.numpy()
    norms = np.linalg.norm(W, axis=1)  # (N, c)
    top = norms.max(axis=1, keepdims=True)
    live = (norms >= tol.live_threshold * top) & (top >= tol.min_length)
    k = live.sum(axis=1)
    phi = (live & (norms**2 + b <= 0)).sum(axis=1)
    sigma = (~live & (b > 0)).sum(axis=1)
    regular = _regular_polygon(W, live, tol)
    levels = np.array([p.loss for p in pts])
    nearest = np.array(
        [pts[i].name for i in np.abs(loss[:, None] - levels[None, :]).argmin(axis=1)], dtype=object
    )
    excess = 0.0 if n is None else (d / 2 + tol.excess_sd * math.sqrt(d / 2)) / n
    by_key: dict[tuple[int, int, int], list[CriticalPoint]] = {}
    for p in pts:
        by_key.setdefault((p.k, p.sigma, p.phi), []).append(p)
    names = np.full(loss.shape, UNCLASSIFIED, dtype=object)
    for s in range(loss.size):
        if not regular[s]:
            continue
        cands = by_key.get((int(k[s]), int(sigma[s]), int(phi[s])))
        if not cands:
            continue
        best = min(cands, key=lambda p, L=loss[s]: abs(p.loss - L))
        if best.loss - tol.energy_tol <= loss[s] <= best.loss + tol.energy_tol + excess:
            names[s] = best.name
    return Classification(names, k, sigma, phi, regular, loss, nearest)


# ----------------------------------------------------------------------------------------------------------
# Occupancy against n
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchPoint:
    r"""Observed switch from phase ``low_n`` to ``high_n``: the first upward zero crossing of
    :math:`p_{high}(n) - p_{low}(n)` on the grid, interpolated linearly in :math:`\log n`.

    ``n_switch`` is None if there is no crossing on the grid; ``position`` then says whether ``high_n``
    already dominates at the smallest grid point (``"below"``) or never does (``"above"``).
    ``interval`` is the 2.5–97.5% bootstrap percentile interval over replicates that cross (chains
    resampled with replacement at every grid point), ``frac_crossing`` the share of such replicates.
    """

    low_n: str
    high_n: str
    n_switch: float | None
    position: str
    interval: tuple[float, float] | None
    frac_crossing: float
    num_bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "low_n": self.low_n,
            "high_n": self.high_n,
            "n_switch": self.n_switch,
            "position": self.position,
            "interval": None if self.interval is None else list(self.interval),
            "frac_crossing": self.frac_crossing,
            "num_bootstrap": self.num_bootstrap,
        }


def _switch(n_grid: np.ndarray, diff: np.ndarray) -> tuple[float | None, str]:
    """First upward crossing of diff (N,) over n_grid, interpolated in log n."""
    if diff[0] > 0:
        return None, "below"
    for j in range(1, len(n_grid)):
        if diff[j - 1] <= 0 < diff[j]:
            t0, t1 = math.log(n_grid[j - 1]), math.log(n_grid[j])
            frac = -diff[j - 1] / (diff[j] - diff[j - 1])
            return math.exp(t0 + frac * (t1 - t0)), "inside"
    return None, "above"


def switch_point(
    n_grid: Sequence[float],
    counts: np.ndarray,
    phase_names: Sequence[str],
    low_n: str,
    high_n: str,
    *,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> SwitchPoint:
    r"""Observed switch point between two phases with a bootstrap interval over chains.

    Parameters
    ----------
    n_grid : sequence of float, length ``G`` (ascending)
    counts : ndarray, shape ``(G, K, P)``
        Draws of chain ``k`` at grid point ``g`` classified as phase ``p``.
    phase_names : sequence of str, length ``P``
    low_n, high_n : str
        The phase expected at small and at large ``n``.
    num_bootstrap : int
    seed : int
        Seed of the bootstrap (numpy ``default_rng``).
    """
    grid = _check_n_values(n_grid)
    if np.any(np.diff(grid) <= 0):
        raise ValueError("n_grid must be strictly increasing")
    cnt = np.asarray(counts, dtype=float)
    if cnt.ndim != 3 or cnt.shape[0] != grid.size or cnt.shape[2] != len(phase_names):
        raise ValueError(f"counts must have shape (len(n_grid), num_chains, num_phases); got {cnt.shape}")
    names = list(phase_names)
    for nm in (low_n, high_n):
        if nm not in names:
            raise ValueError(f"unknown phase {nm!r}; known: {names}")
    ia, ib = names.index(low_n), names.index(high_n)

    def diff_of(c: np.ndarray) -> np.ndarray:
        tot = c.sum(axis=(1, 2))
        return (c[:, :, ib].sum(1) - c[:, :, ia].sum(1)) / np.maximum(tot, 1)

    n_sw, pos = _switch(grid, diff_of(cnt))
    rng = np.random.default_rng(seed)
    K = cnt.shape[1]
    reps = []
    for _ in range(num_bootstrap):
        idx = rng.integers(0, K, size=(grid.size, K))
        boot = np.take_along_axis(cnt, idx[:, :, None], axis=1)
        v, _p = _switch(grid, diff_of(boot))
        if v is not None:
            reps.append(v)
    interval = (float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))) if reps else None
    return SwitchPoint(low_n, high_n, n_sw, pos, interval, len(reps) / max(num_bootstrap, 1), num_bootstrap)


@dataclass(frozen=True)
class OccupancyResult:
    r"""Phase occupancy of the posterior over a grid of sample sizes (from :func:`occupancy`).

    Attributes
    ----------
    c : int
    n_grid : list of int
    phase_names : list of str
        Family names followed by ``"unclassified"``.
    counts : ndarray, shape ``(G, K, P)``
        Draws per grid point, chain and phase.
    diagnostics : list of dict
        Per grid point: R-hat / ESS of the invariants (ArviZ), acceptance, divergences, step sizes.
    config : dict
    seed : int
    """

    c: int
    n_grid: list[int]
    phase_names: list[str]
    counts: np.ndarray
    diagnostics: list[dict[str, Any]]
    config: dict[str, Any]
    seed: int

    @property
    def proportions(self) -> np.ndarray:
        """Share of all draws at each grid point in each phase, shape ``(G, P)``."""
        tot = self.counts.sum(axis=(1, 2))
        return self.counts.sum(axis=1) / np.maximum(tot, 1)[:, None]

    def switch_points(
        self, pairs: Sequence[tuple[str, str]], *, num_bootstrap: int = 1000, seed: int = 0
    ) -> list[SwitchPoint]:
        """:func:`switch_point` for each ``(low_n, high_n)`` pair."""
        return [
            switch_point(
                self.n_grid, self.counts, self.phase_names, a, b, num_bootstrap=num_bootstrap, seed=seed
            )
            for a, b in pairs
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (counts as nested lists)."""
        return {
            "c": self.c,
            "n_grid": list(self.n_grid),
            "phase_names": list(self.phase_names),
            "counts": self.counts.astype(int).tolist(),
            "proportions": self.proportions.tolist(),
            "diagnostics": self.diagnostics,
            "config": self.config,
            "seed": self.seed,
        }

    def to_csv(self) -> str:
        """CSV text: one row per (n, phase) with the proportion and the per-chain counts."""
        K = self.counts.shape[1]
        lines = ["n,phase,proportion," + ",".join(f"chain{k}" for k in range(K))]
        prop = self.proportions
        for g, nv in enumerate(self.n_grid):
            for p, nm in enumerate(self.phase_names):
                row = [str(nv), nm, f"{prop[g, p]:.6g}"] + [str(int(x)) for x in self.counts[g, :, p]]
                lines.append(",".join(row))
        return "\n".join(lines) + "\n"


def occupancy(
    c: int,
    n_grid: Sequence[int],
    points: Sequence[CriticalPoint],
    *,
    num_chains: int = 4,
    num_draws: int = 500,
    num_warmup: int = 500,
    config: HMCConfig | None = None,
    exchange: bool = True,
    max_ratio: float = 1.3,
    init_scale: float = 1.0,
    tolerances: ClassifyTolerances | None = None,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> OccupancyResult:
    r"""Sample the posterior over a ladder of sample sizes and count draws per phase.

    The grid is filled to a ladder (:func:`sample_size_ladder`) and sampled by
    :func:`sample_posterior_ladder` (replica exchange between neighbouring :math:`n` if ``exchange``);
    every draw at rung :math:`n_g` is classified with :func:`classify` (with ``n = n_g``). The result
    reports every rung of the ladder (a superset of ``n_grid``). Replica sets (``num_chains``) are
    independent (own dataset, own starts), which is what the bootstrap of :meth:`switch_points`
    resamples.

    Returns
    -------
    OccupancyResult
    """
    vals = _check_n_values(n_grid)
    if np.any(vals != np.round(vals)):
        raise ValueError(f"sample sizes must be integers, got {list(n_grid)}")
    grid = [int(v) for v in vals]
    if any(b <= a for a, b in itertools.pairwise(grid)):
        raise ValueError(f"n_grid must be strictly increasing, got {grid}")
    pts = list(points)
    if not pts or any(p.c != c for p in pts):
        raise ValueError(f"points must be a non-empty list of critical points with c = {c}")
    names = [*dict.fromkeys(p.name for p in pts), UNCLASSIFIED]
    lad = sample_posterior_ladder(
        c,
        grid,
        num_chains=num_chains,
        num_draws=num_draws,
        num_warmup=num_warmup,
        config=config,
        max_ratio=max_ratio,
        swap=exchange,
        init_scale=init_scale,
        seed=seed,
        progress=progress,
        device=device,
    )
    G = len(lad.ladder)
    counts = np.zeros((G, num_chains, len(names)), dtype=np.int64)
    diags = []
    for g, nv in enumerate(lad.ladder):
        cls = classify(lad.samples[:, g].reshape(-1, lad.samples.shape[-1]), pts, n=nv, tolerances=tolerances)
        lab = cls.names.reshape(num_chains, num_draws)
        for k in range(num_chains):
            counts[g, k] = [int(np.sum(lab[k] == nm)) for nm in names]
        dg = lad.diagnostics_at(g)
        dg["n"] = nv
        dg["swap_accept_up"] = None if g == G - 1 else float(lad.swap_accept[g])
        diags.append(dg)
    conf = {
        **lad.config,
        "exchange": exchange,
        "tolerances": asdict(tolerances or ClassifyTolerances()),
        "phases": names[:-1],
    }
    return OccupancyResult(c, list(lad.ladder), names, counts, diags, conf, int(seed))


def plot_occupancy(
    result: OccupancyResult,
    phases: Sequence[PhaseLike] | None = None,
    switches: Sequence[SwitchPoint] = (),
    *,
    min_share: float = 0.02,
):
    """Figure: occupancy against n (log axis) beside the predicted dominant phase and crossovers.

    Top panel: :math:`F_n(a) - \\min_b F_n(b)` of each predicted phase; bottom: the observed share of
    each phase (phases whose share never exceeds ``min_share`` are omitted), with the predicted
    crossovers as dashed lines and observed switch points with bootstrap intervals.
    Returns the matplotlib figure (save it with :func:`slt_tms.io.atomic.save_figure`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(result.n_grid, dtype=float)
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=[1, 1.4])
    colours = plt.get_cmap("tab10")
    prop = result.proportions
    shown = [i for i, nm in enumerate(result.phase_names) if prop[:, i].max() > min_share]
    colour_of = {result.phase_names[i]: colours(j % 10) for j, i in enumerate(shown)}
    if phases:
        ps = as_phases(phases)
        nn_ = np.geomspace(grid.min() * 0.8, grid.max() * 1.25, 300)
        F = free_energy(ps, nn_)
        rel = F - F.min(axis=0, keepdims=True)
        for i, p in enumerate(ps):
            ax0.plot(
                nn_,
                rel[i],
                label=p.name,
                color=colour_of.get(p.name, "grey"),
                lw=2 if p.name in colour_of else 0.8,
            )
        for x in crossovers(ps):
            if (
                x.n_c is not None
                and nn_[0] <= x.n_c <= nn_[-1]
                and x.low_n in colour_of
                and x.high_n in colour_of
            ):
                for ax in (ax0, ax1):
                    ax.axvline(x.n_c, color="k", ls="--", lw=0.8)
                ax1.text(
                    x.n_c, 1.02, f"{x.low_n}→{x.high_n}", rotation=90, va="bottom", ha="center", fontsize=7
                )
        ax0.set_ylim(0, max(5.0, float(np.percentile(rel, 60))))
        ax0.set_ylabel(r"$F_n(a) - \min_b F_n(b)$")
        ax0.legend(fontsize=7, ncol=4)
        ax0.set_title(f"c = {result.c}: predicted free energy (top), posterior occupancy (bottom)")
    for i in shown:
        nm = result.phase_names[i]
        ax1.plot(grid, prop[:, i], "o-", color=colour_of[nm] if nm != UNCLASSIFIED else "grey", label=nm)
    for sw in switches:
        if sw.n_switch is not None:
            lo, hi = sw.interval if sw.interval else (sw.n_switch, sw.n_switch)
            ax1.errorbar(
                [sw.n_switch],
                [0.5],
                xerr=[[sw.n_switch - lo], [hi - sw.n_switch]],
                fmt="s",
                color="k",
                capsize=3,
            )
            ax1.text(sw.n_switch, 0.53, f"obs {sw.low_n}→{sw.high_n}", fontsize=7, ha="center")
    ax1.set_xscale("log")
    ax1.set_ylim(0, 1.1)
    ax1.set_xlabel("sample size n")
    ax1.set_ylabel("share of posterior draws")
    ax1.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Replica exchange over a ladder of sample sizes
# ----------------------------------------------------------------------------------------------------------


def sample_size_ladder(
    n_grid: Sequence[int], *, max_ratio: float = 1.3, n_floor: int | None = None
) -> list[int]:
    r"""The grid, filled with geometrically spaced sample sizes so that consecutive ratios are at most
    ``max_ratio`` (and extended down to ``n_floor`` if given).

    Why: replica-exchange swaps between :math:`n` and :math:`n'` are accepted with probability about
    :math:`\exp(-(n'-n)\,\Delta L)`; within one phase :math:`\Delta L` fluctuates by about
    :math:`\sqrt{\lambda}/n`, so :math:`n'/n - 1 \approx 1/\sqrt{\lambda}` (0.3 for :math:`\lambda \approx 9`)
    keeps swaps frequent.

    Examples
    --------
    >>> sample_size_ladder([100, 200], max_ratio=1.3)
    [100, 126, 159, 200]
    """
    grid = sorted({int(v) for v in _check_n_values(n_grid)})
    if not max_ratio > 1:
        raise ValueError(f"max_ratio must be > 1, got {max_ratio}")
    pts = list(grid)
    if n_floor is not None:
        if not 2 <= n_floor <= grid[0]:
            raise ValueError(f"n_floor must be in [2, {grid[0]}], got {n_floor}")
        pts = sorted({int(n_floor), *pts})
    out = [pts[0]]
    for hi in pts[1:]:
        lo = out[-1]
        m = math.ceil(math.log(hi / lo) / math.log(max_ratio) - 1e-12)
        for j in range(1, m):
            v = round(lo * (hi / lo) ** (j / m))
            if out[-1] < v < hi:
                out.append(v)
        out.append(hi)
    return out


@dataclass(frozen=True)
class LadderSamples:
    r"""Draws of the posterior at every sample size of a ladder, from :func:`sample_posterior_ladder`.

    Attributes
    ----------
    ladder : list of int
        The sample sizes :math:`n_1 < \dots < n_G`.
    samples : Tensor, shape ``(K, G, D, d)``
        Draws of replica set ``k`` at sample size ``n_g``.
    empirical_loss : Tensor, shape ``(K, G, D)``
        :math:`L_{n_g}` on replica set ``k``'s dataset at each draw.
    hmc : HMCResult
        The underlying run, chains ordered ``k * G + g``.
    swap_accept : ndarray, shape ``(G - 1,)``
        Acceptance rate of swaps between :math:`n_g` and :math:`n_{g+1}` (after warmup).
    c, r, seed : int
    config : dict
    """

    ladder: list[int]
    samples: torch.Tensor
    empirical_loss: torch.Tensor
    hmc: HMCResult
    swap_accept: np.ndarray
    c: int
    r: int
    seed: int
    config: dict[str, Any]

    def diagnostics_at(self, g: int) -> dict[str, Any]:
        """R-hat / ESS (ArviZ) across replica sets of the invariants at ladder index ``g``."""
        G = len(self.ladder)
        idx = torch.arange(self.samples.shape[0]) * G + g
        res = self.hmc
        sub = HMCResult(
            res.samples[idx],
            res.potential[idx],
            res.accept_prob[idx],
            res.divergent[idx],
            res.num_steps[idx],
            res.step_size[idx],
            res.inv_mass[idx],
            res.warmup_accept[idx],
            res.config,
            res.seed,
            [res.chain_seeds[i] for i in idx.tolist()],
        )
        W, b = unpack(self.samples[:, g], self.c, self.r)
        extra = {
            "loss": self.empirical_loss[:, g].double().cpu().numpy(),
            "W_sq": (W * W).sum((-1, -2)).double().cpu().numpy(),
            "b_sq": (b * b).sum(-1).double().cpu().numpy(),
        }
        diag = diagnostics(sub.trace(extra))
        diag["rhat"].pop("w", None)
        diag["ess"].pop("w", None)
        diag["step_size"] = sub.step_size.tolist()
        return diag


class _OneHotSums:
    r"""Exact :math:`n L_n(w)` of one-hot data in :math:`O(c^2 \log n)` per chain (independent of ``n``).

    For one-hot inputs :math:`x_s = \mu_s e_{i_s}` the squared error of sample :math:`s` is
    :math:`\sum_j (\delta_{i_s j}\mu_s - \mathrm{ReLU}(\mu_s a_{i_s j} + b_j))^2`. For fixed
    :math:`(i, j)` the ReLU is active on a half-line of :math:`\mu` (:math:`\mu > -b/a` for :math:`a > 0`,
    :math:`\mu < -b/a` for :math:`a < 0`, all or nothing for :math:`a = 0`), where the term is
    :math:`((\delta - a)\mu - b)^2`, and :math:`\delta\mu^2` elsewhere. With the :math:`\mu`'s of feature
    :math:`i` sorted and prefix sums of :math:`1, \mu, \mu^2`, each :math:`(i, j)` block is a closed-form
    quadratic in the three partial sums over the active set, located by binary search. Differentiable in
    :math:`w` (the active set is locally constant), equal to :func:`slt_tms.tms.losses.empirical_loss` times
    ``n`` (tested).

    Datasets ``X[k]`` are restricted to their first ``sizes[h]`` rows (nested subsets).
    """

    def __init__(self, X: torch.Tensor, sizes: Sequence[int]) -> None:
        K, _, c = X.shape
        H = len(sizes)
        self.c = c
        feat = X.argmax(-1)  # (K, n_max)
        mu = X.amax(-1)
        counts = torch.zeros(K, H, c, dtype=torch.long)
        for h, m in enumerate(sizes):
            counts[:, h] = torch.nn.functional.one_hot(feat[:, :m], c).sum(1)
        P = int(counts.max())
        seq = torch.full((K, H, c, P), math.inf, dtype=X.dtype, device=X.device)
        for k in range(K):
            for h, m in enumerate(sizes):
                for i in range(c):
                    v = torch.sort(mu[k, :m][feat[k, :m] == i]).values
                    seq[k, h, i, : v.numel()] = v
        finite = torch.where(torch.isfinite(seq), seq, torch.zeros_like(seq))
        pad = (1, 0)
        self.seq = seq
        self.p0 = torch.nn.functional.pad(torch.isfinite(seq).to(X.dtype).cumsum(-1), pad)
        self.p1 = torch.nn.functional.pad(finite.cumsum(-1), pad)
        self.p2 = torch.nn.functional.pad((finite * finite).cumsum(-1), pad)
        self.counts = counts.to(X.device)

    def total(self, w: torch.Tensor, kk: torch.Tensor, hh: torch.Tensor, r: int) -> torch.Tensor:
        r""":math:`\sum_s \lVert x_s - f(x_s; w)\rVert^2` over the first ``sizes[hh]`` rows of ``X[kk]``."""
        c = self.c
        W, b = unpack(w, c, r)
        A = W.transpose(-1, -2) @ W  # (M, c, c): A[m, i, j] = W_i . W_j  (input i, output j)
        B = b[:, None, :].expand_as(A)
        seq, cnt = self.seq[kk, hh], self.counts[kk, hh]  # (M, c, P), (M, c)
        Ad, Bd = A.detach(), B.detach()
        pos, neg = Ad > 0, Ad < 0
        t = torch.where(Ad != 0, -Bd / torch.where(Ad != 0, Ad, torch.ones_like(Ad)), torch.zeros_like(Ad))
        q = torch.searchsorted(seq, t.contiguous())  # number of mu < t (padding is +inf)
        n_i = cnt[:, :, None].expand_as(q)
        q = torch.minimum(q, n_i)
        out = []
        for pref in (self.p0, self.p1, self.p2):
            P = pref[kk, hh]  # (M, c, P + 1)
            at_q = P.gather(-1, q)
            at_n = P.gather(-1, n_i)
            zero_a = torch.where(Bd > 0, at_n, torch.zeros_like(at_n))
            out.append(torch.where(pos, at_n - at_q, torch.where(neg, at_q, zero_a)))
        s0, s1, s2 = out
        delta = torch.eye(c, dtype=w.dtype, device=w.device)
        tot2 = self.p2[kk, hh].gather(-1, cnt[:, :, None])  # (M, c, 1): sum of mu^2 per input feature
        D = delta - A
        terms = delta * tot2 + (D * D - delta) * s2 - 2 * B * D * s1 + B * B * s0
        return terms.sum((-1, -2))


def _swap_log_ratio(
    sums: _OneHotSums,
    w_lo: torch.Tensor,
    w_hi: torch.Tensor,
    s_lo: torch.Tensor,
    s_hi: torch.Tensor,
    k: torch.Tensor,
    g: torch.Tensor,
    r: int,
) -> torch.Tensor:
    r"""Log Metropolis ratio of exchanging ``w_lo`` (at rung ``g``) and ``w_hi`` (at rung ``g + 1``):
    :math:`T(w_{hi}) - T(w_{lo})` with :math:`T(w) = S_{g+1}(w) - S_g(w)` (sum of squared errors over rows
    :math:`n_g < s \le n_{g+1}`); ``s_lo = S_g(w_lo)``, ``s_hi = S_{g+1}(w_hi)`` are already known."""
    t_lo = sums.total(w_lo, k, g + 1, r) - s_lo
    t_hi = s_hi - sums.total(w_hi, k, g, r)
    return t_hi - t_lo


def sample_posterior_ladder(
    c: int,
    n_grid: Sequence[int],
    *,
    r: int = 2,
    num_chains: int = 4,
    num_draws: int = 500,
    num_warmup: int = 500,
    config: HMCConfig | None = None,
    max_ratio: float = 1.3,
    n_floor: int | None = None,
    swap: bool = True,
    init_scale: float = 1.0,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> LadderSamples:
    r"""Sample the TMS posterior at a ladder of sample sizes at once, with replica exchange.

    Each of the ``num_chains`` replica sets :math:`k` draws one dataset :math:`D^{(k)}` of
    :math:`n_G = \max` ladder samples; the chain at rung :math:`g` targets
    :math:`p_g(w) \propto \varphi(w) e^{-n_g L_{n_g}(w)}` with :math:`L_{n_g}` on the first :math:`n_g`
    rows (so :math:`D_{n_g}` is a dataset of size :math:`n_g` drawn per replica set; rungs are nested).
    After every HMC transition, neighbouring rungs :math:`(g, g+1)` (even pairs on even iterations, odd
    on odd) propose to exchange states, accepted with probability

    .. math::

        \min\Bigl(1, \exp\bigl(T(w_{g+1}) - T(w_g)\bigr)\Bigr),\qquad
        T(w) = \sum_{n_g < s \le n_{g+1}} \lVert x_s - f(x_s; w)\rVert^2,

    which is the Metropolis ratio :math:`p_g(w_{g+1}) p_{g+1}(w_g) / (p_g(w_g) p_{g+1}(w_{g+1}))` (prior and
    the first :math:`n_g` terms cancel). Every rung is a valid Markov chain for its own posterior; swaps
    let states found at small :math:`n` (hot, mixing across phases) reach large :math:`n` (where
    independent chains stay in the basin they first fall into).

    Parameters
    ----------
    c : int
    n_grid : sequence of int
        Sample sizes of interest (filled to a ladder by :func:`sample_size_ladder`).
    num_chains : int
        Number of independent replica sets :math:`K` (each with its own dataset and starts).
    num_draws, num_warmup : int
    config : HMCConfig, optional
    max_ratio, n_floor : see :func:`sample_size_ladder`
    swap : bool
        Replica exchange on/off (off: independent chains at every rung).
    init_scale : float
        Starts :math:`w_0 \sim N(0, s^2 I)`.
    seed : int
        ``spawn_seeds(seed, 4)``: dataset, starts, HMC, swaps.

    Returns
    -------
    LadderSamples
    """
    validate_shape(c, r)
    ladder = sample_size_ladder(n_grid, max_ratio=max_ratio, n_floor=n_floor)
    if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be an integer >= 1, got {num_chains!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    K, G, n_max = num_chains, len(ladder), ladder[-1]
    s_data, s_init, s_hmc, s_swap = spawn_seeds(int(seed), 4)
    data_seeds = spawn_seeds(s_data, K)
    X = torch.stack([OneHotUniform(c).sample(n_max, torch.Generator().manual_seed(s)) for s in data_seeds])
    X = X.to(device=dev, dtype=dtype)
    d = num_params(c, r)
    w0 = init_scale * torch.randn(K * G, d, generator=torch.Generator().manual_seed(s_init), dtype=dtype)
    sums = _OneHotSums(X, ladder)
    kk = torch.arange(K, device=dev).repeat_interleave(G)
    hh = torch.arange(G, device=dev).repeat(K)

    def potential(w: torch.Tensor) -> torch.Tensor:
        return sums.total(w, kk, hh, r) + 0.5 * (w * w).sum(-1)

    swap_gen = torch.Generator().manual_seed(s_swap)
    tried = np.zeros(max(G - 1, 0))
    accepted = np.zeros(max(G - 1, 0))

    def hook(state: HMCState, it: int) -> HMCState:
        if not swap or G < 2:
            return state
        gs = torch.arange(it % 2, G - 1, 2, device=dev)
        if gs.numel() == 0:
            return state
        with torch.no_grad():
            w = state.w.reshape(K, G, d)
            s_cur = (state.potential - 0.5 * (state.w * state.w).sum(-1)).reshape(K, G)
            k_idx = torch.arange(K, device=dev)[:, None].expand(K, gs.numel()).reshape(-1)
            lo_w = w[:, gs].reshape(-1, d)  # states at rung g
            hi_w = w[:, gs + 1].reshape(-1, d)  # states at rung g + 1
            g_lo = gs.repeat(K)
            log_ratio = _swap_log_ratio(
                sums, lo_w, hi_w, s_cur[:, gs].reshape(-1), s_cur[:, gs + 1].reshape(-1), k_idx, g_lo, r
            )
            u = torch.rand(K * gs.numel(), generator=swap_gen, dtype=torch.float64).to(dev)
            acc = (torch.log(u) < log_ratio.to(torch.float64)).reshape(K, gs.numel())
            if it >= num_warmup:
                tried[gs.cpu().numpy()] += K
                accepted[gs.cpu().numpy()] += acc.sum(0).cpu().numpy()
            if not bool(acc.any()):
                return state
            new = w.clone()
            new[:, gs] = torch.where(acc[..., None], w[:, gs + 1], w[:, gs])
            new[:, gs + 1] = torch.where(acc[..., None], w[:, gs], w[:, gs + 1])
        return hmc_init(new.reshape(K * G, d), potential)

    res = hmc_sample(
        potential,
        w0.to(dev),
        num_draws=num_draws,
        num_warmup=num_warmup,
        config=config,
        seed=s_hmc,
        transition_hook=hook,
        progress=progress,
        device=dev,
    )
    D = num_draws
    samples = res.samples.reshape(K, G, D, d)
    loss = (res.potential - 0.5 * (res.samples * res.samples).sum(-1)).reshape(K, G, D)
    loss = loss / torch.tensor(ladder, dtype=loss.dtype, device=loss.device)[None, :, None]
    conf = {
        "c": c,
        "r": r,
        "n_grid": sorted({int(v) for v in n_grid}),
        "ladder": ladder,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_warmup": num_warmup,
        "swap": swap,
        "max_ratio": max_ratio,
        "n_floor": n_floor,
        "init_scale": init_scale,
        "dtype": str(dtype),
        "hmc": res.config,
        "prior": "N(0, I)",
        "dataset": "OneHotUniform, nested per replica set",
        "seeds": {"data": s_data, "init": s_init, "hmc": s_hmc, "swap": s_swap},
    }
    swap_acc = np.divide(accepted, tried, out=np.full_like(accepted, np.nan), where=tried > 0)
    return LadderSamples(ladder, samples, loss.detach(), res, swap_acc, c, r, int(seed), conf)
