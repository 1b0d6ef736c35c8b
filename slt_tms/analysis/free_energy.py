r"""Free energies of the TMS phases and the Bayesian phase transitions they predict in the sample size.

For phases :math:`a` (critical points with population loss :math:`L_a`, learning coefficient
:math:`\lambda_a`, multiplicity :math:`m_a` and prior density :math:`\varphi(w^*_a)`) the local free energy
to :math:`O(1)` is

.. math::

    F_n(a) = n L_a + \lambda_a \log n - \log\varphi(w^*_a) \;[+ (m_a - 1)\log\log n],

with the standard normal prior :math:`\varphi = N(0, I_d)`, so
:math:`-\log\varphi(w) = \lVert w\rVert^2/2 + \tfrac d2 \log 2\pi` (the constant cancels between phases
of equal :math:`d`). :math:`-\log\varphi(w^*_a)` is the TMS paper's :math:`O(1)` term; it is not the
constant of :math:`-\log Z_a(n)`, which is :math:`-K_a` of :mod:`slt_tms.analysis.phase_constant` (prior,
Laplace volume, orbit length, copies, flat-region mass). A :class:`PhaseRecord` carries either in
``log_prior`` (:meth:`PhaseRecord.from_critical_point` with ``constant="point" | "paper" | "full"``). The
posterior concentrates on the phase of lowest :math:`F_n`; two phases swap where
:math:`F_n(b) - F_n(a) = 0`, solved in closed form with the Lambert W function (:func:`crossover`) and
checked with a bracketing root finder. Pure numpy/scipy: no sampling, no files.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slt_tms.analysis.phase_constant import VARIANTS, phase_constant, variant_log_constant
from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.validation import check_float

__all__ = [
    "Crossover",
    "PhaseLike",
    "PhaseRecord",
    "as_phases",
    "check_n_values",
    "crossover",
    "crossovers",
    "dominant_phase",
    "free_energy",
    "log_prior_density",
    "phase_sequence",
    "prediction",
]

_LOG_2PI = math.log(2.0 * math.pi)

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
        Learning coefficient :math:`\lambda` (theory, or an estimate), at least 0.
    lambda_se : float
        Standard error of ``lambda_`` (0 for theory values).
    log_prior : float
        The :math:`O(1)` term :math:`K_a` of :math:`\log Z_a(n)`, entering :math:`F_n` as
        :math:`-K_a`. In the paper's formula (and by default, :meth:`from_critical_point`) it is
        :math:`\log\varphi(w^*)`; the full constant (prior, Laplace volume, orbit, copies, flat-region
        mass) is :func:`slt_tms.analysis.phase_constant.phase_constant`. 0 if unknown (then the term is
        left out for this phase, which is only sensible if every phase leaves it out).
    multiplicity : int
        :math:`m` (1 if unknown; then the :math:`\log\log n` term vanishes).
    log_prior_se : float
        Standard error of ``log_prior`` when it is computed numerically (Monte Carlo), else 0.
    constant_terms : dict, optional
        The terms behind ``log_prior`` (for reports; not used in the arithmetic).
    """

    name: str
    loss: float
    lambda_: float
    lambda_se: float = 0.0
    log_prior: float = 0.0
    multiplicity: int = 1
    log_prior_se: float = 0.0
    constant_terms: dict[str, Any] | None = field(default=None, compare=False, repr=False)

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
        if self.lambda_ < 0:
            raise ValueError(
                f"phase {self.name!r} has lambda {self.lambda_:g} < 0: a learning coefficient is at least 0 "
                "(a negative estimate is no learning coefficient: its chains left the basin of the point or "
                "it is not a minimum); leave the phase out or estimate it again"
            )
        for attr in ("lambda_se", "log_prior_se"):
            se = getattr(self, attr)
            if se is None or not math.isfinite(float(se)) or float(se) < 0:
                raise ValueError(f"phase {self.name!r}: {attr} must be a finite number >= 0, got {se!r}")
            object.__setattr__(self, attr, float(se))
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
        constant: str = "point",
    ) -> PhaseRecord:
        """Build a record from a :class:`~slt_tms.theory.critical_point.CriticalPoint`.

        ``lambda_`` overrides ``point.lambda_theory`` (e.g. with an LLC estimate). ``constant`` chooses
        the :math:`O(1)` term (:func:`slt_tms.analysis.phase_constant.variant_log_constant`):
        ``"point"`` (default) -- :func:`log_prior_density` at the point as given (dead bias -1);
        ``"paper"`` -- the same with dead biases 0 (the paper's prior term); ``"full"`` -- the full
        constant :math:`K_a` of :func:`slt_tms.analysis.phase_constant.phase_constant`, term by term in
        ``constant_terms`` (raises ValueError for points that are not minimally singular).
        """
        lam = point.lambda_theory if lambda_ is None else lambda_
        if constant not in ("point", "paper", "full"):
            raise ValueError(f"unknown constant {constant!r}; choose 'point', 'paper' or 'full'")
        if lam is None:
            reason = f" ({point.lambda_reason})" if point.lambda_reason else ""
            raise ValueError(
                f"critical point {point.name!r} has no learning coefficient{reason}; pass lambda_= "
                "(e.g. an LLC estimate) or drop the point"
            )
        terms = None
        if constant == "point":
            log_prior, se = log_prior_density(point.flat().numpy()), 0.0
        elif constant == "paper":
            log_prior, se = variant_log_constant(point, "paper")
        else:
            k = phase_constant(point)
            log_prior, se, terms = k.total, k.se, k.to_dict()
        return cls(
            name=point.name,
            loss=point.loss,
            lambda_=lam,
            lambda_se=lambda_se,
            log_prior=log_prior,
            multiplicity=multiplicity,
            log_prior_se=se,
            constant_terms=terms,
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


def check_n_values(n: Any) -> np.ndarray:
    """Sample sizes as a float array; finite and >= 2 (so that log log n is defined), non-empty."""
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
    nn = check_n_values(n)
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
        ``(lo, hi)`` from evaluating the crossover at :math:`\Delta\lambda \mp k\,\mathrm{SE}` and
        :math:`\Delta K \mp k\,\mathrm{SE}` (standard errors of :math:`\lambda` and of numerical
        constants, see :func:`crossover`); equals ``(n_c, n_c)`` when no standard error is given.
        ``lo`` is ``n_min`` when at the lower end the ``high_n`` phase is favoured everywhere; ``hi`` is
        ``inf`` if it never wins.
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
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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
    from scipy.special import lambertw  # lazy import (start-up time)

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
    from scipy.optimize import brentq

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
    estimates of :math:`\lambda`) and :math:`\mathrm{SE}_C` likewise from ``log_prior_se`` (numerical
    constants), the interval is the crossover at :math:`(B \mp k\,\mathrm{SE}_B, C \mp
    k\,\mathrm{SE}_C)`. At the larger root :math:`\partial D/\partial n = A + B/n < 0`,
    :math:`\partial D/\partial B = \log n > 0` and :math:`\partial D/\partial C = 1`, so
    :math:`dn_c/dB = \log n / |A + B/n| > 0` and :math:`dn_c/dC = 1/|A + B/n| > 0`: :math:`n_c` is
    increasing in both and the shifted endpoints bound it (a box: conservative when both are present).

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
    check_float("num_se", num_se, nonnegative=True)  # (negative: a reversed interval; NaN: (inf, inf))
    if pb.loss > pa.loss or (pb.loss == pa.loss and pb.lambda_ > pa.lambda_):
        pa, pb = pb, pa
    A = pb.loss - pa.loss
    B = pb.lambda_ - pa.lambda_
    C = (pa.log_prior - pb.log_prior) if include_prior else 0.0
    M = float(pb.multiplicity - pa.multiplicity) if include_multiplicity else 0.0
    n_c, lam, root, branch, roots, always, never = _crossover_core(A, B, C, M, n_min, n_max)
    se = math.hypot(pa.lambda_se, pb.lambda_se)
    se_c = math.hypot(pa.log_prior_se, pb.log_prior_se) if include_prior else 0.0
    if (se > 0 or se_c > 0) and not never:
        ends = []
        for sgn in (-1.0, 1.0):
            Bs = B + sgn * num_se * se
            Cs = C + sgn * num_se * se_c
            if A == 0.0 and Bs > 0:  # equal loss: the sign of B decides who wins at large n
                ends.append(math.inf if sgn > 0 else n_min)
                continue
            nc_s, _, _, _, _, always_s, _ = _crossover_core(A, Bs, Cs, M, n_min, n_max)
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
    check_n_values([n_min, n_max])
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


def _prediction_block(ps: list[PhaseRecord], num_se: float, n_min: float, n_max: float) -> dict[str, Any]:
    xs = crossovers(ps, num_se=num_se)
    seq = phase_sequence(ps, n_min=n_min, n_max=n_max)
    return {
        "phases": [{"name": p.name, "loss": p.loss, "lambda": p.lambda_, "lambda_se": p.lambda_se,
                    "log_prior": p.log_prior, "log_prior_se": p.log_prior_se,
                    "constant_terms": p.constant_terms} for p in ps],
        "crossovers": [x.to_dict() for x in xs],
        "sequence": [{"phase": nm, "n_start": lo, "n_end": hi} for nm, lo, hi in seq],
    }


def prediction(phases: Iterable[PhaseLike], *, num_se: float = 1.96, n_min: float = 2.0,
               n_max: float = 1e5, variants: Mapping[str, Iterable[PhaseLike]] | None = None,
               constant: str | None = None) -> dict[str, Any]:
    """The asymptotic prediction as plain data: the phases, every pairwise crossover, the sequence of
    dominant phases over ``[n_min, n_max]`` (JSON-ready).

    ``variants`` maps a name (e.g. ``"full"``, ``"paper"``, ``"point"``, see
    :data:`slt_tms.analysis.phase_constant.VARIANTS`) to the records of the same phases with that
    variant's :math:`O(1)` term; each is reported side by side under ``"variants"`` (its phases with
    the terms of the constant, crossovers, sequence). ``constant`` names the variant of ``phases``
    itself (the top-level entries).
    """
    check_float("num_se", num_se, nonnegative=True)  # (negative: a reversed interval; NaN: (inf, inf))
    ps = as_phases(phases)
    out = _prediction_block(ps, num_se, n_min, n_max)
    out["num_se"] = num_se
    out["constant"] = constant
    if variants:
        out["variants"] = {
            key: {"label": VARIANTS.get(key, key), **_prediction_block(as_phases(v), num_se, n_min, n_max)}
            for key, v in variants.items()
        }
    return out
