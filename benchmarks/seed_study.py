r"""Is the LLC estimator's standard error honest, and is the default run unbiased? A study over seeds.

One run with default settings gives an estimate and its SE; whether that SE is right, and whether the
estimate is centred on its target, shows only over many seeds. For every closed-form problem with an
independent finite-:math:`n\beta` reference (exact quadrature for normal crossings, the closed form for the
regular quadratic, NumPyro's NUTS for reduced-rank regression and deep linear networks; the references of
``ground_truth_table.py``), this runs ``estimate_llc(problem, seed=s)`` for ``--seeds`` seeds, nothing else
set, and reports:

* the mean of the estimates with its standard error (sd / sqrt(seeds)), and its offset from the reference
  in units of that standard error (``bias_z``; the reference's own MCSE included);
* ``sd / rms SE``: the spread of the estimates over seeds against the SEs the runs reported. An honest SE
  gives 1; the interval printed beside it is the 95% range of that ratio for an honest SE with this many
  seeds (chi-square);
* ``rms error / rms SE``: the root-mean-square distance of the estimates from the reference (offset and
  spread together) against the SEs the runs reported: what a reader of one run's SE should expect;
* the fraction of runs with :math:`|z| > 2` and :math:`|z| > 3` against the reference (4.6% and 0.3% for
  an honest, unbiased run), the fraction converged, the mean draws per chain and CPU seconds.

Run (one thread per worker; about 5 minutes for 40 seeds on two cores)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seed_study.py --seeds 40 --jobs 2

``--set FIELD=VALUE`` (repeatable) changes one ``LLCConfig`` field for every run. Writes
``benchmarks/results/seed_study.{json,md}`` (or ``--out`` without the suffix). ``--resummarize
JSON`` recomputes the summaries and the table from the runs of an earlier record, without running.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("SLT_TMS_NO_PROGRESS", "1")

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ground_truth_table import parse_overrides, problems

__all__: list[str] = []

OUT = Path(__file__).resolve().parent / "results" / "seed_study"


def _one(job: tuple[str, int, dict[str, Any]]) -> dict[str, Any]:
    """Run the problem ``name`` at ``seed`` with default settings but ``overrides`` (in a worker process)."""
    from slt_tms.estimators import estimate_llc

    name, seed, overrides = job
    torch.set_num_threads(1)
    src = next(p for p, nm, *_ in problems(10_000) if nm == name)
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run that is not converged says so in its result
        res = estimate_llc(src, seed=seed, progress=False, **overrides)
    return {"problem": name, "seed": seed, "llc": res.llc, "se": res.se, "rhat": res.rhat, "ess": res.ess,
            "converged": bool(res.converged), "draws": int(res.trace.posterior.sizes["draw"]),
            "chains": int(res.trace.posterior.sizes["chain"]),
            "cpu_s": time.process_time() - c0}


def summarize(runs: list[dict[str, Any]], ref: float, ref_se: float) -> dict[str, Any]:
    """The statistics of the module docstring for one problem's runs."""
    est = np.array([r["llc"] for r in runs])
    se = np.array([r["se"] for r in runs])
    k = len(est)
    mean, sd = float(est.mean()), float(est.std(ddof=1))
    se_mean = sd / math.sqrt(k)
    rms = float(np.sqrt(np.mean(se**2)))
    z = (est - ref) / np.hypot(se, ref_se)
    rms_err = float(np.sqrt(np.mean((est - ref) ** 2)))  # offset and spread together
    lo, hi = (math.sqrt(stats.chi2.ppf(q, k - 1) / (k - 1)) for q in (0.025, 0.975))
    return {"seeds": k, "reference": ref, "reference_se": ref_se, "mean": mean, "se_of_mean": se_mean,
            "bias": mean - ref, "bias_rel": (mean - ref) / ref,
            "bias_z": (mean - ref) / math.hypot(se_mean, ref_se),
            "sd": sd, "rms_se": rms, "sd_over_rms_se": sd / rms, "honest_range": [lo, hi],
            "rms_error": rms_err, "rms_error_over_rms_se": rms_err / rms,
            "frac_abs_z_gt_2": float(np.mean(np.abs(z) > 2)),
            "frac_abs_z_gt_3": float(np.mean(np.abs(z) > 3)), "max_abs_z": float(np.abs(z).max()),
            "frac_converged": float(np.mean([r["converged"] for r in runs])),
            "mean_draws": float(np.mean([r["draws"] for r in runs])),
            "mean_cpu_s": float(np.mean([r["cpu_s"] for r in runs]))}


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the summaries ``rows``."""
    md = ["| problem | reference | mean of estimates +/- SE | bias | bias / SE "
          "| sd / rms SE (honest 95% range) | rms error / rms SE | abs(z) > 2 | abs(z) > 3 | converged "
          "| draws per chain | CPU s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["honest_range"]
        md.append(f"| {r['problem']} | {r['reference']:.4f} | {r['mean']:.4f} +/- {r['se_of_mean']:.4f} | "
                  f"{100 * r['bias_rel']:+.1f}% | {r['bias_z']:+.1f} | {r['sd_over_rms_se']:.2f} "
                  f"({lo:.2f}-{hi:.2f}) | {r['rms_error_over_rms_se']:.2f} | "
                  f"{100 * r['frac_abs_z_gt_2']:.1f}% | {100 * r['frac_abs_z_gt_3']:.1f}% | "
                  f"{100 * r['frac_converged']:.0f}% | {r['mean_draws']:.0f} | {r['mean_cpu_s']:.1f} |")
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=40, help="seeds per problem (0 .. seeds-1 from --first)")
    ap.add_argument("--first", type=int, default=0, help="the first seed")
    ap.add_argument("--only", default="", help="substring filter on problem names")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    ap.add_argument("--out", type=Path, default=OUT, help="output path without suffix (.json and .md)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override an LLCConfig field (e.g. adapt_metric=false); repeatable")
    ap.add_argument("--resummarize", type=Path, metavar="JSON",
                    help="no runs: recompute the summaries and the table from the runs of an earlier record")
    args = ap.parse_args(argv)
    if args.seeds < 3:
        ap.error("--seeds must be at least 3 (the spread over seeds needs them)")
    overrides = parse_overrides(ap, args.set)
    refs = {name: (ref, ref_se) for _, name, ref, ref_se, *_ in problems(10_000) if ref is not None}
    if args.resummarize is not None:
        try:
            meta = json.loads(args.resummarize.read_text())
            runs = meta["runs"]
        except (OSError, ValueError, KeyError) as exc:
            ap.error(f"--resummarize needs a record written by this script: {exc}")
        names = [n for n in refs if any(r["problem"] == n for r in runs)]
        meta["resummarized"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    else:
        names = [n for n in refs if args.only in n]
        if not names:
            ap.error(f"no problem with a reference matches --only {args.only!r}")
        jobs = [(name, s, overrides) for name in names for s in range(args.first, args.first + args.seeds)]
        t0 = time.time()
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            runs = list(pool.map(_one, jobs))
        meta = {"command": " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", "python",
                                     *sys.argv]),
                "torch": torch.__version__, "machine": platform.platform(),
                "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.time() - t0,
                "overrides": overrides}
    rows = []
    for name in names:
        row = {"problem": name, **summarize([r for r in runs if r["problem"] == name], *refs[name])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = table(rows)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta.update(rows=rows, runs=runs)
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=float))
    args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
