r"""Local learning coefficient (LLC) estimation with vectorised, self-diagnosing SGLD.

Estimator (Lau et al. 2023; THEORY.md §5):

.. math::

    \hat\lambda(w^*) = n\beta\,\bigl(\mathbb{E}_{w \sim p_{\mathrm{loc}}}[L_n(w)] - L_n(w^*)\bigr),
    \qquad
    p_{\mathrm{loc}}(w) \propto \exp\Bigl(-n\beta L_n(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2\Bigr),

with :math:`n\beta = n/\log n` by default (:math:`\beta = 1/\log n`, :math:`n` = number of training samples
behind :math:`L_n`, *not* the batch size). The expectation is the mean over the post-burn-in SGLD draws of
all non-diverged chains of the per-draw trace :math:`\hat\lambda_t = n\beta\,(L(w_t) - L_n(w^*))`. For
minibatch potentials :math:`L(w_t)` is the loss on the minibatch the step evaluated (an unbiased estimate
of :math:`L_n(w_t)`, because the batch is drawn independently of :math:`w_t`), while :math:`L_n(w^*)` is
always computed on the full data.

Standard error: the Monte-Carlo standard error of the mean of :math:`\hat\lambda_t` over
``(chain, draw)`` from ArviZ (:math:`\mathrm{sd}/\sqrt{\mathrm{ESS}}` with the chains' autocorrelation).

Divergence: a chain with a non-finite loss or a draw :math:`\hat\lambda_t` above ``divergence_threshold``
(default :math:`\max(10^4, 100 d)`; a converged chain has :math:`E\hat\lambda_t = \lambda \le d/2` and, at a
regular minimum, :math:`\mathrm{sd}(\hat\lambda_t) = \sqrt{d/2}`, so the bound is far in the tail) is
flagged, reported and excluded from the estimate.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slt_tms._rng import spawn_seeds
from slt_tms.estimators import _potentials
from slt_tms.estimators import diagnostics as _diag
from slt_tms.estimators.calibration import CalibrationResult, calibrate_step_size
from slt_tms.estimators.sgld import SGLDConfig, _default_block, sample
from slt_tms.io.atomic import atomic_path, atomic_write_text
from slt_tms.tms.losses import empirical_value_and_grad

__all__ = ["LLCResult", "default_nbeta", "estimate_llc"]

#: Fraction of post-burn-in draws with :math:`L(w_t) < L(w^*)` above which a warning says that the
#: anchor is not a local minimum at this temperature (population and full-batch potentials only: a
#: minibatch loss falls below :math:`L_n(w^*)` by batch noise alone).
ESCAPE_WARN_FRACTION = 0.2


def default_nbeta(n: int) -> float:
    r""":math:`n\beta = n / \log n`, the inverse temperature :math:`\beta = 1/\log n` times ``n``.

    Examples
    --------
    >>> round(default_nbeta(1000), 2)
    144.76
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n (the number of training samples) must be an integer >= 2, got {n!r}")
    return float(n) / math.log(float(n))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, torch.dtype | torch.device):
        return str(x)
    return x


def _float(x: Any) -> float:
    if x is None:
        return math.nan
    if isinstance(x, str):
        return float(x)
    return float(x)


@dataclass(frozen=True)
class LLCResult:
    r"""Result of :func:`estimate_llc`.

    Attributes
    ----------
    llc : float
        :math:`\hat\lambda`, mean of the post-burn-in trace over non-diverged chains.
    se : float
        Monte-Carlo standard error of ``llc`` (ArviZ MCSE over chains and draws).
    llc_per_chain : ndarray, shape ``(C,)``
        Per-chain means (nan for diverged chains).
    rhat, ess : float
        Rank-normalised split R-hat and bulk ESS of the trace (non-diverged chains).
    mala_acceptance : float
        Mean MALA acceptance probability of the SGLD moves after burn-in.
    frac_below_anchor : float
        Fraction of post-burn-in draws with :math:`L(w_t) < L(w^*)`.
    diverged : ndarray of bool, shape ``(C,)``
        Chains excluded from the estimate.
    trace : arviz.InferenceData
        ``posterior``: ``loss`` and ``llc`` with dims ``(chain, draw)`` (post-burn-in draws, all chains);
        ``sample_stats``: ``mala_log_accept``, ``mala_acceptance``, ``diverging``.
    config : dict
        Every hyperparameter (step size, nbeta, localization, chains, draws, burn-in, batch size, n,
        anchor loss, potential kind, dtype, device ...).
    seed : int
        Root seed; chain ``k`` uses ``spawn_seeds(seed, C)[k]``.
    calibration : CalibrationResult or None
        The step-size sweep (None when ``step_size`` was given).
    """

    llc: float
    se: float
    llc_per_chain: np.ndarray
    rhat: float
    ess: float
    mala_acceptance: float
    frac_below_anchor: float
    diverged: np.ndarray
    trace: Any = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    seed: int = 0
    calibration: CalibrationResult | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ output
    def _fields(self) -> dict[str, Any]:
        return {
            "llc": self.llc,
            "se": self.se,
            "llc_per_chain": np.asarray(self.llc_per_chain, dtype=float),
            "rhat": self.rhat,
            "ess": self.ess,
            "mala_acceptance": self.mala_acceptance,
            "frac_below_anchor": self.frac_below_anchor,
            "diverged": np.asarray(self.diverged, dtype=bool),
            "config": self.config,
            "seed": self.seed,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    def to_dict(self, traces: bool = True) -> dict[str, Any]:
        """JSON-ready dictionary (with the ``(chain, draw)`` traces as nested lists if ``traces``)."""
        out = _jsonable(self._fields())
        if traces:
            out["traces"] = {
                grp + "/" + k: _jsonable(np.asarray(v.values))
                for grp in ("posterior", "sample_stats")
                for k, v in getattr(self.trace, grp).data_vars.items()
            }
        return out

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    def to_netcdf(self, path: str | Path) -> Path:
        """Write the trace (InferenceData) with the result fields in the posterior attrs, atomically."""
        idata = self.trace.copy()
        idata.posterior.attrs["llc_result"] = json.dumps(_jsonable(self._fields()))
        with atomic_path(path) as tmp:
            idata.to_netcdf(str(tmp), engine="h5netcdf")
        return Path(path)

    @classmethod
    def _from_fields(cls, f: dict[str, Any], trace: Any) -> LLCResult:
        cal = f.get("calibration")
        calib = None
        if cal is not None:
            rows = tuple({k: (_float(v) if k in ("mala_acceptance", "stationarity_z", "llc_mean") else v)
                          for k, v in r.items()} for r in cal["table"])
            calib = CalibrationResult(step_size=float(cal["step_size"]), table=rows,
                                      criterion=cal["criterion"], all_criteria_met=cal["all_criteria_met"])
        return cls(
            llc=_float(f["llc"]),
            se=_float(f["se"]),
            llc_per_chain=np.array([_float(v) for v in f["llc_per_chain"]]),
            rhat=_float(f["rhat"]),
            ess=_float(f["ess"]),
            mala_acceptance=_float(f["mala_acceptance"]),
            frac_below_anchor=_float(f["frac_below_anchor"]),
            diverged=np.array(f["diverged"], dtype=bool),
            trace=trace,
            config=f["config"],
            seed=int(f["seed"]),
            calibration=calib,
        )

    @classmethod
    def from_netcdf(cls, path: str | Path) -> LLCResult:
        """Read a result written by :meth:`to_netcdf`."""
        import arviz as az

        idata = az.from_netcdf(str(path))
        f = json.loads(idata.posterior.attrs["llc_result"])
        return cls._from_fields(f, idata)

    @classmethod
    def from_json(cls, path: str | Path) -> LLCResult:
        """Read a result written by :meth:`to_json` (the traces are rebuilt as InferenceData)."""
        f = json.loads(Path(path).read_text())
        tr = f.get("traces", {})
        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
        for key, v in tr.items():
            grp, name = key.split("/", 1)
            arr = np.array([[(math.nan if x is None else float(x) if not isinstance(x, bool) else x)
                             for x in row] for row in v])
            groups[grp][name] = arr
        return cls._from_fields(f, _to_idata(groups["posterior"], groups["sample_stats"]))

    def summary(self) -> str:
        """A readable table of the estimate and its diagnostics."""
        c = self.config
        lines = [
            f"local learning coefficient  {self.llc:.4f} +/- {self.se:.4f} (MCSE)",
            f"  potential       {c.get('kind', '?')}  d={c.get('d', '?')}  n={c.get('n', '?')}  "
            f"nbeta={c.get('nbeta', math.nan):.4g}  localization={c.get('localization', math.nan):.4g}",
            f"  step size       {c.get('step_size', math.nan):.4g}"
            + ("  (auto-calibrated)" if self.calibration is not None else "  (given)")
            + (f"  preconditioner={c.get('preconditioner')}" if c.get("preconditioner") else ""),
            f"  chains x draws  {c.get('num_chains', '?')} x {c.get('num_draws', '?')} "
            f"(burn-in {c.get('num_burnin', '?')}, seed {self.seed})",
            f"  R-hat           {self.rhat:.3f}",
            f"  ESS             {self.ess:.0f}",
            f"  MALA acceptance {self.mala_acceptance:.3f}",
            f"  below L(w*)     {self.frac_below_anchor:.3f}",
            f"  diverged        {int(np.sum(self.diverged))} of {len(self.diverged)} chains"
            + (f" {np.flatnonzero(self.diverged).tolist()}" if np.any(self.diverged) else ""),
            "  per chain       " + " ".join(f"{v:.3f}" for v in np.asarray(self.llc_per_chain)),
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _to_idata(posterior: dict[str, np.ndarray], sample_stats: dict[str, np.ndarray]) -> Any:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.from_dict(posterior=posterior, sample_stats=sample_stats)


def _check_positive_int(name: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _tms_module_vg(module: nn.Module, loss: Any, tensors: tuple[Tensor, ...]) -> Any:
    """Closed-form value-and-gradient for a plain :class:`slt_tms.tms.TMS` with the MSE loss on its own
    inputs (``F.mse_loss`` = the empirical loss / c); None when anything else is asked for."""
    from slt_tms.tms import TMS

    if type(module) is not TMS or loss != "mse" or len(tensors) != 1:
        return None
    names = [k for k, p in module.named_parameters() if p.requires_grad]
    if names != ["W", "b"] or tensors[0].ndim != 2 or tensors[0].shape[1] != module.c:
        return None
    return empirical_value_and_grad(
        module.c, module.r, module.activation, module.gamma, weight=1.0 / module.c
    )


def _resolve_source(
    potential: Any,
    w_star: Tensor | None,
    data: Any,
    loss: Any,
    n: int | None,
    batch_size: int | None,
    dtype: torch.dtype | None,
    device: torch.device | None,
) -> tuple[_potentials.BuiltPotential, int | None]:
    """Return the built potential and the resolved n (None if it must come from the user)."""
    from slt_tms.theory.critical_point import CriticalPoint

    tensors = None if data is None else _potentials._as_data(data, device)

    def anchor(w: Any, default_dtype: torch.dtype) -> Tensor:
        if not isinstance(w, Tensor):
            try:
                w = torch.as_tensor(np.asarray(w, dtype=float))
            except (TypeError, ValueError) as exc:
                raise ValueError("w_star must be a tensor of shape (d,)") from exc
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"w_star must be one flat parameter vector of shape (d,), got {tuple(w.shape)}")
        dt = dtype or (w.dtype if w.is_floating_point() else default_dtype)
        return w.detach().to(device=device, dtype=dt).clone()

    if isinstance(potential, nn.Module):
        f_single, w_mod = _potentials.module_potential(potential, loss)
        if tensors is None:
            raise ValueError("an nn.Module needs data=(X, Y) (tensors, a TensorDataset or a DataLoader)")
        w0 = anchor(w_mod if w_star is None else w_star, w_mod.dtype)
        if w0.shape != w_mod.shape:
            raise ValueError(
                f"w_star must have shape ({w_mod.numel()},) for this module, got {tuple(w0.shape)}"
            )
        if any(p.dtype != w0.dtype for p in potential.parameters()) or any(
            p.device != w0.device for p in potential.parameters()
        ):
            # a copy: nn.Module.to works in place and the caller's model must stay untouched
            potential = copy.deepcopy(potential).to(device=w0.device, dtype=w0.dtype)
            f_single, _ = _potentials.module_potential(potential, loss)
        tensors = tuple(t.to(w0.dtype) if t.is_floating_point() else t for t in tensors)
        closed = _tms_module_vg(potential, loss, tensors)
        built = _potentials.build(
            f_batched=None, f_single=f_single, w_star=w0, data=tensors, batch_size=batch_size, n=n,
            grad_mode="vmap", vg_batched=closed,
            description=f"nn.Module {type(potential).__name__} ({w0.numel()} parameters), loss={loss!r}"
            + (", closed-form TMS gradient" if closed is not None else ""),
        )
        return built, tensors[0].shape[0]

    if isinstance(potential, CriticalPoint):
        cp = potential
        w0 = cp.flat(dtype=dtype or torch.float64, device=device or "cpu") if w_star is None else anchor(
            w_star, torch.float64
        )
        if w0.shape != (cp.d,):
            raise ValueError(f"w_star must have shape ({cp.d},) for this critical point")
        c, r = cp.c, cp.r
        if tensors is None:
            from slt_tms.theory.symbolic import population_loss_flat

            built = _potentials.build(
                f_batched=lambda w, b: population_loss_flat(w, c, r), f_single=None, w_star=w0, data=None,
                batch_size=None, n=n, description=f"TMS population loss at critical point {cp.name} (c={c})",
            )
            return built, None
        from slt_tms.tms import empirical_loss

        if len(tensors) != 1 or tensors[0].ndim != 2 or tensors[0].shape[1] != c:
            raise ValueError(f"TMS data must be one tensor of inputs with shape (n, {c})")
        tensors = (tensors[0].to(w0.dtype),)
        built = _potentials.build(
            f_batched=lambda w, x: empirical_loss(w, x, c, r), f_single=None, w_star=w0, data=tensors,
            batch_size=batch_size, n=n, native_chain_batches=True,
            vg_batched=empirical_value_and_grad(c, r),
            description=f"TMS empirical loss at critical point {cp.name} (c={c}, n={tensors[0].shape[0]})",
        )
        return built, tensors[0].shape[0]

    if not callable(potential) and hasattr(potential, "potential") and hasattr(potential, "w_star"):
        # a ground-truth problem record (slt_tms.theory.ground_truth.GroundTruthProblem)
        gt = potential
        w0 = anchor(gt.w_star if w_star is None else w_star, torch.get_default_dtype())
        built_gt, n_data = _resolve_source(gt.potential, w0, data, loss, n, batch_size, dtype, device)
        gt_n = getattr(gt, "n", None)
        return built_gt, (n_data if n_data is not None else gt_n)

    if not callable(potential):
        raise ValueError(
            "potential must be a callable loss(w, batch) -> Tensor(...), an nn.Module, a CriticalPoint, or a "
            f"ground-truth problem; got {type(potential).__name__}"
        )
    if w_star is None:
        raise ValueError("w_star (the anchor, shape (d,)) is required with a potential callable")
    w0 = anchor(w_star, torch.get_default_dtype())
    if tensors is not None:
        tensors = tuple(t.to(w0.dtype) if t.is_floating_point() else t for t in tensors)
    fn: Callable[[Tensor, Any], Tensor] = potential
    with torch.no_grad():
        try:
            probe = fn(w0.unsqueeze(0).expand(2, -1), None if tensors is None else
                       (tensors[0][:2] if len(tensors) == 1 else tuple(t[:2] for t in tensors)))
        except Exception as exc:  # pragma: no cover - message relays the user's error
            raise ValueError(
                f"calling the potential on w of shape (2, {w0.numel()}) failed: {exc}. A potential must be "
                "vectorised over the leading axes of w and return one loss per row"
            ) from exc
    if not isinstance(probe, Tensor) or probe.shape != (2,):
        raise ValueError(
            "the potential must return a tensor of shape (...,) for w of shape (..., d); for w of shape "
            f"(2, {w0.numel()}) it returned {getattr(probe, 'shape', type(probe).__name__)}"
        )
    built = _potentials.build(
        f_batched=fn, f_single=fn, w_star=w0, data=tensors, batch_size=batch_size, n=n,
        description=f"potential {getattr(fn, '__name__', type(fn).__name__)} (d={w0.numel()})",
    )
    return built, (None if tensors is None else tensors[0].shape[0])


def estimate_llc(
    potential: Any,
    w_star: Tensor | None = None,
    *,
    data: Any = None,
    loss: str | Callable[[Tensor, Tensor], Tensor] = "mse",
    n: int | None = None,
    nbeta: float | None = None,
    localization: float = 1.0,
    step_size: float | None = None,
    preconditioner: str | None = None,
    num_chains: int = 4,
    num_draws: int = 10_000,
    num_burnin: int = 2000,
    batch_size: int | None = None,
    divergence_threshold: float | None = None,
    calibration: dict[str, Any] | None = None,
    init: Tensor | None = None,
    mala_every: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LLCResult:
    r"""Estimate the local learning coefficient :math:`\lambda(w^*)` with batched SGLD chains.

    .. math:: \hat\lambda = n\beta\,\bigl(\overline{L(w_t)} - L_n(w^*)\bigr)

    Parameters
    ----------
    potential : callable, nn.Module, CriticalPoint or ground-truth problem
        * ``loss(w, batch) -> Tensor(...)`` vectorised over the leading axes of ``w (..., d)``; ``batch``
          is None (population / closed form) or a slice of ``data`` (a tensor, or a tuple of tensors) and
          the loss must be the *mean* over its rows. Give ``w_star``.
        * an ``nn.Module`` with ``data`` = ``(X, Y)`` tensors, a ``TensorDataset`` or a ``DataLoader``
          (a single tensor ``X`` means target ``X``); ``loss`` is ``"mse"`` (mean over elements, as
          ``torch.nn.functional.mse_loss``), ``"cross_entropy"`` or ``callable(pred, target) -> scalar``.
          The anchor is the module's parameters (flattened in ``named_parameters()`` order).
        * a :class:`~slt_tms.theory.CriticalPoint` of the TMS: closed-form population loss when ``data`` is
          None (give the nominal ``n``), else the empirical loss on inputs ``data (n, c)``.
        * an object with ``potential``, ``w_star`` and ``n`` attributes
          (:class:`slt_tms.theory.ground_truth.GroundTruthProblem`).
    w_star : Tensor, shape ``(d,)``, optional
        The anchor (required for a callable).
    data : optional
        Training data (see above); None for population potentials.
    loss : {"mse", "cross_entropy"} or callable
        Only for ``nn.Module``.
    n : int, optional
        Number of training samples behind :math:`L_n`. Default: the number of data rows (or the problem's
        ``n``); required for population potentials (the nominal sample size).
    nbeta : float, optional
        :math:`n\beta`; default :func:`default_nbeta` ``(n) = n / log n``.
    localization : float
        :math:`\gamma` (default 1; docs/estimators.md explains the choice). It biases the estimate low
        by about :math:`\gamma/(n\beta h)` per regular direction of curvature :math:`h` and truncates
        singular directions at radius :math:`\sim 1/\sqrt\gamma`; larger values keep chains closer to
        :math:`w^*` (raise it when the escape warning fires) at the price of that bias.
    step_size : float, optional
        :math:`\epsilon`; None (default) calibrates it (:mod:`slt_tms.estimators.calibration`).
    preconditioner : {None, "rmsprop"}
    num_chains, num_draws, num_burnin : int
        Chains, kept draws per chain, discarded burn-in steps per chain (defaults 4, 2000, 1000).
    batch_size : int, optional
        Minibatch size; None or >= the number of rows means full batch.
    divergence_threshold : float, optional
        Draws of :math:`n\beta(L - L^*)` above it mark a chain as diverged (default
        :math:`\max(10^4, 100 d)`).
    calibration : dict, optional
        Keyword arguments for :func:`~slt_tms.estimators.calibration.calibrate_step_size` (``grid``,
        ``num_chains``, ``num_steps``, ``target_acceptance``, ``stationarity_k``).
    init : Tensor, shape ``(num_chains, d)``, optional
        Starting points of the chains (default: every chain starts at :math:`w^*`).
    mala_every : int, optional
        Compute the MALA diagnostic at every ``mala_every``-th draw of the main run. Default: 1 for
        population / full-batch potentials (free), 10 for minibatch potentials (each MALA evaluation costs
        one extra forward pass there). Calibration always uses every step.
    seed : int
        Root seed; chain streams are ``spawn_seeds(seed, num_chains)``.
    progress : bool, optional
        Progress bars (None: on unless ``SLT_TMS_NO_PROGRESS=1``).
    device, dtype : optional
        Where and in which precision to sample (default: those of the anchor; float64 for critical points).

    Returns
    -------
    LLCResult

    Raises
    ------
    ValueError
        Bad shapes, unknown loss, non-positive step size, non-finite anchor loss, missing ``n``, or every
        chain diverged.

    Examples
    --------
    >>> pot = lambda w, batch=None: 0.5 * (w ** 2).sum(-1)
    >>> res = estimate_llc(pot, torch.zeros(2, dtype=torch.float64), n=10_000, step_size=1e-4,
    ...                    num_draws=200, num_burnin=100, progress=False)
    >>> res.llc > 0
    True
    """
    num_chains = _check_positive_int("num_chains", num_chains)
    num_draws = _check_positive_int("num_draws", num_draws, 2)
    num_burnin = _check_positive_int("num_burnin", num_burnin, 0)
    if step_size is not None and (
        isinstance(step_size, bool) or not isinstance(step_size, int | float) or not step_size > 0
        or not math.isfinite(step_size)
    ):
        raise ValueError(
            f"step_size must be a finite positive number (or None to calibrate), got {step_size!r}"
        )
    if batch_size is not None:
        batch_size = _check_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dev = None if device is None else torch.device(device)
    if isinstance(loss, str) and loss not in _potentials.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: 'mse', 'cross_entropy', or a callable")

    pot, n_data = _resolve_source(potential, w_star, data, loss, n, batch_size, dtype, dev)
    if n is None:
        n = n_data
    if n is None:
        raise ValueError(
            "n (the number of training samples) is required for a population / closed-form potential: "
            "it sets the temperature nbeta = n / log n"
        )
    n = _check_positive_int("n", n, 2)
    if pot.num_data is not None and pot.batch_size is not None and n == pot.batch_size < pot.num_data:
        warnings.warn(
            f"n = {n} equals the batch size but the data has {pot.num_data} rows: n must be the number of "
            "training samples, not the batch size (nbeta = n / log n)",
            UserWarning,
            stacklevel=2,
        )
    if nbeta is None:
        nbeta = default_nbeta(n)
    if isinstance(nbeta, bool) or not isinstance(nbeta, int | float) or not (0 < nbeta < math.inf):
        raise ValueError(f"nbeta must be a finite positive number, got {nbeta!r}")
    nbeta = float(nbeta)
    # validates localization and preconditioner before any work is done
    SGLDConfig(step_size=1.0, nbeta=nbeta, localization=localization, preconditioner=preconditioner)
    anchor_loss = pot.anchor_loss
    if not math.isfinite(anchor_loss):
        raise ValueError(
            f"the loss at the anchor w* is not finite ({anchor_loss}); check w_star and the potential"
        )
    d = pot.w_star.numel()
    if divergence_threshold is None:
        divergence_threshold = max(1e4, 100.0 * d)

    w_init = pot.w_star
    if init is not None:
        if not isinstance(init, Tensor) or init.shape != (num_chains, d):
            raise ValueError(
                f"init must be a tensor of shape (num_chains, d) = ({num_chains}, {d}), got "
                f"{tuple(getattr(init, 'shape', ()))}"
            )
        w_init = init.detach().to(pot.w_star)
    if mala_every is None:
        mala_every = 10 if pot.batch_size is not None else 1
    mala_every = _check_positive_int("mala_every", mala_every)
    calib: CalibrationResult | None = None
    if step_size is None:
        kw = dict(calibration or {})
        allowed = {"grid", "num_chains", "num_steps", "target_acceptance", "stationarity_k"}
        if set(kw) - allowed:
            raise ValueError(
                f"unknown calibration options {sorted(set(kw) - allowed)}; allowed: {sorted(allowed)}"
            )
        calib = calibrate_step_size(
            pot, nbeta=nbeta, localization=localization, preconditioner=preconditioner,
            divergence_threshold=divergence_threshold, seed=seed, progress=progress, **kw,
        )
        step_size = calib.step_size
    config = SGLDConfig(step_size=float(step_size), nbeta=nbeta, localization=localization,
                        preconditioner=preconditioner)

    total = num_burnin + num_draws
    chain_seeds = spawn_seeds(seed, num_chains)

    seen_bad: list[Tensor | None] = [None]

    def stop_if(losses: Tensor, t: int) -> bool:
        x = nbeta * (losses - anchor_loss)
        bad = (~torch.isfinite(x) | (x > divergence_threshold)).any(0)
        seen_bad[0] = bad if seen_bad[0] is None else (seen_bad[0] | bad)
        return bool(seen_bad[0].all())

    tr = sample(
        pot.grad_fn, config, w_init, pot.w_star, total, chain_seeds,
        make_batch=pot.make_batch, num_data=pot.num_data, batch_size=pot.batch_size,
        loss_fn=pot.loss_fn if pot.batch_size is not None else None,
        mala_every=mala_every, adapt_steps=num_burnin, stop_if=stop_if, progress=progress,
        desc="SGLD (LLC)",
    )
    loss_all = tr.loss.double().numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        llc_all = nbeta * (loss_all - anchor_loss)
    diverged = _diag.divergence_flags(llc_all, divergence_threshold)
    if tr.num_steps < total:
        diverged[:] = True
    if diverged.all():
        raise ValueError(
            f"all {num_chains} SGLD chains diverged (non-finite loss or nbeta*(L - L*) > "
            f"{divergence_threshold:g}) at step size {step_size:.3g}; use a smaller step_size (or "
            "step_size=None to calibrate), a larger localization, or check the potential near w*"
        )
    if diverged.any():
        warnings.warn(
            f"{int(diverged.sum())} of {num_chains} chains diverged (chains "
            f"{np.flatnonzero(diverged).tolist()}) and are excluded from the estimate; consider a smaller "
            "step size",
            RuntimeWarning,
            stacklevel=2,
        )
    loss_kept = loss_all[:, num_burnin:]
    llc_kept = llc_all[:, num_burnin:]
    la_kept = tr.log_accept.double().numpy()[:, num_burnin:]
    if num_burnin == 0:
        la_kept = la_kept[:, 1:]
    good = ~diverged
    x = llc_kept[good]
    llc_hat = float(np.mean(x))
    se = _diag.mcse_mean(x)
    with np.errstate(invalid="ignore"):
        per_chain = np.where(good, np.mean(llc_kept, axis=1), np.nan)
    frac_below = float(np.mean(loss_kept[good] < anchor_loss))
    acc = _diag.mala_acceptance(la_kept[good])
    r_hat = _diag.rhat(x)
    ess_val = _diag.ess(x)

    if pot.kind != "minibatch" and frac_below > ESCAPE_WARN_FRACTION:
        warnings.warn(
            f"{frac_below:.1%} of the draws have a loss below L(w*) = {anchor_loss:.6g}: w* is not a local "
            "minimum at this temperature (the chains escaped to lower loss); the estimate is not a local "
            "learning coefficient of w*. Move w* to a minimum, or increase localization / nbeta",
            RuntimeWarning,
            stacklevel=2,
        )
    elif llc_hat < 0:
        warnings.warn(
            f"negative LLC estimate {llc_hat:.3g} ({frac_below:.1%} of draws below L(w*)): w* is not near a "
            "minimum of the loss; move w* to a minimum or increase localization",
            RuntimeWarning,
            stacklevel=2,
        )

    diverging = ~np.isfinite(llc_kept) | (llc_kept > divergence_threshold)
    full_la = tr.log_accept.double().numpy()[:, num_burnin:]
    idata = _to_idata(
        {"loss": loss_kept, "llc": llc_kept},
        {
            "mala_log_accept": full_la,
            "mala_acceptance": np.exp(np.minimum(full_la, 0.0)),
            "diverging": diverging,
        },
    )
    cfg = {
        "kind": pot.kind,
        "description": pot.description,
        "d": d,
        "n": n,
        "nbeta": nbeta,
        "localization": float(localization),
        "step_size": float(step_size),
        "step_size_source": "calibrated" if calib is not None else "given",
        "preconditioner": preconditioner,
        "rmsprop_decay": config.rmsprop_decay,
        "rmsprop_eps": config.rmsprop_eps,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin": num_burnin,
        "batch_size": pot.batch_size,
        "num_data": pot.num_data,
        "anchor_loss": anchor_loss,
        "divergence_threshold": float(divergence_threshold),
        "chain_seeds": chain_seeds,
        "dtype": str(pot.w_star.dtype),
        "device": str(pot.w_star.device),
        "block": min(_default_block(d), total),  # steps of noise pre-drawn per refill (sgld.sample)
        "mala_every": mala_every,
    }
    return LLCResult(
        llc=llc_hat,
        se=se,
        llc_per_chain=per_chain,
        rhat=r_hat,
        ess=ess_val,
        mala_acceptance=acc,
        frac_below_anchor=frac_below,
        diverged=diverged,
        trace=idata,
        config=cfg,
        seed=seed,
        calibration=calib,
    )
