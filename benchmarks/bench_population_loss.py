"""Benchmark of the closed-form TMS population loss (slt_tms.theory.symbolic).

Measures

1. the batched torch evaluator for ``c = 6, r = 2`` over ``--num-points`` (default 1e5) parameter
   points: forward only (no graph) and forward + backward (gradient of the summed loss), float64 and
   float32; the median (and min) over ``--repeats`` runs after one warm-up;
2. the derivation + evaluator generation for ``c = 8`` in a fresh Python process (so nothing is
   cached): sympy derivation of the two pair terms, code generation of the evaluators, assembly of
   the symbolic ``L(W, b)`` for ``c = 8, r = 2``, and the first numeric evaluation at ``c = 8``.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_population_loss.py [--num-points 100000] [--repeats 7]
        [--threads 2] [--json results.json]

Timings are wall-clock (``time.perf_counter``; process CPU time beside it) and depend on the machine
and its load; the script prints them with the torch version, thread count and load average and, with
``--json``, writes them atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time

import torch

from slt_tms.io.atomic import atomic_write_text
from slt_tms.theory.symbolic import population_loss_flat

__all__ = ["bench_evaluator", "bench_generation", "main"]


def _stats(times: list[float], cpu: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times),
            "cpu_median_s": statistics.median(cpu)}


def bench_evaluator(num_points: int, repeats: int, dtype: torch.dtype, c: int = 6, r: int = 2,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """Time forward and forward+backward of ``population_loss_flat`` on ``num_points`` random points."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(num_points, r * c + c, generator=g, dtype=torch.float64).to(dtype)
    fwd, fwd_bwd, fwd_cpu, fwd_bwd_cpu = [], [], [], []
    for k in range(repeats + 1):  # the first run is a warm-up (code generation, allocator)
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.no_grad():
            population_loss_flat(w, c, r)
        c1, t1 = time.process_time(), time.perf_counter()
        wg = w.detach().requires_grad_(True)
        c2, t2 = time.process_time(), time.perf_counter()
        population_loss_flat(wg, c, r).sum().backward()
        c3, t3 = time.process_time(), time.perf_counter()
        assert wg.grad is not None and bool(torch.isfinite(wg.grad).all())
        if k:
            fwd.append(t1 - t0)
            fwd_bwd.append(t3 - t2)
            fwd_cpu.append(c1 - c0)
            fwd_bwd_cpu.append(c3 - c2)
    return {"forward": _stats(fwd, fwd_cpu), "forward_backward": _stats(fwd_bwd, fwd_bwd_cpu)}


_FRESH = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import sympy, torch
    t1 = time.perf_counter()
    from slt_tms.theory import symbolic as S
    t2 = time.perf_counter()
    S.pair_terms()
    t3 = time.perf_counter()
    S._evaluators()
    t4 = time.perf_counter()
    S.loss_expression(8, 2)
    t5 = time.perf_counter()
    S.population_loss_flat(torch.zeros(1, 24, dtype=torch.float64), 8, 2)
    t6 = time.perf_counter()
    print(json.dumps({"import_sympy_torch_s": t1 - t0, "import_module_s": t2 - t1,
                      "derive_pair_terms_s": t3 - t2, "generate_evaluators_s": t4 - t3,
                      "assemble_L_c8_r2_s": t5 - t4, "first_evaluation_c8_s": t6 - t5,
                      "derive_generate_assemble_total_s": t6 - t2}))
    """
)


def bench_generation(repeats: int = 3) -> dict[str, float]:
    """Derivation + generation for ``c = 8`` in fresh processes; median of each phase."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--generation-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.num_points < 1 or args.repeats < 1 or args.generation_repeats < 1:
        raise ValueError("--num-points, --repeats and --generation-repeats must be positive")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results: dict[str, object] = {
        "config": {"c": 6, "r": 2, "num_points": args.num_points, "repeats": args.repeats,
                   "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "python": platform.python_version(), "machine": platform.machine()},
    }
    results["load_average_1min_at_start"] = os.getloadavg()[0]
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        res = bench_evaluator(args.num_points, args.repeats, dtype)
        results[f"evaluator_c6_{name}"] = res
        f, fb = res["forward"], res["forward_backward"]
        print(f"c=6, {args.num_points} points, {name}: forward {f['median_s'] * 1e3:.1f} ms "
              f"(min {f['min_s'] * 1e3:.1f}, cpu {f['cpu_median_s'] * 1e3:.1f}), forward+backward "
              f"{fb['median_s'] * 1e3:.1f} ms (min {fb['min_s'] * 1e3:.1f}, "
              f"cpu {fb['cpu_median_s'] * 1e3:.1f}); median of {args.repeats}")
    gen = bench_generation(args.generation_repeats)
    results["generation_c8_fresh_process"] = gen
    print(f"c=8 in a fresh process (median of {args.generation_repeats}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in gen.items()))
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start {results['load_average_1min_at_start']:.1f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
