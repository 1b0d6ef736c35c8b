r"""Phase occupancy of the TMS posterior over sample sizes: sample, classify, count.

:func:`occupancy` samples the posterior over a ladder of sample sizes with replica exchange
(:func:`slt_tms.experiments.posterior.sample_posterior_ladder`), classifies every draw with the package's
one classifier (:func:`slt_tms.analysis.kgon_classify.classify`) and counts draws per phase, chain and
sample size. Observed switch points with bootstrap intervals over replica sets come from
:func:`slt_tms.analysis.switch.switch_point`. Config -> run -> frozen result: no files, no plots.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from slt_tms._progress import progress_bar
from slt_tms.analysis.free_energy import check_n_values
from slt_tms.analysis.kgon_classify import UNCLASSIFIED, ClassifyTolerances, classify
from slt_tms.analysis.switch import SwitchPoint, chain_switch_points, switch_point
from slt_tms.experiments.posterior import HMCConfig, sample_posterior_ladder
from slt_tms.theory.critical_point import CriticalPoint

__all__ = ["OccupancyResult", "default_sensitivity", "occupancy", "switch_pairs"]


def default_sensitivity(c: int) -> dict[str, ClassifyTolerances]:
    """Alternative classifier settings for :func:`occupancy`'s ``sensitivity``: each one change from the
    default :class:`~slt_tms.analysis.kgon_classify.ClassifyTolerances` (flow length, vertex threshold,
    energy tolerance, for ``c`` features)."""
    return {
        "short flow, no second stage": ClassifyTolerances(flow_steps=50, refine_steps=0),
        "long second stage (600 steps)": ClassifyTolerances(refine_steps=600),
        "live threshold 0.4": ClassifyTolerances(live_threshold=0.4),
        "live threshold 0.6": ClassifyTolerances(live_threshold=0.6),
        "energy tolerance halved": ClassifyTolerances(energy_tol=1.0 / (20 * c * c)),
    }


@dataclass(frozen=True)
class OccupancyResult:
    r"""Phase occupancy of the posterior over a grid of sample sizes (from :func:`occupancy`).

    Attributes
    ----------
    c : int
    n_grid : list of int
    phase_names : list of str
        Family names followed by ``"unclassified"``.
    counts : ndarray, shape ``(G, K, P)``
        Draws per grid point, chain and phase.
    diagnostics : list of dict
        Per grid point: R-hat / ESS of the invariants (ArviZ), acceptance, divergences, step sizes.
    config : dict
    seed : int
    alt_counts : dict of str to ndarray ``(G, K, P)``
        The same draws classified with each alternative setting of ``sensitivity`` (:func:`occupancy`).
    """

    c: int
    n_grid: list[int]
    phase_names: list[str]
    counts: np.ndarray
    diagnostics: list[dict[str, Any]]
    config: dict[str, Any]
    seed: int
    alt_counts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def proportions(self) -> np.ndarray:
        """Share of all draws at each grid point in each phase, shape ``(G, P)``."""
        tot = self.counts.sum(axis=(1, 2))
        return self.counts.sum(axis=1) / np.maximum(tot, 1)[:, None]

    def switch_points(
        self, pairs: Sequence[tuple[str, str]], *, num_bootstrap: int = 1000, seed: int = 0
    ) -> list[SwitchPoint]:
        """:func:`switch_point` for each ``(low_n, high_n)`` pair."""
        return [
            switch_point(
                self.n_grid, self.counts, self.phase_names, a, b, num_bootstrap=num_bootstrap, seed=seed
            )
            for a, b in pairs
        ]

    def chain_switch_points(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Per-dataset (replica-set) switch points of each pair
        (:func:`~slt_tms.analysis.switch.chain_switch_points`), with their median and spread."""
        out = []
        for a, b in pairs:
            per = chain_switch_points(self.n_grid, self.counts, self.phase_names, a, b)
            inside = np.array([v for v, _ in per if v is not None])
            out.append({
                "low_n": a,
                "high_n": b,
                "n_switch": [v for v, _ in per],
                "position": [p for _, p in per],
                "median": float(np.median(inside)) if inside.size else None,
                "sd": float(np.std(inside, ddof=1)) if inside.size > 1 else None,
                "iqr": [float(x) for x in np.percentile(inside, [25, 75])] if inside.size else None,
            })
        return out

    def switch_sensitivity(
        self, pairs: Sequence[tuple[str, str]], *, num_bootstrap: int = 200, seed: int = 0
    ) -> list[dict[str, Any]]:
        """For every alternative classification (``alt_counts``) and pair: the pooled switch point, its
        shift from the default classification, and the unclassified share at each grid point."""
        out: list[dict[str, Any]] = []
        ref: dict[tuple[str, str], float | None] = {}
        for name, cnt in {"default": self.counts, **self.alt_counts}.items():
            tot = np.maximum(cnt.sum(axis=(1, 2)), 1)
            uncl = cnt[:, :, self.phase_names.index(UNCLASSIFIED)].sum(1) / tot
            for a, b in pairs:
                sw = switch_point(self.n_grid, cnt, self.phase_names, a, b, num_bootstrap=num_bootstrap,
                                  seed=seed)
                base = ref.setdefault((a, b), sw.n_switch)
                shift = None if sw.n_switch is None or base is None else sw.n_switch - base
                out.append({"classifier": name, "low_n": a, "high_n": b, "n_switch": sw.n_switch,
                            "interval": None if sw.interval is None else list(sw.interval), "shift": shift,
                            "unclassified_share": uncl.tolist()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (counts as nested lists)."""
        return {
            "c": self.c,
            "n_grid": list(self.n_grid),
            "phase_names": list(self.phase_names),
            "counts": self.counts.astype(int).tolist(),
            "proportions": self.proportions.tolist(),
            "diagnostics": self.diagnostics,
            "config": self.config,
            "seed": self.seed,
            "alt_counts": {k: v.astype(int).tolist() for k, v in self.alt_counts.items()},
        }

    def to_csv(self) -> str:
        """CSV text: one row per (n, phase) with the proportion and the per-chain counts."""
        K = self.counts.shape[1]
        lines = ["n,phase,proportion," + ",".join(f"chain{k}" for k in range(K))]
        prop = self.proportions
        for g, nv in enumerate(self.n_grid):
            for p, nm in enumerate(self.phase_names):
                row = [str(nv), nm, f"{prop[g, p]:.6g}"] + [str(int(x)) for x in self.counts[g, :, p]]
                lines.append(",".join(row))
        return "\n".join(lines) + "\n"


def _thinned(num_draws: int, at_most: int | None) -> np.ndarray:
    """Evenly spaced draw indices, at most ``at_most`` of them (all if None)."""
    if at_most is None or at_most >= num_draws:
        return np.arange(num_draws)
    if at_most < 1:
        raise ValueError(f"the number of classified draws must be >= 1, got {at_most}")
    return np.unique(np.linspace(0, num_draws - 1, at_most).round().astype(int))


def occupancy(
    c: int,
    n_grid: Sequence[int],
    points: Sequence[CriticalPoint],
    *,
    num_chains: int = 4,
    num_draws: int = 500,
    num_warmup: int = 500,
    config: HMCConfig | None = None,
    exchange: bool = True,
    max_ratio: float = 1.3,
    init_scale: float = 1.0,
    loss: str = "empirical",
    tolerances: ClassifyTolerances | None = None,
    sensitivity: Mapping[str, ClassifyTolerances] | None = None,
    max_classified: int | None = 250,
    max_classified_sensitivity: int | None = 100,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> OccupancyResult:
    r"""Sample the posterior over a ladder of sample sizes and count draws per phase.

    The grid is filled to a ladder (:func:`sample_size_ladder`) and sampled by
    :func:`sample_posterior_ladder` (replica exchange between neighbouring :math:`n` if ``exchange``);
    every draw at rung :math:`n_g` is classified with :func:`classify`. ``loss="population"`` samples the
    posterior of the closed-form population loss instead of the data's (no datasets; the chains of a
    "replica set" are then independent replicas of one target). The result
    reports every rung of the ladder (a superset of ``n_grid``). Replica sets (``num_chains``) are
    independent (own dataset, own starts), which is what the bootstrap of :meth:`switch_points`
    resamples.

    ``sensitivity`` maps names to alternative classifier settings: the same draws are classified again
    with each (``alt_counts`` of the result; :meth:`OccupancyResult.switch_sensitivity`), e.g.
    :func:`default_sensitivity`.

    Classifying a draw costs more than drawing it (a few hundred gradient steps of the flow), and
    neighbouring HMC draws are correlated, so at most ``max_classified`` evenly spaced draws per chain and
    rung are classified (``max_classified_sensitivity`` for each alternative setting; None: all); the
    counts are then counts of those draws.

    Returns
    -------
    OccupancyResult
    """
    vals = check_n_values(n_grid)
    if np.any(vals != np.round(vals)):
        raise ValueError(f"sample sizes must be integers, got {list(n_grid)}")
    grid = [int(v) for v in vals]
    if any(b <= a for a, b in itertools.pairwise(grid)):
        raise ValueError(f"n_grid must be strictly increasing, got {grid}")
    pts = list(points)
    if not pts or any(p.c != c for p in pts):
        raise ValueError(f"points must be a non-empty list of critical points with c = {c}")
    names = [*dict.fromkeys(p.name for p in pts), UNCLASSIFIED]
    keep = _thinned(num_draws, max_classified)  # checked before the sampling
    keep_alt = _thinned(num_draws, max_classified_sensitivity)
    lad = sample_posterior_ladder(
        c,
        grid,
        num_chains=num_chains,
        num_draws=num_draws,
        num_warmup=num_warmup,
        config=config,
        max_ratio=max_ratio,
        swap=exchange,
        init_scale=init_scale,
        loss=loss,
        seed=seed,
        progress=progress,
        device=device,
    )
    G = len(lad.ladder)
    alts = dict(sensitivity or {})
    counts = np.zeros((G, num_chains, len(names)), dtype=np.int64)
    alt_counts = {k: np.zeros_like(counts) for k in alts}
    diags = []
    bar = progress_bar(total=G * (1 + len(alts)), desc="classify draws", enabled=progress)
    runs = [(counts, tolerances, keep), *((alt_counts[k], t, keep_alt) for k, t in alts.items())]
    d = lad.samples.shape[-1]
    for target, tol, idx in runs:  # all rungs in one call: the flow is batched over every draw
        lab = classify(lad.samples[:, :, idx].reshape(-1, d), pts, tolerances=tol).names
        lab = lab.reshape(num_chains, G, idx.size)
        for g in range(G):
            for k in range(num_chains):
                target[g, k] = [int(np.sum(lab[k, g] == nm)) for nm in names]
        bar.update(G)
    for g, nv in enumerate(lad.ladder):
        dg = lad.diagnostics_at(g)
        dg["n"] = nv
        dg["swap_accept_up"] = None if g == G - 1 else float(lad.swap_accept[g])
        diags.append(dg)
    bar.close()
    conf = {
        **lad.config,
        "exchange": exchange,
        "tolerances": asdict(tolerances or ClassifyTolerances()),
        "sensitivity": {k: asdict(t) for k, t in alts.items()},
        "classified_draws_per_chain": int(keep.size),
        "classified_draws_per_chain_sensitivity": int(keep_alt.size) if alts else None,
        "phases": names[:-1],
    }
    return OccupancyResult(c, list(lad.ladder), names, counts, diags, conf, int(seed), alt_counts)


def switch_pairs(occ: OccupancyResult, crossovers: Sequence[dict[str, Any]], points: Sequence[CriticalPoint],
                 *, min_share: float = 0.05) -> list[tuple[str, str]]:
    """The ``(low_n, high_n)`` phase pairs whose switch is worth measuring: every predicted crossover
    between phases the posterior visits (share >= ``min_share`` somewhere), and every pair of visited
    phases without a prediction (the higher-loss phase taken as the small-n one)."""
    prop = occ.proportions
    seen = {nm for i, nm in enumerate(occ.phase_names) if prop[:, i].max() >= min_share}
    pairs = [(x["low_n"], x["high_n"]) for x in crossovers
             if x["low_n"] in seen and x["high_n"] in seen and not x["never"]]
    loss_of = {p.name: p.loss for p in points}
    visited = sorted((nm for nm in seen if nm in loss_of), key=lambda nm: -loss_of[nm])
    covered = set(pairs) | {(b, a) for a, b in pairs}
    pairs += [(a, b) for i, a in enumerate(visited) for b in visited[i + 1:] if (a, b) not in covered]
    return pairs
