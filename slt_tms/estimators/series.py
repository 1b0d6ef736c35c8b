r"""The LLC over training: one estimate per checkpoint of a training run, as one tidy table.

:func:`estimate_llc_series` estimates :math:`\hat\lambda(w^*_t)` at every checkpoint :math:`w^*_t` of one
architecture on the same data, with the estimator of :func:`~slt_tms.estimators.llc.estimate_llc` (same
defaults, same diagnostics, same flags). Checkpoints are estimated in batches of ``batch`` checkpoints: their
chains are stacked on one chain axis and share every gradient evaluation and the warmup run (each chain
still adapts its own step size and metric, each checkpoint stops when it has converged), so a batch costs
little more than one estimate for small models; every checkpoint's numbers equal those of
``estimate_llc`` on that checkpoint alone with the same seed and the same reused calibration (below; up to
floating-point summation order; both redo a run that calibration left flagged, by the same rule, and both
run an SGLD estimate again at a smaller step when its final bias check finds the searched step too large
to extrapolate from). With
a restriction (``params`` / ``masks``) the frozen parameters differ between checkpoints, so checkpoints
are then estimated one after the other.

One calibration, reused
-----------------------
With a Metropolis-adjusted sampler (HMC, the default for full-batch data, or MALA) the last checkpoint is
estimated first, alone, with the full warmup; its adapted step size and diagonal metric (a
:class:`~slt_tms.estimators.result.Calibration`) then start the chains of every other checkpoint, whose
warmup only re-tunes the step size and carries the chains into the posterior:
``max(num_burnin // 5, 20)`` transitions instead of ``num_burnin``. The reuse is re-checked per
checkpoint: a batch in which some checkpoint's re-tuned step size differs from the reused one by more
than a factor 3 (its geometry changed) runs the full warmup after all. A reused calibration cannot bias
the estimate (the kernel's stationary law is the checkpoint's posterior at any step size and metric); it
only changes the cost, and the convergence check still decides when each checkpoint stops. Measured on
the 20 checkpoints of a tiny GPT-2 (3952 parameters): the same ESS per draw as with a full warmup, at
60% of the gradient evaluations per checkpoint. The short warmup sees less of a target whose curvature
varies from place to place, so a run from a reused calibration that ends with a chain that stopped moving
or diverged, or not converged within the budget (unless ``num_draws`` fixes the length, or the checkpoint
the calibration came from did not converge either), is redone once with the checkpoint's own full warmup
and the same seed: the row is that run (exactly ``estimate_llc(..., seed=seeds[i])``), its cost counts
both, and ``config["calibration_used"]["retried"]`` keeps the first run's estimate, diagnostics and flags.
``reuse_calibration=False`` gives every batch its full warmup; each row's ``config["calibration_used"]``
records what was reused.

Resumable runs
--------------
:func:`~slt_tms.estimators.series_sweep.estimate_llc_series_resumable` runs a series over checkpoint FILES
(a model factory ``"MODULE:FACTORY"``, a data file) through the sweep executor
:func:`slt_tms.sweep.run_sweep`: one task per batch of checkpoints
(:func:`~slt_tms.estimators.series_sweep.series_tasks` builds them,
:func:`~slt_tms.estimators.series_sweep.run_series_task` runs one), each finished
batch saved atomically in ``work_dir`` (its numbers in JSON, its traces in safetensors). A run killed at
any point (``kill -9`` included) and started again with the same arguments loads the finished batches,
redoes none of them and computes the rest; the table equals that of an uninterrupted run number for
number (the same batches with the same seeds give the same arithmetic). A task's key covers the SHA-256
of its checkpoint and data files and every estimator setting, so a changed file or setting is computed
afresh, never mixed with old results. The command ``slt-tms llc CKPT... --model MODULE:FACTORY --data
FILE --out DIR`` uses it (``DIR/series/``).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slt_tms._rng import spawn_seeds
from slt_tms.estimators.config import LLCConfig, default_nbeta
from slt_tms.estimators.engine import Group, announce
from slt_tms.estimators.llc import _resolve_config, run_estimates
from slt_tms.estimators.result import Calibration, LLCResult, gradient_note_due
from slt_tms.io.checkpoints import load_state_dict_file
from slt_tms.io.user_models import match_state_dict, state_dict_mismatch, wrapper_note
from slt_tms.potentials import from_module, nonfinite_parameters, with_grad_mode
from slt_tms.validation import check_device, check_int, check_seed

__all__ = [
    "SERIES_COLUMNS",
    "LLCSeries",
    "estimate_llc_series",
    "refuse_repeated_steps",
    "step_from_name",
    "unnumbered_among_numbered",
    "warn_gradient_notes",
]

#: Columns of the tidy table, in order.
SERIES_COLUMNS: tuple[str, ...] = (
    "step",
    "checkpoint",
    "lambda_hat",
    "se",
    "rhat",
    "ess",
    "converged",
    "ok",
    "anchor_loss",
    "nbeta",
    "num_draws",
    "grad_norm",
    "first_order_term",
    "first_order_term_se",
    "first_order_status",
    "flags",
)


#: A number right after one of these words in a checkpoint name is its training step (``step20_lr1e-3``:
#: 20, not the 3 of the learning rate).
_STEP_WORD = re.compile(r"(?:step|steps|iter|iteration|epoch|ckpt|checkpoint)[_\-=]?(\d+)", re.IGNORECASE)


def step_from_name(name: str) -> int | None:
    """The training step encoded in a checkpoint name (None if there is none): the number after the
    last of the words step, iter, iteration, epoch, ckpt or checkpoint (``_``, ``-`` or ``=``
    between them allowed), else the last integer in the name.

    Examples
    --------
    >>> step_from_name("ckpt_step000120.safetensors"), step_from_name("final.pt")
    (120, None)
    >>> step_from_name("step20_lr1e-3.pt"), step_from_name("model_500.pt")
    (20, 500)
    """
    stem = Path(str(name)).stem
    keyed = _STEP_WORD.findall(stem)
    if keyed:
        return int(keyed[-1])
    found = re.findall(r"\d+", stem)
    return int(found[-1]) if found else None


def refuse_repeated_steps(names: Sequence[str], steps: Sequence[int]) -> None:
    """Refuse a series whose names give two checkpoints the same step (its rows, order and calibration
    would be wrong): one line naming them and the fix."""
    seen: dict[int, str] = {}
    for nm, st in zip(names, steps, strict=True):
        if st in seen:
            raise ValueError(
                f"{seen[st]} and {nm} both read as training step {st} from their names: name each checkpoint "
                "with its own step (e.g. step_200.pt), or give the steps (steps=[...] from Python)"
            )
        seen[st] = nm


def unnumbered_among_numbered(names: Sequence[str]) -> list[str]:
    """The names without a step number when others have one (their steps would be on another scale than
    the others', so such a series is refused); empty when every name or none has one.

    Examples
    --------
    >>> unnumbered_among_numbered(["ckpt_10.pt", "final.pt"]), unnumbered_among_numbered(["a.pt", "b.pt"])
    (['final.pt'], [])
    """
    bare = [nm for nm in names if step_from_name(nm) is None]
    return bare if len(bare) < len(names) else []


@dataclass(frozen=True)
class LLCSeries:
    """Estimates over checkpoints.

    Attributes
    ----------
    steps : tuple of int
        Training step of each checkpoint.
    names : tuple of str
        Checkpoint names (file names, or ``"checkpoint <i>"``).
    results : tuple of LLCResult
        One full result per checkpoint (each with its InferenceData trace).
    config : dict
        The estimator configuration and the series settings.
    """

    steps: tuple[int, ...]
    names: tuple[str, ...]
    results: tuple[LLCResult, ...]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every checkpoint's estimate is trustworthy."""
        return all(r.ok for r in self.results)

    def rows(self) -> list[dict[str, Any]]:
        r"""The tidy table: one dict per checkpoint with the keys of :data:`SERIES_COLUMNS`
        (``grad_norm``: :math:`\lVert\nabla L_n(w^*)\rVert`; ``first_order_term`` and its ``_se``: the part
        :math:`n\beta\,\nabla L_n(w^*)\cdot(\mathbb E[w] - w^*)` of the estimate, NaN where not computed;
        ``first_order_status``: ``notable``, ``negligible`` or ``uncertain``, see
        :func:`slt_tms.estimators.gradient_term.gradient_term`)."""
        terms = [r.config.get("gradient_term") or {} for r in self.results]
        return [
            {
                "step": s,
                "checkpoint": nm,
                "lambda_hat": r.llc,
                "se": r.se,
                "rhat": r.rhat,
                "ess": r.ess,
                "converged": r.converged,
                "ok": r.ok,
                "anchor_loss": r.anchor_loss,
                "nbeta": r.nbeta,
                "num_draws": r.num_draws,
                "grad_norm": t.get("grad_norm", math.nan),
                "first_order_term": t.get("term", math.nan),
                "first_order_term_se": t.get("se", math.nan),
                "first_order_status": t.get("status", ""),
                "flags": "; ".join(r.flags),
            }
            for s, nm, r, t in zip(self.steps, self.names, self.results, terms, strict=True)
        ]

    def to_csv(self) -> str:
        """The tidy table as CSV text."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(SERIES_COLUMNS), lineterminator="\n")
        w.writeheader()
        for row in self.rows():
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return buf.getvalue()

    def summary(self) -> str:
        """One line per checkpoint, flags marked, and a note where w* is not a critical point (a first-order
        term of the gradient at w* of at least 5% of the estimate)."""
        lines = [f"{'step':>8} {'lambda_hat':>11} {'se':>7} {'R-hat':>6} {'ESS':>6}  status"]
        for row, r in zip(self.rows(), self.results, strict=True):
            status = "ok" if row["ok"] else "NOT TRUSTWORTHY: " + row["flags"]
            t = r.config.get("gradient_term")
            if gradient_note_due(t):
                unsure = ", too uncertain to rule out 5% of it" if t.get("status") == "uncertain" else ""
                status += f" (w* not critical: first-order term {t['term']:.3g} +/- {t['se']:.2g}{unsure})"
            lines.append(
                f"{row['step']:>8} {row['lambda_hat']:11.4f} {row['se']:7.4f} {row['rhat']:6.3f} "
                f"{row['ess']:6.0f}  {status}"
            )
        return "\n".join(lines)


def _state(ckpt: Any) -> Mapping[str, Tensor]:
    if isinstance(ckpt, str | Path):
        return load_state_dict_file(ckpt)
    if isinstance(ckpt, Mapping):
        return ckpt
    raise ValueError(f"a checkpoint must be a file path or a state dict, got {type(ckpt).__name__}")


def _load_into(model: Any, ckpt: Any, name: str) -> tuple[nn.Module, str | None]:
    """``model`` (a fresh instance from the factory) with the checkpoint's weights, strictly, and the key
    prefix of a training wrapper that was removed (:func:`~slt_tms.io.user_models.match_state_dict`; the
    series warns once, in :func:`_check_inputs`)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"make_model() must return an nn.Module, got {type(model).__name__}")
    state, prefix = match_state_dict(model, dict(_state(ckpt)))
    problem = state_dict_mismatch(model, state)
    if problem is not None:  # the same wording as a single checkpoint's (load_model)
        raise ValueError(f"checkpoint {name} does not fit the model: {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch's message spans several lines: one line for the user
        raise ValueError(f"checkpoint {name} does not fit the model: {' '.join(str(exc).split())}") from None
    return model, prefix


def _check_inputs(
    checkpoints: Sequence[Any], names: Sequence[str], template: nn.Module, data: Any, grad_mode: str = "auto",
    **potential: Any,
) -> None:
    """Every checkpoint loaded into (a copy of) the factory's model ``template`` and its potential built on
    the data (shapes, dtypes, labels, finite values), and the loss at each :math:`w^*_t` evaluated on
    in-memory data, before any chain runs: a bad input fails at once, in one line naming the checkpoint,
    not after earlier batches have sampled (or, in a resumable series, as a failed task of the sweep)."""
    model = copy.deepcopy(template)
    prefixed: dict[str, list[str]] = {}
    for ckpt, name in zip(checkpoints, names, strict=True):
        _, prefix = _load_into(model, ckpt, name)  # strict: every parameter and buffer replaced
        if prefix is not None:
            prefixed.setdefault(prefix, []).append(name)
        label = name if name.startswith("checkpoint ") else f"checkpoint {name}"
        bad = nonfinite_parameters(model)
        if bad:
            raise ValueError(f"{label}: parameters holding NaN or inf: {', '.join(bad)}")
        try:
            pot = with_grad_mode(from_module(model, data, **potential), grad_mode)
            anchor = None if pot.data is None or pot.data.streaming else pot.anchor_loss()
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
        if anchor is not None and not math.isfinite(anchor):
            raise ValueError(f"{label}: the loss at its weights is not finite ({anchor}) on the data")
    for prefix, which in prefixed.items():
        what = which[0] if len(which) == 1 else f"{len(which)} checkpoints ({which[0]} ... {which[-1]})"
        warnings.warn(wrapper_note(what, prefix), UserWarning, stacklevel=3)


def _names_and_steps(checkpoints: Sequence[Any], steps: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """File names (``"checkpoint <i>"`` for state dicts) and training steps (given, else the last integer of
    each file name, else the index; files some of whose names carry a number and some not are refused:
    the index would put the others on another scale)."""
    names = [
        Path(c).name if isinstance(c, str | Path) else f"checkpoint {i}" for i, c in enumerate(checkpoints)
    ]
    files = [nm for c, nm in zip(checkpoints, names, strict=True) if isinstance(c, str | Path)]
    bare = unnumbered_among_numbered(files)
    if steps is None and bare:
        raise ValueError(
            f"{len(bare)} of the {len(files)} checkpoint files have no step number in their names "
            f"({', '.join(bare[:3])}{' ...' if len(bare) > 3 else ''}) while the others do: give the "
            "training steps as steps=[...] (or rename the files with their step)"
        )
    if steps is None:
        steps = [
            step_from_name(nm) if isinstance(c, str | Path) and step_from_name(nm) is not None else i
            for i, (c, nm) in enumerate(zip(checkpoints, names, strict=True))
        ]
        files_at = [i for i, c in enumerate(checkpoints) if isinstance(c, str | Path)]  # their steps only
        refuse_repeated_steps([names[i] for i in files_at], [steps[i] for i in files_at])
    if len(steps) != len(checkpoints):
        raise ValueError(f"steps has {len(steps)} entries for {len(checkpoints)} checkpoints")
    return names, [int(s) for s in steps]


def _warn_out_of_order(names: Sequence[str], steps: Sequence[int], reuse: bool) -> None:
    """Warn where a calibration would come from a checkpoint that is not the latest in training."""
    if reuse and len(steps) > 1 and steps[-1] != max(steps):
        warnings.warn(
            f"the checkpoints are not in training order: the calibration every other estimate starts from "
            f"comes from the last one given ({names[-1]}, step {steps[-1]}), not from the latest (step "
            f"{max(steps)}); pass them sorted by step (e.g. sorted(paths, key=step_from_name))",
            UserWarning,
            stacklevel=3,
        )


def _batches(num: int, batch: int, shared: bool, reuse: bool = False) -> list[list[int]]:
    """Checkpoint indices of each batched run: ``batch`` at a time when the checkpoints sample the same
    coordinates, one at a time under a restriction (the frozen parameters then differ). With ``reuse`` the
    last checkpoint comes first, alone: its calibration starts every other run."""
    step = batch if shared else 1
    if reuse and num > 1:
        return [[num - 1]] + [list(range(a, min(a + step, num - 1))) for a in range(0, num - 1, step)]
    return [list(range(a, min(a + step, num))) for a in range(0, num, step)]


def _estimate_batch(
    pots: list[Any],
    labels: list[dict[str, Any]],
    seeds: list[int],
    cfg: LLCConfig,
    n: int | None,
    progress: bool | None,
    warn: bool = True,
    calibration: Calibration | None = None,
) -> list[LLCResult]:
    """One batched run: the checkpoints' chains stacked on one chain axis (engine), one result each.

    With a reused ``calibration``, a checkpoint whose run ends with a chain that stopped moving or diverged,
    or not converged within the budget (unless ``num_draws`` fixed the length, or the calibration's own
    run did not converge either: ``calibration.converged`` False), although its calibration was not
    refreshed, is
    estimated once more, with its own full warmup and the same seed; its row is that second run, and
    ``config["calibration_used"]["retried"]`` keeps what the first one gave (module docstring). A
    checkpoint whose SGLD step, searched, the final bias check finds too large is run again at a smaller
    step. Both are those of a single estimate (:func:`~slt_tms.estimators.llc.run_estimates`)."""
    n_eff = int(pots[0].n if n is None else n)
    nbeta = cfg.nbeta if cfg.nbeta is not None else default_nbeta(n_eff)
    groups = [
        Group(p.w_star, p.anchor_loss(), nbeta, s, None, lab, calibration)
        for p, lab, s in zip(pots, labels, seeds, strict=True)
    ]
    with warnings.catch_warnings():  # a series says it once, for all its checkpoints (warn_gradient_notes)
        warnings.filterwarnings("ignore", r"LLC estimate .*: w\* is not a critical point", RuntimeWarning)
        out = run_estimates(pots[0], groups, cfg, n_eff, progress)
        for r in out if warn else []:
            announce(r, stacklevel=4)
        return out


def warn_gradient_notes(series: LLCSeries, stacklevel: int = 3) -> None:
    """One warning for the checkpoints of a series whose first-order term of the gradient at w* is notable
    or uncertain (each estimate alone would warn on its own; a series over training has many such)."""
    found: dict[str, list[str]] = {"notable": [], "uncertain": []}
    for step, r in zip(series.steps, series.results, strict=True):
        t = r.config.get("gradient_term")
        if t and t["status"] in found:
            found[t["status"]].append(f"{step} ({t['term']:.3g} +/- {t['se']:.2g} of {r.llc:.4g})")
    parts = [f"{k} at step{'s' if len(v) > 1 else ''} {', '.join(v)}" for k, v in found.items() if v]
    if parts:
        warnings.warn(
            f"{sum(map(len, found.values()))} of {len(series.results)} checkpoints are not critical points: "
            f"the first-order term of the gradient at w* in their estimates is {'; '.join(parts)}. Their "
            "numbers are the estimand's at points that are not minima (series.summary(), the columns "
            "first_order_term, first_order_term_se and first_order_status)",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def _start(checkpoints: Sequence[Any], seed: int, batch: int, config: LLCConfig | None,
           overrides: Mapping[str, Any], device: Any) -> tuple[int, LLCConfig]:
    """Checks shared by both entry points, before any work."""
    check_seed(seed)
    batch = check_int("batch", batch, minimum=1)
    if not checkpoints:
        raise ValueError("a series needs at least one checkpoint")
    if device is not None:
        check_device(device)
    cfg = _resolve_config(config, overrides)
    if cfg.ladder is not None:
        raise ValueError(
            "ladder= is not supported in a series; estimate the asymptotic lambda of single "
            "checkpoints with estimate_llc"
        )
    return batch, cfg


def _series_config(
    cfg: LLCConfig, seed: int, batch: int, seeds: list[int], reuse: bool = False
) -> dict[str, Any]:
    return {
        **cfg.to_dict(), "seed": seed, "batch": batch, "checkpoint_seeds": seeds, "reuse_calibration": reuse,
    }


def estimate_llc_series(
    checkpoints: Sequence[str | Path | Mapping[str, Tensor]],
    make_model: Callable[[], nn.Module],
    data: Any,
    config: LLCConfig | None = None,
    *,
    steps: Sequence[int] | None = None,
    loss: str | Callable[[Tensor, Tensor], Tensor] | None = "mse",
    evaluate: Callable[..., Any] | None = None,
    params: Sequence[str] | None = None,
    masks: Mapping[str, Tensor] | None = None,
    n: int | None = None,
    batch: int = 8,
    seed: int = 0,
    reuse_calibration: bool = True,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    grad_mode: str = "auto",
    **overrides: Any,
) -> LLCSeries:
    r"""Estimate the LLC at every checkpoint of one training run (module docstring).

    At checkpoint :math:`w^*_t` the estimate is that of :func:`~slt_tms.estimators.llc.estimate_llc`,

    .. math:: \hat\lambda(w^*_t) = n\beta\,\bigl(\mathbb{E}_{w \sim p_t}[L_n(w)] - L_n(w^*_t)\bigr),
        \qquad p_t(w) \propto \exp\bigl(-n\beta L_n(w) - \tfrac{\gamma}{2}\lVert w - w^*_t\rVert^2\bigr),

    with one :math:`n\beta` (default :math:`n/\log n`) and one localization :math:`\gamma` for all
    checkpoints, so that the estimates are comparable along the run.

    Parameters
    ----------
    checkpoints : sequence of paths or state dicts
        The checkpoints, in training order (files: safetensors or ``torch.save`` state dicts, loaded with
        ``weights_only=True``).
    make_model : callable
        ``make_model() -> nn.Module`` of the architecture; each checkpoint is loaded into it.
    data, config, loss, evaluate, params, masks, n, device, dtype, grad_mode, overrides
        As in :func:`~slt_tms.estimators.llc.estimate_llc`.
    steps : sequence of int, optional
        Training steps of the checkpoints (default: the last integer in each file name; the index when
        no file name has one; refused when some do and some do not).
    batch : int
        Checkpoints per batched run (memory: ``batch * num_chains`` chains at once).
    seed : int
        Root seed: checkpoint ``i`` uses ``spawn_seeds(seed, len(checkpoints))[i]`` (also when estimated
        alone, so the series equals one-by-one estimates with those seeds).
    reuse_calibration : bool
        Estimate the last checkpoint first, alone, and start every other checkpoint from its adapted step
        size and metric (:class:`~slt_tms.estimators.result.Calibration`; Metropolis-adjusted samplers
        only): their warmup shrinks from ``num_burnin`` to ``max(num_burnin // 5, 20)`` transitions, and a
        batch whose re-tuned step size moves by more than a factor 3 falls back to a full warmup. The
        chains still sample each checkpoint's own posterior exactly; only the cost changes. Checkpoint
        ``i`` then equals ``estimate_llc(..., seed=seeds[i], calibration=series.results[-1].calibration)``.

    Returns
    -------
    LLCSeries

    Raises
    ------
    ValueError
        No checkpoint, a ladder, a checkpoint that does not fit the model, an unavailable ``device``, and
        everything :func:`~slt_tms.estimators.llc.estimate_llc` refuses, for every checkpoint before any
        chain runs (the message names the checkpoint).

    See Also
    --------
    slt_tms.estimators.series_sweep.estimate_llc_series_resumable : the same over checkpoint files,
        resumable after a crash.

    Examples
    --------
    Two checkpoints of a linear regression, early (random weights: not a minimum, so flagged) and at the
    least-squares solution (a regular minimum: lambda = d/2 = 2):

    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(500, 3, generator=g)
    >>> Y = X @ torch.randn(3, 1, generator=g) + 0.1 * torch.randn(500, 1, generator=g)
    >>> sol = torch.linalg.lstsq(torch.cat([X, torch.ones(500, 1)], 1), Y).solution
    >>> ckpts = [nn.Linear(3, 1).state_dict(), {"weight": sol[:3].T, "bias": sol[3]}]
    >>> import warnings; warnings.simplefilter("ignore")  # the early checkpoint warns: not a minimum
    >>> series = estimate_llc_series(ckpts, lambda: nn.Linear(3, 1), (X, Y), progress=False)
    >>> [(r["step"], r["ok"]) for r in series.rows()]
    [(0, False), (1, True)]
    >>> round(series.rows()[1]["lambda_hat"])
    2
    """
    batch, cfg = _start(checkpoints, seed, batch, config, overrides, device)
    names, steps = _names_and_steps(checkpoints, steps)
    seeds = spawn_seeds(seed, len(checkpoints))
    template = make_model()
    if not isinstance(template, nn.Module):
        raise ValueError(f"make_model() must return an nn.Module, got {type(template).__name__}")
    _check_inputs(checkpoints, names, template, data, grad_mode, loss=loss, evaluate=evaluate, params=params,
                  masks=masks, n=n, device=device, dtype=dtype)

    def potential(i: int) -> Any:
        model, _ = _load_into(make_model(), checkpoints[i], names[i])
        pot = from_module(
            model, data, loss=loss, evaluate=evaluate, params=params, masks=masks, n=n, device=device,
            dtype=dtype,
        )
        return with_grad_mode(pot, grad_mode)

    _warn_out_of_order(names, steps, reuse_calibration)
    results: dict[int, LLCResult] = {}
    cal: Calibration | None = None
    for idx in _batches(len(checkpoints), batch, params is None and not masks, reuse_calibration):
        out = _estimate_batch(
            [potential(i) for i in idx],
            [{"checkpoint": names[i], "step": steps[i]} for i in idx],
            [seeds[i] for i in idx],
            cfg,
            n,
            progress,
            calibration=cal,
        )
        results.update(zip(idx, out, strict=True))
        if reuse_calibration and cal is None:
            cal = out[0].calibration  # (it records whether its run converged)
    series = LLCSeries(
        tuple(steps),
        tuple(names),
        tuple(results[i] for i in range(len(checkpoints))),
        _series_config(cfg, seed, batch, seeds, reuse_calibration),
    )
    warn_gradient_notes(series)
    return series
