r"""The result of an LLC estimate: the number, its diagnostics, its estimand, and everything to redo it.

A result is **trustworthy** (:attr:`LLCResult.ok`) when it carries no flag: the chains converged (split
R-hat :math:`\le` target and bulk ESS :math:`\ge` target), no chain escaped from the anchor's basin, no
chain diverged and (SGLD) no discretisation bias was detected. Every way of showing a result
(:meth:`LLCResult.summary`, ``str``, the command line) puts the flags on the first line next to the
number: an estimate is never shown as a bare ":math:`x \pm \mathrm{se}`" when its diagnostics fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slt_tms.io.atomic import atomic_path, atomic_write_text
from slt_tms.io.serialize import as_float, read_json, to_jsonable
from slt_tms.samplers.diagnostics import inference_data, read_netcdf

__all__ = [
    "MISFIT_PVALUE", "SLOW_FORM_NOTE", "SLOW_PROJECTION_RHAT", "AsymptoticFit", "Calibration", "LLCResult",
    "fit_form", "gradient_note_due", "gradient_term_note", "lower_region_note",
]

#: An asymptotic fit whose chi-square p-value falls below this has rungs scattered beyond their standard
#: errors (a wrong form at these n beta, or understated rung errors); its summary says so, and its
#: standard error is already inflated by sqrt(chi2 / dof). A correct fit gets there once in a hundred.
MISFIT_PVALUE = 1e-2


#: Split R-hat of the chains' projections on the gradient at w* above which the note on a first-order term
#: adds that the chains mixed slowly along the gradient. The loss trace, whose R-hat decides convergence,
#: can look mixed while the chains still drift along that one direction; the estimate then scatters across
#: seeds by more than its standard error says.
SLOW_PROJECTION_RHAT = 1.05


def _nan_for_null(d: dict[str, Any]) -> dict[str, Any]:
    """A dict of numbers read back from JSON, whose NaNs were written as null (its entries are never None
    when it is made: bias_check, gradient_term)."""
    return {k: math.nan if v is None else v for k, v in d.items()}


def precision_note(prec: dict[str, Any], max_draws: int | None = None) -> str:
    """What the ladder did for its fit's precision (``config["asymptotic_precision"]``, see
    ``asymptotic_rse``), in one clause for the summary's asymptotic line and the warning."""
    target = f"a relative SE of {prec['target']:.0%}"
    if prec["rounds"]:
        text = f"rungs ran again with {prec['draws']} draws per chain for {target}"
        if not prec["reached"]:
            text += (f"; not reached: raise max_draws ({max_draws})" if max_draws is not None
                     and prec["draws"] >= max_draws else f"; not reached in {prec['rounds']} longer runs")
    else:
        text = f"the rungs ran once, short of {target}"
    bad = prec.get("flagged")
    if bad:
        text += (f"; a longer run ({bad['draws']} draws per chain) raised flags this one did not, so it is "
                 f"not kept: {'; '.join(bad['flags'][:2])}" + (" ..." if len(bad["flags"]) > 2 else ""))
    return text


def gradient_note_due(t: dict[str, Any] | None) -> bool:
    """Whether an estimate's first-order term (``config["gradient_term"]``) calls for a note: it was
    computed and is notable or uncertain, not negligible."""
    return bool(t) and t["status"] != "negligible"  # type: ignore[index]


def gradient_term_note(t: dict[str, Any]) -> str:
    """One line on a first-order term of the gradient at w* that is notable or too uncertain to rule out,
    for a warning and the summary (:mod:`slt_tms.estimators.gradient_term`)."""
    se = f" +/- {t['se']:.2g}" if math.isfinite(t["se"]) else ""
    head = (
        f"w* is not a critical point (|grad L_n(w*)| = {t['grad_norm']:.3g}): the first-order term "
        f"nbeta grad L_n(w*).(E[w] - w*) = {t['term']:.4g}{se}"
    )
    tail = (
        "The number is the estimand's at a point that is not a minimum (train closer to one to read it as a "
        "learning coefficient)"
    )
    rhat = t.get("rhat", math.nan)
    if math.isfinite(rhat) and rhat > SLOW_PROJECTION_RHAT:
        tail = (
            f"The chains mixed slowly along the gradient (split R-hat {rhat:.3f} of the projection): the "
            f"estimate's standard error may be too small. {tail}"
        )
    if t.get("status", "notable") == "uncertain":
        return (
            f"{head} is too uncertain to rule out a size of 5% or more of the estimate's. {tail}"
        )
    frac = (f"{abs(t['fraction']):.0%} of the estimate in size" if math.isfinite(t["fraction"])
            else "all of an estimate of zero")
    effect = (
        f"for a loss quadratic around w* the gradient lowers the estimate by {abs(t['term']) / 2:.3g} to "
        f"{abs(t['term']):.3g}"
        if t["term"] < 0
        else "it is positive: the chains' mean lies uphill of w* along the gradient, which a loss quadratic "
        "around w* cannot do, so the loss is far from quadratic there"
    )
    return f"{head} is {frac}; {effect}. {tail}"


def fit_form(multiplicity: int = 1, exponent: float = 1.0) -> str:
    """The form the asymptotic fit gives the rungs (:func:`~slt_tms.estimators.llc.fit_asymptotic`), in words.

    Examples
    --------
    >>> fit_form(), fit_form(exponent=0.25), fit_form(multiplicity=2)
    ('lambda + a/(n beta)', 'lambda + a/(n beta)^0.25', 'lambda - 1/log(n beta) + a/log(n beta)^2')
    """
    if multiplicity > 1:
        return f"lambda - {multiplicity - 1}/log(n beta) + a/log(n beta)^2"
    return "lambda + a/(n beta)" + ("" if exponent == 1 else f"^{exponent:g}")


#: Said on the asymptotic line of a fit whose correction falls slowly (``multiplicity > 1`` or
#: ``correction_exponent < 1``). Its form is not the problem: fitted to the exact finite-n beta values of
#: the normal crossings it returns lambda to 0.6%. The extrapolation multiplies the rungs' errors several
#: times, and with them a small bias that every rung shares and no SE carries: run long, the rungs at
#: singular minima sit 1-4% below the exact values at R-hat 1.000 (the chains under-visit narrow arms of
#: the posterior). Measured on the ground truths: docs, Estimators.
SLOW_FORM_NOTE = (
    "a slowly falling correction: the extrapolation multiplies the rungs' errors and any bias they share; "
    "at singular minima precise rungs sit 1-4% low (narrow arms of the posterior under-visited, which R-hat "
    "cannot see), and on known lambdas of this kind such fits were off by up to 10-20% from seed to seed: "
    "read the asymptotic lambda as within about 10-20%, whatever its SE"
)


def lower_region_note(lower: dict[str, Any]) -> str:
    """The words for :func:`~slt_tms.estimators.tracks.lower_region`'s finding (summary line and warning)."""
    return (
        f"{lower['rejected_below']} of {lower['transitions']} proposals were rejected after reaching "
        f"nbeta (L - L*) = {lower['deepest']:.3g}, below L(w*) and more than {lower['margin']:g} nat below "
        f"every kept draw (lowest {lower['lowest_kept']:.3g}): a region of lower loss beside the chains that "
        "their step cannot enter; the estimate describes the region the chains stayed in (the basin of w*), "
        "not the whole localized posterior"
    )


@dataclass(frozen=True)
class AsymptoticFit:
    r"""The fit :math:`\hat\lambda(n\beta) = \lambda + a/(n\beta)` over a ladder of inverse temperatures.

    Attributes
    ----------
    llc, se : float
        :math:`\lambda` (the intercept: the estimate extrapolated to :math:`n\beta \to \infty`) and its
        standard error.
    slope : float
        :math:`a`.
    chi2 : float
        Weighted residual sum of squares (its expectation is ``len(nbeta) - 2`` for a correct model).
    nbeta, estimates, errors : tuple of float
        The rungs: :math:`n\beta_i`, :math:`\hat\lambda_i`, their standard errors.
    converged : tuple of bool
        Whether each rung's estimate converged.
    pvalue : float
        :math:`P(\chi^2_{k-2} \ge \chi^2)`: the probability of residuals this large if the rungs followed
        the fitted form (NaN with two rungs, where the fit has no residual).
    """

    llc: float
    se: float
    slope: float
    chi2: float
    nbeta: tuple[float, ...]
    estimates: tuple[float, ...]
    errors: tuple[float, ...]
    converged: tuple[bool, ...]
    pvalue: float = math.nan

    @property
    def misfit(self) -> bool:
        """Whether the rungs scatter about the fit beyond their errors (``pvalue < MISFIT_PVALUE``)."""
        return bool(self.pvalue < MISFIT_PVALUE)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AsymptoticFit:
        return cls(
            as_float(d["llc"]),
            as_float(d["se"]),
            as_float(d["slope"]),
            as_float(d["chi2"]),
            tuple(as_float(v) for v in d["nbeta"]),
            tuple(as_float(v) for v in d["estimates"]),
            tuple(as_float(v) for v in d["errors"]),
            tuple(bool(v) for v in d["converged"]),
            as_float(d.get("pvalue", math.nan)),
        )


@dataclass(frozen=True)
class Calibration:
    r"""The sampler settings an estimate adapted in its warmup, reusable by another estimate.

    A Metropolis-adjusted kernel (HMC, MALA) samples its target exactly at any step size and metric, so
    settings adapted at one anchor (e.g. the previous checkpoint of a training run) can start the chains at
    another: the warmup then only re-tunes the step size (dual averaging) and carries the chains from
    :math:`w^*` into the bulk of the posterior, in ``max(num_burnin // 5, 20)`` transitions instead of
    ``num_burnin``. The reused settings only change how fast the chains mix, never what they sample; the
    convergence check still decides when to stop. The reuse is re-checked: when the re-tuned step size of
    an estimate differs from :attr:`step_size` by more than a factor 3, the run falls back to a full warmup.

    Attributes
    ----------
    sampler : str
        The kernel it was adapted for (``"hmc"`` or ``"mala"``).
    step_size : float
        The median over the chains of the adapted step sizes.
    metric : ndarray ``(d,)`` or None
        The mean over the chains of the adapted diagonal metrics (inverse mass); None without one.
    source : dict
        What it was adapted at (e.g. ``{"checkpoint": ..., "step": ...}`` in a series).
    converged : bool or None
        Whether the estimate it came from met its R-hat and ESS targets (None: not known). A run from a
        reused calibration that ends unconverged is redone with its own warmup only where this is not
        False (otherwise the model is hard to sample anyway).
    """

    sampler: str
    step_size: float
    metric: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    converged: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the metric as a list; float32 and float64 values round-trip exactly)."""
        return to_jsonable(
            {"sampler": self.sampler, "step_size": self.step_size, "source": self.source,
             "metric": None if self.metric is None else np.asarray(self.metric, dtype=np.float64),
             "converged": self.converged}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        metric = d.get("metric")
        return cls(
            str(d["sampler"]),
            as_float(d["step_size"]),
            None if metric is None else np.array([as_float(v) for v in metric]),
            dict(d.get("source") or {}),
            None if d.get("converged") is None else bool(d["converged"]),
        )


@dataclass(frozen=True)
class LLCResult:
    r"""Result of :func:`~slt_tms.estimators.llc.estimate_llc`.

    Attributes
    ----------
    llc, se : float
        :math:`\hat\lambda = n\beta(\overline{L(w_t)} - L(w^*))` over the kept draws of the non-diverged
        chains, and its standard error: the larger of ArviZ's autocorrelation-aware MCSE and the spread of
        the chain means, sd(chain means) / sqrt(chains) (both in ``config["se_mcse"]``,
        ``config["se_chains"]``). SGLD runs with the bias check report the extrapolation to step zero
        where it is reliable (``bias_check``).
    rhat, ess : float
        Split R-hat and bulk ESS of the :math:`\hat\lambda` trace.
    converged : bool
        ``rhat <= target_rhat and ess >= target_ess``.
    flags : tuple of str
        Everything that makes the number untrustworthy (empty when :attr:`ok`).
    estimand : str
        What the number estimates (the localized tempered mean at this :math:`n\beta`; see the docs).
    nbeta, n, anchor_loss : float, int, float
    sampler : str
        ``"mala"``, ``"hmc"`` or ``"sgld"``.
    acceptance : float
        Mean acceptance probability (for SGLD: the MALA acceptance of its moves, a measure of the
        discretisation error; NaN for minibatch SGLD with the bias check, whose coupled chains measure
        the error of the estimate itself).
    frac_below_anchor : float
        Fraction of kept draws with :math:`L(w_t) < L(w^*)`.
    llc_per_chain : ndarray ``(C,)``
        Per-chain means (NaN for diverged chains).
    diverged : ndarray of bool ``(C,)``
        Chains excluded from the estimate: diverged (a non-finite loss or one beyond the divergence
        threshold) or stopped moving (every proposal of a block of draws rejected); ``flags`` says which.
    num_draws : int
        Kept draws per chain (SGLD with the bias check: the check's coarse chain, which continues the
        chains at their step, included).
    num_grads : int
        Batched gradient evaluations (warmup and checks included).
    seconds, cpu_seconds : float
        Wall and CPU time of the whole run: warmup, SGLD step search, draws and the SGLD bias check.
    bias_check : dict or None
        SGLD: a coarse chain at the run's step coupled to a fine chain at half the step (same noise and
        batches): the fine chain's mean ``llc_half_step``, the mean coarse-minus-fine ``difference`` and
        its standard error ``se_difference``; a bias of first or higher order in the step is between the
        difference and twice it. With it the Richardson-Romberg extrapolation to step zero,
        ``llc_extrapolated`` :math:`= \hat\lambda_\epsilon - 2D` with ``se_extrapolated``, and whether it
        is ``extrapolation_reliable`` (its ``relative_correction`` :math:`2|D|/\hat\lambda_\epsilon` at
        most 15%). Where it is, ``llc`` and ``se`` ARE the extrapolation and the estimate at the run's step
        is kept as ``llc_step``, ``se_step`` (the trace and ``llc_per_chain`` are the step's draws).
        ``continued_draws``: the coarse chain's draws, which continue the chains and close the trace;
        ``draws_after_check``: draws taken after them where the whole trace missed the R-hat/ESS targets.
    asymptotic : AsymptoticFit or None
        The extrapolation :math:`n\beta \to \infty` (with ``ladder``).
    calibration : Calibration or None
        The adapted step size and metric (Metropolis-adjusted kernels), to start another estimate with
        (``estimate_llc(..., calibration=result.calibration)``); ``config["calibration_used"]`` says
        whether this estimate itself reused one.
    trace : arviz.InferenceData
        ``posterior``: ``llc`` and ``loss`` ``(chain, draw)`` (minibatch runs: the control-variate loss
        :math:`L_B(w_t) - L_B(w^*) + L_n(w^*)`); ``sample_stats``: ``accept_prob``.
    config : dict
        The :class:`~slt_tms.estimators.config.LLCConfig` fields and everything resolved at run time
        (potential, d, step sizes, chain seeds ...).
    seed : int
    """

    llc: float
    se: float
    rhat: float
    ess: float
    converged: bool
    flags: tuple[str, ...]
    estimand: str
    nbeta: float
    n: int
    anchor_loss: float
    sampler: str
    acceptance: float
    frac_below_anchor: float
    llc_per_chain: np.ndarray
    diverged: np.ndarray
    num_draws: int
    num_grads: int
    seconds: float
    cpu_seconds: float
    bias_check: dict[str, Any] | None = None
    asymptotic: AsymptoticFit | None = None
    calibration: Calibration | None = field(default=None, repr=False)
    trace: Any = field(default=None, repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    seed: int = 0

    @property
    def ok(self) -> bool:
        """True when no flag was raised (converged, no escape, no divergence, no detected bias)."""
        return not self.flags

    def headline(self) -> str:
        """One line: the number with its flags (never a bare estimate when a diagnostic failed)."""
        line = f"lambda_hat = {self.llc:.4f} +/- {self.se:.4f}"
        if self.flags:
            return line + "  [NOT TRUSTWORTHY: " + "; ".join(self.flags) + "]"
        return line + f"  [converged: R-hat {self.rhat:.3f}, ESS {self.ess:.0f}]"

    def _lower_region_lines(self) -> list[str]:
        """The summary's lines for rejected proposals that reached below every kept draw (each rung's)."""
        rungs = self.config.get("rungs")
        found = [(r.get("nbeta"), (r.get("config") or {}).get("lower_region")) for r in rungs] if rungs else [
            (None, self.config.get("lower_region"))]
        return [
            "  lower region    " + (f"at nbeta {nb:.6g}: " if nb is not None else "") + lower_region_note(x)
            for nb, x in found if x
        ]

    def _gradient_term_lines(self) -> list[str]:
        """The summary's lines for the first-order term of the gradient at w* (each rung's)."""
        rungs = self.config.get("rungs")
        found = [(r.get("nbeta"), (r.get("config") or {}).get("gradient_term")) for r in rungs] if rungs \
            else [(None, self.config.get("gradient_term"))]
        found = [(nb, t) for nb, t in found if t]
        if len(found) > 1 and not any(gradient_note_due(t) for _, t in found):  # a ladder: one line
            big = max(found, key=lambda x: abs(x[1]["term"]))[1]
            return [f"  gradient at w*  |grad L_n| {big['grad_norm']:.3g}, first-order term negligible at "
                    f"every rung (largest {big['term']:.4g} +/- {big['se']:.2g})"]
        lines = []
        for nb, t in found:
            se = f" +/- {t['se']:.2g}" if math.isfinite(t["se"]) else ""
            lines.append(
                "  gradient at w*  " + (f"at nbeta {nb:.6g}: " if nb is not None else "")
                + (gradient_term_note(t) if gradient_note_due(t) else
                   f"|grad L_n| {t['grad_norm']:.3g}, first-order term {t['term']:.4g}{se} (negligible)")
            )
        return lines

    def summary(self) -> str:
        """A readable table of the estimate, its estimand and its diagnostics."""
        c = self.config
        lines = [self.headline()]
        if self.asymptotic is not None:
            a = self.asymptotic
            ok = "" if all(a.converged) else "  [some rungs not converged]"
            if a.misfit:
                dof = len(a.nbeta) - 2
                ok += (
                    f"  [rungs scattered beyond their errors: chi2 {a.chi2:.1f} on {dof} dof, p = "
                    f"{a.pvalue:.1g} (a wrong form at these n beta, or understated rung errors); the "
                    f"error is inflated x{math.sqrt(a.chi2 / dof):.2g} for it]"
                )
            prec = c.get("asymptotic_precision")
            if prec:
                ok += f"  [{precision_note(prec, c.get('max_draws'))}]"
            m, p = int(c.get("multiplicity", 1) or 1), float(c.get("correction_exponent", 1.0) or 1.0)
            if m > 1 or p < 1:
                ok += f"  [{SLOW_FORM_NOTE}]"
            lines.append(
                f"  asymptotic lambda (fit {fit_form(m, p)} over n beta = "
                f"{', '.join(f'{v:.4g}' for v in a.nbeta)}): {a.llc:.4f} +/- {a.se:.4f}{ok}"
            )
        lines += [
            f"  estimand        {self.estimand}",
            f"  potential       {c.get('description', '?')}",
            f"  d, n, nbeta     {c.get('d', '?')}, {self.n}, {self.nbeta:.6g}  "
            f"(localization {c.get('localization', math.nan):.4g})",
            f"  sampler         {self.sampler}, step size {c.get('step_size_mean', math.nan):.3g}"
            + (" (adapted)" if c.get("step_size") is None else " (given)")
            + (
                f", after {len(c['step_retry'])} smaller-step re-run(s): the bias check found the searched "
                "step's correction too large"
                if c.get("step_retry")
                else ""
            )
            + (
                f", acceptance {self.acceptance:.3f}"
                if math.isfinite(self.acceptance)
                else ", acceptance not computed (the bias check measures the step's error)"
                if self.bias_check is not None
                else ""
            )
            + (
                f", {c['num_leapfrog_used']} leapfrog step{'' if c['num_leapfrog_used'] == 1 else 's'}"
                + (" (localization integrated exactly)" if c.get("exact_localization_used") else "")
                if c.get("num_leapfrog_used") is not None
                else ""
            ),
            f"  chains x draws  {len(self.diverged)} x {self.num_draws} (warmup {c.get('num_burnin', '?')}, "
            f"seed {self.seed})",
            f"  R-hat, ESS      {self.rhat:.4f}, {self.ess:.0f}  (targets {c.get('target_rhat', '?')}, "
            f"{c.get('target_ess', '?')})",
            f"  below L(w*)     {self.frac_below_anchor:.3f} of draws",
            *self._lower_region_lines(),
            *self._gradient_term_lines(),
            f"  excluded        {int(np.sum(self.diverged))} of {len(self.diverged)} chains (diverged or "
            "stopped moving)",
            f"  cost            {self.num_grads} gradient evaluations, {self.seconds:.1f} s wall, "
            f"{self.cpu_seconds:.1f} s CPU",
            "  per chain       " + " ".join(f"{v:.3f}" for v in np.asarray(self.llc_per_chain)),
        ]
        cal = c.get("calibration_used")
        if cal:
            src = ", ".join(f"{k} {v}" for k, v in cal.get("source", {}).items()) or "another estimate"
            how = (
                f"refreshed by a full warmup (the re-tuned step size was x{cal['step_size_ratio']:.3g} the "
                "reused one)"
                if cal["refreshed"]
                else f"re-tuned step size x{cal['step_size_ratio']:.3g}"
            )
            first = cal.get("retried")
            head = "  calibration     reused from "
            if first:
                lines.append(
                    f"{head}{src} ({first['warmup']} warmup transitions): that run ended flagged "
                    f"({first['llc']:.4f} +/- {first['se']:.4f}, R-hat {first['rhat']:.3f}, ESS "
                    f"{first['ess']:.0f}), so the estimate was run again with its own full warmup "
                    f"({cal['warmup']} transitions): these numbers; the cost line counts both runs"
                )
            else:
                lines.append(f"{head}{src}, {cal['warmup']} warmup transitions; {how}")
        if self.bias_check is not None:
            b = self.bias_check
            diff, sd = abs(b["difference"]), b["se_difference"]
            limit = b.get("extrapolation_limit")
            removed = (
                f"removed by the extrapolation below where twice the difference is at most {limit:.0%} of "
                "the estimate; beyond that " if limit is not None else ""
            )
            lines.append(
                f"  bias check      coupled chain at half the step: {b['llc_half_step']:.4f}; difference "
                f"{b['difference']:.4f} +/- {sd:.4f}, so a bias of about {diff:.3g} to {2 * diff:.3g}, "
                f"at most about {2 * (diff + 3 * sd):.3g} ({removed}flagged when the difference exceeds 3 SE "
                "and twice it exceeds the estimate's SE)"
            )
            if "llc_extrapolated" in b and math.isfinite(b["llc_extrapolated"]):
                if b["extrapolation_reliable"]:
                    lines.append(
                        "  extrapolated    lambda_hat above is the Richardson-Romberg extrapolation to step "
                        f"0, lambda(step) - 2 x difference; at the step itself {b['llc_step']:.4f} +/- "
                        f"{b['se_step']:.4f}"
                    )
                else:
                    lines.append(
                        f"  extrapolated    not reliable: the correction is {b['relative_correction']:.0%} "
                        "of the estimate (the bias is no longer linear in the step); use a smaller step_size"
                    )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ------------------------------------------------------------------ serialisation
    def _fields(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("trace",)}
        out["asymptotic"] = None if self.asymptotic is None else self.asymptotic.to_dict()
        out["calibration"] = None if self.calibration is None else self.calibration.to_dict()
        return to_jsonable(out)

    def to_dict(self, traces: bool = True) -> dict[str, Any]:
        """JSON-ready dictionary (with the ``(chain, draw)`` traces as nested lists if ``traces``), with
        ``ok`` (no flag raised) for readers of the file alone; ``from_json`` ignores it (it follows from
        ``flags``)."""
        out = {**self._fields(), "ok": self.ok}
        if traces and self.trace is not None:
            out["traces"] = {
                grp + "/" + k: to_jsonable(np.asarray(v.values))
                for grp in ("posterior", "sample_stats")
                if hasattr(self.trace, grp)
                for k, v in getattr(self.trace, grp).data_vars.items()
            }
        return out

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False))

    def to_netcdf(self, path: str | Path) -> Path:
        """Write the trace (InferenceData) with the result fields in the posterior attrs, atomically: all of
        them as JSON under ``llc_result`` (read back by :meth:`from_netcdf`), and the estimate, its standard
        error, whether it converged and the seed as plain attributes for readers of the file alone
        (``arviz.from_netcdf(path).posterior.attrs``)."""
        idata = self.trace.copy()
        idata.posterior.attrs["llc_result"] = json.dumps(self._fields(), allow_nan=False)
        idata.posterior.attrs.update(
            llc=float(self.llc), se=float(self.se), converged=int(self.converged), ok=int(self.ok),
            seed=int(self.seed),
        )
        with atomic_path(path) as tmp:
            idata.to_netcdf(str(tmp), engine="h5netcdf")
        return Path(path)

    @classmethod
    def _from_fields(cls, f: dict[str, Any], trace: Any) -> LLCResult:
        floats = (
            "llc",
            "se",
            "rhat",
            "ess",
            "nbeta",
            "anchor_loss",
            "acceptance",
            "frac_below_anchor",
            "seconds",
            "cpu_seconds",
        )
        kw = {k: f[k] for k in cls.__dataclass_fields__ if k in f and k != "trace"}
        for k in floats:
            kw[k] = as_float(f[k])
        kw["flags"] = tuple(f["flags"])
        kw["llc_per_chain"] = np.array([as_float(v) for v in f["llc_per_chain"]])
        kw["diverged"] = np.array(f["diverged"], dtype=bool)
        kw["asymptotic"] = None if f.get("asymptotic") is None else AsymptoticFit.from_dict(f["asymptotic"])
        # JSON has no NaN (written as null): the number dicts the summary formats get their NaNs back
        if kw.get("bias_check") is not None:
            kw["bias_check"] = _nan_for_null(kw["bias_check"])
        config = dict(kw.get("config") or {})
        for c in [config, *(r.get("config") or {} for r in config.get("rungs") or [])]:
            if c.get("gradient_term") is not None:
                c["gradient_term"] = _nan_for_null(c["gradient_term"])
        kw["config"] = config
        kw["calibration"] = None if f.get("calibration") is None else Calibration.from_dict(f["calibration"])
        return cls(trace=trace, **kw)

    @classmethod
    def from_netcdf(cls, path: str | Path) -> LLCResult:
        """Read a result written by :meth:`to_netcdf`."""
        idata = read_netcdf(str(path))
        return cls._from_fields(json.loads(idata.posterior.attrs["llc_result"]), idata)

    @classmethod
    def from_json(cls, path: str | Path) -> LLCResult:
        """Read a result written by :meth:`to_json` (the traces are rebuilt as InferenceData)."""
        f = read_json(path, "LLC result")
        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
        for key, v in f.get("traces", {}).items():
            grp, name = key.split("/", 1)
            groups[grp][name] = np.array([[as_float(x) for x in row] for row in v])
        trace = inference_data(groups["posterior"], groups["sample_stats"]) if groups["posterior"] else None
        return cls._from_fields(f, trace)
