"""``slt-tms dynamics``: SGD transitions through the k-gons (``run``) and the LLC along training (``llc``).

Files in ``--out DIR``: ``config.json`` (the protocol and every seed trained into DIR: a later run with other
seeds adds to them, the analysis covers all), ``runs/`` (the resumable sweep: one JSON + safetensors per
seed), ``analysis.json``, ``transitions.csv``, ``transition_counts.csv``, ``ordering.csv`` and the figures
``loss_vs_step.png``, ``polygons.png``, ``ordering.png``; ``dynamics llc DIR`` adds ``llc/`` (its sweep),
``llc.csv``, ``llc_transitions.csv``, ``llc_summary.json``, ``llc_vs_step.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slt_tms.analysis.plateaus import bayesian_ordering, dynamical_ordering
from slt_tms.commands._args import nonneg_int, positive_int
from slt_tms.experiments import sgd_dynamics as dyn
from slt_tms.experiments.sgd_llc import GRADIENT_KEYS, llc_along_training
from slt_tms.io import read_json, save_figure, write_json
from slt_tms.io.locks import output_lock
from slt_tms.io.results import write_csv

__all__ = ["llc_into", "register", "train_into"]


def _add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="local processes (default) or a Dask cluster",
    )
    p.add_argument("--dask-address", default=None, help="scheduler address of a running Dask cluster")
    p.add_argument(
        "--max-workers", type=positive_int, default=None, help="worker processes (default: all cores)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def diverged_at(analysis: Any) -> int | None:
    """The first checkpoint step whose population loss is non-finite or above 1e6 (SGD blew up: the
    TMS loss of a trained or random start is below 1), or None."""
    pop = np.asarray(analysis.population_losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(pop) | (pop > 1e6))
    return int(analysis.checkpoint_steps[bad[0]]) if bad.size else None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dynamics`` command group."""
    p = subparsers.add_parser(
        "dynamics", help="SGD transitions between k-gon critical points, LLC along training"
    )
    sub = p.add_subparsers(dest="dynamics_command", metavar="SUBCOMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    r = sub.add_parser(
        "run", help="train many seeds with the TMS-paper SGD protocol and classify the checkpoints"
    )
    r.add_argument("--out", required=True, help="output directory (resumable: rerun to continue)")
    r.add_argument("--c", type=positive_int, default=6, help="number of features (default 6)")
    r.add_argument("--seeds", type=positive_int, default=8, help="number of seeds (default 8)")
    r.add_argument("--first-seed", type=nonneg_int, default=0, help="first seed (default 0)")
    r.add_argument(
        "--quick", action="store_true", help="random init, 30000 steps, 100 checkpoints (minutes on 2 cores)"
    )
    r.add_argument("--init", choices=("kgon", "random"), default=None, help="initialisation (default: kgon)")
    r.add_argument("--steps", type=positive_int, default=None, help="SGD steps (default 225000; quick 30000)")
    r.add_argument("--n", type=positive_int, default=None, help="training-set size (default 1000)")
    r.add_argument("--batch-size", type=positive_int, default=None, help="minibatch size (default 20)")
    r.add_argument("--lr", type=float, default=None, help="learning rate (default 0.005)")
    r.add_argument(
        "--num-checkpoints", type=positive_int, default=None, help="log-spaced checkpoints (default 150)"
    )
    r.add_argument("--init-noise", type=float, default=None, help="std of the init noise (default 0.01)")
    r.add_argument(
        "--random-scale", type=float, default=None, help="std of W for --init random (default 0.3)"
    )
    _add_executor(r)
    r.set_defaults(handler=_run)

    q = sub.add_parser("llc", help="estimate the LLC at the plateau checkpoints of a finished run")
    q.add_argument("dir", help="directory written by 'slt-tms dynamics run'")
    q.add_argument(
        "--extra",
        type=nonneg_int,
        default=0,
        help="additional log-spaced checkpoints per run for the curve (default 0)",
    )
    q.add_argument(
        "--max-draws",
        type=positive_int,
        default=None,
        help="budget of draws per chain of each estimate (default: the estimator's)",
    )
    _add_executor(q)
    q.set_defaults(handler=_llc)


def _config(args: argparse.Namespace) -> dyn.DynamicsConfig:
    base = dyn.quick_config(args.c) if args.quick else dyn.DynamicsConfig(c=args.c)
    over = {
        "init": args.init,
        "num_steps": args.steps,
        "n": args.n,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "num_checkpoints": args.num_checkpoints,
        "init_noise": args.init_noise,
        "random_scale": args.random_scale,
    }
    return dataclasses.replace(base, **{k: v for k, v in over.items() if v is not None})


def _seeds_in(out: Path, config: dyn.DynamicsConfig, new: list[int]) -> list[int]:
    """Every seed of DIR: those recorded before (same protocol only) and the new ones."""
    path = out / "config.json"
    if not path.exists():
        return new
    old = read_json(path, "dynamics config")
    if old.get("config") != config.to_dict():
        raise ValueError(f"{out} holds a run with a different configuration; choose another --out directory")
    return sorted(set(int(s) for s in old.get("seeds", [])) | set(new))


def _write_analysis(
    run: dyn.DynamicsRun, out: Path, lambdas: Mapping[str, float] | None = None
) -> dict[str, Any]:
    write_json(
        out / "analysis.json",
        {
            "config": run.config.to_dict(),
            "seeds": run.seeds,
            "cpu_seconds_per_seed": [r.get("cpu_seconds") for r in run.records],
            "seconds_per_seed": [r["seconds"] for r in run.records],
            "levels": [
                {
                    "name": p.name,
                    "k": p.k,
                    "sigma": p.sigma,
                    "phi": p.phi,
                    "loss": p.loss,
                    "lambda_theory": p.lambda_theory,
                }
                for p in run.points
            ],
            "runs": [a.to_dict() for a in run.analyses],
            "transition_counts": run.counts,
        },
    )
    write_csv(
        out / "transitions.csv",
        [t.to_dict() for a in run.analyses for t in a.transitions],
        ["seed", "source", "target", "source_k", "target_k", "source_end_step", "step"],
    )
    write_csv(
        out / "transition_counts.csv",
        run.counts,
        ["source", "target", "source_k", "target_k", "count", "median_step"],
    )
    return _write_ordering(run, out, lambdas)


def _write_ordering(run: dyn.DynamicsRun, out: Path, lambdas: Mapping[str, float] | None) -> dict[str, Any]:
    dynamical = dynamical_ordering(run.analyses)
    names = [d["name"] for d in dynamical]
    if not names:
        return {}
    bayes = bayesian_ordering(run.points, names, lambdas)
    rows = [
        {
            "rank": i + 1,
            "bayesian": bayes["order"][i],
            "dynamical": names[i],
            "dynamical_median_first_step": dynamical[i]["median_first_step"],
        }
        for i in range(len(names))
    ]
    write_csv(out / "ordering.csv", rows, ["rank", "bayesian", "dynamical", "dynamical_median_first_step"])
    from slt_tms.plotting.dynamics import plot_ordering  # lazy import (start-up time)

    save_figure(plot_ordering(bayes, dynamical), out / "ordering.png", dpi=110)
    return {"bayesian": bayes, "dynamical": dynamical}


def train_into(
    out: str | Path,
    config: dyn.DynamicsConfig,
    seeds: list[int],
    *,
    executor: str = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    quiet: bool = False,
) -> dyn.DynamicsRun:
    """Train ``seeds`` into ``out`` (resumable; adds to the seeds already there) and write the analysis
    files and figures (module docstring)."""
    with output_lock(out) as out:  # one run per directory, refused before any work
        seeds = _seeds_in(out, config, seeds)
        write_json(out / "config.json", {"config": config.to_dict(), "seeds": seeds})
        run = dyn.run(
            config,
            seeds,
            work_dir=out / "runs",
            executor=executor,
            max_workers=max_workers,
            dask_address=dask_address,
            progress=False if quiet else None,
        )
        _write_analysis(run, out)
        from slt_tms.plotting.dynamics import plot_losses, plot_polygons  # lazy import (start-up time)

        save_figure(plot_losses(run), out / "loss_vs_step.png", dpi=110)
        save_figure(plot_polygons(run), out / "polygons.png", dpi=110)
        return run


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    run = train_into(
        out,
        config,
        list(range(args.first_seed, args.first_seed + args.seeds)),
        executor=args.executor,
        max_workers=args.max_workers,
        dask_address=args.dask_address,
        quiet=args.quiet,
    )
    seeds = run.seeds
    wall = time.perf_counter() - t0
    secs = [r["seconds"] for r in run.records]
    cpus = [r["cpu_seconds"] for r in run.records if r.get("cpu_seconds") is not None]
    cpu = f", CPU {sum(cpus) / len(cpus):.1f} s per seed" if cpus else ""
    print(
        f"{len(seeds)} seeds, c={config.c}, {config.num_steps} steps, init={config.init}: training wall "
        f"{sum(secs) / len(secs):.1f} s per seed (mean){cpu}; total wall {wall:.1f} s"
    )
    for a in run.analyses:
        blown = diverged_at(a)
        print(
            f"  seed {a.seed}: {' -> '.join(a.path) or '(nothing classified)'}"
            f"  [{len(a.transitions)} transitions, {len(a.unclassified)} unclassified stretches]"
            + (f"  DIVERGED from step {blown}" if blown is not None else "")
        )
        if blown is not None:
            sys.stderr.write(
                f"warning: seed {a.seed}: SGD diverged (population loss non-finite or above 1e6 from step "
                f"{blown}); lower --lr (now {config.lr:g})\n"
            )
    print("transition counts:")
    print(run.counts_table())
    print(f"outputs in {out}")
    return 0


def llc_into(
    out: str | Path,
    *,
    extra: int = 0,
    llc: Mapping[str, Any] | None = None,
    executor: str = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    quiet: bool = False,
) -> tuple[dyn.DynamicsRun, Any, dict[str, Any]]:
    """Estimate the LLC along training of the runs in ``out`` and write its files (module docstring)."""
    out = Path(out)
    if not (out / "config.json").is_file():
        raise FileNotFoundError(
            f"{out / 'config.json'} not found: run 'slt-tms dynamics run --out {out}' first"
        )
    with output_lock(out, flag="DIR"):  # not while 'dynamics run' or another 'dynamics llc' writes there
        meta = read_json(out / "config.json", "dynamics config")
        config = dyn.DynamicsConfig.from_dict(meta["config"])
        run = dyn.load(config, meta["seeds"], work_dir=out / "runs")
        res = llc_along_training(
            run,
            work_dir=out / "llc",
            llc=llc,
            extra_per_run=extra,
            executor=executor,
            max_workers=max_workers,
            dask_address=dask_address,
            progress=False if quiet else None,
        )
        summary = res.summary()
        write_csv(
            out / "llc.csv",
            [{**p.to_dict(), **p.diagnostics} for p in res.points],
            [
                "seed",
                "step",
                "index",
                "name",
                "loss",
                "llc",
                "se",
                "plateau",
                "rhat",
                "ess",
                "acceptance",
                "frac_below_anchor",
                "diverged",
                "ok",
                *GRADIENT_KEYS,
                "flags",
            ],
        )
        write_csv(
            out / "llc_transitions.csv",
            list(res.transitions),
            [
                "seed",
                "source",
                "target",
                "step",
                "llc_source",
                "se_source",
                "llc_target",
                "se_target",
                "difference",
                "trusted",
                "increase",
                "significant",
            ],
        )
        summary["ordering"] = _write_ordering(run, out, res.lambda_by_family)
        write_json(out / "llc_summary.json", summary)
        from slt_tms.plotting.dynamics import plot_llc  # lazy import (start-up time)

        save_figure(plot_llc(run, res.points), out / "llc_vs_step.png", dpi=110)
        return run, res, summary


def _llc(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    overrides = {} if args.max_draws is None else {"max_draws": args.max_draws}
    _, res, summary = llc_into(
        args.dir,
        extra=args.extra,
        llc=overrides,
        executor=args.executor,
        max_workers=args.max_workers,
        dask_address=args.dask_address,
        quiet=args.quiet,
    )
    print(
        f"LLC at {len(res.points)} checkpoints in {time.perf_counter() - t0:.1f} s; "
        f"{summary['num_not_trustworthy']} not trustworthy (see the 'flags' column of llc.csv)"
    )
    print(
        "lambda_hat per family (mean over plateau checkpoints): "
        + json.dumps({k: round(v, 2) for k, v in res.lambda_by_family.items()})
    )
    for c in res.transitions:
        flag = ("increase" if c["increase"] else "DECREASE") + (" (> 2 SE)" if c["significant"] else "")
        if not c["trusted"]:
            flag = "not counted: a flagged or negative estimate is no learning coefficient (llc.csv)"
        print(
            f"  seed {c['seed']}: {c['source']} -> {c['target']} at step {c['step']}: lambda_hat "
            f"{c['llc_source']:.2f} ± {c['se_source']:.2f} -> {c['llc_target']:.2f} ± "
            f"{c['se_target']:.2f}  {flag}"
        )
    left = summary["num_transitions"] - summary["num_trusted_transitions"]
    print(
        f"{summary['num_increase']}/{summary['num_trusted_transitions']} transitions with lambda_hat "
        f"increasing ({summary['num_significant_increase']} by more than 2 SE)"
        + (f"; {left} more between estimates that are flagged or negative, not counted" if left else "")
    )
    order = summary.get("ordering") or {}
    if order:
        print(f"Bayesian ordering ({order['bayesian']['method']}): {' -> '.join(order['bayesian']['order'])}")
        print(f"dynamical ordering: {' -> '.join(d['name'] for d in order['dynamical'])}")
    return 0
