r"""The ceiling of the MLP comparison: what one minibatch SGLD step costs in slt_tms and in devinterp, and
the best seconds per effective sample that cost allows under the benchmark's ESS rule.

Run with the benchmark environment (``benchmarks/setup_bench_env.sh`` builds it)::

    OMP_NUM_THREADS=1 benchmarks/.venv-bench/bin/python benchmarks/bench_mlp_ceiling.py

The problem is the ``mlp`` of ``bench_llc_vs_devinterp.py`` (MLP 100-256-256-10, tanh, 94 218 parameters,
n = 2 000, localization 100, 32-row minibatches, 4 chains). Both libraries run in this one process, one
thread, imported before any clock, their runs interleaved.

* **Cost of a step.** Each library runs twice with a fixed step and no adaptation, at two numbers of
  draws; the difference of the wall times over the difference of the gradient evaluations is the cost of
  one SGLD step of one chain (minibatch gradient, noise, update, the recorded loss), free of set-up costs.
  slt_tms runs as its default minibatch draws do, at a fixed ``step_size`` (default: 4.66e-4, the step
  its bias-driven search picks on this problem, so no search runs); its final coupled bias check (three
  gradients per coupled step, for a quarter of the draws) is counted in the gradients the result
  records. devinterp runs at its README ``lr = 1e-3`` (a draw is one gradient).
* **The ceiling.** The benchmark computes the ESS of a minibatch trace on means of 20-draw blocks, for
  both libraries (the raw trace counts minibatch noise as information). Block means of a Langevin chain
  are positively autocorrelated, so their ESS is at most the number of blocks, one effective sample per
  20 draws of a chain. Time per effective sample is therefore at least 20 x the cost of a chain's step,
  for ANY minibatch SGLD run at that cost per step, however well it mixes, even with no warmup, no step
  search and no bias check.
* **devinterp's run**: its README settings at 4 000 draws per chain (the run the main benchmark charges),
  seconds per effective sample by the same rule as there.

The target of the main benchmark, three times fewer seconds per effective sample than devinterp's README
run, is compared with that ceiling. Writes ``benchmarks/results/mlp_ceiling.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("SLT_TMS_NO_PROGRESS", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llc_vs_devinterp import LOCALIZATION, MINIBATCH, _devinterp_once, mlp_problem

__all__: list[str] = []

RESULTS = Path(__file__).resolve().parent / "results" / "mlp_ceiling.json"
#: Draws per block mean of a minibatch trace (slt_tms.estimators.sgld_bias.NOISY_BLOCK; the main benchmark
#: applies it to both libraries).
BLOCK = 20
CHAINS = 4


def _ours(p: dict[str, Any], draws: int, step: float, seed: int) -> tuple[float, int]:
    """Wall seconds and gradient evaluations per chain of one fixed-step minibatch run."""
    from slt_tms.estimators import estimate_llc

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fixed short run is not converged, and says so
        res = estimate_llc(p["module"], (p["X"], p["Y"]), loss="mse", localization=LOCALIZATION,
                           batch_size=MINIBATCH, step_size=step, num_burnin=20, num_draws=draws,
                           num_chains=CHAINS, seed=seed, progress=False)
    return time.perf_counter() - t0, int(res.num_grads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step", type=float, default=4.66e-4, help="slt_tms's fixed SGLD step")
    ap.add_argument("--draws", type=int, nargs=2, default=[300, 1300],
                    help="slt_tms's two run lengths (draws per chain)")
    ap.add_argument("--devinterp-draws", type=int, nargs=2, default=[1000, 4000],
                    help="devinterp's two run lengths (the second is its charged README run)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import arviz  # noqa: F401  (imports before any clock, for both)
    import devinterp.slt.sampling  # noqa: F401

    import slt_tms.estimators  # noqa: F401

    p = mlp_problem(args.seed)
    _ours(p, 5, args.step, args.seed)  # warm caches and lazy imports
    a, b = args.draws
    da, db = args.devinterp_draws
    # interleaved, so that a drift of the machine's speed falls on both libraries alike
    ta, ga = _ours(p, a, args.step, args.seed)
    ra = _devinterp_once(p, 1e-3, da, args.seed)
    tb, gb = _ours(p, b, args.step, args.seed)
    rb = _devinterp_once(p, 1e-3, db, args.seed)
    ours_step = (tb - ta) / ((gb - ga) * CHAINS)
    di_step = (rb["seconds"] - ra["seconds"]) / ((db - da) * CHAINS)
    di_s_per_ess = rb["seconds"] / rb["ess"]
    target = di_s_per_ess / 3
    kept_blocks = CHAINS * (db - db // 5) // BLOCK  # devinterp's trace drops its first 20% (main benchmark)
    record = {
        "command": " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", sys.executable,
                             *sys.argv]),
        "torch": torch.__version__, "machine": platform.platform(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "slt_tms": {"step_size": args.step, "draws": [a, b], "gradients_per_chain": [ga, gb],
                    "seconds": [ta, tb],
                    "seconds_per_chain_step": ours_step,
                    "ceiling_seconds_per_ess": BLOCK * ours_step},
        "devinterp": {"lr": 1e-3, "draws": [da, db], "seconds": [ra["seconds"], rb["seconds"]],
                      "seconds_per_chain_step": di_step,
                      "ceiling_seconds_per_ess": BLOCK * di_step,
                      "readme_run": {k: rb[k] for k in ("seconds", "llc", "se", "rhat", "ess")},
                      "readme_run_blocks": kept_blocks,
                      "seconds_per_ess": di_s_per_ess},
        "target_seconds_per_ess": target,
        "step_cost_needed_for_target": target / BLOCK,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"cost of one chain's SGLD step: slt_tms {ours_step * 1e3:.3f} ms, devinterp "
          f"{di_step * 1e3:.3f} ms (ratio {di_step / ours_step:.2f})")
    print(f"devinterp README run: {rb['seconds']:.1f} s, ESS {rb['ess']:.0f} of at most {kept_blocks} "
          f"blocks, {di_s_per_ess:.4f} s/ESS; target (3x fewer): {target:.4f} s/ESS")
    print(f"ceiling at slt_tms's step cost (ESS = blocks, no overhead): {BLOCK * ours_step:.4f} s/ESS, "
          f"{di_s_per_ess / (BLOCK * ours_step):.2f}x devinterp's README run; the target needs a step of at "
          f"most {target / BLOCK * 1e3:.3f} ms per chain")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
