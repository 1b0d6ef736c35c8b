r"""``slt-tms llc``: the local learning coefficient of checkpoints of your own model, or of a TMS critical
point.

* **Checkpoints of any PyTorch model.** ``slt-tms llc CKPT... --model MODULE:FACTORY --data FILE`` builds
  the model with ``FACTORY()`` (a zero-argument callable in ``MODULE``, an importable module or a ``.py``
  path), loads each checkpoint into it as a ``state_dict`` (safetensors, or ``torch.load`` with
  ``weights_only=True``: no pickle that could run code) and estimates the LLC on the data file (inputs
  under ``x``, targets under ``y``). Several checkpoints (shell globs welcome) give the LLC over training:
  one row per checkpoint in ``llc_series.csv`` and a figure ``llc_series.png``; each finished batch of
  checkpoints is saved in ``DIR/series/`` at once, so a killed run rerun into the same ``--out`` computes
  only what is missing and gives the same table. ``--params PATTERN...``
  restricts the estimate to the named parameters (a restricted LLC). A TorchScript archive
  (``--torchscript``) carries code that runs when it is loaded and evaluated: it is loaded only with
  ``--trust-torchscript``.
* **A TMS critical point.** ``slt-tms llc --tms-critical 5+ --c 6`` estimates at the named k-gon with the
  closed-form population loss at n = 100 000 and, by default, also extrapolates over the ladder
  nbeta x (1, 2, 4, 8) to the asymptotic lambda (within 5% of theory at the c = 5..8 polygons and at
  5, 5+ and 6 for c = 6).

Every estimator flag (``--num-chains``, ``--max-draws``, ``--sampler`` ...) comes from
:class:`slt_tms.estimators.LLCConfig`: its defaults are the library's. By default chains run until split
R-hat <= 1.01 and ESS >= 400 or the budget is spent; an estimate that is not trustworthy is printed with
``NOT TRUSTWORTHY`` and its reasons, and ``--strict`` makes the command exit with status 3.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from slt_tms._rng import spawn_seeds
from slt_tms.commands._args import add_command, add_dataclass_flags, dataclass_overrides
from slt_tms.commands._llc_checks import (
    FLAG_FIELDS,
    STEPS_FROM,
    cli_spelling,
    refuse_full_batch,
    refuse_idle_options,
    series_steps,
    steps_note,
)
from slt_tms.estimators import FIELD_HELP, LLCConfig, estimate_llc
from slt_tms.estimators.series import estimate_llc_series, step_from_name
from slt_tms.estimators.series_sweep import estimate_llc_series_resumable
from slt_tms.io import save_figure, write_json
from slt_tms.io.atomic import atomic_write_text, remove_stale_temporaries
from slt_tms.io.locks import output_lock
from slt_tms.io.user_models import load_data, load_factory, load_model, sha256
from slt_tms.potentials import from_critical_point
from slt_tms.tms import OneHotUniform, fixed_dataset
from slt_tms.validation import GRAD_MODES, LOSSES, check_device, check_seed

__all__ = [
    "CRITICAL_LADDER",
    "CRITICAL_N",
    "EXIT_NOT_TRUSTWORTHY",
    "THEORY_TOLERANCE",
    "VALIDATED_C",
    "parse_critical_name",
    "register",
    "theory_verdict",
]

#: Nominal sample size of ``--tms-critical`` (population loss): 5 and 5+ at c = 6 are only metastable at
#: n = 1e4 (their chains flow to the hexagon); at 1e5 they hold.
CRITICAL_N = 100_000
#: nbeta multipliers of the asymptotic fit for ``--tms-critical`` (``--ladder`` overrides, ``--no-ladder``
#: switches it off).
CRITICAL_LADDER = (1.0, 2.0, 4.0, 8.0)
#: Exit status of ``--strict`` when an estimate is not trustworthy.
EXIT_NOT_TRUSTWORTHY = 3
#: Relative tolerance of ``--tms-critical``'s comparison of the asymptotic estimate with theory (the
#: defaults are validated to meet it at the c = 5..8 polygons).
THEORY_TOLERANCE = 0.05
#: The numbers of features at which the ``--tms-critical`` defaults are validated against theory.
VALIDATED_C = (5, 8)


def theory_verdict(estimate: float, se: float, lam: float, dead: int, trustworthy: bool = True) -> str:
    r"""Compare an asymptotic estimate with the theoretical :math:`\lambda`, in words.

    The estimate agrees when it is within ``THEORY_TOLERANCE`` (5%) of :math:`\lambda` or within three
    standard errors; otherwise the line says so loudly, and for a point with dead columns why: their flat
    region adds a finite-temperature excess that grows with their number and falls off more slowly than
    the fit's :math:`1/(n\beta)` form, and at a dead bias of 0 it borders the narrow wells of lower loss of
    the points with positive dead biases, which the chains enter rarely. An estimate flagged not
    trustworthy (unconverged rungs, whose wide errors would make anything "agree") gets no verdict.

    Parameters
    ----------
    estimate, se : float
        The asymptotic fit's :math:`\lambda` and its standard error.
    lam : float
        The theoretical :math:`\lambda`.
    dead : int
        The point's dead columns (:math:`c - k`).
    trustworthy : bool
        Whether the estimate carries no flag (``LLCResult.ok``).

    Returns
    -------
    str
        ``"asymptotic estimate off by +x%"`` and the verdict.

    Examples
    --------
    >>> theory_verdict(8.74, 0.14, 8.5, 4)
    'asymptotic estimate off by +2.8% (agrees: within 5%)'
    >>> theory_verdict(10.2, 0.17, 8.5, 24).startswith("asymptotic estimate off by +20.0% [DISAGREES")
    True
    >>> theory_verdict(10.4, 0.82, 8.5, 24, trustworthy=False)[:50]
    'asymptotic estimate off by +22.4% [NO VERDICT: wit'
    """
    off = estimate / lam - 1.0
    line = f"asymptotic estimate off by {100 * off:+.1f}%"
    flagged = "" if trustworthy else "; but the estimate is flagged not trustworthy (above)"
    if abs(off) <= THEORY_TOLERANCE:
        return line + f" (agrees: within {100 * THEORY_TOLERANCE:g}%{flagged})"
    if abs(estimate - lam) <= 3.0 * se:
        if not trustworthy:  # a wide error from unconverged rungs is no agreement
            return line + (
                " [NO VERDICT: within 3 of its standard errors, but the estimate is flagged not trustworthy "
                "(above)]"
            )
        return line + " (agrees: within 3 standard errors)"
    line += f" [DISAGREES with theory beyond {100 * THEORY_TOLERANCE:g}% and 3 standard errors"
    if dead > 0 and off > 0:
        line += (
            f": this point has {dead} dead columns, whose flat region adds an excess that grows with their "
            "number and falls off more slowly than the fit's 1/(n beta), and borders (at a dead bias of 0) "
            "wells of lower loss that the chains enter rarely; the defaults are validated at c = 5..8"
        )
    return line + "]"


def parse_critical_name(name: str) -> tuple[int, int, int]:
    """``"5+"`` -> ``(k, sigma, phi) = (5, 1, 0)``; ``"4+,2-"`` -> ``(4, 1, 2)`` (the TMS paper's names).

    Examples
    --------
    >>> parse_critical_name("5+"), parse_critical_name("6"), parse_critical_name("4,1-")
    ((5, 1, 0), (6, 0, 0), (4, 0, 1))
    """
    m = re.match(r"^\s*(\d+)(\+*)(?:\s*,\s*(\d+)\s*-)?\s*$", name or "")
    if m is None:
        raise ValueError(
            f"unknown critical point name {name!r}; use the TMS paper's names: k followed by sigma plus "
            "signs (e.g. 6, 5, 5+, 4++) and for 4-gons optionally ',PHI-' (e.g. 4+,2-)"
        )
    return int(m.group(1)), len(m.group(2)), int(m.group(3) or 0)


def _checkpoints(patterns: list[str]) -> list[Path]:
    found: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]
        if not hits:
            raise ValueError(f"no checkpoint matches {pat!r}")
        found.extend(Path(h) for h in hits)
    seen: dict[Path, Path] = {}
    for p in found:
        if not p.exists():
            raise ValueError(f"checkpoint not found: {p}")
        if not p.is_file():
            raise ValueError(f"checkpoint {p} is not a regular file")
        if p.resolve() in seen:
            raise ValueError(
                f"checkpoint {p} is given twice (also as {seen[p.resolve()]}): each checkpoint is one step "
                "of the series; give it once"
            )
        seen[p.resolve()] = p
    return found


def _estimate(fn: Any, *args: Any, **kw: Any) -> Any:
    """Run an estimate with its warnings shown as one-line ``slt-tms llc: warning:`` messages, each as it
    is raised (a warning that the ESS target lies beyond the budget comes while the run goes on)."""

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        if not issubclass(category, DeprecationWarning | PendingDeprecationWarning):
            print(f"slt-tms llc: warning: {cli_spelling(str(message))}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        return fn(*args, **kw)


def _handler(ns: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # holds the --out lock that _lock_out takes, until the run ends
        try:
            return _run(ns, held)
        except ValueError as exc:  # LLCConfig and the estimators name their fields: the user typed flags
            spelled = cli_spelling(str(exc))
            if spelled == str(exc):
                raise
            raise ValueError(spelled) from exc


def _lock_out(ns: argparse.Namespace, held: contextlib.ExitStack) -> Path | None:
    """Take the output lock of ``--out`` once the arguments are checked, before any work: one run per
    directory (a second one is refused naming the holder's pid); a file or an unwritable ``--out`` is
    refused; a run that fails before writing leaves no directory behind. Temporary files that a killed
    earlier run left in ``--out`` (its writes are atomic: temporary name, then rename) are removed: by
    the lock in ``--out`` itself, here in ``--out/checkpoints``; the sweep of a series cleans its own
    directory ``--out/series``."""
    if not ns.out:
        return None
    out = held.enter_context(output_lock(ns.out))
    remove_stale_temporaries(out / "checkpoints")
    return out


def _note_other_results(out: Path | None, single: bool) -> None:
    """Say so on stderr when ``--out`` already holds an earlier single estimate's files (a single estimate
    replaces them) or the other kind's results (a series' beside a single estimate's, or the reverse:
    this run's files go beside them, and the directory then mixes two runs). A series run into its own
    earlier --out resumes it, so its own files are expected there."""
    if out is None:
        return
    if single and (out / "llc.json").exists():
        sys.stderr.write(f"note: {out} already holds llc.json and llc.nc of an earlier estimate; this run "
                         "replaces them (give another --out to keep both)\n")
    other = ("llc_series.csv", "llc_series.json") if single else ("llc.json", "llc.nc")
    found = [nm for nm in other if (out / nm).exists()]
    if found:
        kind = "series of checkpoints" if single else "single estimate"
        sys.stderr.write(
            f"note: {out} already holds {', '.join(found)} of an earlier {kind}; this run's files go beside "
            "them (give another --out to keep the runs apart)\n"
        )


def _run(ns: argparse.Namespace, held: contextlib.ExitStack) -> int:
    check_seed(ns.seed, "--seed")
    if ns.out is not None and not str(ns.out).strip():
        raise ValueError("--out is empty: give a directory for the results (default: llc_out)")
    if ns.device is not None:
        check_device(ns.device, "--device")  # one line naming the fix, before anything is read or sampled
    overrides = dataclass_overrides(ns, LLCConfig)
    if ns.no_ladder:
        if "ladder" in overrides:
            raise ValueError("give either --ladder or --no-ladder")
        overrides["ladder"] = None
    progress = False if ns.quiet else None
    if ns.tms_critical is not None:
        if ns.checkpoint or ns.model or ns.torchscript or ns.data:
            raise ValueError(
                "--tms-critical estimates at a named TMS critical point: do not give CHECKPOINT, "
                "--model, --torchscript or --data with it"
            )
        if ns.c is None:
            raise ValueError(
                "--tms-critical needs --c C (the number of features), e.g. --tms-critical 5+ --c 6"
            )
        refuse_idle_options(ns, overrides, critical=True, default_ladder=CRITICAL_LADDER)
        return _critical(ns, overrides, progress, held)
    if ns.c is not None or ns.potential is not None:
        raise ValueError("--c and --potential apply only to --tms-critical")
    if not ns.checkpoint:
        raise ValueError(
            "give CHECKPOINT... (with --model MODULE:FACTORY or --torchscript, and --data FILE), "
            "or --tms-critical NAME --c C"
        )
    if ns.data is None:
        raise ValueError(
            "--data FILE is required: inputs under 'x' and targets under 'y' (.safetensors, .pt or .npz)"
        )
    if not ns.model and not ns.torchscript:
        raise ValueError("say how to build the model: --model MODULE:FACTORY or --torchscript")
    ns.x_key = "x" if ns.x_key is None else ns.x_key
    ns.y_key = "y" if ns.y_key is None else ns.y_key
    ns.loss = "mse" if ns.loss is None else ns.loss
    return _checkpoint_run(ns, overrides, progress, held)


def _finish(results: list[Any], ns: argparse.Namespace) -> int:
    if ns.strict and not all(r.ok for r in results):
        print("slt-tms llc: --strict: an estimate is not trustworthy (see above)", file=sys.stderr)
        return EXIT_NOT_TRUSTWORTHY
    return 0


def _critical(
    ns: argparse.Namespace, overrides: dict[str, Any], progress: bool | None, held: contextlib.ExitStack
) -> int:
    k, sigma, phi = parse_critical_name(ns.tms_critical)
    if ns.c is not None and not 2 <= k <= ns.c:
        raise ValueError(
            f"--tms-critical {ns.tms_critical}: a {k}-gon needs 2 <= {k} <= --c (the number of features), "
            f"got --c {ns.c}; the polygons at c = {ns.c} have 2 to {ns.c} vertices"
        )
    potential = ns.potential or "population"
    if potential not in ("population", "empirical"):
        raise ValueError(f"unknown --potential {potential!r}; allowed: population, empirical")
    if potential == "population" and "batch_size" in overrides:
        raise ValueError("--batch-size applies only to --potential empirical (the population loss is exact)")
    overrides.setdefault("ladder", CRITICAL_LADDER)
    cfg = LLCConfig(**overrides)
    n = ns.n if ns.n is not None else CRITICAL_N
    refuse_full_batch(cfg.batch_size, n, f"the empirical loss (n = {n} one-hot samples)")
    out = _lock_out(ns, held)
    from slt_tms.commands._tms_wells import lower_wells_of, wells_line  # lazy import (start-up time)
    from slt_tms.theory.critical_points import kgon

    cp = kgon(k, ns.c, sigma, phi)
    data = None
    cli: dict[str, Any] = {
        "command": "slt-tms llc --tms-critical",
        "critical_point": cp.name,
        "c": ns.c,
        "population_loss": cp.loss,
        "lambda_theory": cp.lambda_theory,
        "lambda_reason": cp.lambda_reason,
        "potential": potential,
    }
    if potential == "empirical":
        (data_seed,) = spawn_seeds(ns.seed, 1)
        data = fixed_dataset(OneHotUniform(ns.c), n, seed=data_seed).double()
        cli.update(data_seed=data_seed, data=f"OneHotUniform({ns.c}), n={n}")
    pot = from_critical_point(cp, data, n=n, device=ns.device)
    if not ns.quiet:
        print(
            f"critical point {cp.name} at c={ns.c}: L = {cp.loss:.6g}, {potential} loss, n = {n}",
            file=sys.stderr,
        )
        if not VALIDATED_C[0] <= ns.c <= VALIDATED_C[1]:
            lo, hi = VALIDATED_C
            print(
                f"slt-tms llc: note: the defaults are validated at c = {lo}..{hi}; at c = {ns.c} "
                f"(d = {cp.d}) every gradient costs about {(ns.c / 6) ** 2:.3g} times one at c = 6 (the "
                "loss has c^2 pair terms)"
                + (f", and with {cp.c - cp.k} dead columns" if cp.c > cp.k else "")
                + " the estimate may not approach theory (the last line compares them)",
                file=sys.stderr,
            )
    res = _estimate(estimate_llc, pot, config=cfg, seed=ns.seed, progress=progress)
    if cp.lambda_theory is not None and res.asymptotic is not None:
        cli["theory_verdict"] = theory_verdict(
            res.asymptotic.llc, res.asymptotic.se, cp.lambda_theory, cp.c - cp.k, trustworthy=res.ok
        )
    wells = lower_wells_of(res, k, ns.c, sigma, phi) if potential == "population" else None
    if wells is not None:
        cli["lower_wells"] = wells
    res = dataclasses.replace(res, config={**res.config, "cli": cli})
    _note_other_results(out, single=True)
    if out is not None:
        res.to_netcdf(out / "llc.nc")
        res.to_json(out / "llc.json")
    if not ns.quiet:
        print(cli_spelling(res.summary()))
        if wells is not None:
            print(wells_line(wells))
        if cp.lambda_theory is not None:
            line = f"  theory          lambda = {cp.lambda_theory:g} ({cp.lambda_reason})"
            if "theory_verdict" in cli:
                line += "; " + cli["theory_verdict"]
            print(line)
        else:
            print(f"  theory          no closed-form lambda ({cp.lambda_reason})")
        if out is not None:
            print(f"wrote {out / 'llc.nc'} and {out / 'llc.json'}")
    return _finish([res], ns)


def _checkpoint_run(
    ns: argparse.Namespace, overrides: dict[str, Any], progress: bool | None, held: contextlib.ExitStack
) -> int:
    cfg = LLCConfig(**overrides)
    out = _lock_out(ns, held)  # (a refusal below leaves no directory behind)
    paths = _checkpoints(ns.checkpoint)
    refuse_idle_options(ns, overrides, critical=False, several=len(paths) > 1)
    if len(paths) > 1 and ns.torchscript:
        raise ValueError(
            "several checkpoints need --model MODULE:FACTORY (TorchScript archives one at a time)"
        )
    steps, steps_from = series_steps(paths)
    if steps_from == "names":  # in step order, not the shell's (which puts ckpt_50 after ckpt_200)
        paths = sorted(paths, key=lambda p: step_from_name(p.name) or 0)
    if ns.loss not in LOSSES:
        raise ValueError(f"unknown --loss {ns.loss!r}; allowed: {', '.join(LOSSES)}")
    if ns.grad_mode is not None and ns.grad_mode not in GRAD_MODES:
        raise ValueError(f"unknown --grad-mode {ns.grad_mode!r}; allowed: {', '.join(GRAD_MODES)}")
    X, Y = load_data(ns.data, x_key=ns.x_key, y_key=ns.y_key, loss=ns.loss)
    refuse_full_batch(cfg.batch_size, int(X.shape[0]), f"the data ({ns.data})")
    cli = {
        "command": "slt-tms llc",
        "data": str(ns.data),
        "data_sha256": sha256(ns.data),
        "loss": ns.loss,
        "model": ns.model,
        "torchscript": bool(ns.torchscript),
        "params": ns.params,
        "x_shape": list(X.shape),
        "y_shape": list(Y.shape),
    }
    # the estimator settings shared by the one-checkpoint and the series paths
    common: dict[str, Any] = {"config": cfg, "loss": ns.loss, "params": ns.params, "n": ns.n, "seed": ns.seed,
                              "progress": progress, "device": ns.device, "grad_mode": ns.grad_mode or "auto"}
    if len(paths) == 1:
        net = _estimate(  # (its warnings as one-line messages too: a wrapper's key prefix removed)
            load_model, paths[0], model=ns.model, torchscript=ns.torchscript,
            trust_torchscript=ns.trust_torchscript,
        )
        if not ns.quiet:
            d = sum(p.numel() for p in net.parameters())
            print(
                f"model: {type(net).__name__} with {d} parameters from {paths[0].name}; "
                f"data {tuple(X.shape)} "
                f"-> {tuple(Y.shape)}; loss {ns.loss}",
                file=sys.stderr,
            )
        res = _estimate(estimate_llc, net, (X, Y), **common)
        res = dataclasses.replace(
            res,
            config={
                **res.config,
                "cli": {**cli, "checkpoint": str(paths[0]), "checkpoint_sha256": sha256(paths[0])},
            },
        )
        _note_other_results(out, single=True)
        if out is not None:
            res.to_netcdf(out / "llc.nc")
            res.to_json(out / "llc.json")
        if not ns.quiet:
            print(cli_spelling(res.summary()))
            if out is not None:
                print(f"wrote {out / 'llc.nc'} and {out / 'llc.json'}")
        return _finish([res], ns)
    if steps_from == "order" and not ns.quiet:
        print(
            f"slt-tms llc: note: {steps_note(paths)}: the steps are the files' order as given, "
            f"0..{len(paths) - 1}",
            file=sys.stderr,
        )
    common["steps"] = steps
    if out is not None:  # resumable: a rerun into the same --out after a crash computes only what is missing
        series = _estimate(
            estimate_llc_series_resumable, paths, ns.model, ns.data, work_dir=out / "series", x_key=ns.x_key,
            y_key=ns.y_key, reuse_calibration=not ns.no_reuse_calibration, **common,
        )
    else:
        series = _estimate(estimate_llc_series, paths, load_factory(ns.model), (X, Y),
                           reuse_calibration=not ns.no_reuse_calibration, **common)
    series = dataclasses.replace(series, config={**series.config, "steps_from": STEPS_FROM[steps_from]})
    _note_other_results(out, single=False)
    if out is not None:
        atomic_write_text(out / "llc_series.csv", series.to_csv())
        write_json(
            out / "llc_series.json",
            {
                "rows": series.rows(),
                "config": series.config,
                "cli": {
                    **cli,
                    "steps_from": STEPS_FROM[steps_from],
                    "checkpoints": [str(p) for p in paths],
                    "checkpoint_sha256": [sha256(p) for p in paths],
                },
            },
        )
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        for nm, r in zip(series.names, series.results, strict=True):
            r.to_netcdf(out / "checkpoints" / f"{Path(nm).stem}.nc")
        from slt_tms.plotting.llc import plot_llc_series  # lazy import (start-up time)

        save_figure(plot_llc_series(series), out / "llc_series.png", dpi=130)
    if not ns.quiet:
        print(cli_spelling(series.summary()))
        if out is not None:
            print(f"wrote {out / 'llc_series.csv'}, llc_series.json, llc_series.png and checkpoints/*.nc")
    return _finish(list(series.results), ns)


def register(subparsers: Any) -> None:
    """estimate the local learning coefficient of checkpoints or of a TMS critical point.

    Estimate the local learning coefficient (lambda_hat +/- SE, R-hat, ESS, flags) of CHECKPOINT... of your
    model (--model MODULE:FACTORY, --data FILE), or at a TMS critical point (--tms-critical NAME --c C).
    Chains run until converged (R-hat <= 1.01, ESS >= 400) or the budget is spent; untrustworthy estimates are
    marked. Writes DIR/llc.json and llc.nc (one checkpoint), or llc_series.csv/.json/.png (several).
    """
    p = add_command(subparsers, "llc", register)
    p.add_argument(
        "checkpoint",
        nargs="*",
        metavar="CKPT",
        help="state_dict files (.safetensors/.pt; globs allowed) or, with --torchscript, an archive",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FACTORY",
        help="zero-argument callable returning the nn.Module (MODULE: import name or .py path)",
    )
    src.add_argument(
        "--torchscript",
        action="store_true",
        help="CKPT is a TorchScript archive (its code runs when loaded: needs --trust-torchscript)",
    )
    src.add_argument(
        "--tms-critical",
        default=None,
        metavar="NAME",
        help="a TMS critical point by the paper's name, e.g. 6, 5, 5+, 4++ (needs --c)",
    )
    p.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="allow loading the --torchscript archive: its code runs when it is loaded and evaluated, "
        "with your rights; only load archives you trust",
    )
    p.add_argument(
        "--data", default=None, metavar="FILE", help="data file (.safetensors, .pt, .npz) with x and y"
    )
    p.add_argument("--x-key", default=None, help="name of the inputs in the data file (default: x)")
    p.add_argument("--y-key", default=None, help="name of the targets in the data file (default: y)")
    p.add_argument(
        "--loss", default=None, metavar="{mse,cross_entropy,causal_lm}",
        help="loss, mean over rows (default: mse); causal_lm: next-token cross-entropy, mean over the "
        "predicted tokens, of a model that maps token ids x (n, T) to logits (n, T, V), with the labels "
        "y (n, T) (usually x itself; -100 marks positions not to predict, e.g. padding)"
    )
    p.add_argument(
        "--no-reuse-calibration",
        action="store_true",
        help="several checkpoints: give every batch its own full warmup (default: the last checkpoint is "
        "estimated first and its adapted step size and metric start the others, with a fifth of the warmup; "
        "re-checked, and exact for HMC and MALA; a checkpoint whose run then ends with a stuck or diverged "
        "chain, or not converged where the last checkpoint converged, is estimated again with its own full "
        "warmup)",
    )
    p.add_argument(
        "--params",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="sample only parameters whose names match these patterns (restricted LLC), e.g. '2.*'",
    )
    p.add_argument(
        "--grad-mode",
        default=None,
        metavar="{auto,vmap,loop}",
        help="how the gradients of all chains are taken: the model's own choice (auto, the default), "
        "torch.func.vmap over the chains, or a loop over them (can be faster where vmap falls back to a "
        "per-sample loop, e.g. attention on CPU; the same estimand)",
    )
    p.add_argument("--c", type=int, default=None, help="number of features (with --tms-critical)")
    p.add_argument(
        "--potential",
        default=None,
        metavar="{population,empirical}",
        help="--tms-critical: the closed-form population loss (default) or the empirical loss on n "
        "one-hot samples",
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"training-set size behind L_n, sets nbeta = n/log n (default: the rows of the data; "
        f"{CRITICAL_N} for --tms-critical)",
    )
    add_dataclass_flags(p, LLCConfig, FIELD_HELP)
    flags = p._option_string_actions
    FLAG_FIELDS.update(f for f in LLCConfig.field_names() if "--" + f.replace("_", "-") in flags)
    # the shared field help names other settings by their Python names (one-word ones read as prose there)
    spelled = {f for f in FLAG_FIELDS if "_" in f}
    for action in p._actions:
        if action.dest in FLAG_FIELDS and action.help:
            action.help = cli_spelling(action.help, spelled)
    p.add_argument(
        "--no-ladder",
        action="store_true",
        help="--tms-critical: no asymptotic fit (default ladder: "
        + " ".join(map(str, CRITICAL_LADDER))
        + ")",
    )
    p.add_argument("--seed", type=int, default=0, help="root seed (default: 0)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: the model's)")
    p.add_argument("--out", default="llc_out", metavar="DIR", help="output directory (default: llc_out)")
    p.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with status {EXIT_NOT_TRUSTWORTHY} when an estimate is not trustworthy",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=_handler)
