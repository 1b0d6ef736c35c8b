"""The LLC over checkpoint FILES is resumable: a series killed with SIGKILL at several points (after k of N
batches are saved, inside the write of a record, inside the write of its tensor file) and run again
finishes with the same table, number for number, as an uninterrupted run; no finished batch is computed
again; no temporary file is left. The same for the command ``slt-tms llc CKPT... --model ... --data ...
--out DIR`` rerun into the same ``--out``. And in-process: the resumable series equals the in-memory
``estimate_llc_series`` exactly, and a changed checkpoint file is computed afresh, never mixed with old
results.

The kills follow the pattern of tests/test_sweep.py ("kill -9"): the run is held at a known point (the
model factory blocks when the work directory holds k finished records; the sweep's writers are patched to
leave a half-written temporary and block), then killed, then rerun to completion.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from slt_tms.estimators.series import estimate_llc_series
from slt_tms.estimators.series_sweep import estimate_llc_series_resumable, run_series_task, series_tasks
from slt_tms.io.user_models import load_data, load_factory
from slt_tms.sweep import task_key

#: Short chains: these tests are about the bookkeeping, not the statistics.
SETTINGS = {"sampler": "mala", "num_chains": 2, "num_burnin": 20, "num_draws": 40}
N_CKPTS, BATCH, SEED = 5, 2, 3  # tasks: the last checkpoint alone (its calibration), then 2 and 2

FACTORY = '''
"""The architecture of the test checkpoints; every call is recorded, and a call blocks (so that the run
can be killed at a known point) when HANG_AT_RECORDS equals the number of finished records in WORK_DIR."""
import os, time, uuid
from pathlib import Path

from torch import nn


def make():
    calls = os.environ.get("FACTORY_CALLS")
    if calls:
        Path(calls).mkdir(parents=True, exist_ok=True)
        (Path(calls) / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    hang = os.environ.get("HANG_AT_RECORDS")
    if hang is not None:
        work = Path(os.environ["WORK_DIR"])
        done = len(list(work.glob("????????????????.json")))
        if done == int(hang):
            (Path(os.environ["MARKERS"]) / f"hanging-after-{done}").touch()
            time.sleep(120)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
'''

DRIVER = '''
"""Run the resumable series of the test files into ROOT/work (optionally held inside a sweep write)."""
import json, sys, time
from pathlib import Path

import slt_tms.sweep as sweep
from slt_tms.estimators.series_sweep import estimate_llc_series_resumable
from slt_tms.io.atomic import atomic_path
from slt_tms.io.serialize import dumps

files, root, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
settings = json.loads(sys.argv[4])


def _hang(what):
    (root / f"hanging-in-{what}").touch()
    time.sleep(120)


if mode == "kill-in-tensor-write":  # the tensor file half written under its temporary name
    real_save = sweep.save_file

    def save_file(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:300])
        _hang("tensor-write")

    sweep.save_file = save_file
if mode == "kill-in-record-write":  # the tensors complete, the record half written under its temporary name
    real_write = sweep.write_json

    def write_json(path, obj, indent=1):
        if path.name != "sweep.json":
            with atomic_path(path) as tmp:
                tmp.write_text(dumps(obj, indent=indent)[:60])
                _hang("record-write")
        return real_write(path, obj, indent=indent)

    sweep.write_json = write_json
ckpts = sorted(files.glob("step*.safetensors"))
series = estimate_llc_series_resumable(ckpts, f"{files / 'factory.py'}:make", files / "data.safetensors",
                                       work_dir=root / "work", batch=settings.pop("batch"),
                                       seed=settings.pop("seed"), progress=False, **settings)
(root / "table.json").write_text(json.dumps(series.rows()))
print("series finished", flush=True)
'''


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-4-1 tanh MLP (21 parameters) fitted on 64 noisy rows, saved at five steps (safetensors), its data
    file, its factory module and the driver script."""
    d = tmp_path_factory.mktemp("series_files")
    (d / "factory.py").write_text(FACTORY)
    (d / "driver.py").write_text(DRIVER)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g, dtype=torch.float64)
    Y = torch.tanh(X @ torch.randn(3, 1, generator=g, dtype=torch.float64)) + 0.1 * torch.randn(
        64, 1, generator=g, dtype=torch.float64
    )
    save_file({"x": X, "y": Y}, str(d / "data.safetensors"))
    net = load_factory(f"{d / 'factory.py'}:make")()
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    saves = {10, 30, 60, 100, 150}
    for step in range(1, 151):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(X), Y).backward()
        opt.step()
        if step in saves:
            save_file({k: v.detach().clone() for k, v in net.state_dict().items()},
                      str(d / f"step{step:04d}.safetensors"))
    return d


def _ckpts(files: Path) -> list[Path]:
    return sorted(files.glob("step*.safetensors"))


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "SLT_TMS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **extra}


def _wait_for(cond, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _records(work: Path) -> list[Path]:
    return sorted(work.glob("????????????????.json"))


def _snapshot(paths: list[Path]) -> dict[str, tuple[int, int, bytes]]:
    """inode, modification time and bytes of each file: a record written again (atomically: a new file
    renamed over the old one) gets a new inode."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name == ".slt-tms.lock"]


def _same_table(a: list[dict], b: list[dict]) -> bool:
    """Equal rows, every number bit for bit (NaN equals NaN)."""
    def norm(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v
    return [{k: norm(v) for k, v in r.items()} for r in a] == [{k: norm(v) for k, v in r.items()} for r in b]


def _driver(files: Path, root: Path, mode: str, label: str, **env: str) -> subprocess.Popen:
    """Start the driver; the factory records its calls in ROOT/calls/LABEL."""
    settings = json.dumps({**SETTINGS, "batch": BATCH, "seed": SEED})
    return subprocess.Popen(
        [sys.executable, str(files / "driver.py"), str(files), str(root), mode, settings],
        env=_env(FACTORY_CALLS=str(root / "calls" / label), **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(files: Path, root: Path) -> list[dict]:
    proc = _driver(files, root, "run", "rerun")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "series finished" in out, err
    return json.loads((root / "table.json").read_text())


def _calls(root: Path, label: str) -> int:
    d = root / "calls" / label
    return len(list(d.iterdir())) if d.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(files: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _finish(files, tmp_path_factory.mktemp("uninterrupted"))


# ------------------------------------------------------------------------------------------ kill -9
@pytest.mark.parametrize("point", ["after-1", "after-2", "in-record-write", "in-tensor-write"])
def test_series_killed_at_any_point_resumes_to_the_same_table(files, tmp_path, point, uninterrupted):
    """SIGKILL the series at a point, rerun it: the same table bit for bit, finished batches not redone."""
    work = tmp_path / "work"
    if point.startswith("after-"):
        done = int(point.split("-")[1])
        proc = _driver(files, tmp_path, "run", "killed", HANG_AT_RECORDS=str(done), WORK_DIR=str(work),
                       MARKERS=str(tmp_path))
        marker = tmp_path / f"hanging-after-{done}"
    else:
        done = 0
        proc = _driver(files, tmp_path, f"kill-{point}", "killed")
        marker = tmp_path / f"hanging-{point}"
    try:
        _wait_for(marker.exists, f"the series to hang {point}")
        assert proc.poll() is None, "the series ended early"
    finally:
        proc.kill()  # SIGKILL: no cleanup code of the run executes
        proc.communicate(timeout=30)
    finished = _records(work)
    assert len(finished) == done  # no extra (or partial) record
    if point.startswith("in-"):  # the interrupted write left its temporary file
        assert [p for p in work.iterdir() if ".tmp" in p.name]
    before = _snapshot(finished)

    table = _finish(files, tmp_path)
    assert _same_table(table, uninterrupted)
    assert len(_records(work)) == 3  # the last checkpoint alone, then ceil(4 / 2) batches
    after = _snapshot(_records(work))
    assert all(after[name] == before[name] for name in before)  # finished batches were not written again
    # the rerun built the model once up front (the factory check) and once per checkpoint of the
    # unfinished batches only
    assert _calls(tmp_path, "rerun") == 1 + sum([1, 2, 2][done:])
    assert not _leftovers(tmp_path)


def test_cli_series_killed_and_rerun_into_the_same_out(files, tmp_path):
    """``slt-tms llc CKPT... --model --data --out DIR`` killed after one finished checkpoint and rerun into
    the same DIR: the same llc_series.json rows (bit for bit) as an uninterrupted run, the finished
    record untouched, no temporary files."""
    ckpts = [str(p) for p in _ckpts(files)[:3]]
    base = [sys.executable, "-m", "slt_tms", "llc", *ckpts, "--model", f"{files / 'factory.py'}:make",
            "--data", str(files / "data.safetensors"), "--params", "2.*", "--seed", str(SEED), "--quiet",
            "--sampler", "mala", "--num-chains", "2", "--num-burnin", "20", "--num-draws", "40"]

    def run(out: Path, **env: str) -> subprocess.Popen:
        return subprocess.Popen([*base, "--out", str(out)], env=_env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def complete(out: Path) -> list[dict]:
        proc = run(out)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return json.loads((out / "llc_series.json").read_text())["rows"]

    clean = complete(tmp_path / "clean")
    out = tmp_path / "killed"
    proc = run(out, HANG_AT_RECORDS="1", WORK_DIR=str(out / "series"), MARKERS=str(tmp_path))
    try:
        _wait_for((tmp_path / "hanging-after-1").exists, "the command to hang after one checkpoint")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert not (out / "llc_series.json").exists()
    before = _snapshot(_records(out / "series"))
    assert len(before) == 1

    rows = complete(out)
    assert _same_table(rows, clean) and [r["step"] for r in rows] == [10, 30, 60]
    assert all(_snapshot(_records(out / "series"))[k] == v for k, v in before.items())
    assert (out / "llc_series.csv").read_text() == (tmp_path / "clean" / "llc_series.csv").read_text()
    written = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert written == [f"step{s:04d}.nc" for s in (10, 30, 60)]
    assert not _leftovers(tmp_path)


# ------------------------------------------------------------------------------------------ in-process
def test_resumable_series_equals_the_in_memory_series(files, tmp_path):
    ckpts = _ckpts(files)
    X, Y = load_data(files / "data.safetensors", loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short chains: flags are compared, not avoided
        mem = estimate_llc_series(ckpts, load_factory(f"{files / 'factory.py'}:make"), (X, Y), batch=BATCH,
                                  seed=SEED, progress=False, **SETTINGS)
        res = estimate_llc_series_resumable(ckpts, f"{files / 'factory.py'}:make", files / "data.safetensors",
                                            work_dir=tmp_path / "w", batch=BATCH, seed=SEED, progress=False,
                                            **SETTINGS)
    assert _same_table(res.rows(), mem.rows())  # same batches, same seeds, same arithmetic
    for a, b in zip(res.results, mem.results, strict=True):
        assert (a.trace.posterior["llc"].values == b.trace.posterior["llc"].values).all()
        assert a.config["chain_seeds"] == b.config["chain_seeds"]
    assert res.config["checkpoint_seeds"] == mem.config["checkpoint_seeds"]
    assert res.config["work_dir"] == str(tmp_path / "w")


def test_flagged_checkpoints_warn_when_computed_and_when_loaded(files, tmp_path):
    kw = {"work_dir": tmp_path / "w", "batch": BATCH, "seed": SEED, "progress": False, **SETTINGS}
    args = (_ckpts(files)[:2], f"{files / 'factory.py'}:make", files / "data.safetensors")
    messages = []
    for _ in range(2):  # computed, then loaded from work_dir
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            series = estimate_llc_series_resumable(*args, **kw)
        messages.append(sorted(str(w.message) for w in caught if w.category is RuntimeWarning))
    flagged = [r["checkpoint"] for r in series.rows() if not r["ok"]]
    assert flagged  # 40 draws cannot reach ESS 400
    assert messages[1] == messages[0]
    # (checkpoints of a training run are not minima: one more warning sums up their first-order terms)
    messages = [[m for m in ms if "not critical points" not in m] for ms in messages]
    assert len(messages[0]) == len(flagged)
    assert all(m.startswith(f"LLC estimate at {nm} (step ") and "not trustworthy" in m
               for nm, m in zip(flagged, messages[0], strict=True))


def test_a_changed_checkpoint_is_computed_afresh(files, tmp_path):
    src = _ckpts(files)
    ck = tmp_path / "ck"
    ck.mkdir()
    for p in src[:2]:
        (ck / p.name).write_bytes(p.read_bytes())
    model, data = f"{files / 'factory.py'}:make", files / "data.safetensors"
    kw = {"batch": 1, "seed": SEED, **SETTINGS}
    tasks = series_tasks(sorted(ck.iterdir()), model, data, **kw)
    assert len(tasks) == 2 and json.loads(json.dumps(tasks)) == tasks  # plain JSON
    # the last checkpoint runs first (its calibration starts the others), then the first
    assert tasks[0]["checkpoints"][0]["path"] == str((ck / src[1].name).resolve())
    assert tasks[1]["checkpoints"][0]["path"] == str((ck / src[0].name).resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = estimate_llc_series_resumable(sorted(ck.iterdir()), model, data, work_dir=tmp_path / "w",
                                              progress=False, **kw)
        (ck / src[0].name).write_bytes(src[2].read_bytes())  # the first file now holds other weights
        changed = series_tasks(sorted(ck.iterdir()), model, data, **kw)
        assert task_key(changed[0]) == task_key(tasks[0]) and task_key(changed[1]) != task_key(tasks[1])
        second = estimate_llc_series_resumable(sorted(ck.iterdir()), model, data, work_dir=tmp_path / "w",
                                               progress=False, **kw)
    assert second.rows()[1] == first.rows()[1]  # the unchanged (last) checkpoint: loaded, not recomputed
    assert second.results[0].anchor_loss != first.results[0].anchor_loss  # computed on the new weights
    assert second.results[0].config["calibration_used"]["source"]["checkpoint"] == src[1].name
    # a task whose file changed after it was built refuses to run rather than record the wrong weights
    with pytest.raises(ValueError, match="has changed since the series was set up"):
        run_series_task(tasks[1])


def test_bad_arguments_fail_before_any_work(files, tmp_path):
    data = files / "data.safetensors"
    model = f"{files / 'factory.py'}:make"
    ck = _ckpts(files)[:1]
    with pytest.raises(ValueError, match="MODULE:FACTORY"):
        series_tasks(ck, lambda: None, data)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        series_tasks([tmp_path / "nope.safetensors"], model, data)
    with pytest.raises(FileNotFoundError, match="data file not found"):
        series_tasks(ck, model, tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="unknown loss"):
        series_tasks(ck, model, data, loss="hinge")
    with pytest.raises(ValueError, match="ladder"):
        series_tasks(ck, model, data, ladder=(1.0, 2.0))
    with pytest.raises(ValueError, match="CUDA is not available"):
        estimate_llc_series_resumable(ck, model, data, work_dir=tmp_path / "w", device="cuda")
    # inputs that only a checkpoint shows: refused for every checkpoint before any sampling, naming it
    first, good = _ckpts(files)[0], _ckpts(files)[-1]
    sd = load_file(str(first))
    nan = torch.full_like(sd["0.weight"], math.nan)
    save_file({**sd, "0.weight": nan}, str(tmp_path / "nan_200.safetensors"))
    save_file({k: v for k, v in sd.items() if k != "2.bias"}, str(tmp_path / "short_200.safetensors"))
    X, Y = load_data(data)
    Xn = X.clone()
    Xn[17, 2] = math.inf
    save_file({"x": Xn, "y": Y}, str(tmp_path / "inf.safetensors"))
    bad_inputs = [
        ([good, tmp_path / "nan_200.safetensors"], data,
         r"checkpoint nan_200\.safetensors: parameters holding NaN or inf: 0\.weight"),
        ([good, tmp_path / "short_200.safetensors"], data,
         r"checkpoint short_200\.safetensors does not fit the model: missing in checkpoint: 2\.bias$"),
        ([good, first], tmp_path / "inf.safetensors", r"inputs \(X\) contain infinite values.*row 17"),
    ]
    for ckpts, data_file, match in bad_inputs:
        with pytest.raises(ValueError, match=match):
            estimate_llc_series_resumable(ckpts, model, data_file, work_dir=tmp_path / "w", **SETTINGS)
        assert not (tmp_path / "w").exists()
        with pytest.raises(ValueError, match=match):
            estimate_llc_series(ckpts, load_factory(model), load_data(data_file), progress=False, **SETTINGS)
    (tmp_path / "bad.py").write_text("def make():\n    return 3\n")
    with pytest.raises(ValueError, match=r"must return an nn\.Module"):
        estimate_llc_series_resumable(ck, f"{tmp_path / 'bad.py'}:make", data, work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_a_mix_of_numbered_and_unnumbered_file_names_is_refused(files, tmp_path):
    """Steps read from names would sit on two scales (numbers and list positions): the API refuses the mix
    before any work, in memory and resumable, and takes explicit steps or names that all lack a number."""
    final = tmp_path / "final.safetensors"
    final.write_bytes((files / "step0150.safetensors").read_bytes())
    paths = [files / "step0010.safetensors", files / "step0030.safetensors", final]
    factory = load_factory(f"{files / 'factory.py'}:make")
    data = load_data(files / "data.safetensors")
    refusal = r"1 of the 3 checkpoint files have no step number .*final\.safetensors.*steps=\[\.\.\.\]"
    with pytest.raises(ValueError, match=refusal):
        estimate_llc_series(paths, factory, data, num_draws=10, progress=False)
    with pytest.raises(ValueError, match="no step number"):
        estimate_llc_series_resumable(paths, f"{files / 'factory.py'}:make", files / "data.safetensors",
                                      work_dir=tmp_path / "work", num_draws=10, progress=False)
    assert not (tmp_path / "work").exists()
    kw = {"num_draws": 20, "num_burnin": 20, "num_chains": 2, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 20 draws: flagged not converged, as it should be
        series = estimate_llc_series(paths, factory, data, steps=[10, 30, 150], **kw)
        assert series.steps == (10, 30, 150)
        first = tmp_path / "first.safetensors"
        first.write_bytes((files / "step0010.safetensors").read_bytes())
        assert estimate_llc_series([first, final], factory, data, **kw).steps == (0, 1)
