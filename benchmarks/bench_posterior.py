"""Benchmark: posterior sampling of the TMS (c = 6) and the quick occupancy run.

Two measurements (wall-clock and process CPU time, one process, ``OMP_NUM_THREADS`` as set by the
caller; with ``OMP_NUM_THREADS=1`` the CPU time approximates the wall time on an idle core):

1. ``single``: :func:`slt_tms.experiments.posterior.sample_posterior` at one ``n`` (default 1000),
   4 chains x 1000 draws after 1000 warmup transitions (target: a few minutes on 2 cores). Reports time,
   step sizes, acceptance, divergences, R-hat / ESS of the invariants.
2. ``quick``: :func:`slt_tms.experiments.occupancy.occupancy` for c = 6 with the settings of
   ``slt-tms phases sample --c 6 --quick`` (target: <= 10 minutes), including the critical points.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_posterior.py [--n 1000] [--only single|quick] [--out FILE]

Results are printed and, with ``--out FILE``, written as JSON (atomically) with configuration and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from slt_tms.commands.phases import DEFAULT_GRID
from slt_tms.experiments.occupancy import occupancy
from slt_tms.experiments.posterior import HMCConfig, sample_posterior
from slt_tms.io.atomic import atomic_write_text


def bench_single(n: int, seed: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    post = sample_posterior(6, n, num_chains=4, num_draws=1000, num_warmup=1000, seed=seed, progress=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    diag = post.diagnostics()
    grads = int(post.hmc.num_steps.sum()) * 2  # warmup transitions have the same mean length
    return {
        "what": "sample_posterior c=6, 4 chains x 1000 draws + 1000 warmup",
        "n": n,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "approx_gradient_evaluations_per_chain": grads // 4,
        "step_size": post.hmc.step_size.tolist(),
        "mean_accept": diag["mean_accept"],
        "num_divergent": diag["num_divergent"],
        "rhat": diag["rhat"],
        "ess": diag["ess"],
        "seed": seed,
    }


def bench_quick(seed: int) -> dict:
    from slt_tms.theory.critical_points import critical_points

    t0, c0 = time.perf_counter(), time.process_time()
    pts = critical_points(6, progress=False)
    t_pts, c_pts = time.perf_counter() - t0, time.process_time() - c0
    occ = occupancy(
        6,
        list(DEFAULT_GRID),
        pts,
        num_chains=4,
        num_draws=200,
        num_warmup=200,
        config=HMCConfig(num_leapfrog=16),
        seed=seed,
        progress=False,
    )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    prop = occ.proportions
    return {
        "what": "occupancy c=6 quick (4 replica sets x 200 draws + 200 warmup, replica exchange)",
        "seconds_total": elapsed,
        "seconds_critical_points": t_pts,
        "cpu_seconds_total": cpu,
        "cpu_seconds_critical_points": c_pts,
        "ladder": occ.n_grid,
        "proportions": {nm: prop[:, i].round(3).tolist() for i, nm in enumerate(occ.phase_names)},
        "seed": seed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("single", "quick"), default=None)
    ap.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = ap.parse_args()
    out = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "load_average_before": os.getloadavg(),
    }
    if args.only in (None, "single"):
        out["single"] = bench_single(args.n, args.seed)
        print(
            f"single n={args.n}: {out['single']['seconds']:.1f} s wall, "
            f"{out['single']['cpu_seconds']:.1f} s CPU; "
            f"rhat {out['single']['rhat']}"
        )
    if args.only in (None, "quick"):
        out["quick"] = bench_quick(args.seed)
        print(
            f"quick occupancy c=6: {out['quick']['seconds_total']:.1f} s wall, "
            f"{out['quick']['cpu_seconds_total']:.1f} s CPU "
            f"(critical points {out['quick']['seconds_critical_points']:.1f} s wall)"
        )
    out["load_average_after"] = os.getloadavg()
    if args.out:
        atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
