"""``slt-tms superposition FIGURE --out DIR [--quick] [--seed S] [--quiet]``: the Elhage et al. figures.

Each figure runs its experiment (:mod:`slt_tms.experiments.superposition`), draws it
(:mod:`slt_tms.plotting.superposition`) and writes its PNG(s) and a JSON of the results (configuration,
seed, run time) into ``DIR``, every file atomically (PNGs first, the JSON last, so a JSON present means
the run completed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from slt_tms.commands._args import add_command
from slt_tms.io.atomic import save_figure
from slt_tms.io.locks import output_lock
from slt_tms.io.serialize import write_json

__all__ = ["FIGURES", "register", "run_figure"]

#: Figure names accepted by ``slt-tms superposition``.
FIGURES: tuple[str, ...] = ("geometry", "phase-diagram", "dimensionality", "swish")

# Resolution of the written PNGs.
_DPI = 130


def run_figure(
    figure: str, out: str | Path, *, quick: bool = False, seed: int = 0, quiet: bool = False
) -> list[Path]:
    """Run one superposition experiment, write its PNG(s) and JSON into ``out``; return the written paths.

    Parameters
    ----------
    figure : {"geometry", "phase-diagram", "dimensionality", "swish"}
    out : path
        Output directory (created if missing), held with :func:`slt_tms.io.locks.output_lock` while the
        figure is made.
    quick : bool
        Use the quick settings (``*Config.quick()``) instead of the full ones.
    seed : int
        Root seed (non-negative).
    quiet : bool
        No progress bars and no printed summary.

    Raises
    ------
    ValueError
        For an unknown figure name or a negative seed; for an ``out`` that is a file, cannot be written or
        is being written by another slt-tms run (one line naming its pid).
    """
    if figure not in FIGURES:
        raise ValueError(f"unknown superposition figure {figure!r}; allowed: {', '.join(FIGURES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    with output_lock(out) as out:  # one run per directory, refused before any work
        t0 = time.perf_counter()
        results, figures, summary, extra = _EXPERIMENTS[figure](quick, seed, False if quiet else None)
        written = [save_figure(fig, out / f"{name}.png", dpi=_DPI) for name, fig in figures.items()]
        payload = {"figure": figure, "quick": bool(quick), "seed": seed, "results": results, **extra}
        payload["runtime_seconds"] = time.perf_counter() - t0
        written.append(write_json(out / f"{figure.replace('-', '_')}.json", payload))
        if not quiet:
            print(f"superposition {figure}: {summary} ({payload['runtime_seconds']:.1f} s)")
            for p in written:
                print(f"  wrote {p}")
        return [Path(p) for p in written]


# Each experiment: (quick, seed, progress) -> (results, {png stem: figure}, one-line summary, extra JSON).
# The experiments (sympy) and figures (matplotlib) are imported inside, not at the top: the CLI imports
# every command module to build its parser, and they would add about a second to every ``slt-tms`` call.
# No backend is selected: the figures are built without pyplot and saved straight to PNG.
_Outcome = tuple[Any, dict[str, Any], str, dict[str, Any]]


def _geometry(quick: bool, seed: int, progress: bool | None) -> _Outcome:
    from slt_tms.experiments import superposition as ex
    from slt_tms.plotting import superposition as pl

    cfg = ex.GeometryConfig.quick() if quick else ex.GeometryConfig()
    relu = ex.geometry(cfg, activation="relu", seed=seed, progress=progress)
    linear = ex.geometry(cfg, activation="linear", seed=seed, progress=progress)
    summary = (f"represented features per sparsity: relu {relu.num_represented.tolist()}, "
               f"linear {linear.num_represented.tolist()}")
    return {"relu": relu, "linear": linear}, {"geometry": pl.plot_geometry([relu, linear])}, summary, {}


def _phase_diagram(quick: bool, seed: int, progress: bool | None) -> _Outcome:
    from slt_tms.experiments import superposition as ex
    from slt_tms.plotting import superposition as pl
    from slt_tms.theory.two_feature import analytic_boundaries

    res = ex.phase_diagram(ex.PhaseDiagramConfig.quick() if quick else ex.PhaseDiagramConfig(),
                           seed=seed, progress=progress)
    extra = {"analytic_p_critical": float(analytic_boundaries(1.0)["p_critical"])}
    summary = f"trained vs analytic class agreement {res.agreement:.1%}"
    return res, {"phase_diagram": pl.plot_phase_diagram(res)}, summary, extra


def _dimensionality(quick: bool, seed: int, progress: bool | None) -> _Outcome:
    from slt_tms.experiments import superposition as ex
    from slt_tms.plotting import superposition as pl

    res = ex.dimensionality(ex.DimensionalityConfig.quick() if quick else ex.DimensionalityConfig(),
                            seed=seed, progress=progress)
    summary = "m/||W||_F^2 = " + ", ".join(f"{v:.2f}" for v in res.dims_per_feature)
    return res, {"dimensionality": pl.plot_dimensionality(res)}, summary, {}


def _swish(quick: bool, seed: int, progress: bool | None) -> _Outcome:
    from slt_tms.experiments import superposition as ex
    from slt_tms.plotting import superposition as pl

    res = ex.swish_comparison(ex.SwishConfig.quick() if quick else ex.SwishConfig(), seed=seed,
                              progress=progress)
    figures = {"swish_geometry": pl.plot_geometry([res.relu, *res.swish])}
    figures["swish_metrics"] = pl.plot_swish(res)
    mg = res.matching_gamma
    summary = (f"swish matches ReLU geometry for gamma >= {mg:g}" if mg is not None
               else "no gamma in the grid matches ReLU at every sparsity")
    return res, figures, summary, {}


_EXPERIMENTS = {
    "geometry": _geometry,
    "phase-diagram": _phase_diagram,
    "dimensionality": _dimensionality,
    "swish": _swish,
}


def _handler(args: argparse.Namespace) -> int:
    run_figure(args.figure, args.out, quick=args.quick, seed=args.seed, quiet=args.quiet)
    return 0


def register(subparsers: Any) -> None:
    """Elhage et al. superposition figures (geometry, phase diagram, dimensionality, swish).

    Train batched toy models and draw an Elhage et al. (2022) figure. geometry: columns of W for n=5, m=2 over
    sparsity (ReLU and linear); phase-diagram: 2 features in 1 dimension with the analytic boundaries;
    dimensionality: m/||W||_F^2 against 1/(1-S); swish: how large swish's gamma must be before the geometry
    matches ReLU's. Writes PNG(s) and a JSON into --out.
    """
    p = add_command(subparsers, "superposition", register)
    p.add_argument("figure", choices=FIGURES, help="which figure to make")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="small, fast settings (well under a minute)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or printed summary")
    p.set_defaults(handler=_handler)
