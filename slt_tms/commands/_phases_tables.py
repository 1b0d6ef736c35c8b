"""Tables, CSV files and the three-way comparison of ``slt-tms phases`` (the text the command prints and
writes; no sampling here)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from slt_tms.analysis.phase_constant import VARIANTS

__all__ = [
    "comparison_rows",
    "comparison_table",
    "crossover_csv",
    "fmt_n",
    "prediction_table",
    "switch_points_csv",
]


def fmt_n(x: float | None, digits: int = 1) -> str:
    """A sample size for a table: ``-`` for None, ``inf`` for infinity."""
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


_TERMS = (
    ("log_prior_nonflat", "prior"),
    ("laplace_volume", "Laplace"),
    ("log_orbit_length", "orbit"),
    ("log_copies", "copies"),
    ("log_flat_mass", "flat"),
)


def _variant_n_c(pred: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(low_n, high_n) -> {variant: crossover dict} over the variants of the prediction."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, block in (pred.get("variants") or {}).items():
        for x in block["crossovers"]:
            out.setdefault((x["low_n"], x["high_n"]), {})[key] = x
    return out


def prediction_table(pred: dict[str, Any]) -> str:
    lines = [f"O(1) term: {VARIANTS.get(pred.get('constant'), pred.get('constant'))} (--constant "
             f"{pred.get('constant')}); F_n = n L + lambda log n - K"]
    lines.append(f"{'phase':<8} {'L(w*)':>10} {'lambda':>8} {'se':>6} {'-K':>9} {'se(K)':>7}")
    for p in pred["phases"]:
        lines.append(
            f"{p['name']:<8} {p['loss']:>10.6f} {p['lambda']:>8.3f} {p['lambda_se']:>6.3f} "
            f"{-p['log_prior']:>9.3f} {p.get('log_prior_se', 0.0):>7.3g}"
        )
    variants = pred.get("variants") or {}
    full = variants.get("full")
    if full:
        lines.append("")
        lines.append("full constant K = prior + Laplace volume + log orbit length + log copies + log flat "
                     "mass:")
        lines.append(f"{'phase':<8} " + " ".join(f"{lab:>9}" for _, lab in _TERMS) + f" {'K':>9} {'d_nz':>5}")
        for p in full["phases"]:
            t = p["constant_terms"] or {}
            cells = " ".join(f"{t.get(key, float('nan')):>9.3f}" for key, _ in _TERMS)
            lines.append(f"{p['name']:<8} {cells} {p['log_prior']:>9.3f} {t.get('d_nz', 0):>5}")
    if variants:
        lines.append("")
        lines.append("-K by variant: " + "  ".join(
            f"{key}: " + ", ".join(f"{p['name']} {-p['log_prior']:.3f}" for p in block["phases"])
            for key, block in variants.items()))
    lines.append("")
    keys = list(variants)
    lines.append(
        f"{'crossover':<14} {'n_c':>10} {'Lambert W':>10} {'brentq':>10} {'branch':>6} {'interval':>22}"
        + "".join(f" {'n_c ' + k:>11}" for k in keys)
    )
    by_var = _variant_n_c(pred)
    for x in pred["crossovers"]:
        label = f"{x['low_n']}->{x['high_n']}"
        side = "".join(f" {fmt_n(by_var.get((x['low_n'], x['high_n']), {}).get(k, {}).get('n_c')):>11}"
                       for k in keys)
        if x["never"]:
            status = "never (equal free energies up to a constant)"
            lines.append(f"{label:<14} {status}")
            continue
        if x["n_c"] is None:
            lines.append(f"{label:<14} {'-':>10}  ({x['high_n']} favoured for every n >= 2)" + side)
            continue
        lo, hi = x["interval"]
        lines.append(
            f"{label:<14} {fmt_n(x['n_c']):>10} {fmt_n(x['n_c_lambert']):>10} {fmt_n(x['n_c_root']):>10} "
            f"{'-' if x['branch'] is None else x['branch']:>6} {'[' + fmt_n(lo) + ', ' + fmt_n(hi) + ']':>22}"
            + side
        )
    lines.append("")
    lines.append("predicted sequence of dominant phases as n grows:")
    lines.append(
        "  "
        + "  ->  ".join(
            f"{s['phase']} [{fmt_n(s['n_start'], 0)}, {fmt_n(s['n_end'], 0)})" for s in pred["sequence"]
        )
    )
    return "\n".join(lines)


def crossover_csv(pred: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    keys = list(pred.get("variants") or {})
    w.writerow(["low_n", "high_n", "n_c", "n_c_lambert", "n_c_root", "branch", "interval_lo", "interval_hi"]
               + [f"n_c_{k}" for k in keys])
    by_var = _variant_n_c(pred)
    for x in pred["crossovers"]:
        side = [by_var.get((x["low_n"], x["high_n"]), {}).get(k, {}).get("n_c") for k in keys]
        w.writerow(
            [x["low_n"], x["high_n"], x["n_c"], x["n_c_lambert"], x["n_c_root"], x["branch"], *x["interval"],
             *side]
        )
    return buf.getvalue()


def switch_points_csv(pred: dict[str, Any], switches, rows: list[dict[str, Any]] | None = None) -> str:
    """The text of ``switch_points.csv``: one row per measured switch.

    Columns: ``low_n, high_n, predicted_n_c, observed_n_switch, position, ci_lo, ci_hi, frac_crossing,
    predicted_lo, predicted_hi, predicted_source, agree, observed_population_n_switch,
    observed_population_lo, observed_population_hi, predicted_population_n_c, predicted_population_lo,
    predicted_population_hi, agree_population, predicted_n_c_<variant>...``.

    ``predicted_n_c`` with ``predicted_lo``/``predicted_hi`` is the finite-n prediction of the switch of the
    data's posterior (``predicted_source`` = ``finite-n``) when ``rows`` carry one, else the crossover of
    the primary asymptotic variant (``--constant``) with the interval from the standard errors of its
    numerical terms (equal to ``predicted_n_c`` when every term is exact). ``agree`` says whether the
    observed switch lies inside the predicted interval. The ``*_population`` columns do the same for the
    posterior of the population loss; ``predicted_n_c_<variant>`` gives every asymptotic variant's
    crossover side by side.
    """
    by_pair = {(x["low_n"], x["high_n"]): x for x in pred["crossovers"]}
    by_row = {(r["low_n"], r["high_n"]): r for r in rows or []}
    keys = list(pred.get("variants") or {})
    by_var = _variant_n_c(pred)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["low_n", "high_n", "predicted_n_c", "observed_n_switch", "position", "ci_lo", "ci_hi",
                "frac_crossing", "predicted_lo", "predicted_hi", "predicted_source", "agree",
                "observed_population_n_switch", "observed_population_lo", "observed_population_hi",
                "predicted_population_n_c", "predicted_population_lo", "predicted_population_hi",
                "agree_population"] + [f"predicted_n_c_{k}" for k in keys])
    for sw in switches:
        ci = sw.interval or (None, None)
        row = by_row.get((sw.low_n, sw.high_n), {})
        fin = row.get("finite_empirical")
        if fin:
            n_c, lo, hi, source = *fin, "finite-n"
        else:
            x = by_pair.get((sw.low_n, sw.high_n), {})
            interval = x.get("interval") if x.get("n_c") is not None else None
            n_c, (lo, hi) = x.get("n_c"), interval or (None, None)
            source = f"asymptotic {pred.get('constant')}"
        obs_pop = row.get("observed_population") or (None, None, None)
        fin_pop = row.get("finite_population") or (None, None, None)
        side = [by_var.get((sw.low_n, sw.high_n), {}).get(k, {}).get("n_c") for k in keys]
        w.writerow([sw.low_n, sw.high_n, n_c, sw.n_switch, sw.position, *ci, sw.frac_crossing, lo, hi, source,
                    row.get("agree_empirical"), *obs_pop, *fin_pop, row.get("agree_population"), *side])
    return buf.getvalue()


def _interval_or_none(x: Any) -> tuple[float | None, float | None, float | None] | None:
    """(n, lo, hi) of a SwitchPoint / SwitchPrediction, or None."""
    if x is None or x.n_switch is None:
        return None
    lo, hi = x.interval if x.interval else (None, None)
    return (x.n_switch, lo, hi)


def _inside(obs: Any, pred: Any) -> bool | None:
    """Whether the observed switch lies inside the predicted interval (None if either is missing)."""
    if obs is None or pred is None or obs.n_switch is None or pred.n_switch is None or pred.interval is None:
        return None
    return bool(pred.interval[0] <= obs.n_switch <= pred.interval[1])


#: A switch is a main one when its two phases hold at least this share of the draws where it happens;
#: other crossings are between minor phases (both rare there) and are reported as "minor".
MAIN_SHARE = 0.5
#: Fewer effective importance weights than this make the dataset effect (and the L_n prediction) unreliable.
MIN_WEIGHT_ESS = 20


def _pair_share(occ: Any, a: str, b: str, n: float | None) -> float | None:
    """Share of the draws in phases a or b at the grid point nearest (in log n) to n."""
    if n is None:
        return None
    g = int(np.argmin(np.abs(np.log(np.asarray(occ.n_grid, dtype=float)) - math.log(n))))
    prop = occ.proportions
    return float(prop[g, occ.phase_names.index(a)] + prop[g, occ.phase_names.index(b)])


def _rank_correlation(x: list[float | None], y: list[float | None]) -> tuple[float | None, int]:
    """Spearman correlation of the pairs where both are defined, and their number."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if len(pairs) < 3:
        return None, len(pairs)
    from scipy.stats import spearmanr  # lazy import (start-up time)

    r = float(spearmanr(*zip(*pairs, strict=True)).statistic)
    return (r if math.isfinite(r) else None), len(pairs)


def comparison_rows(
    pairs, pred, switches, pop_switches, finite, occ, per_dataset=()
) -> list[dict[str, Any]]:
    by_var = _variant_n_c(pred)
    obs = {(s.low_n, s.high_n): s for s in switches}
    obs_pop = {(s.low_n, s.high_n): s for s in pop_switches}
    fin = {(f.low_n, f.high_n): f for f in finite}
    each_obs = {(x["low_n"], x["high_n"]): x["n_switch"] for x in per_dataset}
    rows = []
    for a, b in pairs:
        var = by_var.get((a, b), {})
        f = fin.get((a, b))
        row = {
            "low_n": a,
            "high_n": b,
            "paper": (var.get("paper", {}).get("n_c"), None, None),
            "full": (var.get("full", {}).get("n_c"), None, None),
            "point": (var.get("point", {}).get("n_c"), None, None),
            "finite_population": _interval_or_none(f.population if f else None),
            "observed_population": _interval_or_none(obs_pop.get((a, b))),
            "finite_empirical": _interval_or_none(f.empirical if f else None),
            "observed_empirical": _interval_or_none(obs.get((a, b))),
            "agree_population": _inside(obs_pop.get((a, b)), f.population if f else None),
            "agree_empirical": _inside(obs.get((a, b)), f.empirical if f else None),
            "anchor": f.anchor if f else None,
            "weight_ess_min": f.weight_ess_min if f else None,
            "lambda_eff_diagnostics": f.diagnostics if f else None,
        }
        sw = obs.get((a, b))
        share = _pair_share(occ, a, b, sw.n_switch if sw is not None else None)
        row["share_at_switch"] = share
        row["role"] = "main" if share is not None and share >= MAIN_SHARE else "minor"
        observed_each = each_obs.get((a, b))
        predicted_each = f.empirical.per_dataset if f is not None and f.empirical is not None else None
        if observed_each is not None and predicted_each is not None:
            r, m = _rank_correlation(predicted_each, observed_each)
            row["per_dataset"] = {"predicted": predicted_each, "observed": observed_each, "spearman": r,
                                  "num_datasets": m}
        rows.append(row)
    return rows


def comparison_table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if not v or v[0] is None:
            return "-"
        n, lo, hi = v
        return fmt_n(n) if lo is None else f"{fmt_n(n)} [{fmt_n(lo)}, {fmt_n(hi)}]"

    def flag(x: bool | None) -> str:
        return "-" if x is None else ("agree" if x else "DISAGREE")

    lines = ["switch points: asymptotic (paper's constant / full constant), finite-n prediction (95% "
             "interval) and observed (95% dataset bootstrap), for the population loss L and the data's L_n"]
    head = (f"{'switch':<9} {'role':<5} {'paper':>7} {'full':>7} {'finite-n, L':>22} {'observed, L':>22} "
            f"{'':>8} {'finite-n, L_n':>22} {'observed, L_n':>22} {'':>8}")
    lines.append(head)
    for r in sorted(rows, key=lambda r: r["role"] != "main"):
        lines.append(
            f"{r['low_n'] + '->' + r['high_n']:<9} {r['role']:<5} {cell(r['paper']):>7} {cell(r['full']):>7} "
            f"{cell(r['finite_population']):>22} {cell(r['observed_population']):>22} "
            f"{flag(r['agree_population']):>8} {cell(r['finite_empirical']):>22} "
            f"{cell(r['observed_empirical']):>22} {flag(r['agree_empirical']):>8}"
        )
    lines.append(f"  role: main = the two phases hold >= {MAIN_SHARE:.0%} of the L_n draws at the observed "
                 "switch; minor = a crossing of two rare phases")
    for r in rows:
        obs = r["observed_empirical"]
        if r["role"] != "main" or not obs or obs[0] is None:
            continue
        named = (("paper", r["paper"]), ("full constant", r["full"]), ("point prior", r["point"]),
                 ("finite-n", r["finite_empirical"]))
        off = [f"{lab} {fmt_n(v[0], 0)} ({100 * (v[0] / obs[0] - 1):+.0f}%)" for lab, v in named
               if v and v[0] is not None]
        if off:
            lines.append(f"  {r['low_n']}->{r['high_n']}: against the observed L_n switch "
                         f"{fmt_n(obs[0], 0)}: " + ", ".join(off))
    for r in rows:
        anc = r["anchor"] or {}
        if "n0" in anc:
            ess = r["weight_ess_min"]
            few = ess is not None and ess < MIN_WEIGHT_ESS
            warn = " (FEW: the dataset effect is unreliable)" if few else ""
            lines.append(f"  {r['low_n']}->{r['high_n']}: anchored at n0 = {anc['n0']:.0f} (log-odds "
                         f"{anc['log_odds']:+.2f} +- {anc['se']:.2f} from the population-loss occupancy); "
                         f"smallest importance-weight ESS {ess:.0f}{warn}")
            dg = r.get("lambda_eff_diagnostics") or {}
            if dg:
                verdict = "converged" if dg["converged"] else "NOT CONVERGED (the interval may be too narrow)"
                lines.append(f"    lambda_eff: max R-hat {dg['max_rhat']:.3f}, min ESS {dg['min_ess']:.0f}, "
                             f"max leave rate {dg['max_leave_rate']:.2f}: {verdict}")
        elif anc:
            lines.append(f"  {r['low_n']}->{r['high_n']}: no finite-n prediction ({anc.get('reason')})")
        each = r.get("per_dataset")
        if each and each["spearman"] is not None and r["role"] == "main":
            lines.append(f"  {r['low_n']}->{r['high_n']}: per dataset, predicted vs observed switch: "
                         f"Spearman r = {each['spearman']:+.2f} over {each['num_datasets']} datasets")
    return "\n".join(lines)
