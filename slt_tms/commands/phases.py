"""``slt-tms phases``: Bayesian phase transitions against the sample size.

Subcommands
-----------
``predict``
    Free energies of the critical points of the TMS with ``c`` features, crossovers of every pair
    (Lambert W, checked by brentq) and the predicted sequence of phases, for every variant of the
    :math:`O(1)` term side by side (:mod:`slt_tms.analysis.phase_constant`)
    (``slt-tms phases predict --c 6 [--lambda theory|estimate] [--constant full|paper|point] [--out DIR]``).
``sample``
    Posterior occupancy of each phase over a grid of sample sizes (HMC with replica exchange over
    ``n``), observed switch points with bootstrap intervals, beside the prediction
    (``slt-tms phases sample --c 6 --n 100,200,... [--quick] --out DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slt_tms.analysis.free_energy import PhaseRecord, prediction
from slt_tms.analysis.phase_constant import VARIANTS
from slt_tms.commands._args import add_command
from slt_tms.commands._args import nonneg_float as _nonneg_float
from slt_tms.commands._args import nonneg_int as _nonneg_int
from slt_tms.commands._args import positive_int as _positive_int
from slt_tms.commands._args import replica_count as _replica_count
from slt_tms.commands._phases_tables import (
    comparison_rows,
    comparison_table,
    crossover_csv,
    fmt_n,
    prediction_table,
    switch_points_csv,
)
from slt_tms.estimators import estimate_llc
from slt_tms.experiments.lambda_eff import finite_n_switches
from slt_tms.experiments.occupancy import default_sensitivity, occupancy, switch_pairs
from slt_tms.experiments.posterior import HMCConfig, ladder_datasets
from slt_tms.io import atomic_write_text, save_figure, write_json
from slt_tms.io.locks import output_lock

__all__ = ["options", "predict", "register", "sample", "switch_points_csv"]

#: Grid used by ``sample`` when ``--n`` is not given.
#: A chain whose own split R-hat of L_n exceeds this (its two halves disagree) is marked as not mixed.
SLOW_CHAIN_RHAT = 1.05
DEFAULT_GRID = (30, 50, 75, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000)


def _int_list(text: str) -> list[int]:
    try:
        raw = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    odd = [v for v in raw if not math.isfinite(v) or v != int(v)]
    if odd:
        raise argparse.ArgumentTypeError(f"sample sizes must be whole numbers, got {odd} in {text!r}")
    values = [int(v) for v in raw]
    if not values:
        raise argparse.ArgumentTypeError("the list of sample sizes is empty; give e.g. --n 100,200,400")
    if any(v < 2 for v in values):
        raise argparse.ArgumentTypeError(f"sample sizes must be >= 2, got {values}")
    return values


class NoLearningCoefficient(ValueError):
    """No chosen phase has a learning coefficient the prediction can use (``phases sample`` then samples
    without a prediction)."""


def split_phase_names(text: str, known: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """The phase names in ``text``, separated by commas or spaces. Names that hold a comma themselves
    (``4+,1-``: a 4-gon with one dead column of positive bias and one switched-off vertex) are matched
    against ``known`` first, the longest that fits.

    Examples
    --------
    >>> split_phase_names("6,4+,1-, 5", ["6", "5", "4+", "4+,1-"])
    ['6', '4+,1-', '5']
    """
    parts = [t for t in text.replace(" ", ",").split(",") if t.strip()]
    names, i = [], 0
    while i < len(parts):
        for j in range(len(parts), i, -1):  # the longest run of parts that names a known phase
            if ",".join(parts[i:j]) in known:
                names.append(",".join(parts[i:j]))
                i = j
                break
        else:
            names.append(parts[i])
            i += 1
    return names


def _critical_points(c: int, progress: bool | None):
    from slt_tms.theory.critical_points import critical_points  # lazy import (start-up time)

    return critical_points(c, progress=progress)


def _phase_records(args: argparse.Namespace, points) -> tuple[list, dict[str, list], list[str]]:
    """PhaseRecords of the chosen points in the primary variant (``--constant``), the records of every
    variant of the O(1) term (:data:`VARIANTS`), and notes on what was left out."""
    notes = []
    points_all = list(points)
    if args.phases:
        known = {p.name: p for p in points}
        wanted = split_phase_names(args.phases, known)
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ValueError(f"unknown phase(s) {missing} for c = {args.c}; known: {' '.join(known)} "
                             "(separate names by commas or spaces)")
        points = [known[w] for w in wanted]
    lambdas: dict[str, tuple[float | None, float]] = {}
    untrusted = []
    if args.lambda_source == "theory":
        left_out = []
        for p in points:
            if p.lambda_theory is None:
                left_out.append(p.name)
                continue
            lambdas[p.name] = (None, 0.0)
        if left_out:
            notes.append(
                "left out, no theoretical lambda (L not C^2 there or lambda unknown; use --lambda estimate): "
                + ", ".join(left_out)
            )
    else:
        if not args.phases:
            points = points[: args.num_estimate]
        for p in points:
            res = estimate_llc(p, n=args.estimate_n, seed=args.seed, progress=args.progress)
            usable = res.ok and res.llc >= 0
            if usable:
                lambdas[p.name] = (float(res.llc), float(res.se))
            else:
                untrusted.append(p.name)
            notes.append(
                f"{p.name}: lambda estimated {res.llc:.3f} +- {res.se:.3f} (n = {args.estimate_n}, "
                f"R-hat {res.rhat:.3f}, ESS {res.ess:.0f}"
                + ("" if res.ok else ", NOT TRUSTWORTHY: " + "; ".join(res.flags))
                + ("" if res.llc >= 0 else "; negative: no learning coefficient")
                + f"); theory {p.lambda_theory}"
                + ("" if usable else "; LEFT OUT of the prediction")
            )
        notes.append(
            "full constant with estimated lambda: K_a is the Laplace constant of exponent d_nz/2 (defined "
            "only for minimally singular points); pairing it with an estimated lambda mixes conventions"
        )
    if untrusted:
        notes.append("left out, estimate not trustworthy or negative (see above): " + ", ".join(untrusted))
    if not lambdas and args.lambda_source == "theory":
        have = [p.name for p in points_all if p.lambda_theory is not None]
        raise NoLearningCoefficient(
            f"no chosen phase has a theoretical learning coefficient at c = {args.c}; use --lambda estimate"
            + (f" or choose among {' '.join(have)} with --phases" if have and args.phases else "")
        )
    if not lambdas:
        raise NoLearningCoefficient(
            "no phase has a trustworthy, non-negative estimated learning coefficient (the notes of each "
            "estimate say why); raise --estimate-n or choose other --phases"
        )
    variants: dict[str, list] = {}
    for key in VARIANTS:
        recs, skipped = [], []
        for p in points:
            if p.name not in lambdas:
                continue
            lam, se = lambdas[p.name]
            try:
                recs.append(PhaseRecord.from_critical_point(p, lambda_=lam, lambda_se=se, constant=key))
            except ValueError:
                skipped.append(p.name)
        if skipped:
            notes.append(f"{VARIANTS[key]}: left out (not minimally singular: no Laplace constant): "
                         + ", ".join(skipped))
        variants[key] = recs
    if not variants[args.constant]:
        raise ValueError(
            f"no phase has the {VARIANTS[args.constant]!r} O(1) term (it needs minimally singular points "
            "with a Hessian spectrum); choose another --constant"
        )
    return variants[args.constant], {k: v for k, v in variants.items() if v}, notes


def _prediction(records, args: argparse.Namespace, variants: dict[str, list] | None = None) -> dict[str, Any]:
    pred = prediction(records, num_se=args.num_se, n_min=args.n_min, n_max=args.n_max, variants=variants,
                      constant=args.constant)
    pred["lambda_source"] = args.lambda_source
    return pred


# ---------------------------------------------------------------------------------------------
# phases predict
# ---------------------------------------------------------------------------------------------
def _predict_handler(args: argparse.Namespace) -> int:
    with output_lock(args.out) if args.out else contextlib.nullcontext():  # one run per --out, checked first
        return _predict_run(args)


def _predict_run(args: argparse.Namespace) -> int:
    args.progress = False if args.quiet else None
    if args.n_min < 2 or args.n_max <= args.n_min:
        raise ValueError(f"need 2 <= --n-min < --n-max, got {args.n_min}, {args.n_max}")
    points = _critical_points(args.c, args.progress)
    records, variants, notes = _phase_records(args, points)
    pred = _prediction(records, args, variants)
    pred["config"] = {
        "c": args.c,
        "lambda": args.lambda_source,
        "constant": args.constant,
        "phases": args.phases,
        "n_min": args.n_min,
        "n_max": args.n_max,
        "num_se": args.num_se,
        "seed": args.seed,
    }
    pred["notes"] = notes
    text = prediction_table(pred)
    sys.stdout.write(f"c = {args.c}, lambda from {args.lambda_source}\n\n{text}\n")
    if notes:
        sys.stdout.write("\nnotes:\n" + "\n".join("  " + s for s in notes) + "\n")
    if args.out:
        out = Path(args.out)
        write_json(out / "prediction.json", pred)
        atomic_write_text(out / "crossovers.csv", crossover_csv(pred))
        from slt_tms.plotting.phases import plot_free_energy  # lazy import (start-up time)

        fig = plot_free_energy(
            records,
            max(args.n_min, 10.0),
            args.n_max,
            title=f"c = {args.c}: local free energies (dotted: the dominant phase switches; "
            "×: other crossings)",
        )
        save_figure(fig, out / "free_energy.png", dpi=120)
        sys.stdout.write(f"\nwrote {out / 'prediction.json'}, crossovers.csv, free_energy.png\n")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--c", type=_positive_int, required=True, help="number of features (r = 2)")
    p.add_argument(
        "--lambda",
        dest="lambda_source",
        choices=("theory", "estimate"),
        default="theory",
        help="learning coefficients from theory (rank(H)/2 where defined) or from LLC estimates "
        "at each critical point (default: theory)",
    )
    p.add_argument(
        "--phases", default=None,
        help="phase names to use, separated by commas or spaces, e.g. '6,5,4+,1-' (names holding a comma "
        "are matched whole; default: all with lambda)"
    )
    p.add_argument(
        "--constant",
        choices=tuple(VARIANTS),
        default="paper",
        help="the O(1) term of the free energy used for the primary prediction: paper (log phi at dead bias "
        "0; reproduces the TMS paper's n_c = 601 for 5 -> 6 at c = 6), full (prior + Laplace volume + orbit "
        "+ copies + flat-region mass), point (log phi at dead bias -1); every variant is reported side by "
        "side, and none of them is right at the n of the TMS switches (default: paper)",
    )
    p.add_argument("--num-se", type=_nonneg_float, default=1.96,
                   help="interval half-width in standard errors (a finite number >= 0)")
    p.add_argument(
        "--estimate-n",
        type=_positive_int,
        default=2000,
        help="nominal n of the LLC estimates for --lambda estimate (default 2000; estimator defaults "
        "otherwise)",
    )
    p.add_argument(
        "--num-estimate",
        type=_positive_int,
        default=6,
        help="with --lambda estimate and no --phases: the lowest-loss points estimated (default 6)",
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="root seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _register_predict(sub: argparse._SubParsersAction) -> None:
    """free energies, crossovers and the predicted sequence of phases.

    Local free energies F_n = n L + lambda log n - K of the critical points for c features, with the O(1) term
    K in three variants side by side (full constant term by term; the paper's log phi at dead bias 0; log phi
    at dead bias -1), the crossover n of every pair (Lambert W closed form, checked by brentq) with an
    interval from standard errors, and the predicted sequence of dominant phases.
    """
    p = add_command(sub, "predict", _register_predict)
    _add_common(p)
    p.add_argument("--n-min", type=float, default=2.0, help="smallest n considered (default 2)")
    p.add_argument("--n-max", type=float, default=1e5, help="largest n considered (default 1e5)")
    p.add_argument(
        "--out", default=None, help="directory for prediction.json, crossovers.csv, free_energy.png"
    )
    p.set_defaults(handler=_predict_handler)


# ---------------------------------------------------------------------------------------------
# phases sample
# ---------------------------------------------------------------------------------------------
def _sample_handler(args: argparse.Namespace) -> int:
    with output_lock(args.out) if args.out else contextlib.nullcontext():  # one run per --out, checked first
        return _sample_run(args)


#: Defaults of ``phases sample`` per profile: datasets (replica sets) x draws, warmup; population-loss
#: replicas; basin-restricted chains, draws and warmup per (phase, n).
_SAMPLE_DEFAULTS = {
    "quick": {"chains": 8, "draws": 200, "warmup": 200, "pop_chains": 8, "basin_draws": 200,
              "basin_warmup": 150},
    "full": {"chains": 16, "draws": 1000, "warmup": 1000, "pop_chains": 8, "basin_draws": 600,
             "basin_warmup": 300},
}
#: The population-loss occupancy (the anchors of the finite-n prediction) starts at this sample size.
ANCHOR_N_MIN = 20


def _sample_run(args: argparse.Namespace) -> int:
    args.progress = False if args.quiet else None
    grid = sorted(set(args.n or DEFAULT_GRID))
    d = _SAMPLE_DEFAULTS["quick" if args.quick else "full"]
    chains = args.num_chains or d["chains"]
    draws = args.num_draws or d["draws"]
    warmup = args.num_warmup or d["warmup"]
    points = _critical_points(args.c, args.progress)
    args.n_min, args.n_max = 2.0, 1e5
    try:  # the prediction first: bad --phases fail before the sampling
        records, variants, notes = _phase_records(args, points)
        pred = _prediction(records, args, variants)
    except NoLearningCoefficient as exc:
        records, notes = [], [f"no prediction: {exc}"]
        pred = {"phases": [], "crossovers": [], "sequence": [], "lambda_source": args.lambda_source}
    basin_draws = args.basin_draws or d["basin_draws"]
    basin_warmup = args.basin_warmup or d["basin_warmup"]
    hmc = HMCConfig(num_leapfrog=args.num_leapfrog)
    sens = None if args.no_sensitivity else default_sensitivity(args.c)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    occ = occupancy(args.c, grid, points, num_chains=chains, num_draws=draws, num_warmup=warmup, config=hmc,
                    exchange=not args.no_exchange, max_ratio=args.max_ratio, sensitivity=sens, seed=args.seed,
                    progress=args.progress)
    timings["occupancy_empirical"] = time.perf_counter() - t0
    prop = occ.proportions
    pairs = switch_pairs(occ, pred["crossovers"], points)
    switches = occ.switch_points(pairs, num_bootstrap=args.num_bootstrap, seed=args.seed)
    per_dataset = occ.chain_switch_points(pairs)
    sensitivity = occ.switch_sensitivity(pairs, seed=args.seed) if sens else []
    pop = pop_switches = None
    finite, basins = [], {}
    if not args.no_finite_n:
        t1 = time.perf_counter()
        pop_chains = args.pop_chains or d["pop_chains"]
        pop = occupancy(args.c, sorted({ANCHOR_N_MIN, *grid}), points, num_chains=pop_chains, num_draws=draws,
                        num_warmup=warmup, config=hmc, max_ratio=args.max_ratio, loss="population",
                        seed=args.seed, progress=args.progress)
        timings["occupancy_population"] = time.perf_counter() - t1
        pop_switches = pop.switch_points(pairs, num_bootstrap=args.num_bootstrap, seed=args.seed)
        t2 = time.perf_counter()
        X = ladder_datasets(args.c, occ.n_grid[-1], chains, args.seed)
        try:  # a failure here must not lose the occupancy runs above: they are written below regardless
            finite, basins = finite_n_switches(
                pairs, points, pop.n_grid, pop.counts, pop.phase_names, datasets=X, n_max=occ.n_grid[-1],
                num_chains=args.basin_chains, num_draws=basin_draws,
                num_warmup=basin_warmup, num_bootstrap=args.num_bootstrap,
                seed=args.seed, progress=args.progress,
            )
        except (ValueError, RuntimeError) as exc:
            notes.append(f"no finite-n prediction: {exc}")
            sys.stderr.write(f"warning: the finite-n prediction failed ({exc}); the occupancies are kept\n")
        timings["finite_n"] = time.perf_counter() - t2
    elapsed = time.perf_counter() - t0
    rows = comparison_rows(pairs, pred, switches, pop_switches or [], finite, occ, per_dataset)

    lines = [
        f"c = {args.c}: posterior occupancy over n ({chains} datasets x {draws} draws, warmup {warmup}, "
        f"replica exchange {'on' if not args.no_exchange else 'off'}; {elapsed:.0f} s in all)"
    ]
    shown = [i for i, nm in enumerate(occ.phase_names) if prop[:, i].max() >= 0.02]
    lines.append(f"{'n':>6} " + " ".join(f"{occ.phase_names[i]:>12}" for i in shown)
                 + f" {'R-hat sets':>10} {'R-hat chain':>11}")
    slow = []
    for g, nv in enumerate(occ.n_grid):
        dg = occ.diagnostics[g]
        rh = dg["rhat"].get("loss", float("nan"))
        within = max((r for r in dg.get("rhat_within", {}).get("loss", []) if r == r), default=float("nan"))
        mark = " *" if within > SLOW_CHAIN_RHAT else ""
        if mark:
            slow.append(nv)
        lines.append(f"{nv:>6} " + " ".join(f"{prop[g, i]:>12.3f}" for i in shown)
                     + f" {rh:>10.3f} {within:>11.3f}{mark}")
    lines.append(
        "R-hat of L_n: 'sets' across replica sets (each has its own dataset, whose loss differs: above 1 "
        "even for chains that mixed); 'chain' the largest of each chain's own split R-hat (its two halves)"
    )
    if slow:
        at = ", ".join(str(v) for v in slow)
        notes.append(f"not converged at n = {at}: a chain's split R-hat of L_n exceeds {SLOW_CHAIN_RHAT}")
        lines.append(
            f"* NOT CONVERGED at n = {at}: a chain's two halves disagree (its split R-hat of L_n > "
            f"{SLOW_CHAIN_RHAT}); the occupancies there rest on few independent draws (more --num-draws and "
            "--num-warmup)"
        )
        sys.stderr.write(f"warning: not converged at n = {at} (a chain's own split R-hat of L_n > "
                         f"{SLOW_CHAIN_RHAT}); see the table\n")
    lines.append("")
    lines.append(f"{'switch':<12} {'observed':>10} {'bootstrap 95%':>20} {'frac':>6} "
                 f"{'per-dataset median':>19} {'sd':>6}")
    for sw, pd in zip(switches, per_dataset, strict=True):
        obs = fmt_n(sw.n_switch) if sw.n_switch is not None else f"({sw.position} grid)"
        ci = ("-" if sw.interval is None
              else f"(only {sw.frac_crossing:.1%} cross)" if sw.frac_crossing < 0.5  # no interval to speak of
              else f"[{fmt_n(sw.interval[0])}, {fmt_n(sw.interval[1])}]")
        lines.append(f"{sw.low_n + '->' + sw.high_n:<12} {obs:>10} {ci:>20} {sw.frac_crossing:>6.2f} "
                     f"{fmt_n(pd['median']):>19} {fmt_n(pd['sd']):>6}")
    if sensitivity:
        lines.append("")
        lines.append("classifier sensitivity (same draws, one setting changed): observed switch and shift")
        for x in sensitivity:
            shift = "-" if x["shift"] is None else f"{x['shift']:+.1f}"
            lines.append(f"  {x['low_n']}->{x['high_n']} {x['classifier']:<32} {fmt_n(x['n_switch']):>8} "
                         f"{shift:>8}  max unclassified share {max(x['unclassified_share']):.3f}")
    lines.append("")
    lines.append(comparison_table(rows))
    lines += [f"note: {s}" for s in notes if s.startswith(("no prediction", "no finite-n prediction"))]
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")

    out = Path(args.out)
    result = {
        "occupancy": occ.to_dict(),
        "population_occupancy": None if pop is None else pop.to_dict(),
        "prediction": pred,
        "switch_points": [s.to_dict() for s in switches],
        "switch_points_population": [s.to_dict() for s in pop_switches or []],
        "dataset_switch_points": per_dataset,
        "classifier_sensitivity": sensitivity,
        "finite_n": [f.to_dict() for f in finite],
        "lambda_eff": {k: v.to_dict() for k, v in basins.items()},
        "comparison": rows,
        "elapsed_seconds": elapsed,
        "timings_seconds": timings,
        "config": {
            "c": args.c,
            "n": grid,
            "quick": args.quick,
            "num_chains": chains,
            "num_draws": draws,
            "num_warmup": warmup,
            "num_leapfrog": args.num_leapfrog,
            "exchange": not args.no_exchange,
            "max_ratio": args.max_ratio,
            "lambda": args.lambda_source,
            "constant": args.constant,
            "seed": args.seed,
            "num_bootstrap": args.num_bootstrap,
            "finite_n": not args.no_finite_n,
            "pop_chains": None if pop is None else pop.counts.shape[1],
            "basin_chains": args.basin_chains,
            "basin_draws": basin_draws,
            "basin_warmup": basin_warmup,
            "anchor_n_min": ANCHOR_N_MIN,
        },
        "seed": args.seed,
        "notes": notes,
    }
    write_json(out / "occupancy.json", result)
    atomic_write_text(out / "occupancy.csv", occ.to_csv())
    if pop is not None:
        atomic_write_text(out / "occupancy_population.csv", pop.to_csv())
    atomic_write_text(out / "switch_points.csv", switch_points_csv(pred, switches, rows))
    from slt_tms.plotting.phases import plot_occupancy, plot_switch_comparison  # lazy import (start-up time)

    fig = plot_occupancy(occ, records or None, switches)
    save_figure(fig, out / "occupancy.png", dpi=120)
    written = ["occupancy.json", "occupancy.csv", "switch_points.csv", "occupancy.png"]
    if pop is not None:
        save_figure(plot_occupancy(pop, None, pop_switches), out / "occupancy_population.png", dpi=120)
        save_figure(plot_switch_comparison(rows, basins, c=args.c), out / "switch_comparison.png", dpi=120)
        written += ["occupancy_population.csv", "occupancy_population.png", "switch_comparison.png"]
    sys.stdout.write(f"wrote {out / written[0]}, " + ", ".join(written[1:]) + "\n")
    return 0


def _register_sample(sub: argparse._SubParsersAction) -> None:
    """posterior occupancy of each phase against n (HMC + replica exchange).

    Sample the TMS posterior (prior N(0, I), likelihood exp(-n L_n), one-hot uniform data) over a ladder of
    sample sizes with HMC and replica exchange between neighbouring n, classify every draw into a
    critical-point family, and compare the share of each phase with the predicted crossovers (observed
    switch points with bootstrap intervals over replica sets).
    """
    p = add_command(sub, "sample", _register_sample)
    _add_common(p)
    p.add_argument(
        "--n",
        type=_int_list,
        default=None,
        help=f"comma-separated sample sizes (default {','.join(map(str, DEFAULT_GRID))})",
    )
    p.add_argument("--quick", action="store_true", help="short run: 8 datasets x 200 draws, 200 warmup")
    p.add_argument(
        "--num-chains",
        type=_replica_count,
        default=None,
        help="datasets: independent replica sets, each with its own dataset and starts (default 16; 8 with "
        "--quick)",
    )
    p.add_argument("--num-draws", type=_positive_int, default=None,
                   help="draws per chain (default 1000; 200 with --quick)")
    p.add_argument("--num-warmup", type=_positive_int, default=None,
                   help="warmup per chain (default 1000; 200 with --quick)")
    p.add_argument("--num-leapfrog", type=_positive_int, default=16, help="mean leapfrog steps (default 16)")
    p.add_argument(
        "--max-ratio",
        type=float,
        default=1.3,
        help="largest ratio of neighbouring n in the ladder (default 1.3)",
    )
    p.add_argument("--no-exchange", action="store_true", help="independent chains at every n (no swaps)")
    p.add_argument(
        "--num-bootstrap", type=_positive_int, default=1000, help="bootstrap replicates (default 1000)"
    )
    p.add_argument(
        "--no-finite-n",
        action="store_true",
        help="skip the finite-n prediction (population-loss occupancy, basin-restricted lambda_eff(n), "
        "dataset effects)",
    )
    p.add_argument(
        "--pop-chains",
        type=_replica_count,
        default=None,
        help="replicas of the population-loss occupancy that anchors the finite-n prediction (default 8)",
    )
    p.add_argument("--basin-chains", type=_replica_count, default=4,
                   help="basin-restricted chains per phase and n (default 4)")
    p.add_argument("--basin-draws", type=_positive_int, default=None,
                   help="basin-restricted draws per chain (default 200 with --quick, else 600)")
    p.add_argument("--basin-warmup", type=_positive_int, default=None,
                   help="basin-restricted warmup per chain (default 150 with --quick, else 300)")
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the re-classification of the draws with alternative classifier settings")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(handler=_sample_handler)


_SUBCOMMANDS = (_register_predict, _register_sample)


def options(subcommand: str, **values: Any) -> argparse.Namespace:
    """The options of ``phases predict|sample`` with their command-line defaults, overridden by ``values``
    (the Python way to run the subcommands, e.g. from ``slt-tms reproduce``)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="phases_command")
    for reg in _SUBCOMMANDS:
        reg(sub)
    required = {"c": "1", "out": "."}
    ns = parser.parse_args([subcommand, *[x for k, v in required.items() for x in (f"--{k}", v)]])
    unknown = set(values) - set(vars(ns))
    if unknown:
        raise ValueError(f"unknown options of phases {subcommand}: {sorted(unknown)}")
    for k, v in values.items():
        setattr(ns, k, v)
    return ns


def predict(ns: argparse.Namespace) -> int:
    """Run ``phases predict`` with the options ``ns`` (:func:`options`)."""
    return _predict_handler(ns)


def sample(ns: argparse.Namespace) -> int:
    """Run ``phases sample`` with the options ``ns`` (:func:`options`)."""
    return _sample_handler(ns)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Bayesian phase transitions in the sample size n.

    Predict Bayesian phase transitions from local free energies and check them against posterior sampling.
    """
    parser = add_command(subparsers, "phases", register)
    sub = parser.add_subparsers(dest="phases_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
    for reg in _SUBCOMMANDS:
        reg(sub)
