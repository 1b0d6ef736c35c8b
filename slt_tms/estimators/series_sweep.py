r"""The LLC over training from checkpoint FILES, resumable: a series through the sweep executor.

:func:`estimate_llc_series_resumable` estimates what :func:`~slt_tms.estimators.series.estimate_llc_series`
estimates (the same batches of checkpoints, the same seeds, the same arithmetic) but from a model factory
``"MODULE:FACTORY"``, checkpoint files and a data file, as tasks of :func:`slt_tms.sweep.run_sweep`
(:func:`series_tasks` builds them, one per batch of checkpoints; :func:`run_series_task` runs one). A
finished batch is saved atomically in the work directory (its numbers as JSON, its traces as safetensors),
so a run killed at any point resumes where it stopped (module docstring of
:mod:`slt_tms.estimators.series`, "Resumable runs").
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slt_tms._rng import spawn_seeds
from slt_tms.estimators.config import LLCConfig
from slt_tms.estimators.result import Calibration, LLCResult
from slt_tms.estimators.series import (
    LLCSeries,
    _batches,
    _check_inputs,
    _estimate_batch,
    _load_into,
    _names_and_steps,
    _series_config,
    _start,
    _warn_out_of_order,
    warn_gradient_notes,
)
from slt_tms.io.user_models import load_data, load_factory, sha256
from slt_tms.potentials import from_module, with_grad_mode
from slt_tms.samplers.diagnostics import inference_data
from slt_tms.sweep import Executor, run_sweep
from slt_tms.validation import GRAD_MODES, LOSSES, check_choice, check_device, check_int

__all__ = ["estimate_llc_series_resumable", "run_series_task", "series_tasks"]


def _file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found (no such file): {p}")
    return p.resolve()


def _dtype_name(dtype: torch.dtype | str | None) -> str | None:
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"dtype must be a torch dtype such as torch.float32, got {dtype!r}")
    return name


def series_tasks(
    checkpoints: Sequence[str | Path],
    model: str,
    data: str | Path,
    config: LLCConfig | None = None,
    *,
    steps: Sequence[int] | None = None,
    loss: str = "mse",
    x_key: str = "x",
    y_key: str = "y",
    params: Sequence[str] | None = None,
    n: int | None = None,
    batch: int = 8,
    seed: int = 0,
    reuse_calibration: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    grad_mode: str = "auto",
    **overrides: Any,
) -> list[dict[str, Any]]:
    r"""The sweep tasks of a series over checkpoint files: one task per batch of checkpoints.

    Checkpoint ``i`` of ``N`` gets the seed ``spawn_seeds(seed, N)[i]`` and the batches are those of
    :func:`~slt_tms.estimators.series.estimate_llc_series` (``batch`` checkpoints, one at a time with
    ``params``), so the tasks compute what the in-memory series computes. A task :math:`t` is plain JSON
    (the model factory, the absolute paths and SHA-256 digests of the data and checkpoint files, every
    estimator setting, the seeds); the sweep files its result under

    .. math:: \mathrm{key}(t) = \mathrm{SHA256}\big(\mathrm{canonical\_json}(t)\big)_{[:16]},

    so a changed file, setting or seed is a different task.

    Parameters
    ----------
    checkpoints : sequence of paths
        Checkpoint files (safetensors, or ``torch.save`` state dicts read with ``weights_only=True``).
    model : str
        ``"MODULE:FACTORY"`` (:func:`slt_tms.io.user_models.load_factory`): a zero-argument callable that
        returns the architecture; every task imports it afresh (worker processes included).
    data : path
        Data file with inputs under ``x_key`` and targets under ``y_key``
        (:func:`slt_tms.io.user_models.load_data`).
    config, steps, loss, params, n, batch, seed, reuse_calibration, device, dtype, grad_mode, overrides
        As in :func:`estimate_llc_series` (``loss`` is a named loss: ``"mse"``, ``"cross_entropy"`` or
        ``"causal_lm"``).
        A ``grad_mode`` other than ``"auto"`` is a task entry (``"auto"`` is not, so the tasks of
        earlier versions keep their keys).
        With ``reuse_calibration`` the first task is the last checkpoint alone; the other tasks need its
        calibration, added by :func:`estimate_llc_series_resumable` as the task entry ``"calibration"``
        once that task has finished (so they are keyed by it too), with ``"calibration_converged":
        False`` where that run did not converge (absent, it counts as True: the tasks of earlier versions
        keep their keys).
    x_key, y_key : str
        Names of the inputs and targets in the data file.

    Returns
    -------
    list of dict
        The tasks, for :func:`slt_tms.sweep.run_sweep` with :func:`run_series_task`.
    """
    batch, cfg = _start(checkpoints, seed, batch, config, overrides, device)
    if not isinstance(model, str):
        raise ValueError(
            "a resumable series builds the model in every task from model='MODULE:FACTORY' (an importable "
            f"module or a .py path); got {type(model).__name__} (for a callable use estimate_llc_series)"
        )
    check_choice("loss", loss, LOSSES)
    check_choice("grad_mode", grad_mode, GRAD_MODES)
    if n is not None:
        n = check_int("n", n, minimum=2)
    paths = [_file(c, "checkpoint") for c in checkpoints]
    names, steps = _names_and_steps([Path(c) for c in checkpoints], steps)
    _warn_out_of_order(names, steps, reuse_calibration)
    seeds = spawn_seeds(seed, len(paths))
    data_path = _file(data, "data file")
    common = {
        "model": model,
        "data": str(data_path),
        "data_sha256": sha256(data_path),
        "x_key": x_key,
        "y_key": y_key,
        "loss": loss,
        "params": None if params is None else [params] if isinstance(params, str) else list(params),
        "n": n,
        "device": None if device is None else str(check_device(device)),
        "dtype": _dtype_name(dtype),
        "config": cfg.to_dict(),
        **({} if grad_mode == "auto" else {"grad_mode": grad_mode}),
    }
    digests = [sha256(p) for p in paths]
    return [
        {
            **common,
            "checkpoints": [
                {"path": str(paths[i]), "sha256": digests[i], "name": names[i], "step": steps[i],
                 "seed": seeds[i]}
                for i in idx
            ],
        }
        for idx in _batches(len(paths), batch, params is None, reuse_calibration)
    ]


def _same_file(path: str, digest: str, what: str) -> None:
    if sha256(path) != digest:
        raise ValueError(
            f"{what} {path} has changed since the series was set up (its SHA-256 differs); start the series "
            "again so that its tasks name the new file"
        )


def run_series_task(task: Mapping[str, Any]) -> dict[str, Any]:
    r"""Sweep function of a resumable series: estimate one batch of checkpoints (see :func:`series_tasks`).

    For every checkpoint :math:`w^*_i` of the batch, with chains stacked on one axis (the engine of
    :func:`~slt_tms.estimators.series.estimate_llc_series`),

    .. math:: \hat\lambda(w^*_i) = n\beta\,\bigl(\mathbb{E}_{w \sim p_i}[L_n(w)] - L_n(w^*_i)\bigr),
        \qquad p_i(w) \propto e^{-n\beta L_n(w) - \frac{\gamma}{2}\lVert w - w^*_i\rVert^2}.

    Parameters
    ----------
    task : dict
        One task of :func:`series_tasks`.

    Returns
    -------
    dict
        ``{"checkpoints": [{"name", "step", "result"}, ...], "tensors": {...}}``: each checkpoint's
        :class:`~slt_tms.estimators.result.LLCResult` fields as JSON and its ``(chain, draw)`` traces as
        float64 tensors named ``"<i>/<group>/<variable>"`` (read back exactly by the series).

    Raises
    ------
    ValueError
        A data or checkpoint file whose SHA-256 is not the task's, and everything
        :func:`estimate_llc_series` refuses.
    """
    factory = load_factory(task["model"])
    _same_file(task["data"], task["data_sha256"], "data file")
    X, Y = load_data(task["data"], x_key=task["x_key"], y_key=task["y_key"], loss=task["loss"])
    cfg = LLCConfig(**task["config"])
    dtype = None if task["dtype"] is None else getattr(torch, task["dtype"])
    pots = []
    for c in task["checkpoints"]:
        _same_file(c["path"], c["sha256"], "checkpoint")
        net, _ = _load_into(factory(), c["path"], c["name"])
        pot = from_module(net, (X, Y), loss=task["loss"], params=task["params"], n=task["n"],
                          device=task["device"], dtype=dtype)
        pots.append(with_grad_mode(pot, task.get("grad_mode", "auto")))
    ckpts = task["checkpoints"]
    cal = task.get("calibration")
    results = _estimate_batch(
        pots, [{"checkpoint": c["name"], "step": c["step"]} for c in ckpts], [c["seed"] for c in ckpts], cfg,
        task["n"], progress=None, warn=False,  # the series warns once per flagged checkpoint, resumed or not
        # (the task keeps the calibration's convergence apart from it: see estimate_llc_series_resumable)
        calibration=None if cal is None else Calibration.from_dict(
            {**cal, "converged": bool(task.get("calibration_converged", True))}
        ),
    )
    tensors = {
        f"{i}/{grp}/{name}": torch.from_numpy(np.ascontiguousarray(var.values))
        for i, r in enumerate(results)
        for grp in ("posterior", "sample_stats")
        for name, var in getattr(r.trace, grp).data_vars.items()
    }
    return {
        "checkpoints": [
            {"name": c["name"], "step": c["step"], "result": r._fields()}
            for c, r in zip(ckpts, results, strict=True)
        ],
        "tensors": tensors,
    }


def _results_of(record: Mapping[str, Any]) -> list[LLCResult]:
    """The results of a finished task, traces included (the inverse of :func:`run_series_task`)."""
    out = []
    for i, c in enumerate(record["checkpoints"]):
        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
        for key, t in record.get("tensors", {}).items():
            j, grp, name = key.split("/", 2)
            if int(j) == i:
                groups[grp][name] = t.numpy()
        out.append(LLCResult._from_fields(c["result"], inference_data(groups["posterior"],
                                                                       groups["sample_stats"])))
    return out


@contextlib.contextmanager
def _bars(progress: bool | None) -> Iterator[None]:
    """``progress=False`` silences the estimation bars inside the tasks too (worker processes included):
    they follow ``SLT_TMS_NO_PROGRESS``, which is set for the duration of the run."""
    if progress is not False:
        yield
        return
    old = os.environ.get("SLT_TMS_NO_PROGRESS")
    os.environ["SLT_TMS_NO_PROGRESS"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SLT_TMS_NO_PROGRESS", None)
        else:
            os.environ["SLT_TMS_NO_PROGRESS"] = old


def estimate_llc_series_resumable(
    checkpoints: Sequence[str | Path],
    model: str,
    data: str | Path,
    config: LLCConfig | None = None,
    *,
    work_dir: str | os.PathLike[str],
    steps: Sequence[int] | None = None,
    loss: str = "mse",
    x_key: str = "x",
    y_key: str = "y",
    params: Sequence[str] | None = None,
    n: int | None = None,
    batch: int = 8,
    seed: int = 0,
    reuse_calibration: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    grad_mode: str = "auto",
    executor: Executor = "local",
    max_workers: int | None = 1,
    dask_address: str | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> LLCSeries:
    r"""The LLC at every checkpoint FILE of a training run, resumable (module docstring, "Resumable runs").

    Estimates what :func:`estimate_llc_series` estimates,
    :math:`\hat\lambda(w^*_t) = n\beta\,(\mathbb{E}_{p_t}[L_n(w)] - L_n(w^*_t))` at every checkpoint
    :math:`w^*_t`, with the same batches and seeds, but from files and through the sweep executor: each
    batch of checkpoints is one task of :func:`slt_tms.sweep.run_sweep`, saved atomically in
    ``work_dir`` when it finishes. Calling it again with the same arguments after a crash or a
    ``kill -9`` loads the finished batches and computes only the others; the table is then the same, number
    for number, as that of an uninterrupted run.

    Parameters
    ----------
    checkpoints, model, data, config, steps, loss, x_key, y_key, params, n, batch, seed, \
reuse_calibration, device, dtype, grad_mode, overrides
        As in :func:`series_tasks`. With ``reuse_calibration`` the sweep runs in two rounds: the last
        checkpoint alone, then every other batch (in parallel where the executor allows) from its
        calibration.
    work_dir : path
        Directory of the sweep: ``<key>.json`` + ``<key>.safetensors`` per finished batch and
        ``sweep.json``; one run at a time (its output lock).
    executor, max_workers, dask_address
        As in :func:`slt_tms.sweep.run_sweep`; the default runs the batches one after the other in this
        process (each batch already runs its chains as one batched computation). Worker processes or a
        Dask cluster must be able to read the checkpoint and data files and import ``model``.
    progress : bool, optional
        Progress bars (None: on unless ``SLT_TMS_NO_PROGRESS=1``).

    Returns
    -------
    LLCSeries
        As :func:`estimate_llc_series`; ``config["work_dir"]`` names the sweep directory. A
        :class:`RuntimeWarning` is issued for every checkpoint whose estimate is not trustworthy, whether
        it was computed now or loaded.

    Raises
    ------
    ValueError, FileNotFoundError
        Before any sampling: bad settings, a missing file, a ``model`` that cannot be imported or does
        not return an ``nn.Module``, an unavailable ``device``, another run holding ``work_dir``, and
        every input :func:`estimate_llc_series` refuses, for each checkpoint (the message names it).
    slt_tms.sweep.SweepError
        After every other batch ran and was saved, when some batches failed (rerun to retry them).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from safetensors.torch import save_file
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "models.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(3, 1)\n")
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(200, 3, generator=g)
    >>> Y = X.sum(1, keepdim=True) + 0.1 * torch.randn(200, 1, generator=g)
    >>> save_file({"x": X, "y": Y}, str(d / "data.safetensors"))
    >>> sol = torch.linalg.lstsq(torch.cat([X, torch.ones(200, 1)], 1), Y).solution  # the minimum
    >>> save_file({"weight": sol[:3].T.contiguous(), "bias": sol[3]}, str(d / "step20.safetensors"))
    >>> save_file({"weight": torch.ones(1, 3), "bias": torch.zeros(1)}, str(d / "step10.safetensors"))
    >>> ckpts = [d / "step10.safetensors", d / "step20.safetensors"]
    >>> def run():
    ...     return estimate_llc_series_resumable(ckpts, f"{d / 'models.py'}:make", d / "data.safetensors",
    ...                                          work_dir=d / "work", progress=False)
    >>> import warnings; warnings.simplefilter("ignore")  # step 10 is near, not at, the minimum
    >>> first = run()
    >>> [r["step"] for r in first.rows()], round(first.rows()[1]["lambda_hat"])
    ([10, 20], 2)
    >>> run().rows() == first.rows()  # the second call loads the finished batch: the same table
    True
    """
    tasks = series_tasks(
        checkpoints, model, data, config, steps=steps, loss=loss, x_key=x_key, y_key=y_key, params=params,
        n=n, batch=batch, seed=seed, reuse_calibration=reuse_calibration, device=device, dtype=dtype,
        grad_mode=grad_mode, **overrides,
    )
    probe = load_factory(model)()  # fails here, before any sampling, on a factory that is not usable
    if not isinstance(probe, nn.Module):
        raise ValueError(f"{model} must return an nn.Module, got {type(probe).__name__}")
    # every checkpoint against the data, as the tasks will build them: an input error is one line now, not
    # a failed task of the sweep after the others have run
    names, _ = _names_and_steps([Path(c) for c in checkpoints], steps)
    X, Y = load_data(data, x_key=x_key, y_key=y_key, loss=loss)
    _check_inputs(checkpoints, names, probe, (X, Y), grad_mode, loss=loss, params=params, n=n, device=device,
                  dtype=dtype)
    del X, Y
    sweep = {"out_dir": work_dir, "executor": executor, "max_workers": max_workers,
             "dask_address": dask_address, "progress": progress}
    with _bars(progress):
        if reuse_calibration and len(tasks) > 1:  # round 1: the last checkpoint alone, its calibration
            first = run_sweep(run_series_task, tasks[:1], **sweep)[0]["checkpoints"][0]["result"]
            cal = first["calibration"]
            if cal is not None:  # its JSON form, as the result record holds it
                # "calibration_converged" only where it is False, and the calibration without its own
                # "converged", so that the tasks of earlier versions (whose calibration's run converged)
                # keep their keys
                cal = {k: v for k, v in cal.items() if k != "converged"}
                extra = {} if first["converged"] else {"calibration_converged": False}
                tasks = tasks[:1] + [{**t, "calibration": cal, **extra} for t in tasks[1:]]
        records = run_sweep(run_series_task, tasks, **sweep)
    rows = []  # (name, step, result) in task order; back to training order below
    for rec in records:
        rows.extend(
            (c["name"], int(c["step"]), r) for c, r in zip(rec["checkpoints"], _results_of(rec), strict=True)
        )
    layout = [i for idx in _batches(len(rows), batch, params is None, reuse_calibration) for i in idx]
    ordered = sorted(zip(layout, rows, strict=True))
    names = [nm for _, (nm, _, _) in ordered]
    steps_ = [s for _, (_, s, _) in ordered]
    results = [r for _, (_, _, r) in ordered]
    for nm, s, r in zip(names, steps_, results, strict=True):
        if r.flags:
            warnings.warn(
                f"LLC estimate at {nm} (step {s}) {r.llc:.4g} +/- {r.se:.2g} is not trustworthy: "
                + "; ".join(r.flags),
                RuntimeWarning,
                stacklevel=2,
            )
    seeds = spawn_seeds(seed, len(rows))  # the tasks' seeds (series_tasks), in training order
    cfg = LLCConfig(**tasks[0]["config"])
    series = LLCSeries(
        tuple(steps_), tuple(names), tuple(results),
        {**_series_config(cfg, seed, batch, seeds, reuse_calibration), "work_dir": str(work_dir)},
    )
    warn_gradient_notes(series)
    return series
