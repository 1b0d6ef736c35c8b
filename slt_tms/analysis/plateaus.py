r"""Reading SGD trajectories: plateaus of the loss curve, stretches of equal critical-point family,
transitions between families, and the dynamical beside the Bayesian ordering of the families.

Pure numpy: the training records come from :mod:`slt_tms.experiments.sgd_dynamics`; every checkpoint is
named by the package's one classifier (:func:`slt_tms.analysis.kgon_classify.classify`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from slt_tms.analysis.free_energy import phase_sequence
from slt_tms.analysis.kgon_classify import UNCLASSIFIED, Classification, ClassifyTolerances, classify
from slt_tms.theory.critical_point import CriticalPoint

__all__ = [
    "SGD_TOLERANCES",
    "Plateau",
    "RunAnalysis",
    "Segment",
    "Transition",
    "analyze_run",
    "bayesian_ordering",
    "detect_plateaus",
    "dynamical_ordering",
    "find_transitions",
    "segments",
    "transition_counts",
]

# --------------------------------------------------------------------------------------------------
# plateaus, segments, transitions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plateau:
    """A stretch of the loss curve where log-loss is flat in log-step.

    Attributes
    ----------
    start_step, end_step : int
    start_index, end_index : int
        Indices into the curve (inclusive).
    loss : float
        Median loss over the stretch.
    name : str or None
        Family of the checkpoints inside it (majority), when classified.
    """

    start_step: int
    end_step: int
    start_index: int
    end_index: int
    loss: float
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_plateaus(
    steps: Sequence[int] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    window: float = 0.2,
    slope_tol: float = 0.05,
    min_decades: float = 0.25,
) -> list[Plateau]:
    r"""Plateaus of a loss curve: maximal stretches where :math:`\ln L` is flat against :math:`\log_{10} t`.

    At every logged step :math:`t_i > 0` the local slope :math:`s_i` is the least-squares slope of
    :math:`\ln L` against :math:`\log_{10} t` over the points with :math:`|\log_{10} t - \log_{10} t_i|
    \le` ``window``/2 (and at least its two neighbours).
    A point is flat when :math:`|s_i| \le` ``slope_tol`` (default 0.05: the loss
    changes by less than 5% per decade of steps); consecutive flat points spanning at least
    ``min_decades`` decades form a plateau.

    Returns
    -------
    list of Plateau, in order of step.
    """
    t = np.asarray(steps, dtype=float)
    L = np.asarray(losses, dtype=float)
    if t.shape != L.shape or t.ndim != 1:
        raise ValueError(f"steps and losses must be 1-D of equal length, got {t.shape} and {L.shape}")
    if not (window > 0 and slope_tol >= 0 and min_decades >= 0):
        raise ValueError("window must be > 0, slope_tol and min_decades >= 0")
    ok = (t > 0) & np.isfinite(L) & (L > 0)
    idx = np.flatnonzero(ok)
    if idx.size < 2:
        return []
    x, y = np.log10(t[idx]), np.log(L[idx])
    slope = np.zeros(idx.size)
    for i in range(idx.size):
        sel = np.abs(x - x[i]) <= window / 2
        sel[max(i - 1, 0) : i + 2] = True  # sparse early steps: at least the neighbours
        xs, ys = x[sel], y[sel]
        if xs.size >= 2 and np.ptp(xs) > 0:
            xc = xs - xs.mean()
            slope[i] = float((xc * (ys - ys.mean())).sum() / (xc * xc).sum())
    flat = np.abs(slope) <= slope_tol
    out: list[Plateau] = []
    i = 0
    while i < idx.size:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < idx.size and flat[j + 1]:
            j += 1
        if x[j] - x[i] >= min_decades:
            a, bb = int(idx[i]), int(idx[j])
            out.append(Plateau(int(t[a]), int(t[bb]), a, bb, float(np.median(L[a : bb + 1]))))
        i = j + 1
    return out


@dataclass(frozen=True)
class Segment:
    """Consecutive checkpoints with the same family (``name`` None: unclassified stretch)."""

    name: str | None
    start_step: int
    end_step: int
    start_index: int
    end_index: int
    loss_min: float
    loss_max: float

    @property
    def num_checkpoints(self) -> int:
        return self.end_index - self.start_index + 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "num_checkpoints": self.num_checkpoints}


def segments(
    steps: Sequence[int] | np.ndarray,
    labels: Sequence[str | None],
    losses: Sequence[float] | np.ndarray | None = None,
    *,
    min_checkpoints: int = 2,
) -> list[Segment]:
    """Split a run into stretches of equal label.

    A named stretch shorter than ``min_checkpoints`` checkpoints (a level crossed in passing) is
    relabelled unclassified; adjacent unclassified stretches are merged.
    """
    steps = np.asarray(steps)
    if len(labels) != steps.size:
        raise ValueError(f"need one label per step: {len(labels)} labels, {steps.size} steps")
    if min_checkpoints < 1:
        raise ValueError("min_checkpoints must be >= 1")
    L = np.full(steps.size, np.nan) if losses is None else np.asarray(losses, dtype=float)

    def runs(labs: list[str | None]) -> list[tuple[str | None, int, int]]:
        out: list[tuple[str | None, int, int]] = []
        for i, lab in enumerate(labs):
            if out and out[-1][0] == lab:
                out[-1] = (lab, out[-1][1], i)
            else:
                out.append((lab, i, i))
        return out

    labs = list(labels)
    for lab, a, bb in runs(labs):
        if lab is not None and bb - a + 1 < min_checkpoints:
            for i in range(a, bb + 1):
                labs[i] = None
    return [
        Segment(
            lab,
            int(steps[a]),
            int(steps[bb]),
            a,
            bb,
            float(np.nanmin(L[a : bb + 1])) if np.isfinite(L[a : bb + 1]).any() else math.nan,
            float(np.nanmax(L[a : bb + 1])) if np.isfinite(L[a : bb + 1]).any() else math.nan,
        )
        for lab, a, bb in runs(labs)
    ]


@dataclass(frozen=True)
class Transition:
    """A change of family along one run: ``source`` (last seen at ``source_end_step``) -> ``target``
    (first seen at ``step``)."""

    source: str
    target: str
    source_end_step: int
    step: int
    source_k: int | None = None
    target_k: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_transitions(
    segs: Sequence[Segment], *, k_of: Mapping[str, int] | None = None, seed: int | None = None
) -> list[Transition]:
    """Transitions between consecutive *named* segments (unclassified stretches in between are skipped;
    a return to the same family after an unclassified stretch is not a transition)."""
    named = [s for s in segs if s.name is not None]
    k_of = k_of or {}
    out = []
    for a, b in itertools.pairwise(named):
        if a.name != b.name:
            assert a.name is not None and b.name is not None
            out.append(
                Transition(a.name, b.name, a.end_step, b.start_step, k_of.get(a.name), k_of.get(b.name), seed)
            )
    return out


@dataclass(frozen=True)
class RunAnalysis:
    """Everything :func:`analyze_run` finds in one run."""

    seed: int
    checkpoint_steps: np.ndarray
    population_losses: np.ndarray
    classifications: Classification
    segments: list[Segment]
    transitions: list[Transition]
    plateaus: list[Plateau]

    @property
    def labels(self) -> list[str | None]:
        """Family of every checkpoint (None: unclassified)."""
        return [None if nm == UNCLASSIFIED else str(nm) for nm in self.classifications.names]

    @property
    def unclassified(self) -> list[Segment]:
        """The unclassified stretches."""
        return [s for s in self.segments if s.name is None]

    @property
    def path(self) -> list[str]:
        """Families visited, in order (the run's dynamical ordering)."""
        out: list[str] = []
        for s in self.segments:
            if s.name is not None and (not out or out[-1] != s.name):
                out.append(s.name)
        return out

    def _classification_rows(self) -> list[dict[str, Any]]:
        c = self.classifications
        return [{"name": lab, "reason": str(c.reason[i]), "loss": float(c.loss_start[i]),
                 "loss_after_flow": float(c.loss[i]), "nearest": str(c.nearest[i]), "k": int(c.k[i]),
                 "sigma": int(c.sigma[i]), "phi": int(c.phi[i]), "regular": bool(c.regular[i])}
                for i, lab in enumerate(self.labels)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "seed": self.seed,
            "path": self.path,
            "checkpoint_steps": self.checkpoint_steps.tolist(),
            "population_losses": self.population_losses.tolist(),
            "labels": self.labels,
            "classifications": self._classification_rows(),
            "segments": [s.to_dict() for s in self.segments],
            "unclassified": [s.to_dict() for s in self.unclassified],
            "transitions": [t.to_dict() for t in self.transitions],
            "plateaus": [p.to_dict() for p in self.plateaus],
        }


#: The classifier's settings for SGD checkpoints: the short flow only, and a checkpoint is named only
#: where its own loss lies within one level spacing 1/(4c^2) of the family's level (``start_gap=1``).
#: The second, accelerated stage is for thermal posterior draws that sit far above their level; on a
#: training run it carried every checkpoint of the descent from the random start to the basin the run
#: later reaches (a random initialisation at L = 0.247 was named 4++, level 0.097), so a family's first
#: step read 0. The short flow alone still reached a level from the steep part of a descent (c = 6:
#: checkpoints at L = 0.26 named 4+, level 0.104); the start rule leaves those unclassified.
SGD_TOLERANCES = ClassifyTolerances(refine_steps=0, start_gap=1.0)


def analyze_run(
    record: Mapping[str, Any],
    points: Sequence[CriticalPoint],
    *,
    tolerances: ClassifyTolerances | None = None,
    min_checkpoints: int = 2,
    plateau_kwargs: Mapping[str, Any] | None = None,
) -> RunAnalysis:
    """Classify every checkpoint of a run (a training record with ``config``, ``seed``, ``steps``,
    ``losses``, ``checkpoint_steps`` and ``tensors["checkpoints"]``) with the one classifier, find the
    segments, transitions and plateaus (on the logged training-loss curve; each labelled by the majority
    family of the checkpoints inside it). ``tolerances`` defaults to :data:`SGD_TOLERANCES` (the short
    flow only: a checkpoint on its way down is unclassified until it reaches a level)."""
    ck = record["tensors"]["checkpoints"]
    steps = np.asarray(record["checkpoint_steps"], dtype=np.int64)
    cls = classify(ck, points, tolerances=tolerances if tolerances is not None else SGD_TOLERANCES)
    pop = np.asarray(cls.loss_start, dtype=float)
    labels = [None if nm == UNCLASSIFIED else str(nm) for nm in cls.names]
    segs = segments(steps, labels, pop, min_checkpoints=min_checkpoints)
    k_of = {p.name: p.k for p in points}
    trans = find_transitions(segs, k_of=k_of, seed=int(record["seed"]))
    plats = detect_plateaus(record["steps"], record["losses"], **dict(plateau_kwargs or {}))
    labelled = []
    for p in plats:
        inside = [nm for s, nm in zip(steps, labels, strict=True) if p.start_step <= s <= p.end_step]
        named = Counter(n for n in inside if n is not None)
        labelled.append(replace(p, name=named.most_common(1)[0][0] if named else None))
    return RunAnalysis(int(record["seed"]), steps, pop, cls, segs, trans, labelled)


def transition_counts(analyses: Sequence[RunAnalysis]) -> list[dict[str, Any]]:
    """Counts of each transition ``source -> target`` across runs, with ``k -> k'`` and the median step.

    Returns rows ``{"source", "target", "source_k", "target_k", "count", "median_step"}`` sorted by
    decreasing count.
    """
    bucket: dict[tuple[str, str], list[Transition]] = {}
    for a in analyses:
        for t in a.transitions:
            bucket.setdefault((t.source, t.target), []).append(t)
    rows = [
        {
            "source": s,
            "target": t,
            "source_k": ts[0].source_k,
            "target_k": ts[0].target_k,
            "count": len(ts),
            "median_step": float(np.median([x.step for x in ts])),
        }
        for (s, t), ts in bucket.items()
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["median_step"]))


def dynamical_ordering(analyses: Sequence[RunAnalysis]) -> list[dict[str, Any]]:
    """Families visited by SGD in the order the transitions imply.

    A family goes before another when more transitions lead from it to the other than back (Kahn's
    topological sort); ties (and families in a cycle) are ordered by the median, over the runs visiting
    it, of the first step of the visit. Rows ``{"name", "median_first_step", "runs"}``.
    """
    first: dict[str, list[int]] = {}
    for a in analyses:
        seen = set()
        for s in a.segments:
            if s.name is not None and s.name not in seen:
                seen.add(s.name)
                first.setdefault(s.name, []).append(s.start_step)
    med = {k: float(np.median(v)) for k, v in first.items()}
    flow: Counter[tuple[str, str]] = Counter((t.source, t.target) for a in analyses for t in a.transitions)
    before = {n: set() for n in med}
    for (s, t), m in flow.items():
        if m > flow.get((t, s), 0):
            before[t].add(s)
    order: list[str] = []
    left = set(med)
    while left:
        ready = [n for n in left if not (before[n] & left)] or list(left)  # a cycle: fall back to steps
        nxt = min(ready, key=lambda n: (med[n], n))
        order.append(nxt)
        left.remove(nxt)
    return [{"name": n, "median_first_step": med[n], "runs": len(first[n])} for n in order]


def bayesian_ordering(
    points: Sequence[CriticalPoint],
    names: Sequence[str] | None = None,
    lambdas: Mapping[str, float] | None = None,
    *,
    n_max: float = 1e6,
) -> dict[str, Any]:
    r"""Order of the families as the Bayesian posterior would visit them when ``n`` grows.

    With a learning coefficient for every family (``lambda_theory``, else ``lambdas[name]``, e.g. the
    :math:`\hat\lambda` measured at the plateaus) the order is the sequence of dominant phases of the
    free energy :math:`F_n = nL + \lambda\log n`
    (:func:`slt_tms.analysis.free_energy.phase_sequence`, without prior terms), listing the families never
    dominant after it by loss. Without them it is the order by
    decreasing loss (``method="loss"``).

    Returns
    -------
    dict with ``"order"`` (list of names), ``"method"`` and ``"lambdas"`` used.
    """
    sel = [p for p in points if names is None or p.name in set(names)]
    if not sel:
        raise ValueError("no families to order")
    lam: dict[str, float] = {}
    for p in sel:
        if p.lambda_theory is not None and math.isfinite(p.lambda_theory):
            lam[p.name] = float(p.lambda_theory)
        elif lambdas and p.name in lambdas and math.isfinite(lambdas[p.name]) and lambdas[p.name] >= 0:
            lam[p.name] = float(lambdas[p.name])  # (a negative estimate is no learning coefficient)
    by_loss = [p.name for p in sorted(sel, key=lambda p: -p.loss)]
    if len(lam) == len(sel) and len(sel) >= 2:
        seq = phase_sequence([(p.name, float(p.loss), lam[p.name]) for p in sel], n_max=n_max,
                             include_prior=False, include_multiplicity=False)
        order = [s[0] for s in seq]
        order += [nm for nm in by_loss if nm not in order]
        return {"order": order, "method": "free energy nL + lambda log n", "lambdas": lam,
                "sequence": [list(s) for s in seq]}
    return {"order": by_loss, "method": "loss (decreasing)", "lambdas": lam}
