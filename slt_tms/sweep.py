r"""One resumable sweep executor for every many-run job (seeds, sample-size grids, LLC over checkpoints).

A *sweep* maps one module-level function ``fn`` over a list of *tasks* (JSON-able dicts of the
configuration of one run). Every task has a stable key, the first 16 hex digits of

.. math:: \mathrm{key}(t) = \mathrm{SHA256}\big(\mathrm{canonical\_json}(t)\big),

(sorted keys, no whitespace), so the same configuration always lands in the same file. When a task
finishes, its result is written atomically to ``out_dir/<key>.json`` (and, if the result carries
tensors, to ``out_dir/<key>.safetensors`` *before* the JSON, so a JSON file on disk always means a
complete result). Running the same sweep again loads the finished results and only computes the
missing ones: an interrupted sweep continues where it stopped, and a task that raised is retried.

Crashes and damaged files
-------------------------
A sweep survives being killed at any point (``kill -9``, a crash, a full disk). Each record stores the
size and SHA-256 of its tensor file; on loading, a record that is empty or not valid JSON, or whose
tensor file is missing, of the wrong size, altered or unreadable, is reported by name (a
:class:`RuntimeWarning`) and its task is run again. On start the sweep takes the output lock of
``out_dir`` (:func:`slt_tms.io.locks.output_lock`: a second sweep into the same directory stops at
once) and removes the temporary files that writes interrupted by a crash left there. Local worker
processes end with the process that started them (on Linux the kernel kills them when it dies; on
every platform a watchdog thread in each worker exits when its parent is gone), so a killed sweep
leaves no orphans computing in the background.

Executors
---------
``"local"``
    :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method (safe with torch),
    ``max_workers`` processes (default: all cores). With ``max_workers=1`` (or one pending task) the
    tasks run serially in the calling process, with identical results.
``"dask"``
    The same tasks submitted to a :class:`dask.distributed.Client` — a running cluster at
    ``dask_address`` (e.g. ``"tcp://scheduler:8786"``), or a fresh :class:`~dask.distributed.LocalCluster`
    with ``max_workers`` single-threaded worker processes when no address is given. Needs the optional
    extra ``pip install slt_tms[dask]``.

In both cases the workers return results to the calling process, which alone writes the files: the
workers need no shared filesystem.

The result protocol
-------------------
``fn(task)`` returns a dict that ``json`` can serialise (numbers, strings, lists, dicts, None; numpy
scalars and arrays are converted). The optional entry ``"tensors"`` maps names to tensors
(``torch.Tensor`` or ``numpy.ndarray``); they are stored with safetensors and come back as CPU
``torch.Tensor`` in ``result["tensors"]``.

Examples
--------
>>> import tempfile
>>> from slt_tms.sweep import run_sweep, _example_square
>>> out = tempfile.mkdtemp()
>>> [r["y"] for r in run_sweep(_example_square, [{"x": 2}, {"x": 3}], out_dir=out, max_workers=1)]
[4, 9]
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import hashlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from slt_tms._progress import progress_bar
from slt_tms.io.atomic import atomic_path, remove_stale_temporaries, sha256
from slt_tms.io.checkpoints import load_tensors
from slt_tms.io.locks import output_lock
from slt_tms.io.serialize import dumps, read_json, to_jsonable, write_json
from slt_tms.validation import check_choice, check_int

__all__ = [
    "SweepError",
    "load_result",
    "load_results",
    "run_sweep",
    "task_key",
]

Executor = Literal["local", "dask"]
#: Version of the record format: 2 adds ``tensors_bytes`` and ``tensors_sha256`` (version-1 records,
#: without them, are still read; their tensor file is then only checked for readability).
_FORMAT_VERSION = 2
#: Seconds between two checks of the worker watchdog for its parent (see :func:`_die_with_parent`).
_WATCHDOG_PERIOD_S = 0.5


class SweepError(RuntimeError):
    """Some tasks of a sweep raised; the others were saved. Rerun the sweep to retry only the failed ones.

    Attributes
    ----------
    failures : dict[str, str]
        Task key -> the error message (type and text) of the failed task.
    """

    def __init__(self, failures: dict[str, str], out_dir: Path) -> None:
        self.failures = dict(failures)
        first = next(iter(self.failures.items()))
        super().__init__(
            f"{len(self.failures)} task(s) of the sweep in {out_dir} failed (first: {first[0]}: {first[1]}); "
            "finished tasks are saved, rerun the same sweep to retry only the failed ones"
        )


def _canonical(task: Mapping[str, Any]) -> str:
    if not isinstance(task, Mapping):
        raise ValueError(f"a task must be a dict of its configuration, got {type(task).__name__}")
    return dumps(task, sort_keys=True, strict=True)


def task_key(task: Mapping[str, Any]) -> str:
    r"""Stable key of a task: the first 16 hex digits of SHA-256 of its canonical JSON.

    Key order in the dict does not matter; ``1`` and ``1.0`` are different tasks.

    Examples
    --------
    >>> task_key({"seed": 1, "c": 6}) == task_key({"c": 6, "seed": 1})
    True
    >>> len(task_key({"seed": 1}))
    16
    """
    return hashlib.sha256(_canonical(task).encode()).hexdigest()[:16]


def _fn_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _check_fn(fn: Callable[..., Any], need_pickle: bool) -> None:
    if not callable(fn):
        raise ValueError(f"fn must be a callable taking one task dict, got {fn!r}")
    if need_pickle:
        qual = getattr(fn, "__qualname__", "")
        if "<lambda>" in qual or "<locals>" in qual:
            raise ValueError(
                f"fn {qual!r} must be a module-level function so that it can be sent to worker processes; "
                "define it at the top level of an importable module"
            )


class _DamagedRecord(ValueError):
    """A record that exists but cannot be trusted; ``detail`` is the message without the advice."""

    def __init__(self, path: Path, why: str) -> None:
        self.detail = f"damaged sweep record {path}: {why}"
        super().__init__(f"{self.detail}; rerun the sweep to redo the task")


def load_result(out_dir: str | os.PathLike[str], key: str) -> dict[str, Any] | None:
    """Load the saved result of the task with ``key`` from ``out_dir`` (None when it is not finished).

    Returns
    -------
    dict or None
        The dict written by :func:`run_sweep`: ``{"format", "key", "task", "fn", "result", ...}``; tensors
        saved with the result are put back in ``record["result"]["tensors"]``.

    Raises
    ------
    ValueError
        One line naming the file, for a damaged record: an empty or invalid JSON file, a record of another
        key, or a tensor file that is missing, of the wrong size, altered (SHA-256) or unreadable.
        :func:`run_sweep` reports these and runs the task again.
    """
    out_dir = Path(out_dir)
    path = out_dir / f"{key}.json"
    if not path.exists():
        return None
    try:
        record = read_json(path, what="sweep record")
    except ValueError as exc:
        raise _DamagedRecord(path, str(exc).split(" (an interrupted")[0].split("; delete it")[0]) from None
    if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("result"), dict):
        raise _DamagedRecord(path, f"not a record of task {key}")
    if record.get("has_tensors"):
        tpath = out_dir / f"{key}.safetensors"
        if not tpath.is_file():
            raise _DamagedRecord(path, f"its tensor file {tpath.name} is missing")
        size, digest = record.get("tensors_bytes"), record.get("tensors_sha256")
        if size is not None and tpath.stat().st_size != size:
            raise _DamagedRecord(path, f"its tensor file {tpath.name} has {tpath.stat().st_size} bytes, "
                                 f"the record says {size} (truncated?)")
        if digest is not None and sha256(tpath) != digest:
            raise _DamagedRecord(path, f"its tensor file {tpath.name} does not match the SHA-256 in the "
                                 "record")
        try:
            record["result"]["tensors"] = load_tensors(tpath)
        except ValueError as exc:
            raise _DamagedRecord(path, str(exc)) from None
    return record


def load_results(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All finished records in ``out_dir`` (see :func:`load_result`), sorted by key.

    Damaged records are left out with a :class:`RuntimeWarning` naming each (rerunning the sweep redoes
    them).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {out_dir} does not exist")
    keys = sorted(p.stem for p in out_dir.glob("*.json") if len(p.stem) == 16)
    records = []
    for k in keys:
        try:
            rec = load_result(out_dir, k)
        except ValueError as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
            continue
        if rec is not None:
            records.append(rec)
    return records


def _save(out_dir: Path, key: str, task: Mapping[str, Any], fn_name: str, result: Any) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise ValueError(f"the sweep function must return a dict, got {type(result).__name__}")
    result = dict(result)
    tensors = result.pop("tensors", None)
    record: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "key": key,
        "fn": fn_name,
        "task": to_jsonable(task, strict=True, where="task"),
        "result": to_jsonable(result, strict=True, where=f"result of task {key}"),
        "has_tensors": bool(tensors),
    }
    if tensors:
        tdict = {}
        for name, t in tensors.items():
            tt = torch.as_tensor(t).detach().cpu().contiguous()
            tdict[str(name)] = tt
        with atomic_path(out_dir / f"{key}.safetensors") as tmp:
            save_file(tdict, str(tmp))
            record["tensors_bytes"] = tmp.stat().st_size
            record["tensors_sha256"] = sha256(tmp)
    # The JSON is written last: its presence marks the task as complete.
    write_json(out_dir / f"{key}.json", record)
    if tensors:
        record["result"]["tensors"] = {k: torch.as_tensor(v).detach().cpu() for k, v in tensors.items()}
    return record


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in worker processes
    """End this worker when the process that started it ends, however it ends (also ``kill -9``).

    On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to kill the worker when its parent
    dies; everywhere, a daemon thread checks every :data:`_WATCHDOG_PERIOD_S` seconds that the parent
    is still ``parent_pid`` (an orphan is re-parented, so ``os.getppid()`` changes) and exits if not.
    """
    if sys.platform.startswith("linux"):
        try:
            pr_set_pdeathsig = 1  # from <linux/prctl.h>
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watchdog below still applies
            pass
    if os.getppid() != parent_pid:  # the parent died before the request above was in place
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_WATCHDOG_PERIOD_S)
        os._exit(1)

    threading.Thread(target=watch, name="slt-tms-parent-watchdog", daemon=True).start()


def _worker_init(parent_pid: int) -> None:  # pragma: no cover - runs in worker processes
    torch.set_num_threads(1)
    _die_with_parent(parent_pid)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_sweep(
    fn: Callable[[dict[str, Any]], Mapping[str, Any]],
    tasks: Sequence[Mapping[str, Any]],
    *,
    out_dir: str | os.PathLike[str],
    executor: Executor = "local",
    max_workers: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    r"""Run ``fn`` on every task, saving each result atomically; skip tasks already finished.

    Parameters
    ----------
    fn : callable
        ``fn(task: dict) -> dict``, a module-level (picklable) function. See the module docstring for
        the result protocol (JSON-able dict, optional ``"tensors"`` entry).
    tasks : sequence of dict
        JSON-able configurations, one per run; each must be distinct (their keys are
        :func:`task_key`).
    out_dir : path
        Directory of the sweep: ``<key>.json`` (+ ``<key>.safetensors``) per finished task, and
        ``sweep.json`` listing every task and its key.
    executor : {"local", "dask"}
        Local processes (``spawn``), or a Dask cluster.
    max_workers : int, optional
        Number of worker processes (default: all cores, ``os.cpu_count()``). ``1`` runs serially
        in this process. For ``"dask"`` without an address, the size of the LocalCluster started.
    dask_address : str, optional
        Address of a running Dask scheduler; only with ``executor="dask"``.
    progress : bool, optional
        Show a progress bar (None: on unless ``SLT_TMS_NO_PROGRESS=1``).

    Returns
    -------
    list of dict
        The results, in the order of ``tasks`` (loaded from disk for finished tasks), each the dict
        ``fn`` returned (JSON-normalised; tensors as CPU tensors under ``"tensors"``).

    Raises
    ------
    SweepError
        After all other tasks ran and were saved, if some tasks raised. Rerunning retries only them.
    ValueError
        Bad arguments: unknown executor, non-JSON tasks, duplicate tasks, a non-module-level ``fn``,
        or an ``out_dir`` holding results of a different function under the same keys.
    """
    check_choice("executor", executor, ("local", "dask"))
    if dask_address is not None and executor != "dask":
        raise ValueError("dask_address is only used with executor='dask'")
    if max_workers is not None:
        check_int("max_workers", max_workers, minimum=1)
    workers = max_workers or os.cpu_count() or 1
    tasks = [dict(t) for t in tasks]
    keys = [task_key(t) for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(
            "the tasks of a sweep must be distinct; two or more tasks have identical configurations"
        )
    out = Path(out_dir)
    with output_lock(out, flag="out_dir"):  # one sweep per directory; so stale temporaries are stale
        remove_stale_temporaries(out)
        return _run_locked(fn, tasks, keys, out, executor, workers, dask_address, progress)


def _run_locked(fn, tasks, keys, out, executor, workers, dask_address, progress) -> list[dict[str, Any]]:
    name = _fn_name(fn)
    listing = [{"key": k, "task": to_jsonable(t, strict=True, where="task")}
               for k, t in zip(keys, tasks, strict=True)]
    write_json(out / "sweep.json", {"fn": name, "tasks": listing})

    results: dict[str, dict[str, Any]] = {}
    pending: list[int] = []
    for i, k in enumerate(keys):
        try:
            rec = load_result(out, k)
        except _DamagedRecord as exc:  # report it by name and redo the task
            warnings.warn(f"{exc.detail}; running its task again", RuntimeWarning, stacklevel=3)
            rec = None
        if rec is None:
            pending.append(i)
            continue
        if rec.get("fn") != name:
            raise ValueError(
                f"{out / (k + '.json')} holds a result of {rec.get('fn')!r}, not {name!r}; "
                "use a separate out_dir per sweep function"
            )
        results[k] = rec["result"]

    failures: dict[str, str] = {}
    serial = executor == "local" and (workers == 1 or len(pending) <= 1)
    _check_fn(fn, need_pickle=not serial)
    # the tasks still to run (inside a reproduce stage: part of the stage's one bar)
    bar = progress_bar(total=len(pending), desc="sweep", enabled=progress)

    def _done(i: int, value: Any = None, exc: BaseException | None = None) -> None:
        k = keys[i]
        if exc is not None:
            failures[k] = _error_text(exc)
        else:
            try:
                results[k] = _save(out, k, tasks[i], name, value)["result"]
            except Exception as err:  # a bad result is a failure of that task, not of the sweep
                failures[k] = _error_text(err)
        bar.update(1)

    try:
        if not pending:
            pass
        elif serial:
            for i in pending:
                try:
                    value = fn(dict(tasks[i]))
                except Exception as exc:
                    _done(i, exc=exc)
                else:
                    _done(i, value)
        elif executor == "local":
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                        initializer=_worker_init, initargs=(os.getpid(),)) as pool:
                futs = {pool.submit(fn, dict(tasks[i])): i for i in pending}
                for fut in cf.as_completed(futs):
                    exc = fut.exception()
                    _done(futs[fut], None if exc else fut.result(), exc)
        else:
            _run_dask(fn, tasks, keys, pending, workers, dask_address, _done)
    finally:
        bar.close()
    if failures:
        raise SweepError(failures, out)
    return [results[k] for k in keys]


def _run_dask(fn, tasks, keys, pending, workers, dask_address, done) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(
            "executor='dask' needs dask.distributed: pip install 'slt_tms[dask]' (or 'dask[distributed]')"
        ) from exc
    cluster = None
    if dask_address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(dask_address)
    try:
        futs = {client.submit(fn, dict(tasks[i]), key=f"slt-tms-{keys[i]}", pure=False): i for i in pending}
        for fut in as_completed(list(futs)):
            i = futs[fut]
            try:
                value = fut.result()
            except Exception as exc:
                done(i, exc=exc)
            else:
                done(i, value)
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _example_square(task: dict[str, Any]) -> dict[str, Any]:
    """Tiny sweep function used in the module's example: ``{"y": x ** 2}``."""
    return {"y": task["x"] ** 2}
