r"""The ground-truth table of the LLC estimator with DEFAULT settings (docs: estimators).

For every closed-form problem (regular quadratic, normal crossings, the four Aoyagi-Watanabe branches of
reduced-rank regression and its r = 0 case, deep linear networks with 3 and 4 layers, the TMS k-gons)
this runs ``estimate_llc(problem)`` with nothing set but the seed, and then the asymptotic estimate
(``ladder=(1, 2, 4, 8)``, ``multiplicity=m`` of the problem: the fit :math:`\lambda + a/(n\beta)`, with
the :math:`-(m-1)/\log(n\beta)` term when :math:`m > 1`, over four inverse temperatures; for
:math:`w_1^2 w_2^4` the correction :math:`a/(n\beta)^{1/4}` of its next pole, ``correction_exponent=0.25``;
the rungs of an :math:`m = 1` fit run longer until its SE is 2% of it, ``asymptotic_rse``), and prints:

* the finite-:math:`n\beta` estimate with its SE, R-hat, bulk ESS and CPU seconds, against an
  independent reference of the *same* estimand: exact quadrature (normal crossings), the closed form
  (regular quadratic) or NumPyro's NUTS (4 x 20 000 draws; reduced-rank regression, deep linear
  networks), as z = (estimate - reference) / combined SE;
* the asymptotic :math:`\lambda` with its SE against the theoretical :math:`\lambda` (relative error).

Run (one thread, a few minutes on this machine; 20 minutes under heavy load)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ground_truth_table.py [--quick]

Writes ``benchmarks/results/ground_truth_table.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("SLT_TMS_NO_PROGRESS", "1")

import torch
from scipy import integrate

from slt_tms.estimators import default_nbeta, estimate_llc
from slt_tms.theory import ground_truth as gt
from slt_tms.theory.critical_points import kgon

OUT = Path(__file__).resolve().parent / "results"
LADDER = (1.0, 2.0, 4.0, 8.0)

# NumPyro NUTS (benchmarks/reference/numpyro_llc_reference.py; 4 x 20 000 draws) of nbeta (E[L] - L*) at
# nbeta = n / log n, n = 1e4, localization 1: (value, MCSE).
NUMPYRO_1E4 = {
    "rrr(M=3,N=3,H=2,r=1)": (3.3515, 0.0101),
    "rrr(M=2,N=5,H=2,r=1)": (3.4934, 0.0107),
    "rrr(M=5,N=2,H=2,r=1)": (3.5014, 0.0106),
    "rrr(M=2,N=2,H=5,r=1)": (1.9938, 0.0081),
    "rrr(M=3,N=3,H=2,r=0)": (2.4436, 0.0090),
    "dln(widths=(3, 2, 2, 3),r=1)": (2.9555, 0.0100),
    "dln(widths=(3, 2, 2, 2, 3),r=1)": (2.8395, 0.0100),
}


def nc_exact(power: int, nbeta: float) -> float:
    """nbeta E[w1^2 w2^power] under exp(-nbeta w1^2 w2^power - |w|^2/2), by quadrature (w1 integrated
    out in closed form; -d log Z / d log nbeta by a central difference)."""

    def log_z(s: float) -> float:
        def f(w: float) -> float:
            return math.exp(-w * w / 2) * math.sqrt(2 * math.pi / (1 + 2 * s * w**power))

        a = s ** (-1.0 / power)
        return math.log(integrate.quad(f, 0, a, limit=500)[0] + integrate.quad(f, a, 40, limit=500)[0])

    h = 1e-4
    return -(log_z(nbeta * (1 + h)) - log_z(nbeta * (1 - h))) / (2 * h)


def problems(n: int) -> list[tuple[Any, str, float | None, float, float, int]]:
    """(source, name, finite-n reference, its SE, theoretical lambda, multiplicity)."""
    nb = default_nbeta(n)
    out: list[tuple[Any, str, float | None, float, float, int]] = []
    extra = [gt.reduced_rank_regression(3, 3, 2, 0, n, 0), gt.deep_linear_network((3, 2, 2, 2, 3), 1, n, 0)]
    for p in [*gt.standard_problems(n), *extra]:
        name = p.name
        ref: float | None = None
        ref_se = 0.0
        if name.startswith("normal_crossing"):  # K = w1^2 w2^(2 k2)
            ref = nc_exact(4 if "k=(1, 2)" in name else 2, nb)
        elif name.startswith("regular_quadratic"):  # per coordinate nbeta c / (2 (nbeta c + gamma))
            c = torch.linspace(1.0, 2.0, 4, dtype=torch.float64)
            ref = float((nb * c / (2 * (nb * c + 1.0))).sum())
        elif name in NUMPYRO_1E4 and n == 10_000:
            ref, ref_se = NUMPYRO_1E4[name]
        out.append((p, name, ref, ref_se, float(p.lambda_true), int(p.multiplicity)))
    return out


def parse_overrides(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as ``LLCConfig`` overrides: JSON values (numbers, true/false, null,
    lists), else the bare string (e.g. ``sampler=mala``); an item without ``=`` is a usage error."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def run_one(source: Any, kw: dict[str, Any]) -> tuple[Any, float, list[str]]:
    t0 = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_llc(source, progress=False, seed=0, **kw)
    return res, time.process_time() - t0, [str(w.message).split("\n")[0][:120] for w in caught]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two problems only (smoke test)")
    ap.add_argument("--only", default="", help="substring filter on problem names")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override an LLCConfig field (e.g. num_leapfrog=4 or sampler=mala); repeatable")
    ap.add_argument("--no-ladder", action="store_true", help="skip the asymptotic (ladder) estimate")
    args = ap.parse_args()
    overrides = parse_overrides(ap, args.set)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows: list[dict[str, Any]] = []
    items = problems(10_000)
    for k, c, s in [(6, 6, 0), (5, 6, 0), (5, 6, 1), (5, 5, 0), (7, 7, 0), (8, 8, 0)]:
        cp = kgon(k, c, s)
        name = f"TMS {cp.name} (c={c}), population loss, n=1e5"
        items.append((cp, name, None, 0.0, float(cp.lambda_theory), 1))
    if args.only:
        items = [it for it in items if args.only in it[1]]
    if args.quick:
        items = items[:2]
    for src, name, ref, ref_se, lam, mult in items:
        kw: dict[str, Any] = {"n": 100_000} if name.startswith("TMS") else {}
        kw.update(overrides)
        res, cpu, warns = run_one(src, kw)
        row: dict[str, Any] = {"problem": name, "lambda": lam, "multiplicity": mult, "reference": ref,
                               "reference_se": ref_se,
                               "llc": res.llc, "se": res.se, "rhat": res.rhat, "ess": res.ess,
                               "converged": bool(res.converged), "ok": bool(res.ok), "sampler": res.sampler,
                               "cpu_s": cpu, "warnings": warns, "nbeta": res.nbeta}
        if ref is not None:
            row["z"] = (res.llc - ref) / math.hypot(res.se, ref_se)
        if args.no_ladder:
            row.update(asym=math.nan, asym_se=math.nan, asym_rel=math.nan, asym_cpu_s=0.0,
                       asym_converged=False, asym_warnings=[])
        else:
            # the fit's form: lambda + a/nbeta^p with p the gap to the next pole of the zeta function, 1
            # but for w1^2 w2^4 (poles 1/4 and 1/2: p = 1/4, as in the test suite)
            form = {"correction_exponent": 0.25} if "k=(1, 2)" in name else {}
            fit, cpu_fit, warns_fit = run_one(src, {**kw, "ladder": LADDER, "multiplicity": mult, **form})
            a = fit.asymptotic
            row.update(asym=a.llc, asym_se=a.se, asym_rel=(a.llc - lam) / lam, asym_cpu_s=cpu_fit,
                       asym_converged=all(a.converged), asym_warnings=warns_fit)
        rows.append(row)
        print(json.dumps(row), flush=True)
    md = ["| problem | lambda | reference (same nbeta) | estimate +/- SE | z | R-hat | ESS | CPU s | "
          "asymptotic lambda +/- SE | rel. err. | CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = "" if r["reference"] is None else f"{r['reference']:.4f}"
        z = f"{r['z']:+.1f}" if "z" in r else ""
        flag = "" if r["converged"] else " (not converged)"
        asym = "skipped | | " if math.isnan(r["asym"]) else (
            f"{r['asym']:.3f} +/- {r['asym_se']:.3f} | {100 * r['asym_rel']:+.1f}% | {r['asym_cpu_s']:.0f}")
        md.append(f"| {r['problem']} | {r['lambda']:g} | {ref} | {r['llc']:.3f} +/- {r['se']:.3f}{flag} | "
                  f"{z} | {r['rhat']:.3f} | {r['ess']:.0f} | {r['cpu_s']:.1f} | {asym} |")
    table = "\n".join(md)
    print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ground_truth_table.py",
            "torch": torch.__version__, "machine": platform.platform(),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    if not args.quick and not args.only and not overrides and not args.no_ladder:
        (OUT / "ground_truth_table.json").write_text(json.dumps(meta, indent=1, default=float))
        (OUT / "ground_truth_table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
