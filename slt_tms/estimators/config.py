r"""The one source of the LLC estimator's defaults: :class:`LLCConfig`.

Everything that runs an LLC estimate (the API, ``slt-tms llc``, the dynamics experiment, the
reproduction) reads its defaults from here; the command-line help and the documentation table are
generated from :data:`FIELD_HELP` (and a test checks they agree).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from slt_tms.validation import check_choice, check_float, check_int, check_probability

__all__ = ["FIELD_HELP", "KERNEL_DEFAULT_ACCEPT", "SAMPLERS", "LLCConfig", "default_nbeta", "defaults_table"]

#: Samplers the estimator can use. "auto": HMC (Metropolis-adjusted, adapted diagonal metric) where every
#: step can see the full loss (population and full-batch potentials), SGLD for minibatch and streamed
#: potentials. Measured (docs: estimators): MALA gives more effective samples per gradient on small
#: well-conditioned problems, but at singular minima whose flat directions are not axis-aligned (deep
#: linear networks, MLPs) its chains look converged while under-exploring (estimates biased low, worse as
#: nbeta grows); HMC's longer moves do not show that bias.
SAMPLERS: tuple[str, ...] = ("auto", "mala", "hmc", "sgld")

#: Dual-averaging targets when ``target_accept`` is None (see :mod:`slt_tms.samplers.adaptation`). HMC
#: aims at 0.95: at the normal crossing w1^2 w2^4 (n beta = 1e4) the target 0.9 gave estimates 2.2 SE low
#: on average over 10 seeds (R-hat 1.00, ESS > 1000: invisible to the diagnostics; the narrow arm of
#: the posterior is entered too rarely at the larger step), 0.95 gave -0.6 SE (docs: estimators).
KERNEL_DEFAULT_ACCEPT: dict[str, float] = {"mala": 0.9, "hmc": 0.95, "sgld": 0.9}


def default_nbeta(n: int) -> float:
    r""":math:`n\beta = n / \log n`: the inverse temperature :math:`\beta = 1/\log n` times ``n``.

    Examples
    --------
    >>> round(default_nbeta(1000), 2)
    144.76
    """
    n = check_int("n (the number of training samples)", n, minimum=2)
    return float(n) / math.log(float(n))


#: One line of help per field: the CLI flags and the docs table are generated from it.
FIELD_HELP: dict[str, str] = {
    "sampler": "kernel: 'auto' (HMC for population/full-batch losses, SGLD for minibatches), 'hmc', "
    "'mala' or 'sgld'",
    "num_chains": "independent chains (R-hat needs at least 2)",
    "num_burnin": "warmup transitions per chain (step size and metric adaptation), discarded",
    "num_draws": "kept draws per chain; None samples in blocks until converged (or max_draws); with "
                 "batch_size the bias check's draws are added to them",
    "draws_per_block": "draws per chain between two convergence checks",
    "max_draws": "budget: kept draws per chain at most (the run stops there, converged or not; with "
                 "batch_size the bias check's draws come on top)",
    "target_rhat": "convergence: split R-hat of the lambda trace at most this",
    "target_ess": "convergence: bulk ESS of the lambda trace at least this",
    "step_size": "step size; None adapts it during the warmup",
    "target_accept": "dual-averaging acceptance target; None: 0.95 for HMC, 0.9 for MALA and SGLD",
    "num_leapfrog": "leapfrog steps (gradient evaluations) per HMC transition, the step size jittered; "
    "with exact_localization the most after the warmup",
    "adapt_metric": "adapt a diagonal metric in the warmup; None: yes for HMC, no for MALA",
    "exact_localization": "HMC integrates the localization term exactly and takes about 1.2 / step leapfrog "
    "steps (at most num_leapfrog); None: where localization >= nbeta / 4",
    "nbeta": "inverse temperature times n; None: n / log n",
    "localization": "gamma of the Gaussian pull (gamma/2)|w - w*|^2 towards the anchor",
    "batch_size": "minibatch rows per chain and step (SGLD); None: full batch",
    "preconditioner": "SGLD preconditioner: None or 'rmsprop' (adapted in the warmup, then frozen)",
    "divergence_threshold": "a draw of nbeta*(L - L*) above this marks a chain diverged; None: "
    "max(1e4, 100 d)",
    "bias_check": "SGLD: measure the discretisation bias with coupled chains at the step and half the step, "
    "set the step by it (when step_size is None) and extrapolate the estimate to step 0",
    "ladder": "nbeta multipliers for the asymptotic fit lambda + a/(nbeta) (e.g. 1 2 4 8); None: no fit",
    "escape_fraction": "flag the run when more than this fraction of draws has L < L(w*)",
    "multiplicity": "ladder fit: the multiplicity m of lambda if known (m > 1 adds the -(m-1)/log(nbeta) "
    "term)",
    "correction_exponent": "ladder fit (m = 1): the exponent p of the finite-temperature term a/(nbeta)^p",
    "asymptotic_rse": "ladder fit (m = 1): the relative standard error the asymptotic lambda aims at; while "
    "its SE is above this fraction of it, the rungs run again with more draws (at most max_draws per "
    "chain); None (or 1): one pass to the ESS target",
}


@dataclass(frozen=True)
class LLCConfig:
    r"""Settings of :func:`~slt_tms.estimators.llc.estimate_llc` (every default of the estimator).

    The estimate is :math:`\hat\lambda = n\beta\,(\overline{L(w_t)} - L(w^*))` over draws of the localized
    tempered posterior :math:`p(w) \propto \exp(-n\beta L(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2)`.
    By default the chains run until the :math:`\hat\lambda` trace is converged (split R-hat
    :math:`\le 1.01`, bulk ESS :math:`\ge 400`; Vehtari et al. 2021) or the budget ``max_draws`` is spent;
    a run that stops at the budget says loudly that it did not converge.

    Parameters
    ----------
    sampler : {"auto", "mala", "hmc", "sgld"}
    num_chains, num_burnin, num_draws, draws_per_block, max_draws : int
    target_rhat, target_ess : float
    step_size : float, optional
    target_accept : float, optional
    num_leapfrog : int
    adapt_metric : bool, optional
    exact_localization : bool, optional
    nbeta : float, optional
    localization : float
    batch_size : int, optional
    preconditioner : {None, "rmsprop"}
    divergence_threshold : float, optional
    bias_check : bool
    ladder : tuple of float, optional
    escape_fraction : float
    multiplicity : int
    correction_exponent : float
    asymptotic_rse : float, optional
        Each field's meaning is in :data:`FIELD_HELP` (and in :func:`defaults_table`).

    Examples
    --------
    >>> cfg = LLCConfig(num_chains=8)
    >>> cfg.num_chains, cfg.target_ess
    (8, 400.0)
    >>> cfg.replace(max_draws=1000).max_draws
    1000
    """

    sampler: str = "auto"
    num_chains: int = 4
    num_burnin: int = 500
    num_draws: int | None = None
    draws_per_block: int = 500
    max_draws: int = 20_000
    target_rhat: float = 1.01
    target_ess: float = 400.0
    step_size: float | None = None
    target_accept: float | None = None
    num_leapfrog: int = 8
    adapt_metric: bool | None = None
    exact_localization: bool | None = None
    nbeta: float | None = None
    localization: float = 1.0
    batch_size: int | None = None
    preconditioner: str | None = None
    divergence_threshold: float | None = None
    bias_check: bool = True
    ladder: tuple[float, ...] | None = None
    escape_fraction: float = 0.2
    multiplicity: int = 1
    correction_exponent: float = 1.0
    asymptotic_rse: float | None = 0.02

    def __post_init__(self) -> None:
        check_choice("sampler", self.sampler, SAMPLERS)
        check_int("num_chains", self.num_chains, minimum=1)
        check_int("num_burnin", self.num_burnin, minimum=0)
        if self.num_draws is not None:
            check_int("num_draws", self.num_draws, minimum=2)
        elif self.num_chains < 2:
            raise ValueError(
                "num_chains=1 can never meet the R-hat target (split R-hat compares at least 2 chains), so a "
                "run until converged would spend its whole budget: use num_chains >= 2, or a fixed "
                "num_draws (the result is then flagged not converged)"
            )
        check_int("draws_per_block", self.draws_per_block, minimum=10)
        check_int("max_draws", self.max_draws, minimum=10)
        check_float("target_rhat", self.target_rhat, lower=1.0)
        check_float("target_ess", self.target_ess, positive=True)
        if self.step_size is not None:
            check_float("step_size", self.step_size, positive=True)
        if self.target_accept is not None:
            check_probability("target_accept", self.target_accept)
        check_int("num_leapfrog", self.num_leapfrog, minimum=1)
        if self.nbeta is not None:
            check_float("nbeta", self.nbeta, positive=True)
        check_float("localization", self.localization, nonnegative=True)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        check_choice("preconditioner", self.preconditioner, (None, "rmsprop"))
        if self.preconditioner is not None and self.sampler in ("mala", "hmc"):
            raise ValueError(
                "preconditioner='rmsprop' is for SGLD; MALA and HMC adapt a diagonal metric "
                "instead (adapt_metric=True)"
            )
        if self.divergence_threshold is not None:
            check_float("divergence_threshold", self.divergence_threshold, positive=True)
        if self.ladder is not None:
            lad = tuple(check_float("ladder entry", v, positive=True) for v in self.ladder)
            if len(lad) < 2 or len(set(lad)) != len(lad):
                raise ValueError(f"ladder needs at least two distinct nbeta multipliers, got {self.ladder!r}")
            object.__setattr__(self, "ladder", tuple(sorted(lad)))
        check_probability("escape_fraction", self.escape_fraction)
        check_int("multiplicity", self.multiplicity, minimum=1)
        check_float("correction_exponent", self.correction_exponent, positive=True)
        if self.asymptotic_rse is not None:
            check_float("asymptotic_rse", self.asymptotic_rse, positive=True)
        if self.sampler in ("mala", "hmc") and self.batch_size is not None:
            raise ValueError(
                f"sampler={self.sampler!r} needs the full loss at every step; it cannot use "
                "minibatches (batch_size): use sampler='sgld' or batch_size=None"
            )

    def replace(self, **changes: Any) -> LLCConfig:
        """A copy with some fields changed (validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(
                f"unknown LLCConfig fields {sorted(unknown)}; known: "
                f"{', '.join(f.name for f in fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field (JSON-ready)."""
        out = dataclasses.asdict(self)
        if out["ladder"] is not None:
            out["ladder"] = list(out["ladder"])
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the fields, in order."""
        return tuple(f.name for f in fields(cls))


#: ``exact_localization=None`` switches HMC to the exact localization flow where gamma >= this x nbeta.
EXACT_LOCALIZATION_RATIO = 0.25


def exact_localization(cfg: LLCConfig, nbetas: list[float]) -> bool:
    r"""Whether HMC integrates the localization exactly (``HMC(exact_localization=True)``): as configured,
    else where :math:`\gamma \ge n\beta / 4` for every estimate of the run (:data:`EXACT_LOCALIZATION_RATIO`).
    The localization is then a large part of the curvature of a loss whose Hessian is of order 1, and its
    exact flow allows larger steps. Measured with :math:`\gamma = 100`: 3-5 times more effective samples
    per gradient on a tiny GPT-2 (:math:`\gamma/n\beta = 11`), 5.6 times fewer seconds per effective
    sample on a 94k-parameter MLP (0.38), no clear gain on the TMS and a reduced-rank regression (0.09);
    elsewhere the plain leapfrog is kept.

    Examples
    --------
    >>> exact_localization(LLCConfig(localization=100.0), [9.2]), exact_localization(LLCConfig(), [1e3])
    (True, False)
    """
    if cfg.exact_localization is not None:
        return bool(cfg.exact_localization) and cfg.localization > 0
    return cfg.localization > 0 and all(cfg.localization >= EXACT_LOCALIZATION_RATIO * nb for nb in nbetas)


def _shown(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def defaults_table() -> str:
    """The estimator's settings as a Markdown table (field, default, meaning), built from
    :class:`LLCConfig` and :data:`FIELD_HELP`: the documentation prints this, ``slt-tms llc --help``
    shows the same defaults, so neither can drift from the code.

    Examples
    --------
    >>> print(defaults_table().splitlines()[3])
    | `num_chains` | `4` | independent chains (R-hat needs at least 2) |
    """
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for f in fields(LLCConfig):
        rows.append(f"| `{f.name}` | `{_shown(f.default)}` | {FIELD_HELP[f.name]} |")
    return "\n".join(rows)
