r"""The numbers and figures of the papers we reproduce, and how ours compare (the report's first sections).

:data:`PAPER_VALUES` is the one table of the paper's numbers that the reproduction checks, each with its
source; :data:`FIGURE_MAP` says which of our figures stands for which figure of Chen et al. (2023) or of
Elhage et al. (2022). :func:`paper_rows` reads *our* value of every entry from the files the stages of
``slt-tms reproduce`` wrote and computes a :class:`Verdict` from the numbers (:func:`verdict_printed`,
:func:`verdict_estimate`, :func:`verdict_range`, :func:`verdict_sequence`); nothing of ours is typed in
here. :func:`figure_rows` checks that every mapped figure of a stage that ran is there.

Sources:

* Chen, Lau, Mendel, Wei, Murfet (2023), *Dynamical versus Bayesian Phase Transitions in a Toy Model of
  Superposition*, arXiv:2310.06301 ("Chen et al. 2023").
* Elhage et al. (2022), *Toy Models of Superposition*, Transformer Circuits Thread ("Elhage et al. 2022").

Provenance: the paper's PDF was not at hand when this table was written. The values were transcribed
from a public reproduction that quotes the paper's tables (Table A.1: ``l*``, ``b*``; Table K.1: the
SGLD estimates; the c = 6 losses; the figure numbers of Chen et al.), cross-checked against each other
(every printed digit of ``l*``, ``b*`` and the losses agrees with the closed forms of
:mod:`slt_tms.theory`, and the paper's ``n_c = 601`` follows from them), and should be checked against
arXiv:2310.06301v1 before they are cited elsewhere.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FIGURE_MAP",
    "PAPER_VALUES",
    "FigureRef",
    "PaperValue",
    "Verdict",
    "figure_rows",
    "paper_rows",
    "verdict_estimate",
    "verdict_printed",
    "verdict_range",
    "verdict_sequence",
]

CHEN = "Chen et al. 2023"
ELHAGE = "Elhage et al. 2022"


@dataclass(frozen=True)
class PaperValue:
    """One number (or set of numbers) of a paper that the reproduction checks.

    Attributes
    ----------
    key : str
        Stable identifier (what :data:`_OURS` and the tests use).
    quantity : str
        What the number is, with its conditions.
    source : str
        Where in which paper it is printed.
    values : tuple of str
        The values as printed (their decimals set the tolerance of :func:`verdict_printed`).
    kind : {"printed", "exact", "estimate", "range", "sequence"}
        How ours is compared: to the printed precision, exactly (closed forms), within the error bars,
        by overlap with a range, or by the order of a sequence.
    error : tuple of str
        The paper's ``±`` of an estimate.
    if_differs : str
        Why ours can differ, shown when the verdict is "differs".
    conditions : tuple of (str, str)
        The paper's settings behind the number, as ``(field, value)`` in the terms of our result files
        (e.g. ``("n", "5000")``); where ours were made otherwise, the verdict says so.
    """

    key: str
    quantity: str
    source: str
    values: tuple[str, ...]
    kind: str
    error: tuple[str, ...] = ()
    if_differs: str = ""
    conditions: tuple[tuple[str, str], ...] = ()


_A1 = f"{CHEN}, Table A.1"
_LOSSES = f"{CHEN}, losses of the c = 6 k-gons"
_LAMBDA = f"{CHEN}, learning coefficients of the c = 6 k-gons (minimally singular: rank(H)/2)"
_K1 = f"{CHEN}, Table K.1 (SGLD, n = 5000)"
_K1_WHY = ("the paper's estimates are at n = 5000, ours at the llc stage's larger n: the estimator's upward "
           "bias shrinks as n grows (docs/estimators.md)")
_K1_AT = (("n", "5000"), ("sampler", "sgld"))

#: Every number of Chen et al. (2023) that the reproduction compares with its own (values as printed).
PAPER_VALUES: tuple[PaperValue, ...] = (
    PaperValue("A1-4", "l*, b* of the 4-gon", _A1, ("1", "0"), "exact"),
    PaperValue("A1-5", "l*, b* of the 5-gon", _A1, ("1.17046", "-0.28230"), "printed"),
    PaperValue("A1-6", "l*, b* of the 6-gon", _A1, ("1.32053", "-0.61814"), "printed"),
    PaperValue("loss-4", "population loss L of 4 (c = 6)", _LOSSES, ("0.11111",), "printed"),
    PaperValue("loss-4+", "population loss L of 4+ (c = 6)", _LOSSES, ("0.10417",), "printed"),
    PaperValue("loss-5", "population loss L of 5 (c = 6)", _LOSSES, ("0.06874",), "printed"),
    PaperValue("loss-5+", "population loss L of 5+ (c = 6)", _LOSSES, ("0.06180",), "printed"),
    PaperValue("loss-6", "population loss L of 6 (c = 6)", _LOSSES, ("0.04819",), "printed"),
    PaperValue("lambda-5", "learning coefficient λ of 5 (c = 6)", _LAMBDA, ("7",), "exact"),
    PaperValue("lambda-5+", "learning coefficient λ of 5+ (c = 6)", _LAMBDA, ("8.5",), "exact"),
    PaperValue("lambda-6", "learning coefficient λ of 6 (c = 6)", _LAMBDA, ("8.5",), "exact"),
    PaperValue("K1-5", "LLC estimate λ̂ at 5 (c = 6)", _K1, ("7.71",), "estimate", ("0.85",), _K1_WHY,
               _K1_AT),
    PaperValue("K1-5+", "LLC estimate λ̂ at 5+ (c = 6)", _K1, ("9.91",), "estimate", ("1.27",), _K1_WHY,
               _K1_AT),
    PaperValue("K1-6", "LLC estimate λ̂ at 6 (c = 6)", _K1, ("9.03",), "estimate", ("0.59",), _K1_WHY,
               _K1_AT),
    PaperValue(
        "nc-5-6",
        "asymptotic critical n of 5 → 6 (c = 6), free energy n L + λ log n − log φ(w*)",
        f"{CHEN}, Bayesian phase transitions (the 5 → 6 crossover)",
        ("601",),
        "printed",
        if_differs="our n_c is computed with the paper's O(1) term (the prior at the representative with "
        "dead biases 0); the phases stage also prints the full O(1) constant and the point prior",
    ),
    PaperValue(
        "switch-5-6",
        "observed posterior switch 5 → 6 (c = 6)",
        f"{CHEN}, Fig. 2 (posterior occupancy over n)",
        ("600", "700"),
        "range",
        if_differs="the asymptotic free energy that puts the crossover at 601 drops the O(1) volume terms "
        "and the finite-n excess λ_eff(n) − λ, which favour the pentagon differently from the "
        "hexagon at these n; measured with replica exchange over n our posterior switches earlier "
        "(docs/phases.md, 'All asymptotic variants are far from the observed switch')",
    ),
    PaperValue(
        "sgd-sequence",
        "SGD plateau sequence (c = 6, from near a 4-gon)",
        f"{CHEN}, Fig. 1 and §5 (SGD transitions)",
        ("4", "4+ or 4++", "5"),
        "sequence",
        if_differs="a transition against the (k, σ) order: SGD moved to fewer vertices or positive-bias "
        "dead columns",
        conditions=(("init", "kgon"), ("num_steps", "225000"), ("batch_size", "20"), ("lr", "0.005")),
    ),
)


@dataclass(frozen=True)
class FigureRef:
    """One of our figures and its counterpart in the papers (``"—"``: ours only)."""

    stage: str
    path: str
    shows: str
    chen: str = "—"
    elhage: str = "—"
    profiles: tuple[str, ...] = ("quick", "paper")


#: Our figures (paths under the output folder of ``slt-tms reproduce``) and the figures they correspond to.
FIGURE_MAP: tuple[FigureRef, ...] = (
    FigureRef("phases", "phases/free_energy.png", "local free energies F_n(a) − min_b F_n(b) over n with the "
              "crossovers (c = 6)", f"{CHEN}: no figure; the crossovers it predicts (n_c = 601 for 5 → 6) "
              "are in the text"),
    FigureRef("phases", "phases/sample/occupancy.png", "posterior occupancy of each phase over n, observed "
              "switch with its bootstrap interval (c = 6)", f"{CHEN}, Fig. 2 (posterior occupancy over n)"),
    FigureRef("phases", "phases/sample/occupancy_population.png", "posterior occupancy under the "
              "population loss L (no data), the anchor of the finite-n prediction (c = 6)"),
    FigureRef("phases", "phases/sample/switch_comparison.png", "switches: asymptotic (paper's and full "
              "constant), finite-n prediction and observed, for L and L_n; λ_eff(n) of each phase (c = 6)",
              f"{CHEN}: the predicted n_c = 601 and the observed 600–700 in the text"),
    FigureRef("phases", "phases/c5/free_energy.png", "local free energies over n (c = 5)"),
    FigureRef("phases", "phases/c5/sample/occupancy.png", "posterior occupancy of each phase over n (c = 5)"),
    FigureRef("phases", "phases/c5/sample/occupancy_population.png", "posterior occupancy under the "
              "population loss (c = 5)"),
    FigureRef("phases", "phases/c5/sample/switch_comparison.png", "switches: asymptotic, finite-n "
              "prediction and observed; λ_eff(n) (c = 5)"),
    FigureRef("phases", "phases/c7/free_energy.png", "local free energies over n (c = 7)",
              profiles=("paper",)),
    FigureRef("phases", "phases/c7/sample/occupancy.png", "posterior occupancy of each phase over n (c = 7)",
              profiles=("paper",)),
    FigureRef("phases", "phases/c7/sample/occupancy_population.png", "posterior occupancy under the "
              "population loss (c = 7)", profiles=("paper",)),
    FigureRef("phases", "phases/c7/sample/switch_comparison.png", "switches: asymptotic, finite-n "
              "prediction and observed; λ_eff(n) (c = 7)", profiles=("paper",)),
    FigureRef("dynamics", "dynamics/loss_vs_step.png", "SGD loss against step with the k-gon energy "
              "levels, one panel per seed", f"{CHEN}, Fig. 1 (loss plateaus at k-gon levels)"),
    FigureRef("dynamics", "dynamics/llc_vs_step.png", "λ̂ along training with ± 2 SE, one panel per "
              "seed", f"{CHEN}, Fig. 1 (λ̂ rising as the loss falls)"),
    FigureRef("dynamics", "dynamics/polygons.png", "the columns of W at every plateau", f"{CHEN}, Fig. 1 "
              "(the k-gons visited)"),
    FigureRef("dynamics", "dynamics/ordering.png", "Bayesian (n grows) and SGD (step grows) orderings of "
              "the visited families", f"{CHEN}, Fig. 3 (lower-loss plateaus have higher λ̂)"),
    FigureRef("superposition-geometry", "superposition/geometry.png", "columns of W (n = 5, m = 2) over "
              "sparsity, ReLU and linear", elhage=f"{ELHAGE}, 'Demonstrating Superposition' (5 features "
              "in 2 dimensions as sparsity grows)"),
    FigureRef("superposition-phase-diagram", "superposition/phase_diagram.png", "2 features in 1 "
              "dimension: trained and analytic phase diagram", elhage=f"{ELHAGE}, 'Superposition as a "
              "Phase Change' (one extra feature: not represented, dedicated dimension, superposition)"),
    FigureRef("superposition-dimensionality", "superposition/dimensionality.png", "dimensions per feature "
              "against 1/(1 − S)", elhage=f"{ELHAGE}, 'The Geometry of Superposition' (feature "
              "dimensionality, sticky at 1, 3/4, 2/3, 1/2, 2/5, 3/8)"),
    FigureRef("superposition-swish", "superposition/swish_geometry.png", "columns of W for swish_γ "
              "beside ReLU"),
    FigureRef("superposition-swish", "superposition/swish_metrics.png", "how large γ must be for "
              "swish_γ to match ReLU's geometry"),
)


# ----------------------------------------------------------------------------------------------------
# verdicts: computed from the numbers


@dataclass(frozen=True)
class Verdict:
    """``status`` is "agrees", "differs" or "not compared"; ``detail`` says by how much and against what
    tolerance; ``caveat`` what limits the comparison (e.g. the quick profile's settings)."""

    status: str
    detail: str
    caveat: str = ""


def _decimals(printed: str) -> int:
    return len(printed.split(".")[1]) if "." in printed else 0


def verdict_printed(paper: Sequence[str], ours: Sequence[float], *, exact: bool = False) -> Verdict:
    """Agrees when every value of ours rounds to the paper's printed value: within half a unit of its last
    printed digit (``exact=True``: within ``1e-9`` relative, for values the paper states exactly).

    Examples
    --------
    >>> verdict_printed(["1.17046"], [1.1704596]).status
    'agrees'
    >>> verdict_printed(["601"], [573.2]).status
    'differs'
    """
    if len(paper) != len(ours):
        raise ValueError(f"{len(paper)} printed values but {len(ours)} of ours")
    off = []
    for p, o in zip(paper, ours, strict=True):
        v = float(p)
        tol = 1e-9 * max(1.0, abs(v)) if exact else 0.5 * 10.0 ** -_decimals(p)
        if not math.isfinite(o) or abs(o - v) > tol:
            off.append(f"{p}: ours {o:.6g}, off by {o - v:+.3g} (tolerance {tol:.1g})")
    if off:
        return Verdict("differs", "; ".join(off))
    how = "exactly (1e-9)" if exact else "to every printed digit"
    return Verdict("agrees", f"equal {how}")


def verdict_estimate(
    paper: float, paper_error: float, ours: float, ours_se: float, *, k: float = 2.0
) -> Verdict:
    """Agrees when the difference is within the paper's error bar plus ``k`` of our standard errors.

    Examples
    --------
    >>> verdict_estimate(7.71, 0.85, 7.08, 0.13).status
    'agrees'
    >>> verdict_estimate(9.03, 0.59, 7.0, 0.1).status
    'differs'
    """
    d = ours - paper
    tol = paper_error + k * ours_se
    detail = (f"ours − paper = {d:+.2f}, {abs(d) / paper_error:.2f} of the paper's error bar "
              f"(tolerance: its error bar + {k:g} × our SE = {tol:.2f})")
    return Verdict("agrees" if math.isfinite(d) and abs(d) <= tol else "differs", detail)


def verdict_range(lo: float, hi: float, ours: float, ours_lo: float | None = None,
                  ours_hi: float | None = None) -> Verdict:
    """Agrees when ours (or its interval ``[ours_lo, ours_hi]``) overlaps the paper's range ``[lo, hi]``.

    Examples
    --------
    >>> verdict_range(600, 700, 650).status
    'agrees'
    >>> verdict_range(600, 700, 413, 319, 472).detail
    'ours 413 [319, 472] lies below 600–700 (gap 128 to the nearest end)'
    """
    a = ours if ours_lo is None else ours_lo
    b = ours if ours_hi is None else ours_hi
    ours_text = f"{ours:.0f}" + ("" if ours_lo is None else f" [{a:.0f}, {b:.0f}]")
    if b < lo:
        return Verdict("differs", f"ours {ours_text} lies below {lo:g}–{hi:g} (gap {lo - b:.0f} to the "
                       "nearest end)")
    if a > hi:
        return Verdict("differs", f"ours {ours_text} lies above {lo:g}–{hi:g} (gap {a - hi:.0f} to the "
                       "nearest end)")
    return Verdict("agrees", f"ours {ours_text} overlaps {lo:g}–{hi:g}")


def _k_sigma(name: str) -> tuple[int, int]:
    """``"4++"`` -> (4, 2); ``"5+,1-"`` -> (5, 1): vertices and positive-bias dead columns."""
    head = name.split(",")[0]
    return int(head.rstrip("+")), head.count("+")


def verdict_sequence(transitions: Sequence[tuple[str, str, int]]) -> Verdict:
    """Agrees when every observed SGD transition ``(source, target, count)`` goes up in (k, σ) -- to more
    vertices, or at equal k to more positive-bias dead columns -- the order of the paper's
    4 → 4+/4++ → 5; differs when one goes down; not compared without transitions.

    Examples
    --------
    >>> verdict_sequence([("4+", "4++", 2), ("4++", "5+", 1)]).status
    'agrees'
    >>> verdict_sequence([("5", "4+", 1)]).status
    'differs'
    """
    if not transitions:
        return Verdict("not compared", "no SGD transition between named families in this run")
    against = [(s, t, n) for s, t, n in transitions if _k_sigma(t) <= _k_sigma(s)]
    text = ", ".join(f"{s} → {t} ({n}×)" for s, t, n in transitions)
    if against:
        bad = ", ".join(f"{s} → {t}" for s, t, _ in against)
        return Verdict("differs", f"{bad} against the order (k, σ) increasing; all: {text}")
    return Verdict("agrees", f"every transition goes up in (k, σ), as in the paper's sequence: {text}")


# ----------------------------------------------------------------------------------------------------
# our values, from the files the stages wrote


class _Missing(Exception):
    """Our value could not be read: (status, message)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


#: Where each entry's value of ours is: (stage, file under the output folder, row selector, columns).
_OURS: dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]] = {
    "A1-4": ("theory", "theory/critical_points_c6.csv", {"name": "4"}, ("l*", "b*")),
    "A1-5": ("theory", "theory/critical_points_c6.csv", {"name": "5"}, ("l*", "b*")),
    "A1-6": ("theory", "theory/critical_points_c6.csv", {"name": "6"}, ("l*", "b*")),
    **{f"loss-{k}": ("theory", "theory/critical_points_c6.csv", {"name": k}, ("loss",))
       for k in ("4", "4+", "5", "5+", "6")},
    **{f"lambda-{k}": ("theory", "theory/critical_points_c6.csv", {"name": k}, ("lambda_theory",))
       for k in ("5", "5+", "6")},
    **{f"K1-{k}": ("llc", "llc/llc_vs_theory.csv", {"name": k, "c": "6"},
                   ("lambda_hat_n1e5", "se", "lambda_asymptotic", "se_asymptotic"))
       for k in ("5", "5+", "6")},
    "nc-5-6": ("phases", "phases/crossovers.csv", {"low_n": "5", "high_n": "6"},
               ("n_c_paper", "n_c_full", "n_c_point")),
    "switch-5-6": ("phases", "phases/sample/switch_points.csv", {"low_n": "5", "high_n": "6"},
                   ("observed_n_switch", "ci_lo", "ci_hi")),
    "sgd-sequence": ("dynamics", "dynamics/transition_counts.csv", {}, ()),
}


class _Run:
    """The stages of one run (from its summary) and their files, resolved against the output folder."""

    def __init__(self, root: Path, stages: Sequence[Mapping[str, Any]]) -> None:
        self.root = root
        self.stages = {s["name"]: s for s in stages}
        self._tables: dict[Path, list[dict[str, str]]] = {}  # each CSV parsed once (many rows use one)

    def file(self, stage: str, rel: str) -> Path:
        st = self.stages.get(stage)
        if st is None:
            raise _Missing("not compared", f"stage {stage} was not part of this run")
        if not st.get("ok"):
            raise _Missing("missing", f"stage {stage} failed")
        listed = {str(Path(f)) for f in st.get("files", [])}
        path = self.root / rel
        if rel not in listed or not path.is_file():
            raise _Missing("missing", f"{rel} is missing from the output of stage {stage}")
        return path

    def csv_rows(self, stage: str, rel: str) -> list[dict[str, str]]:
        path = self.file(stage, rel)
        if path not in self._tables:
            with path.open(newline="") as fh:
                self._tables[path] = list(csv.DictReader(fh))
        return self._tables[path]

    def json(self, stage: str, rel: str) -> Any:
        return json.loads(self.file(stage, rel).read_text())


def _numbers(run: _Run, key: str) -> list[float]:
    stage, rel, select, columns = _OURS[key]
    rows = [r for r in run.csv_rows(stage, rel) if all(r.get(k) == v for k, v in select.items())]
    if not rows:
        raise _Missing("missing", f"no row {select} in {rel}")
    out = []
    for col in columns:
        try:
            out.append(float(rows[0][col]))
        except (KeyError, TypeError, ValueError):
            out.append(math.nan)
    return out


def _unlike(conditions: Sequence[tuple[str, str]], ours: Mapping[str, Any]) -> str:
    """What of ``ours`` differs from the paper's ``conditions`` (text; empty when nothing does)."""
    diff = []
    for key, want in conditions:
        have = ours.get(key)
        try:
            same = float(have) == float(want)
        except (TypeError, ValueError):
            same = str(have).lower() == want.lower()
        if not same:
            diff.append(f"{key} = {have} (the paper's: {want})")
    return ("made with " + ", ".join(diff)) if diff else ""


def _g(x: float, digits: int = 6) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "n/a"


def _compare(pv: PaperValue, run: _Run) -> tuple[str, Verdict]:
    """(ours as text, verdict) for one entry."""
    stage, rel, _, _ = _OURS[pv.key]
    if pv.key == "nc-5-6":
        paper_c, full, point = _numbers(run, pv.key)
        text = (f"{_g(paper_c, 5)} with the paper's O(1) term (full constant: {_g(full, 4)}; point prior: "
                f"{_g(point, 4)})")
        return text, verdict_printed(pv.values, [paper_c])
    if pv.kind in ("printed", "exact"):
        ours = _numbers(run, pv.key)
        digits = max(_decimals(p) for p in pv.values) + 2
        text = ", ".join(f"{o:.{digits}f}" if math.isfinite(o) else "n/a" for o in ours)
        return text, verdict_printed(pv.values, ours, exact=pv.kind == "exact")
    if pv.kind == "estimate":
        llc, se, asym, asym_se = _numbers(run, pv.key)
        name, c = _OURS[pv.key][2]["name"], _OURS[pv.key][2]["c"]
        result = run.json(stage, f"{Path(rel).parent}/llc_c{c}_{name.replace('+', 'p')}.json")
        text = (f"{llc:.3f} ± {se:.3f} at n = {_g(float(result.get('n', math.nan)))} (asymptotic "
                f"{asym:.3f} ± {asym_se:.3f})")
        v = verdict_estimate(float(pv.values[0]), float(pv.error[0]), llc, se)
        return text, Verdict(v.status, v.detail, _unlike(pv.conditions, result))
    if pv.kind == "range":
        obs, lo, hi = _numbers(run, pv.key)
        if not math.isfinite(obs):
            return "no switch observed", Verdict("not compared", "the posterior did not switch from 5 to 6 "
                                                 "on this grid")
        v = verdict_range(float(pv.values[0]), float(pv.values[1]), obs, lo if math.isfinite(lo) else None,
                          hi if math.isfinite(hi) else None)
        caveat = ""
        try:
            cfg = run.json("phases", "phases/sample/occupancy.json").get("config", {})
        except _Missing:
            cfg = {}
        if cfg.get("quick"):
            caveat = (f"quick profile: {cfg.get('num_chains')} replica sets × {cfg.get('num_draws')} draws, "
                      "so the bootstrap interval over replica sets is crude")
        text = f"{obs:.0f}, bootstrap 95 % [{lo:.0f}, {hi:.0f}]" if math.isfinite(lo + hi) else f"{obs:.0f}"
        return text, Verdict(v.status, v.detail, caveat)
    if pv.kind == "sequence":
        rows = run.csv_rows(stage, rel)
        trans = [(r["source"], r["target"], int(r["count"])) for r in rows]
        analysis = run.json("dynamics", "dynamics/analysis.json")
        cfg = analysis.get("config", {})
        finals: dict[str, int] = {}
        for r in analysis.get("runs", []):
            if r.get("path"):
                finals[r["path"][-1]] = finals.get(r["path"][-1], 0) + 1
        text = ("transitions: " + (", ".join(f"{s} → {t} ({n}×)" for s, t, n in trans) or "none")
                + "; last family: " + ", ".join(f"{k} ({n}×)" for k, n in sorted(finals.items())))
        unlike = _unlike(pv.conditions, cfg)
        v = verdict_sequence(trans)
        caveat = f"{unlike}: only the order of the transitions can be compared" if unlike else ""
        return text, Verdict(v.status, v.detail, caveat)
    raise ValueError(f"no comparison for {pv.key!r} of kind {pv.kind!r}")


def paper_rows(root: str | Path, stages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per entry of :data:`PAPER_VALUES`: the paper's value and source, ours (read from the files
    the stages listed in ``stages`` wrote under ``root``), where ours comes from, and the verdict.

    A stage that was not run gives "not compared"; a stage that failed, or a file it should have written
    that is not there, gives "missing" (an error of the run).
    """
    run = _Run(Path(root), stages)
    out = []
    for pv in PAPER_VALUES:
        rel = _OURS[pv.key][1]
        paper = (" ± ".join((pv.values[0], pv.error[0])) if pv.kind == "estimate"
                 else "–".join(pv.values) if pv.kind == "range"
                 else " → ".join(pv.values) if pv.kind == "sequence" else ", ".join(pv.values))
        try:
            ours, verdict = _compare(pv, run)
        except _Missing as exc:
            ours, verdict = "—", Verdict(exc.status, exc.message)
        out.append({
            "key": pv.key, "quantity": pv.quantity, "paper": paper, "source": pv.source, "ours": ours,
            "from": rel, "status": verdict.status, "detail": verdict.detail, "caveat": verdict.caveat,
            "why": pv.if_differs if verdict.status == "differs" else "",
        })
    return out


def figure_rows(
    root: str | Path, stages: Sequence[Mapping[str, Any]], profile: str | None = None
) -> list[dict[str, str]]:
    """One row per entry of :data:`FIGURE_MAP` with its status in this run ("present"; "missing" when its
    stage ran but the figure is not there, or the stage failed; "not run"; "not in this profile" for a
    figure that only another ``profile`` makes), then a row for every figure the run produced that the
    map does not list ("not in the map")."""
    run = _Run(Path(root), stages)
    out = []
    known = {p for ref in FIGURE_MAP for p in ref.profiles}
    for ref in FIGURE_MAP:
        if profile in known and profile not in ref.profiles:
            out.append({"path": ref.path, "stage": ref.stage, "shows": ref.shows, "chen": ref.chen,
                        "elhage": ref.elhage, "status": "not in this profile",
                        "note": f"made by the {' and '.join(ref.profiles)} profile"})
            continue
        try:
            run.file(ref.stage, ref.path)
            status, note = "present", ""
        except _Missing as exc:
            status = "not run" if exc.status == "not compared" else "missing"
            note = exc.message
        out.append({"path": ref.path, "stage": ref.stage, "shows": ref.shows, "chen": ref.chen,
                    "elhage": ref.elhage, "status": status, "note": note})
    mapped = {ref.path for ref in FIGURE_MAP}
    for name, st in run.stages.items():
        for f in st.get("files", []):
            if str(f).endswith(".png") and str(f) not in mapped:
                out.append({"path": str(f), "stage": name, "shows": "", "chen": "", "elhage": "",
                            "status": "not in the map", "note": "add it to slt_tms.io.paper.FIGURE_MAP"})
    return out
