r"""One resumable sweep executor for every many-run job (seeds, sample-size grids, LLC over checkpoints).

A *sweep* maps one module-level function ``fn`` over a list of *tasks* (JSON-able dicts of the
configuration of one run). Every task has a stable key, the first 16 hex digits of

.. math:: \mathrm{key}(t) = \mathrm{SHA256}\big(\mathrm{canonical\_json}(t)\big),

(sorted keys, no whitespace), so the same configuration always lands in the same file. When a task
finishes, its result is written atomically to ``out_dir/<key>.json`` (and, if the result carries
tensors, to ``out_dir/<key>.safetensors`` *before* the JSON, so a JSON file on disk always means a
complete result). Running the same sweep again loads the finished results and only computes the
missing ones: an interrupted sweep continues where it stopped, and a task that raised is retried.

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
import hashlib
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slt_tms._progress import progress_disabled
from slt_tms.io.atomic import atomic_path, atomic_write_text

__all__ = [
    "SweepError",
    "load_result",
    "load_results",
    "run_sweep",
    "task_key",
]

Executor = Literal["local", "dask"]
_FORMAT_VERSION = 1


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


def _jsonable(obj: Any, where: str = "task") -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types; reject everything else."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        if not math.isfinite(f):
            return None if math.isnan(f) else ("inf" if f > 0 else "-inf")
        return f
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, torch.Tensor) and obj.ndim == 0:
        return _jsonable(obj.item(), where)
    if isinstance(obj, list | tuple):
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: dictionary keys must be strings, got {k!r}")
            out[k] = _jsonable(v, where)
        return out
    raise ValueError(
        f"{where}: value of type {type(obj).__name__} is not JSON-serialisable; use numbers, strings, "
        "lists and dicts (tensors go under the result's 'tensors' entry)"
    )


def _canonical(task: Mapping[str, Any]) -> str:
    if not isinstance(task, Mapping):
        raise ValueError(f"a task must be a dict of its configuration, got {type(task).__name__}")
    return json.dumps(_jsonable(task), sort_keys=True, separators=(",", ":"), allow_nan=False)


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


def load_result(out_dir: str | os.PathLike[str], key: str) -> dict[str, Any] | None:
    """Load the saved result of the task with ``key`` from ``out_dir`` (None when it is not finished).

    Returns the dict written by :func:`run_sweep`: ``{"key", "task", "fn", "result"}``; tensors saved
    with the result are put back in ``record["result"]["tensors"]``.
    """
    out_dir = Path(out_dir)
    path = out_dir / f"{key}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("has_tensors"):
        from safetensors.torch import load_file

        record["result"]["tensors"] = load_file(str(out_dir / f"{key}.safetensors"))
    return record


def load_results(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All finished records in ``out_dir`` (see :func:`load_result`), sorted by key."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {out_dir} does not exist")
    keys = sorted(p.stem for p in out_dir.glob("*.json") if len(p.stem) == 16)
    return [r for k in keys if (r := load_result(out_dir, k)) is not None]


def _save(out_dir: Path, key: str, task: Mapping[str, Any], fn_name: str, result: Any) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise ValueError(f"the sweep function must return a dict, got {type(result).__name__}")
    result = dict(result)
    tensors = result.pop("tensors", None)
    record: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "key": key,
        "fn": fn_name,
        "task": _jsonable(task),
        "result": _jsonable(result, where=f"result of task {key}"),
        "has_tensors": bool(tensors),
    }
    if tensors:
        from safetensors.torch import save_file

        tdict = {}
        for name, t in tensors.items():
            tt = torch.as_tensor(t).detach().cpu().contiguous()
            tdict[str(name)] = tt
        with atomic_path(out_dir / f"{key}.safetensors") as tmp:
            save_file(tdict, str(tmp))
    # The JSON is written last: its presence marks the task as complete.
    atomic_write_text(out_dir / f"{key}.json", json.dumps(record, indent=1, allow_nan=False))
    if tensors:
        record["result"]["tensors"] = {k: torch.as_tensor(v).detach().cpu() for k, v in tensors.items()}
    return record


def _worker_init() -> None:  # pragma: no cover - runs in worker processes
    torch.set_num_threads(1)


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
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")
    if dask_address is not None and executor != "dask":
        raise ValueError("dask_address is only used with executor='dask'")
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                    or max_workers < 1):
        raise ValueError(f"max_workers must be a positive integer or None (all cores), got {max_workers!r}")
    workers = max_workers or os.cpu_count() or 1
    tasks = [dict(t) for t in tasks]
    keys = [task_key(t) for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(
            "the tasks of a sweep must be distinct; two or more tasks have identical configurations"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = _fn_name(fn)
    listing = [{"key": k, "task": _jsonable(t)} for k, t in zip(keys, tasks, strict=True)]
    atomic_write_text(out / "sweep.json", json.dumps({"fn": name, "tasks": listing}, indent=1))

    results: dict[str, dict[str, Any]] = {}
    pending: list[int] = []
    for i, k in enumerate(keys):
        rec = load_result(out, k)
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
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc="sweep",
               disable=progress_disabled(progress), leave=False, dynamic_ncols=True)

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
                                        initializer=_worker_init) as pool:
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
