"""Checks of ``slt-tms llc``'s arguments that need no data: flags that would do nothing in the combination
given (refused, naming them), config messages spelled as the flags the user typed, a ``--batch-size`` of
the whole data, and the training steps of a checkpoint series read from the file names."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from slt_tms.estimators.series import refuse_repeated_steps, step_from_name, unnumbered_among_numbered

__all__ = [
    "FLAG_FIELDS",
    "STEPS_FROM",
    "cli_spelling",
    "refuse_full_batch",
    "refuse_idle_options",
    "series_steps",
    "steps_note",
]


#: The :class:`LLCConfig` fields that are flags of ``slt-tms llc`` (filled by
#: :func:`slt_tms.commands.llc.register`): :func:`cli_spelling` writes them as the user typed them.
FLAG_FIELDS: set[str] = set()
_NOT_AFTER = r"(?<![\w./-])"  # not inside a path, a file name or a flag already spelled out


def cli_spelling(message: str, fields: set[str] | None = None) -> str:
    """``message`` with the Python names of settings written as the flags of the command.

    ``name=None`` becomes ``no --name``, ``name=True`` / ``name=False`` become ``--name`` / ``--no-name``,
    ``name='v'`` and ``name=v`` become ``--name v``, and a bare ``name_with_underscores`` becomes
    ``--name-with-underscores``. A one-word name (``nbeta``, ``ladder``, ``sampler`` ...) is also an
    ordinary word of the messages ("nbeta multipliers"), so it is rewritten only where it names the
    setting: at the start of a clause, after "unknown", or before ``=``. Only ``fields`` (default: the
    :class:`LLCConfig` fields that are flags of ``slt-tms llc``) are rewritten.

    Examples
    --------
    >>> cli_spelling("num_chains=1 ...: use num_chains >= 2 or num_draws", {"num_chains", "num_draws"})
    '--num-chains 1 ...: use --num-chains >= 2 or --num-draws'
    >>> cli_spelling("use sampler='sgld' or batch_size=None", {"sampler", "batch_size"})
    'use --sampler sgld or no --batch-size'
    >>> cli_spelling("ladder needs at least two distinct nbeta multipliers", {"ladder", "nbeta"})
    '--ladder needs at least two distinct nbeta multipliers'
    """
    for field in sorted(FLAG_FIELDS if fields is None else fields, key=len, reverse=True):
        flag = "--" + field.replace("_", "-")
        named = _NOT_AFTER + re.escape(field)
        message = re.sub(named + r"=None\b", f"no {flag}", message)
        message = re.sub(named + r"=True\b", flag, message)
        message = re.sub(named + r"=False\b", "--no-" + flag[2:], message)
        message = re.sub(named + r"='([^']*)'", lambda m, f=flag: f"{f} {m.group(1)}", message)
        message = re.sub(named + r"=(?=[\w.+-])", f"{flag} ", message)
        message = re.sub(named + "=", flag, message)
        if "_" in field:
            message = re.sub(named + r"(?![\w/-])(?!\.\w)", flag, message)
        else:
            message = re.sub(r"(^|unknown |; |: )" + re.escape(field) + "(?= )",
                             lambda m, f=flag: m.group(1) + f, message)
    return re.sub(r"(--[\w-]+) \(\1\)", r"\1", message)  # "--max-draws (--max-draws)": once


def _spelled(field: str, overrides: dict[str, Any]) -> str:
    """The flag of an LLCConfig field as it was given (``--no-bias-check`` for a False boolean)."""
    name = field.replace("_", "-")
    return f"--no-{name}" if overrides.get(field) is False else f"--{name}"


def _idle(given: list[str], why: str, fix: str) -> ValueError:
    flags = " and ".join(given)
    return ValueError(f"{flags} {'does' if len(given) == 1 else 'do'} nothing {why}: {fix}")


def refuse_idle_options(ns: argparse.Namespace, overrides: dict[str, Any], *, critical: bool,
                        several: bool = False, default_ladder: tuple[float, ...] | None = None) -> None:
    """Refuse a flag that would change nothing in this combination (it would be accepted and ignored,
    and the user would believe it had acted), naming it and what to do, before anything is read or
    sampled. ``overrides`` are the LLCConfig fields given on the command line (``--no-ladder`` already
    applied); ``several``: more than one checkpoint (a series)."""
    def given(*fields: str) -> list[str]:
        return [_spelled(f, overrides) for f in fields if f in overrides]

    if critical:
        off = [flag for flag, on in (("--x-key", ns.x_key is not None), ("--y-key", ns.y_key is not None),
                                     ("--loss", ns.loss is not None), ("--params", ns.params is not None),
                                     ("--trust-torchscript", ns.trust_torchscript),
                                     ("--no-reuse-calibration", ns.no_reuse_calibration),
                                     ("--grad-mode", ns.grad_mode is not None)) if on]
        if off:
            raise _idle(off, f"with --tms-critical ({'it concerns' if len(off) == 1 else 'they concern'} "
                        f"CHECKPOINT... and --data)", f"drop {' and '.join(off)}")
        ladder = default_ladder if "ladder" not in overrides else overrides["ladder"]
    else:
        if ns.no_ladder:
            raise _idle(["--no-ladder"], "without --tms-critical (a checkpoint gets a ladder only with "
                        "--ladder)", "drop --no-ladder")
        if ns.trust_torchscript and not ns.torchscript:
            raise _idle(["--trust-torchscript"], "without --torchscript (a state_dict loaded into --model "
                        "runs no code from the file)", "drop --trust-torchscript")
        if several and overrides.get("ladder") is not None:
            raise ValueError("--ladder fits one checkpoint at a time, not a series: give one CHECKPOINT with "
                             "--ladder, or drop --ladder")
        ladder = overrides.get("ladder")
    fit = given("multiplicity", "correction_exponent", "asymptotic_rse")
    if ladder is None and fit:
        they = " and ".join(fit)
        raise _idle(fit, f"without a ladder ({'it shapes' if len(fit) == 1 else 'they shape'} the asymptotic "
                    "fit over the --ladder rungs)", f"drop {they} or --no-ladder" if critical
                    else f"add --ladder M M ... (e.g. --ladder 1 2 4 8) or drop {they}")
    m = overrides.get("multiplicity", 1)
    if "correction_exponent" in overrides and m > 1:
        raise _idle(given("correction_exponent"), f"with --multiplicity {m} (m > 1 fits the "
                    "-(m-1)/log(nbeta) term, not a/(nbeta)^p)",
                    "drop --correction-exponent or --multiplicity")
    if "asymptotic_rse" in overrides and m > 1:
        raise _idle(given("asymptotic_rse"), f"with --multiplicity {m} (the rungs run longer only for "
                    "m = 1: the log-term fit's model error does not shrink with more draws)",
                    "drop --asymptotic-rse or --multiplicity")
    budget = given("max_draws", "draws_per_block", "asymptotic_rse")
    if "num_draws" in overrides and budget:
        raise _idle(budget, "with --num-draws (a fixed number of draws, taken in one block; they shape a run "
                    "until converged)", f"give --num-draws or {' and '.join(budget)}, not both")
    if "target_accept" in overrides and "step_size" in overrides:
        raise _idle(["--target-accept"], "with --step-size (it steers the step-size adaptation, which a "
                    "fixed step skips)", "drop --target-accept or --step-size")
    sampler = overrides.get("sampler", "auto")
    minibatch = "batch_size" in overrides  # (one not below the rows is refused once they are known)
    if sampler != "auto":
        kernel, used = sampler, f"--sampler {sampler}"
    elif minibatch:
        kernel, used = "sgld", "SGLD (--sampler auto with --batch-size)"
    else:
        population = critical and (ns.potential or "population") == "population"
        exact = "population loss" if population else "full batch"
        kernel, used = "hmc", f"HMC (--sampler auto on the {exact})"
    rules = (
        (("num_leapfrog", "exact_localization"), kernel != "hmc", "HMC", "--sampler hmc, no --batch-size"),
        (("adapt_metric",), kernel == "sgld", "HMC and MALA", "--sampler hmc or mala, no --batch-size"),
        (("preconditioner", "bias_check"), kernel != "sgld", "SGLD", "--sampler sgld"),
    )
    for fields, idle, applies, instead in rules:
        flags = given(*fields)
        if idle and flags:
            they = "it applies" if len(flags) == 1 else "they apply"
            raise _idle(flags, f"with {used[:-1]}; {they} to {applies} only)" if used.endswith(")")
                        else f"with {used} ({they} to {applies} only)",
                        f"drop {' and '.join(flags)}, or use {instead}")
    if minibatch and "escape_fraction" in overrides:
        raise _idle(["--escape-fraction"], "with --batch-size (the escape check needs the full loss at every "
                    "draw)", "drop --escape-fraction or --batch-size")
    if ns.no_reuse_calibration and not critical:
        why = ("with a single checkpoint (a calibration is reused between the checkpoints of a series)"
               if not several else "with --step-size (a fixed step: no calibration to reuse)"
               if "step_size" in overrides else "with SGLD (calibrations are reused by HMC and MALA only)"
               if kernel == "sgld" else None)
        if why is not None:
            raise _idle(["--no-reuse-calibration"], why, "drop --no-reuse-calibration")


def refuse_full_batch(batch_size: int | None, rows: int, what: str) -> None:
    """A ``--batch-size`` that is not below the number of rows is the full batch: refused."""
    if batch_size is not None and batch_size >= rows:
        raise ValueError(
            f"--batch-size {batch_size} is not below the {rows} rows of {what}: that minibatch is the full "
            "batch; drop --batch-size (or give a smaller one for minibatches)"
        )


#: How the steps of a series were found (recorded as ``steps_from`` in ``llc_series.json``).
STEPS_FROM = {"names": "the step number in each file name (after 'step', 'iter', 'epoch' or 'ckpt', else the "
                       "last number)", "order": "the files' order as given (0, 1, ...)"}


def series_steps(paths: list[Path]) -> tuple[list[int] | None, str]:
    """The training steps of a series: the last number in each file name when every name has one
    (``None``: the estimators read them so), else the files' order; a mix of names with and without a
    number is refused (their steps would be on two scales)."""
    if len(paths) < 2:
        return None, "names"
    steps = [step_from_name(p.name) for p in paths]
    if all(st is not None for st in steps):
        refuse_repeated_steps([p.name for p in paths], steps)  # type: ignore[arg-type]
        return None, "names"
    bare = unnumbered_among_numbered([p.name for p in paths])
    if bare:
        which = (f"{bare[0]} has no step number in its name" if len(bare) == 1 else
                 f"{len(bare)} of the {len(paths)} checkpoints have no step number in their names ("
                 + ", ".join(bare[:5]) + (" ..." if len(bare) > 5 else "") + ")")
        raise ValueError(
            f"{which} while the others do, so its place in training is unknown: rename each with its "
            "training step (e.g. final.pt -> ckpt_5000.pt) or leave it out"
        )
    return list(range(len(paths))), "order"


def steps_note(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    return f"no checkpoint name carries a step number ({shown})"
