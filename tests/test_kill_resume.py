"""``kill -9`` of ``slt-tms dynamics run`` and ``slt-tms reproduce`` at several points (issue 15).

The pattern of the sweep's kill tests (tests/test_sweep.py, "kill -9"): a subprocess runs the real command
through a small wrapper script that makes it hang at one chosen point (the wrapper replaces a function of
the library by one that does the real work up to that point, touches ``ROOT/hanging-POINT`` and sleeps),
the test waits for that file and SIGKILLs the process group (no cleanup code of the command runs), checks
what the kill left behind (the dead run's lock file, the temporary file of an interrupted write), reruns
the same command to completion and compares every result with an uninterrupted run. The points are
deterministic: no kill depends on landing in a window of a few milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _child import child_env

from slt_tms.io.locks import LOCK_NAME
from slt_tms.sweep import load_results

#: Shared by both wrappers: the hang at a kill point, and an atomic write interrupted half-way.
COMMON = '''
import sys, time
from pathlib import Path

from slt_tms.io.atomic import atomic_path

root, point, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]


def hang():
    (root / f"hanging-{point}").touch()
    time.sleep(300)


def half_write(path, data):
    """Write half of ``data`` under the temporary name of an atomic write of ``path``, then hang."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data[: len(data) // 2])
        hang()
'''

# ----------------------------------------------------------------------------------- dynamics run
DYNAMICS_WRAPPER = COMMON + '''
import io

import slt_tms.commands.dynamics as cmd
import slt_tms.experiments.sgd_dynamics as dyn
import slt_tms.sweep as sweep
from slt_tms.cli import main

seed = {"now": None}  # the seed whose record is being saved
real_train, real_save, real_save_file = dyn.train, sweep._save, sweep.save_file
real_save_figure = cmd.save_figure


def train(*args, **kwargs):  # "in-training-seed-0": the first seed trained, its record not yet written
    traj = real_train(*args, **kwargs)
    if point == "in-training-seed-0":
        hang()
    return traj


def _save(out_dir, key, task, *args, **kwargs):  # "after-seed-0": seed 0 saved, seed 1 not started
    seed["now"] = task["seed"]
    record = real_save(out_dir, key, task, *args, **kwargs)
    if point == "after-seed-0" and task["seed"] == 0:
        hang()
    return record


def save_file(tensors, filename, metadata=None):  # "in-tensor-write-seed-1": half a tensor file (temp name)
    real_save_file(tensors, filename, metadata=metadata)
    if point == "in-tensor-write-seed-1" and seed["now"] == 1:
        Path(filename).write_bytes(Path(filename).read_bytes()[:300])
        hang()


def save_figure(fig, path, **kwargs):  # "in-figure-write": analysis.json, the tables and two figures
    # written, the last figure half written (temp name)
    if point == "in-figure-write" and Path(path).name == "polygons.png":
        buf = io.BytesIO()
        fig.savefig(buf, format="png", **kwargs)
        half_write(Path(path), buf.getvalue())
    return real_save_figure(fig, path, **kwargs)


dyn.train, sweep._save, sweep.save_file = train, _save, save_file
cmd.save_figure = save_figure
sys.exit(main(argv))
'''

#: Tiny settings (a few seconds, most of it the critical points of c = 5) whose two seeds make transitions
#: here (3++ -> 4+ and 4+ -> 5), so transitions.csv has rows to compare.
DYNAMICS_ARGS = ["dynamics", "run", "--c", "5", "--init", "random", "--n", "200", "--steps", "2000",
                 "--num-checkpoints", "12", "--lr", "0.05", "--seeds", "2", "--max-workers", "1", "--quiet"]


def _env() -> dict[str, str]:
    return child_env(SLT_TMS_NO_PROGRESS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def _popen(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (killed as a whole), output into ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, env=_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _run(cmd: list[str], log: Path) -> None:
    proc = _popen(cmd, log)
    try:
        rc = proc.wait(timeout=300)
    finally:
        _kill(proc)
    assert rc == 0, log.read_text()


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (a no-op once it has ended) and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _kill_at(root: Path, wrapper: str, point: str, argv: list[str]) -> int:
    """Run the wrapper until it hangs at ``point``, SIGKILL it there; return its pid."""
    script = root / "wrapper.py"
    script.write_text(wrapper)
    log = root / f"killed-{point}.log"
    proc = _popen([sys.executable, str(script), str(root), point, *argv], log)
    marker, deadline = root / f"hanging-{point}", time.monotonic() + 240
    try:
        while not marker.exists():
            assert proc.poll() is None, f"ended before reaching {point}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {point}:\n{log.read_text()}"
            time.sleep(0.02)
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def _tree(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def _temporaries(out: Path) -> list[str]:
    return [p for p in _tree(out) if ".tmp" in Path(p).name]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dynamics_results(out: Path) -> dict:
    """Everything of a finished run that does not depend on timing (the seconds per seed do)."""
    analysis = json.loads((out / "analysis.json").read_text())
    records = {r["task"]["seed"]: r["result"] for r in load_results(out / "runs")}
    return {
        "files": _tree(out),
        "analysis": {k: analysis[k] for k in ("config", "seeds", "levels", "runs", "transition_counts")},
        # the tables and the figures: the Agg PNG writer stores no date, so equal plots are equal bytes
        "sha256": {p.name: _sha(p) for p in sorted(out.iterdir()) if p.suffix in (".csv", ".png")},
        "records": {s: {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds", "tensors")}
                    for s, r in records.items()},
        "tensors": {s: {k: (str(t.dtype), tuple(t.shape), t.numpy().tobytes())  # bit-equal
                        for k, t in r["tensors"].items()} for s, r in records.items()},
    }


@pytest.fixture(scope="module")
def dynamics_uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dynamics-uninterrupted")
    _run([sys.executable, "-m", "slt_tms", *DYNAMICS_ARGS, "--out", str(root / "out")], root / "run.log")
    return _dynamics_results(root / "out")


#: The kill points, in the order of the run: (point, seed records then on disk, the temporary files then
#: on disk: the one of the interrupted write, and none of an earlier kill's).
DYNAMICS_POINTS = [
    ("in-training-seed-0", 0, []),
    ("after-seed-0", 1, []),
    ("in-tensor-write-seed-1", 1, ["runs/.{key1}.safetensors."]),
    ("in-figure-write", 2, [".polygons.png."]),
]


def test_dynamics_run_killed_again_and_again_resumes_to_the_same_results(tmp_path, dynamics_uninterrupted):
    """Kill ``dynamics run`` at each point in turn, every restart continuing from what the previous kill
    left; then rerun it to completion and compare with an uninterrupted run."""
    out = tmp_path / "out"
    for point, records, temporaries in DYNAMICS_POINTS:
        pid = _kill_at(tmp_path, DYNAMICS_WRAPPER, point, [*DYNAMICS_ARGS, "--out", str(out)])
        keys = sorted(p.stem for p in (out / "runs").glob("????????????????.json"))
        assert len(keys) == records, point
        key1 = json.loads((out / "runs" / "sweep.json").read_text())["tasks"][1]["key"]
        left = _temporaries(out)
        assert len(left) == len(temporaries) and all(
            name.startswith(t.format(key1=key1)) for name, t in zip(left, temporaries, strict=True)
        ), (point, left)
        # the dead run's lock file stays behind (the kernel released its flock); the next run takes it over
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == pid, point

    _run([sys.executable, "-m", "slt_tms", *DYNAMICS_ARGS, "--out", str(out)], tmp_path / "rerun.log")
    assert _dynamics_results(out) == dynamics_uninterrupted
    assert not _temporaries(out) and not list(out.rglob(LOCK_NAME))


# -------------------------------------------------------------------------------------- reproduce
# The real stages take 10 to 30 s each here (the theory stage 22 s), too slow to run nine times over; the
# wrapper runs the real command (its stage records, summary and report) on two cheap deterministic stages
# that write with the library's atomic writers, like the real ones. What a killed stage leaves in its
# folder is the same for any stage: files complete or absent, plus the temporary file of the write that
# was interrupted.
REPRODUCE_WRAPPER = COMMON + '''
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import slt_tms.commands.reproduce as rep
import slt_tms.io.report as report
from slt_tms.cli import main
from slt_tms.io import save_figure, write_json
from slt_tms.io.results import write_csv

(root / "calls").mkdir(exist_ok=True)


def stage(name):
    """Three tables, a figure and a JSON result into OUT/NAME (hangs at the points named after it)."""

    def run(out, profile, seed, quiet):
        (root / "calls" / f"{name}.{point}").touch()  # which run ran the stage
        if point == f"at-start-of-{name}":
            hang()
        folder, files = out / name, []
        for i in range(3):
            rows = [{"i": i, "x": (seed + 1) * i * j / 7} for j in range(5)]
            files.append(write_csv(folder / f"table{i}.csv", rows, ["i", "x"]))
            if point == f"in-{name}" and i == 1:  # two of its files written, the others not yet
                hang()
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(range(10), [(v * (seed + 3)) % 7 for v in range(10)])
        if point == f"in-figure-write-{name}":
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=60)
            half_write(folder / "fig.png", buf.getvalue())
        files.append(save_figure(fig, folder / "fig.png", dpi=60))
        files.append(write_json(folder / "result.json", {"stage": name, "seed": seed}))
        return files

    return run


real_atomic, real_report_atomic = rep.atomic_write_text, report.atomic_write_text
real_write_report = rep.write_report


def atomic_write_text(path, text):  # the stage record of b, the summary: half written (temp name)
    path = Path(path)
    record_b = path.parent.name == ".stages" and path.name == "b.json"
    if (point == "in-record-write-b" and record_b) or (
        point == "in-summary-write" and path.name == "reproduce_summary.json"
    ):
        half_write(path, text.encode())
    return real_atomic(path, text)


def report_atomic_write_text(path, text):  # index.html half written (temp name)
    if point == "in-report-write":
        half_write(Path(path), text.encode())
    return real_report_atomic(path, text)


def write_report(*args, **kwargs):  # everything written, the lock still held
    page = real_write_report(*args, **kwargs)
    if point == "after-report":
        hang()
    return page


rep.STAGES[:] = [rep.Stage("a", "stage a", stage("a")), rep.Stage("b", "stage b", stage("b"))]
rep.atomic_write_text, report.atomic_write_text, rep.write_report = (
    atomic_write_text, report_atomic_write_text, write_report)
sys.exit(main(argv))
'''

#: The kill points, in the order of the run: (point, the stages up to date then (a record on disk), the
#: temporary files then on disk: the one of the interrupted write, and none of an earlier kill's).
REPRODUCE_POINTS = [
    ("in-a", [], []),
    ("at-start-of-b", ["a"], []),
    ("in-figure-write-b", ["a"], ["b/.fig.png."]),
    ("in-record-write-b", ["a"], [".stages/.b.json."]),
    ("in-summary-write", ["a", "b"], [".reproduce_summary.json."]),
    ("in-report-write", ["a", "b"], [".index.html."]),
    ("after-report", ["a", "b"], []),
]


def _reproduce_args(root: Path) -> list[str]:
    return ["reproduce", "--out", str(root / "out"), "--quiet"]


def _reproduce(root: Path) -> list[str]:
    """The wrapper without a kill point: the command run to its end."""
    return [sys.executable, str(root / "wrapper.py"), str(root), "none", *_reproduce_args(root)]


def _reproduce_results(out: Path) -> dict:
    summary = json.loads((out / "reproduce_summary.json").read_text())
    page = (out / "index.html").read_text()
    assert page.rstrip().endswith("</html>") and 'href="#a"' in page and 'href="#b"' in page  # complete
    records = {p.name: json.loads(p.read_text()) for p in sorted((out / ".stages").iterdir())}
    return {
        "files": _tree(out),
        # the stages' outputs, figures included (the Agg PNG writer stores no date: equal plots, equal
        # bytes); the summary, the report and the records also hold run times and dates: compared in part
        "sha256": {str(p.relative_to(out)): _sha(p) for d in ("a", "b") for p in sorted((out / d).iterdir())},
        "records": {k: (r["fingerprint"], r["files"]) for k, r in records.items()},
        "stages": [{k: s[k] for k in ("name", "ok", "files", "error")} for s in summary["stages"]],
    }


@pytest.fixture(scope="module")
def reproduce_uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reproduce-uninterrupted")
    (root / "wrapper.py").write_text(REPRODUCE_WRAPPER)
    _run(_reproduce(root), root / "run.log")
    return _reproduce_results(root / "out")


def test_reproduce_killed_again_and_again_resumes_to_the_same_results(tmp_path, reproduce_uninterrupted):
    """Kill ``reproduce`` at each point in turn (in a stage, between stages, in the writes of a stage's
    output, its record, the summary and the report, after the report), every restart continuing from what
    the previous kill left; then rerun it to completion and compare with an uninterrupted run. A stage
    counts as up to date only once its record is complete: until then every restart runs it again."""
    out = tmp_path / "out"
    for point, done, temporaries in REPRODUCE_POINTS:
        pid = _kill_at(tmp_path, REPRODUCE_WRAPPER, point, _reproduce_args(tmp_path))
        assert sorted(p.stem for p in (out / ".stages").glob("[!.]*.json")) == done, point
        left = _temporaries(out)
        assert len(left) == len(temporaries) and all(
            name.startswith(t) for name, t in zip(left, temporaries, strict=True)
        ), (point, left)
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == pid, point

    _run(_reproduce(tmp_path), tmp_path / "rerun.log")
    assert _reproduce_results(out) == reproduce_uninterrupted
    summary = json.loads((out / "reproduce_summary.json").read_text())
    assert [s["cached"] for s in summary["stages"]] == [True, True]
    # which runs ran each stage: a again after it was killed in it, b until its record was complete
    ran = sorted(p.name for p in (tmp_path / "calls").iterdir())
    assert ran == ["a.at-start-of-b", "a.in-a",
                   "b.at-start-of-b", "b.in-figure-write-b", "b.in-record-write-b", "b.in-summary-write"]
    assert not _temporaries(out) and not (out / LOCK_NAME).exists()
