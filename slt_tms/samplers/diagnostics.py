r"""Convergence diagnostics of chain traces ``(chain, draw)``: Monte-Carlo standard error, ESS, R-hat,
acceptance, a two-halves stationarity test and divergence flags.

All chain statistics use ArviZ (rank-normalised split R-hat, bulk ESS, MCSE of the mean; Vehtari et al.
2021). The stationarity statistic compares the means of the first and second half of the draws:

.. math::

    z = \frac{\bar x_{(2)} - \bar x_{(1)}}{\sqrt{\mathrm{MCSE}_{(1)}^2 + \mathrm{MCSE}_{(2)}^2}},

which is approximately standard normal for a stationary trace; :math:`|z| > k` flags a drift.

The standard error an estimate reports (:func:`standard_error`) is the larger of ArviZ's MCSE and the
spread of the chain means, :math:`\mathrm{sd}(\bar x_1, \dots, \bar x_C)/\sqrt{C}`. The latter assumes
nothing about autocorrelation (independently started chains are independent replicates), so it catches a
slow component of the trace that the autocorrelation estimate behind the MCSE truncates away; with few
chains it is noisy, which is why it only ever raises the MCSE, never replaces a larger one.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = [
    "divergence_flags",
    "ess",
    "inference_data",
    "mala_acceptance",
    "mcse_mean",
    "read_netcdf",
    "rhat",
    "standard_error",
    "stationarity_z",
    "summary_stats",
    "within_chain_rhat",
]


def _arviz() -> Any:
    """ArviZ, imported on first use: it pulls in xarray/pandas (about a second) that the command line and
    most library calls never need. The boundary to ArviZ is this module only (0.23.x InferenceData API)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    return az


def inference_data(posterior: dict[str, np.ndarray], sample_stats: dict[str, np.ndarray] | None = None,
                   dims: dict[str, list[str]] | None = None) -> Any:
    """An ArviZ ``InferenceData`` with ``posterior`` (and ``sample_stats``) arrays of shape
    ``(chain, draw, ...)``."""
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.from_dict(posterior=posterior, sample_stats=sample_stats or {}, dims=dims or {})


def read_netcdf(path: str) -> Any:
    """Read an ``InferenceData`` written with ``to_netcdf``."""
    return _arviz().from_netcdf(str(path))


def summary_stats(idata: Any) -> dict[str, Any]:
    """R-hat (rank-normalised split) and bulk ESS of every posterior variable of an ``InferenceData``
    (JSON-ready: floats or nested lists)."""
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rh = az.rhat(idata)
        es = az.ess(idata)
    out: dict[str, Any] = {"rhat": {}, "ess": {}}
    for name in idata.posterior.data_vars:
        r = np.asarray(rh[name].values, dtype=float)
        e = np.asarray(es[name].values, dtype=float)
        out["rhat"][name] = float(r) if r.ndim == 0 else r.tolist()
        out["ess"][name] = float(e) if e.ndim == 0 else e.tolist()
    return out


def _dataset(x: np.ndarray) -> Any:
    az = _arviz()
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"traces must have shape (chain, draw), got {x.shape}")
    return az.convert_to_dataset({"x": x})


def _stat(fn, x: np.ndarray, **kw) -> float:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] < 4 or not np.all(np.isfinite(x)):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(_dataset(x), **kw)["x"].values)


def mcse_mean(x: np.ndarray) -> float:
    """Monte-Carlo standard error of the mean of a ``(chain, draw)`` trace (ArviZ ``mcse``, method "mean").

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> 0.0 < mcse_mean(rng.normal(size=(4, 500))) < 0.05
    True
    """
    az = _arviz()
    x = np.asarray(x, dtype=float)
    if x.ndim == 2 and np.all(np.isfinite(x)) and x.size > 0 and np.ptp(x) == 0:
        return 0.0
    return _stat(az.mcse, x, method="mean")


def standard_error(x: np.ndarray) -> tuple[float, float, float]:
    r"""Standard error of the mean of a ``(chain, draw)`` trace: ``(se, mcse, se_chains)``.

    .. math::

        \mathrm{se} = \max\Big(\mathrm{MCSE},\ \frac{\mathrm{sd}(\bar x_1, \dots, \bar x_C)}{\sqrt C}\Big),

    with :math:`\bar x_c` the chain means (``ddof=1``) and MCSE from :func:`mcse_mean`. With one chain
    ``se_chains`` is nan and ``se`` is the MCSE.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(4, 500)) + np.array([[0.0], [0.0], [0.3], [-0.3]])  # chains that disagree
    >>> se, mcse, se_chains = standard_error(x)
    >>> bool(se == se_chains > 1.5 * mcse)
    True
    """
    mcse = mcse_mean(x)
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or not np.all(np.isfinite(x)):
        return mcse, mcse, math.nan
    chains = float(np.std(np.mean(x, axis=1), ddof=1) / math.sqrt(x.shape[0]))
    return (max(mcse, chains) if math.isfinite(mcse) else mcse), mcse, chains


def ess(x: np.ndarray) -> float:
    """Bulk effective sample size of a ``(chain, draw)`` trace (ArviZ)."""
    az = _arviz()
    return _stat(az.ess, x, method="bulk")


def rhat(x: np.ndarray) -> float:
    """Rank-normalised split R-hat of a ``(chain, draw)`` trace (ArviZ); nan with fewer than 2 chains."""
    az = _arviz()
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2:
        return math.nan
    return _stat(az.rhat, x)


def within_chain_rhat(x: np.ndarray) -> list[float]:
    """Each chain's own rank-normalised split R-hat: its first and second halves taken as two chains.

    For chains that target different distributions (one dataset each), where R-hat across chains measures
    how the targets differ as well as how the chains mixed.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(3, 400)) + np.array([[0.0], [2.0], [4.0]])  # three targets, each chain mixed
    >>> rhat(x) > 1.5, max(within_chain_rhat(x)) < 1.05
    (True, True)
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"traces must have shape (chain, draw), got {x.shape}")
    half = x.shape[1] // 2
    return [rhat(row[: 2 * half].reshape(2, half)) for row in x]


def mala_acceptance(accept_prob: np.ndarray) -> float:
    r"""Mean acceptance probability over the finite entries (NaN marks steps without a diagnostic)."""
    a = np.asarray(accept_prob, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan
    return float(np.mean(a))


def stationarity_z(x: np.ndarray) -> float:
    """Two-halves drift statistic ``z`` of a ``(chain, draw)`` trace (module docstring); nan if undefined."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] < 16:
        return math.nan
    h = x.shape[1] // 2
    a, b = x[:, :h], x[:, h : 2 * h]
    sa, sb = mcse_mean(a), mcse_mean(b)
    den = math.sqrt(sa * sa + sb * sb)
    if not math.isfinite(den):
        return math.nan
    diff = float(np.mean(b) - np.mean(a))
    if den == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / den


def divergence_flags(llc_draws: np.ndarray, threshold: float) -> np.ndarray:
    r"""Per-chain divergence flags: any non-finite draw, or any draw of :math:`n\beta(L - L^*)` above
    ``threshold``. ``llc_draws`` has shape ``(chain, draw)``; returns a bool array ``(chain,)``."""
    x = np.asarray(llc_draws, dtype=float)
    bad = ~np.isfinite(x) | (x > threshold)
    return bad.any(axis=1)
