"""Tests of the sweep executor: keys, resumability, atomic results, local processes and Dask."""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest
import torch

from slt_tms.sweep import SweepError, load_result, load_results, run_sweep, task_key


def _square(task: dict) -> dict:
    """Record the call in task['calls'] (one file per call), optionally fail on the first call."""
    calls = Path(task["calls"])
    calls.mkdir(parents=True, exist_ok=True)
    (calls / f"{task['x']}-{uuid.uuid4().hex}").touch()
    if task.get("fail_once"):
        marker = calls / f"failed-{task['x']}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError(f"simulated crash of task {task['x']}")
    g = torch.Generator().manual_seed(int(task["x"]))
    noise = torch.randn(3, generator=g)
    return {"y": task["x"] ** 2, "pid": os.getpid(), "tensors": {"noise": noise}}


def _bad_result(task: dict) -> dict:
    return {"y": object()}


def _same_noise(xs: list[dict], ys: list[dict]) -> bool:
    return len(xs) == len(ys) and all(
        torch.equal(a["tensors"]["noise"], b["tensors"]["noise"]) for a, b in zip(xs, ys, strict=True)
    )


def _calls(d: Path, x: int | None = None) -> int:
    if not d.exists():
        return 0
    return sum(1 for p in d.iterdir() if not p.name.startswith("failed") and (x is None or
                                                                              p.name.startswith(f"{x}-")))


def test_task_key_is_stable_and_order_free():
    assert task_key({"a": 1, "b": [1, 2]}) == task_key({"b": [1, 2], "a": 1})
    assert task_key({"a": 1}) != task_key({"a": 2})
    with pytest.raises(ValueError, match="JSON"):
        task_key({"a": object()})


def test_serial_results_files_and_tensors(tmp_path):
    calls = tmp_path / "calls"
    tasks = [{"x": x, "calls": str(calls)} for x in range(4)]
    res = run_sweep(_square, tasks, out_dir=tmp_path / "out", max_workers=1, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4, 9]
    for t, r in zip(tasks, res, strict=True):
        expected = torch.randn(3, generator=torch.Generator().manual_seed(t["x"]))
        assert torch.equal(r["tensors"]["noise"], expected)
        assert (tmp_path / "out" / f"{task_key(t)}.json").is_file()
        assert (tmp_path / "out" / f"{task_key(t)}.safetensors").is_file()
    # no temporary files left behind
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]
    records = load_results(tmp_path / "out")
    assert sorted(r["result"]["y"] for r in records) == [0, 1, 4, 9]
    # rerun: everything loaded, nothing recomputed, tensors come back from disk
    res2 = run_sweep(_square, tasks, out_dir=tmp_path / "out", max_workers=1, progress=False)
    assert _calls(calls) == 4
    assert _same_noise(res, res2)


def test_interrupted_sweep_resumes_only_missing(tmp_path):
    calls = tmp_path / "calls"
    tasks = [{"x": x, "calls": str(calls), "fail_once": x == 2} for x in range(5)]
    with pytest.raises(SweepError) as info:
        run_sweep(_square, tasks, out_dir=tmp_path / "out", max_workers=1, progress=False)
    assert list(info.value.failures) == [task_key(tasks[2])]
    assert not (tmp_path / "out" / f"{task_key(tasks[2])}.json").exists()
    assert _calls(calls) == 5
    res = run_sweep(_square, tasks, out_dir=tmp_path / "out", max_workers=1, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4, 9, 16]
    # only the failed task was run again
    assert _calls(calls) == 6
    assert _calls(calls, 2) == 2
    # adding a task to the sweep computes only the new one
    res = run_sweep(_square, [*tasks, {"x": 7, "calls": str(calls)}], out_dir=tmp_path / "out",
                    max_workers=1, progress=False)
    assert res[-1]["y"] == 49 and _calls(calls) == 7


def test_bad_result_is_a_failure_and_leaves_no_file(tmp_path):
    with pytest.raises(SweepError, match="not JSON-serialisable"):
        run_sweep(_bad_result, [{"x": 1}], out_dir=tmp_path, max_workers=1, progress=False)
    assert not list(tmp_path.glob("????????????????.json"))


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run_sweep(_square, [], out_dir=tmp_path, executor="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        run_sweep(_square, [{"x": 1}, {"x": 1}], out_dir=tmp_path)
    with pytest.raises(ValueError, match="module-level"):
        run_sweep(lambda t: {}, [{"x": 1}, {"x": 2}], out_dir=tmp_path, max_workers=2)
    with pytest.raises(ValueError, match="max_workers"):
        run_sweep(_square, [{"x": 1}], out_dir=tmp_path, max_workers=0)


def test_results_of_another_function_are_refused(tmp_path):
    calls = tmp_path / "calls"
    run_sweep(_square, [{"x": 1, "calls": str(calls)}], out_dir=tmp_path / "o", max_workers=1, progress=False)
    with pytest.raises(ValueError, match="separate out_dir"):
        run_sweep(_bad_result, [{"x": 1, "calls": str(calls)}], out_dir=tmp_path / "o", max_workers=1)


def test_local_processes_equal_serial(tmp_path):
    calls = tmp_path / "calls"
    tasks = [{"x": x, "calls": str(calls)} for x in range(4)]
    serial = run_sweep(_square, tasks, out_dir=tmp_path / "serial", max_workers=1, progress=False)
    par = run_sweep(_square, tasks, out_dir=tmp_path / "par", max_workers=2, progress=False)
    assert [r["y"] for r in par] == [r["y"] for r in serial]
    assert _same_noise(serial, par)
    # the parallel results really came from other processes
    assert {r["pid"] for r in par}.isdisjoint({os.getpid()})
    on_disk = json.loads((tmp_path / "par" / f"{task_key(tasks[3])}.json").read_text())
    assert on_disk["result"]["y"] == 9 and on_disk["task"] == tasks[3]


def test_dask_local_cluster_and_resume(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    calls = tmp_path / "calls"
    tasks = [{"x": x, "calls": str(calls), "fail_once": x == 1} for x in range(3)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with pytest.raises(SweepError):
            run_sweep(_square, tasks, out_dir=tmp_path / "d", executor="dask",
                      dask_address=cluster.scheduler_address, progress=False)
        assert _calls(calls) == 3
        res = run_sweep(_square, tasks, out_dir=tmp_path / "d", executor="dask",
                        dask_address=cluster.scheduler_address, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4]
    assert _calls(calls) == 4
    serial = run_sweep(_square, [{**t, "fail_once": False} for t in tasks], out_dir=tmp_path / "s",
                       max_workers=1, progress=False)
    assert _same_noise(serial, res)


def test_doctests():
    import slt_tms.sweep as sweep

    assert doctest.testmod(sweep).failed == 0


# ------------------------------------------------------------------------------------------ damaged records
def _flip_last_byte(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0x01  # inside the tensor data: still a readable safetensors file, with other numbers
    p.write_bytes(bytes(raw))


DAMAGE = {
    "empty_json": lambda js, st: js.write_text(""),
    "garbage_json": lambda js, st: js.write_bytes(b"\x00\xff{not json"),
    "truncated_json": lambda js, st: js.write_text(js.read_text()[:40]),
    "json_of_another_key": lambda js, st: js.write_text(json.dumps({"key": "0" * 16, "result": {}})),
    "missing_tensors": lambda js, st: st.unlink(),
    "truncated_tensors": lambda js, st: st.write_bytes(st.read_bytes()[:-5]),
    "altered_tensors": lambda js, st: _flip_last_byte(st),
    "unreadable_tensors": lambda js, st: st.write_bytes(b"\xff" * st.stat().st_size),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_record_is_reported_by_name_and_redone(tmp_path, damage):
    calls, out = tmp_path / "calls", tmp_path / "out"
    tasks = [{"x": x, "calls": str(calls)} for x in range(3)]
    first = run_sweep(_square, tasks, out_dir=out, max_workers=1, progress=False)
    key = task_key(tasks[1])
    js, st = out / f"{key}.json", out / f"{key}.safetensors"
    DAMAGE[damage](js, st)
    with pytest.warns(RuntimeWarning, match=rf"damaged sweep record .*{key}\.json: .*running its task again"):
        again = run_sweep(_square, tasks, out_dir=out, max_workers=1, progress=False)
    assert _calls(calls) == 4 and _calls(calls, 1) == 2  # only the damaged task ran again
    assert [r["y"] for r in again] == [r["y"] for r in first] and _same_noise(first, again)
    # repaired: a third run loads everything silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_sweep(_square, tasks, out_dir=out, max_workers=1, progress=False)
        assert len(load_results(out)) == 3
    assert _calls(calls) == 4


def test_damaged_records_are_one_line_errors_for_readers(tmp_path):
    calls, out = tmp_path / "calls", tmp_path / "out"
    tasks = [{"x": x, "calls": str(calls)} for x in range(2)]
    run_sweep(_square, tasks, out_dir=out, max_workers=1, progress=False)
    key = task_key(tasks[0])
    (out / f"{key}.json").write_text("")
    with pytest.raises(ValueError, match=rf"^damaged sweep record .*{key}\.json: .* is empty; rerun the"):
        load_result(out, key)
    with pytest.warns(RuntimeWarning, match=f"{key}.json"):
        records = load_results(out)
    assert [r["key"] for r in records] == [task_key(tasks[1])]


def test_stale_temporaries_are_removed_at_start(tmp_path):
    calls, out = tmp_path / "calls", tmp_path / "out"
    out.mkdir()
    stale = [out / ".0123456789abcdef.json.a1b2c3d4.tmp.json", out / ".sweep.json.zz_9y8x7.tmp.json",
             out / ".0123456789abcdef.safetensors.k0k0k0k0.tmp.safetensors"]
    for p in stale:
        p.write_bytes(b"half")
    (out / ".notes").write_text("a hidden file of the user's")
    run_sweep(_square, [{"x": 1, "calls": str(calls)}], out_dir=out, max_workers=1, progress=False)
    assert not any(p.exists() for p in stale)
    assert (out / ".notes").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.name == ".slt-tms.lock"]


def test_second_sweep_into_the_same_directory_is_refused(tmp_path):
    from slt_tms.io.locks import output_lock

    calls, out = tmp_path / "calls", tmp_path / "out"
    hold = ("import sys, time\nfrom slt_tms.io.locks import output_lock\nwith output_lock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n    time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"another slt-tms run \(pid {proc.pid}, .*another out_dir"):
            run_sweep(_square, [{"x": 1, "calls": str(calls)}], out_dir=out, max_workers=1, progress=False)
        assert _calls(calls) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    with output_lock(out, flag="out_dir"):  # a command holding its --out can run a sweep into it
        run_sweep(_square, [{"x": 1, "calls": str(calls)}], out_dir=out, max_workers=1, progress=False)
    assert _calls(calls) == 1


# ------------------------------------------------------------------------------------------ kill -9
KILL_SCRIPT = '''
"""A sweep of N gated tasks: task i returns only once the file ROOT/gates/i exists."""
import os, sys, time
from pathlib import Path

import torch

N = 5


def gated(task):
    root = Path(task["root"])
    (root / "started" / f"{task['i']}-{os.getpid()}").touch()
    gate, deadline = root / "gates" / str(task["i"]), time.monotonic() + 90
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("gate never opened")
        time.sleep(0.01)
    g = torch.Generator().manual_seed(task["i"])
    return {"y": task["i"] ** 2, "tensors": {"w": torch.randn(256, generator=g)}}


def no_guard(parent_pid):
    """A worker initializer that does NOT tie the worker to its parent (negative control)."""


def _hang(root, what):
    (root / f"hanging-in-{what}").touch()
    time.sleep(120)


if __name__ == "__main__":
    import slt_tms.sweep as sweep
    from slt_tms.io.atomic import atomic_path
    from slt_tms.io.serialize import dumps

    root, mode, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if mode == "no-guard":
        sweep._worker_init = no_guard
    if mode == "kill-in-tensor-write":  # the tensor file half written under its temporary name
        real_save = sweep.save_file

        def save_file(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            Path(filename).write_bytes(Path(filename).read_bytes()[:300])
            _hang(root, "tensor-write")

        sweep.save_file = save_file
    if mode == "kill-in-record-write":  # tensors complete, the record half written under its temporary name
        real_write = sweep.write_json

        def write_json(path, obj, indent=1):
            if path.name != "sweep.json":
                with atomic_path(path) as tmp:
                    tmp.write_text(dumps(obj, indent=indent)[:60])
                    _hang(root, "record-write")
            return real_write(path, obj, indent=indent)

        sweep.write_json = write_json
    tasks = [{"i": i, "root": str(root)} for i in range(N)]
    sweep.run_sweep(gated, tasks, out_dir=root / "out", max_workers=workers, progress=False)
    print("sweep finished", flush=True)
'''
N_KILL_TASKS = 5


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its new parent, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(cond, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _start(root: Path, mode: str, workers: int) -> subprocess.Popen:
    for sub in ("gates", "started"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    script = root / "killsweep.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "SLT_TMS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(root), mode, str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sweep (no cleanup code of it runs) and reap it, without reading its pipes: workers that
    outlive it hold them open, so ``communicate()`` here would wait for the workers."""
    proc.kill()
    proc.wait(timeout=30)


def _records(root: Path) -> list[Path]:
    return sorted((root / "out").glob("????????????????.json"))


def _started(root: Path) -> dict[int, list[int]]:
    """Task index -> the pids of the processes that started it."""
    out: dict[int, list[int]] = {}
    for p in (root / "started").iterdir():
        i, pid = p.name.split("-")
        out.setdefault(int(i), []).append(int(pid))
    return out


def _worker_pids(root: Path) -> set[int]:
    """The processes that have started at least one task."""
    return {pid for pids in _started(root).values() for pid in pids}


def _open_gates(root: Path, indices) -> None:
    (root / "gates").mkdir(parents=True, exist_ok=True)
    for i in indices:
        (root / "gates" / str(i)).touch()


def _run_to_the_end(root: Path) -> None:
    _open_gates(root, range(N_KILL_TASKS))
    proc = _start(root, "run", 1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "sweep finished" in out, err


def _final(root: Path) -> list[tuple]:
    """(task index, y, tensor) of every record, by index (keys differ between runs: they hold ROOT)."""
    return sorted((r["task"]["i"], r["result"]["y"], r["result"]["tensors"]["w"].tolist())
                  for r in load_results(root / "out"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[tuple]:
    root = tmp_path_factory.mktemp("uninterrupted")
    _run_to_the_end(root)
    return _final(root)


@pytest.mark.parametrize("point", ["after-0", "after-1", "after-3", "in-tensor-write", "in-record-write"])
def test_sweep_killed_at_any_point_resumes_to_the_same_results(tmp_path, point, uninterrupted):
    """SIGKILL a 2-worker sweep at a point, check its workers die with it, rerun, compare with a clean run."""
    mode = f"kill-{point}" if point.startswith("in-") else "run"
    done = int(point.split("-")[1]) if point.startswith("after") else 0
    proc = _start(tmp_path, mode, 2)
    try:
        _open_gates(tmp_path, range(done))
        if point.startswith("in-"):
            _open_gates(tmp_path, [0])
            _wait_for(lambda: (tmp_path / f"hanging-{point}").exists(), f"the sweep to hang {point}")
        else:
            _wait_for(lambda: len(_records(tmp_path)) == done, f"{done} finished tasks")
        # both workers have started a task (a worker can run several tasks before the second one is up,
        # so count processes, not tasks); killing the parent then orphans two live workers
        _wait_for(lambda: len(_worker_pids(tmp_path)) == 2, "two running workers")
        assert proc.poll() is None, "the sweep ended early"
    finally:
        _kill(proc)
    workers = _worker_pids(tmp_path)
    assert len(workers) == 2 and proc.pid not in workers
    try:
        _wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers to exit", timeout=15)
    finally:  # on failure, end the orphans this test started
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # the pipes close once the workers, which inherited them, are gone

    assert len(_records(tmp_path)) == done  # the kill left no extra (or partial) record
    if point.startswith("in-"):  # a write was interrupted: its temporary file is still there
        assert [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]

    _run_to_the_end(tmp_path)
    assert len(uninterrupted) == N_KILL_TASKS and _final(tmp_path) == uninterrupted
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]
    started = _started(tmp_path)
    assert all(len(started[i]) == 1 for i in range(done))  # finished tasks were not run again


def test_without_the_guard_workers_outlive_a_killed_parent(tmp_path):
    """Negative control: with a worker initializer that does not tie workers to the parent, they survive
    the parent's SIGKILL (so the orphan check above can fail)."""
    proc = _start(tmp_path, "no-guard", 2)
    try:
        _wait_for(lambda: len(_worker_pids(tmp_path)) == 2, "two running workers")
    finally:
        _kill(proc)
    workers = _worker_pids(tmp_path)
    try:
        time.sleep(2.0)  # four times the watchdog period: guarded workers would be gone by now
        assert workers and all(_alive(pid) for pid in workers)
    finally:
        for pid in workers:  # the workers this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not any(_alive(pid) for pid in workers), "the killed workers to exit", timeout=15)
        proc.communicate(timeout=30)
