"""``slt-tms reproduce --profile quick|paper --out DIR``: run every reproduction stage.

The reproduction is a list of named stages (:data:`STAGES`). Each stage writes into its own folder under
``DIR`` and returns the files it wrote; a stage that fails is reported (with its error) and the others
still run. The command prints what each stage wrote, writes ``DIR/reproduce_summary.json`` and exits with
status 1 if any stage failed. Later work adds stages (theory tables, LLC, phases, dynamics) by appending
a :class:`Stage` to :data:`STAGES`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slt_tms._progress import progress_group
from slt_tms.commands import phases as phases_cmd
from slt_tms.commands._tms_wells import lower_wells_of, wells_cell
from slt_tms.commands.dynamics import llc_into, train_into
from slt_tms.commands.superposition import run_figure
from slt_tms.commands.theory import CP_COLUMNS, critical_point_rows
from slt_tms.estimators import estimate_llc
from slt_tms.experiments.sgd_dynamics import DynamicsConfig, quick_config
from slt_tms.io import write_json
from slt_tms.io.atomic import atomic_write_text, remove_stale_temporaries, sha256
from slt_tms.io.locks import output_lock
from slt_tms.io.report import package_versions, relative_path, write_report
from slt_tms.io.results import write_csv

__all__ = ["PROFILES", "STAGES", "Stage", "StageOutcome", "register", "run_stages"]

#: ``quick``: small settings, minutes in total; ``paper``: the full settings of each stage.
PROFILES: tuple[str, ...] = ("quick", "paper")


@dataclass(frozen=True)
class Stage:
    """One named step of the reproduction.

    Attributes
    ----------
    name : str
        Unique name (used by ``--only``).
    description : str
    run : callable
        ``run(out_dir, profile, seed, quiet) -> list[Path]``: do the work into ``out_dir`` (the stage's
        own folder is up to the stage) and return the files written.
    """

    name: str
    description: str
    run: Callable[[Path, str, int, bool], list[Path]]


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage: ``ok``, the files written, run time, and the error if it failed."""

    name: str
    ok: bool
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    cached: bool = False


def _superposition_stage(figure: str) -> Callable[[Path, str, int, bool], list[Path]]:
    def run(out: Path, profile: str, seed: int, quiet: bool) -> list[Path]:
        return run_figure(figure, out / "superposition", quick=(profile == "quick"), seed=seed, quiet=quiet)

    return run


def _files_in(folder: Path) -> list[Path]:
    """The figures, tables and results a stage left at the top of its folder (sorted)."""
    return sorted(f for f in folder.glob("*") if f.is_file() and f.suffix in (".png", ".csv", ".json", ".nc"))


def _theory_stage(out: Path, profile: str, seed: int, quiet: bool) -> list[Path]:
    folder = out / "theory"
    for c in range(4, 9):
        rows = critical_point_rows(c, False if quiet else None)
        write_csv(folder / f"critical_points_c{c}.csv", rows, [*CP_COLUMNS, "lambda_reason"])
        if c == 6:
            write_json(folder / "critical_points_c6.json", {"c": c, "r": 2, "points": rows})
    return _files_in(folder)


#: LLC stage: (name, c) of minimally singular critical points, estimated with the estimator's defaults at
#: n = 1e5 (population loss) and extrapolated over the ladder nbeta x (1, 2, 4, 8) to the asymptotic lambda.
_LLC_POINTS = {
    "quick": [("5", 5), ("5", 6), ("5+", 6), ("6", 6)],
    "paper": [("5", 5), ("5", 6), ("5+", 6), ("6", 6), ("6", 7), ("7", 7), ("6+", 7), ("7", 8), ("8", 8)],
}
_LLC_N = 100_000
_LADDER = (1.0, 2.0, 4.0, 8.0)


def _llc_stage(out: Path, profile: str, seed: int, quiet: bool) -> list[Path]:
    from slt_tms.theory.critical_points import kgon  # lazy import (start-up time)

    folder = out / "llc"
    rows = []
    for name, c in _LLC_POINTS[profile]:
        k = int(name.rstrip("+"))
        cp = kgon(k, c, sigma=name.count("+"), exact=False)
        res = estimate_llc(cp, n=_LLC_N, ladder=_LADDER, seed=seed, progress=False if quiet else None)
        stem = f"llc_c{c}_{name.replace('+', 'p')}"
        res.to_json(folder / f"{stem}.json")
        res.to_netcdf(folder / f"{stem}.nc")
        a = res.asymptotic
        lam = cp.lambda_theory
        ok_fit = bool(lam) and abs(a.llc - lam) <= 3 * a.se + 0.05 * lam
        rows.append(
            {
                "name": name,
                "c": c,
                "d": cp.d,
                "loss": f"{cp.loss:.10f}",
                "lambda_theory": lam,
                "lambda_hat_n1e5": f"{res.llc:.4f}",
                "se": f"{res.se:.4f}",
                "rhat": f"{res.rhat:.3f}",
                "ess": f"{res.ess:.0f}",
                "lambda_asymptotic": f"{a.llc:.4f}",
                "se_asymptotic": f"{a.se:.4f}",
                "off_by_percent": f"{100 * (a.llc / lam - 1):+.1f}" if lam else "",
                "within_5pct_plus_3se": "yes" if ok_fit else "NO",
                "trustworthy": "yes" if res.ok else "NO: " + "; ".join(res.flags),
                # the wells beside the dead columns (slt-tms llc --tms-critical prints the same in full)
                "lower_wells": wells_cell(lower_wells_of(res, k, c, name.count("+"), 0)),
            }
        )
        if not quiet:
            print(
                f"  {name} (c={c}): lambda {lam}; n=1e5: {res.llc:.3f} +- {res.se:.3f}; asymptotic "
                f"{a.llc:.3f} +- {a.se:.3f}"
            )
    write_csv(folder / "llc_vs_theory.csv", rows, list(rows[0]))
    return _files_in(folder)


#: Phases stage: c = 6 into ``phases/`` (the paper's case), the others into ``phases/c<c>/``.
_PHASES_C = {"quick": (6, 5), "paper": (6, 5, 7)}


def _phases_stage(out: Path, profile: str, seed: int, quiet: bool) -> list[Path]:
    files = []
    for c in _PHASES_C[profile]:
        folder = out / "phases" if c == 6 else out / "phases" / f"c{c}"
        phases_cmd.predict(phases_cmd.options("predict", c=c, out=str(folder), quiet=quiet))
        phases_cmd.sample(
            phases_cmd.options(
                "sample", c=c, seed=seed, quick=(profile == "quick"), out=str(folder / "sample"), quiet=quiet
            )
        )
        files += _files_in(folder) + _files_in(folder / "sample")
    return files


#: Dynamics stage: eight seeds (quick: random init, 30k steps; paper: the full protocol).
_DYNAMICS_SEEDS = 8
#: LLC along training: besides the plateau checkpoints, this many log-spaced checkpoints per run from its
#: first named checkpoint on, so that ``llc_vs_step.png`` is a curve over the plateaus and transitions.
_DYNAMICS_LLC_EXTRA = {"quick": 6, "paper": 12}


def _dynamics_stage(out: Path, profile: str, seed: int, quiet: bool) -> list[Path]:
    folder = out / "dynamics"
    config = quick_config(6) if profile == "quick" else DynamicsConfig(c=6)
    train_into(folder, config, list(range(seed, seed + _DYNAMICS_SEEDS)), quiet=quiet)
    llc_into(folder, extra=_DYNAMICS_LLC_EXTRA[profile], quiet=quiet)
    return _files_in(folder)


#: The reproduction, in order.
STAGES: list[Stage] = [
    Stage(
        "theory",
        "Critical points of the TMS population loss for c = 4..8 (derived with sympy, certified)",
        _theory_stage,
    ),
    Stage(
        "llc",
        "LLC estimates at critical points (converged, n = 1e5) and their asymptotic fit against rank(H)/2",
        _llc_stage,
    ),
    Stage(
        "phases",
        "Bayesian phase transitions in n: free-energy prediction, posterior occupancy (c = 6)",
        _phases_stage,
    ),
    Stage(
        "dynamics",
        "SGD trajectories through the k-gon critical points, LLC along training (c = 6)",
        _dynamics_stage,
    ),
    Stage(
        "superposition-geometry",
        "Elhage et al.: columns of W (n=5, m=2) over sparsity, ReLU and linear",
        _superposition_stage("geometry"),
    ),
    Stage(
        "superposition-phase-diagram",
        "Elhage et al.: 2 features in 1 dimension with analytic boundaries",
        _superposition_stage("phase-diagram"),
    ),
    Stage(
        "superposition-dimensionality",
        "Elhage et al.: dimensions per feature against 1/(1-S)",
        _superposition_stage("dimensionality"),
    ),
    Stage(
        "superposition-swish",
        "swish_gamma vs ReLU geometry: how large must gamma be",
        _superposition_stage("swish"),
    ),
]


def _source_digest() -> str:
    """Hash of the package's source files: a stage's outputs are up to date only for the same code."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _fingerprint(stage: Stage, profile: str, seed: int, digest: str) -> str:
    key = json.dumps({"stage": stage.name, "profile": profile, "seed": seed, "source": digest})
    return hashlib.sha256(key.encode()).hexdigest()


def _cached(out: Path, stage: Stage, fingerprint: str) -> list[Path] | None:
    """The files of a previous successful run of ``stage`` with the same fingerprint, if every file is still
    there with the size and SHA-256 recorded when it was written (an empty, truncated or edited output makes
    the stage run again)."""
    record = out / ".stages" / f"{stage.name}.json"
    try:
        data = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    files = []
    for entry in data.get("files", []):
        if not isinstance(entry, dict):
            return None
        f = out / entry["path"]
        try:
            if f.stat().st_size != entry["size"] or entry["size"] == 0 or sha256(f) != entry["sha256"]:
                return None
        except OSError:
            return None
        files.append(f)
    return files


def run_stages(
    out: str | Path,
    profile: str = "quick",
    *,
    seed: int = 0,
    quiet: bool = False,
    only: Sequence[str] | None = None,
    stages: Sequence[Stage] | None = None,
    force: bool = False,
) -> list[StageOutcome]:
    """Run the stages (all of :data:`STAGES`, or those named in ``only``) into ``out``.

    A stage raising any exception is recorded as failed (message and traceback printed to stderr unless
    ``quiet``) and the next stage runs. A stage whose previous successful run had the same profile, seed
    and package source (fingerprint in ``out/.stages/NAME.json``) and whose files all still exist is
    skipped (``force=True`` reruns it). The temporary files that writes of a killed run left are deleted:
    in ``out`` when the lock is taken, in ``out/.stages`` before the first stage, in the folders of a
    stage's files once it has run. Returns one :class:`StageOutcome` per stage.

    Raises
    ------
    ValueError
        For an unknown profile or stage name; for an ``out`` that is a file, cannot be written or is being
        written by another slt-tms run (:func:`slt_tms.io.locks.output_lock`, one line naming its pid).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    stages = list(STAGES if stages is None else stages)
    if only:
        names = [s.name for s in stages]
        unknown = [o for o in only if o not in names]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        stages = [s for s in stages if s.name in only]
    with output_lock(out) as locked:  # one reproduction per directory, refused before any stage runs
        return _run_stages(locked, stages, profile, seed, quiet, force)


def _run_stages(
    out: Path, stages: Sequence[Stage], profile: str, seed: int, quiet: bool, force: bool
) -> list[StageOutcome]:
    digest = _source_digest()
    remove_stale_temporaries(out / ".stages")  # a record write killed half-way (out itself: by the lock)
    outcomes: list[StageOutcome] = []
    for i, stage in enumerate(stages, 1):
        fingerprint = _fingerprint(stage, profile, seed, digest)
        cached = None if force else _cached(out, stage, fingerprint)
        if cached is not None:
            if not quiet:
                print(f"[{i}/{len(stages)} {stage.name}] up to date, skipped", flush=True)
            outcomes.append(StageOutcome(stage.name, True, cached, 0.0, cached=True))
            continue
        if not quiet:
            print(f"[{i}/{len(stages)} {stage.name}] {stage.description}", flush=True)
        t0 = time.perf_counter()
        try:
            with progress_group(stage.name, enabled=False if quiet else None):  # one bar per stage
                files = [Path(f) for f in stage.run(out, profile, seed, quiet)]
            seconds = time.perf_counter() - t0
            _remove_leftovers(files, out)
            outcomes.append(StageOutcome(stage.name, True, files, seconds))
            entries = [
                {"path": relative_path(f, out), "size": f.stat().st_size, "sha256": sha256(f)}
                for f in files
            ]
            atomic_write_text(
                out / ".stages" / f"{stage.name}.json",
                json.dumps({"fingerprint": fingerprint, "files": entries, "seconds": seconds}),
            )
        except Exception as exc:  # a failing stage must not stop the others
            outcomes.append(
                StageOutcome(stage.name, False, [], time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
            )
            if not quiet:
                traceback.print_exc(file=sys.stderr)
    return outcomes


def _remove_leftovers(files: Sequence[Path], out: Path) -> None:
    """Delete the temporary files that writes of an earlier, killed run of a stage left in the folders of
    its outputs (folders inside ``out``, which this run holds locked; the stage has just written them
    anew). ``out`` itself was cleaned when its lock was taken."""
    root = out.resolve()
    for folder in sorted({f.resolve().parent for f in files}):
        if root in folder.parents:
            remove_stale_temporaries(folder)


def _summary(outcomes: Sequence[StageOutcome], profile: str, seed: int, out: Path) -> dict[str, Any]:
    descriptions = {s.name: s.description for s in STAGES}
    return {
        "profile": profile,
        "seed": seed,
        "command": "slt-tms " + " ".join(sys.argv[1:]) if sys.argv[1:] else None,
        "versions": package_versions(),
        "stages": [
            {
                "name": o.name,
                "description": descriptions.get(o.name, ""),
                "ok": o.ok,
                "seconds": o.seconds,
                "cached": o.cached,
                "files": [relative_path(f, out) for f in o.files],
                "error": o.error,
            }
            for o in outcomes
        ],
    }


def _handler(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    t0 = time.perf_counter()
    with output_lock(args.out):  # one run per --out (also held by run_stages: re-entrant), checked first
        outcomes = run_stages(
            args.out, args.profile, seed=args.seed, quiet=args.quiet, only=args.only, force=args.force
        )
        summary = _summary(outcomes, args.profile, args.seed, Path(args.out))
        summary["seconds"] = time.perf_counter() - t0
        summary_path = atomic_write_text(
            Path(args.out) / "reproduce_summary.json", json.dumps(summary, indent=1)
        )
        report_path = write_report(args.out, summary)
    print(f"\nreproduce ({args.profile}) into {args.out}:")
    for o in outcomes:
        status = ("cached" if o.cached else "ok    ") if o.ok else "FAILED"
        print(f"  {status} {o.name} ({o.seconds:.1f} s)" + (f": {o.error}" if o.error else ""))
        for f in o.files:
            print(f"           {f}")
    print(f"  summary: {summary_path}")
    print(f"  report:  {report_path}")
    return 0 if all(o.ok for o in outcomes) else 1


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` command to the ``slt-tms`` parser."""
    p = subparsers.add_parser(
        "reproduce",
        help="run the whole reproduction (stages) into one folder",
        description="Run every reproduction stage into --out; a failing stage is reported and the rest "
        "still run. Stages: " + ", ".join(s.name for s in STAGES) + ".",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="quick",
        help="quick: small settings; paper: full settings (default quick)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="root seed passed to every stage (default 0)")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-stage output")
    p.add_argument("--force", action="store_true", help="rerun stages even if their outputs are up to date")
    p.set_defaults(handler=_handler)
