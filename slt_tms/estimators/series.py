r"""The LLC over training: one estimate per checkpoint of a training run, as one tidy table.

:func:`estimate_llc_series` estimates :math:`\hat\lambda(w^*_t)` at every checkpoint :math:`w^*_t` of one
architecture on the same data, with the estimator of :func:`~slt_tms.estimators.llc.estimate_llc` (same
defaults, same diagnostics, same flags). Checkpoints are estimated in batches of ``batch`` checkpoints: their
chains are stacked on one chain axis and share every gradient evaluation and the warmup run (each chain
still adapts its own step size and metric, each checkpoint stops when it has converged), so a batch costs
little more than one estimate for small models; every checkpoint's numbers equal those of
``estimate_llc`` on that checkpoint alone with the same seed (up to floating-point summation order). With
a restriction (``params`` / ``masks``) the frozen parameters differ between checkpoints, so checkpoints
are then estimated one after the other.

Resumable runs: :func:`series_tasks` + :func:`run_series_task` express a series over checkpoint FILES as
tasks of :func:`slt_tms.sweep.run_sweep` (local processes or Dask); a killed run continues where it
stopped. The command ``slt-tms llc CKPT... --model MODULE:FACTORY --data FILE`` uses them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slt_tms._rng import spawn_seeds
from slt_tms.estimators.config import LLCConfig, default_nbeta
from slt_tms.estimators.engine import Group, run_groups
from slt_tms.estimators.llc import _resolve_config
from slt_tms.estimators.result import LLCResult
from slt_tms.io.checkpoints import load_state_dict_file
from slt_tms.potentials import from_module
from slt_tms.validation import check_device, check_int, check_seed

__all__ = ["SERIES_COLUMNS", "LLCSeries", "estimate_llc_series", "step_from_name"]

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
    "flags",
)


def step_from_name(name: str) -> int | None:
    """The training step encoded in a checkpoint name: the last integer in it (None if there is none).

    Examples
    --------
    >>> step_from_name("ckpt_step000120.safetensors"), step_from_name("final.pt")
    (120, None)
    """
    found = re.findall(r"\d+", Path(str(name)).stem)
    return int(found[-1]) if found else None


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
        """The tidy table: one dict per checkpoint with the keys of :data:`SERIES_COLUMNS`."""
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
                "flags": "; ".join(r.flags),
            }
            for s, nm, r in zip(self.steps, self.names, self.results, strict=True)
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
        """One line per checkpoint, flags marked."""
        lines = [f"{'step':>8} {'lambda_hat':>11} {'se':>7} {'R-hat':>6} {'ESS':>6}  status"]
        for row in self.rows():
            status = "ok" if row["ok"] else "NOT TRUSTWORTHY: " + row["flags"]
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
    progress: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> LLCSeries:
    r"""Estimate the LLC at every checkpoint of one training run (module docstring).

    Parameters
    ----------
    checkpoints : sequence of paths or state dicts
        The checkpoints, in training order (files: safetensors or ``torch.save`` state dicts, loaded with
        ``weights_only=True``).
    make_model : callable
        ``make_model() -> nn.Module`` of the architecture; each checkpoint is loaded into it.
    data, config, loss, evaluate, params, masks, n, device, dtype, overrides
        As in :func:`~slt_tms.estimators.llc.estimate_llc`.
    steps : sequence of int, optional
        Training steps of the checkpoints (default: the last integer in each file name, else the index).
    batch : int
        Checkpoints per batched run (memory: ``batch * num_chains`` chains at once).
    seed : int
        Root seed: checkpoint ``i`` uses ``spawn_seeds(seed, len(checkpoints))[i]`` (also when estimated
        alone, so the series equals one-by-one estimates with those seeds).

    Returns
    -------
    LLCSeries

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
    check_seed(seed)
    batch = check_int("batch", batch, minimum=1)
    if not checkpoints:
        raise ValueError("estimate_llc_series needs at least one checkpoint")
    if device is not None:
        check_device(device)  # before the model factory runs
    cfg = _resolve_config(config, overrides)
    if cfg.ladder is not None:
        raise ValueError(
            "ladder= is not supported in a series; estimate the asymptotic lambda of single "
            "checkpoints with estimate_llc"
        )
    names = [
        Path(c).name if isinstance(c, str | Path) else f"checkpoint {i}" for i, c in enumerate(checkpoints)
    ]
    if steps is None:
        steps = [
            step_from_name(nm) if isinstance(c, str | Path) and step_from_name(nm) is not None else i
            for i, (c, nm) in enumerate(zip(checkpoints, names, strict=True))
        ]
    if len(steps) != len(checkpoints):
        raise ValueError(f"steps has {len(steps)} entries for {len(checkpoints)} checkpoints")
    seeds = spawn_seeds(seed, len(checkpoints))
    results: list[LLCResult] = []
    template = make_model()
    if not isinstance(template, nn.Module):
        raise ValueError(f"make_model() must return an nn.Module, got {type(template).__name__}")

    def potential(ckpt: Any) -> Any:
        model = make_model()
        model.load_state_dict(_state(ckpt), strict=True)
        return from_module(
            model,
            data,
            loss=loss,
            evaluate=evaluate,
            params=params,
            masks=masks,
            n=n,
            device=device,
            dtype=dtype,
        )

    shared = params is None and not masks
    step = batch if shared else 1
    for start in range(0, len(checkpoints), step):
        chunk = list(range(start, min(start + step, len(checkpoints))))
        pots = [potential(checkpoints[i]) for i in chunk]
        pot = pots[0]
        n_eff = int(pot.n if n is None else n)
        nbeta = cfg.nbeta if cfg.nbeta is not None else default_nbeta(n_eff)
        groups = [
            Group(
                p.w_star,
                p.anchor_loss(),
                nbeta,
                seeds[i],
                None,
                {"checkpoint": names[i], "step": int(steps[i])},
            )
            for p, i in zip(pots, chunk, strict=True)
        ]
        results.extend(run_groups(pot, groups, cfg, n=n_eff, progress=progress))
    return LLCSeries(
        tuple(int(s) for s in steps),
        tuple(names),
        tuple(results),
        {**cfg.to_dict(), "seed": seed, "batch": batch, "checkpoint_seeds": seeds},
    )
