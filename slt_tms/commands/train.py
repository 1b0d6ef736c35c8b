"""``slt-tms train``: train one toy model and write its checkpoints, trajectory and loss curve.

Outputs in ``--out DIR``:

* ``checkpoint.safetensors``: the final parameters (:func:`slt_tms.io.save_checkpoint`);
* ``checkpoints/step_XXXXXXX.safetensors``: one file per step of the log-spaced checkpoint schedule
  (step zero-padded to 7 digits, so the names sort in step order);
* ``trajectory.json``: logged steps and losses, the checkpoint schedule and file names, the full
  configuration and every seed;
* ``loss.png``: the loss curve on log-log axes.

Everything is first written into a staging directory beside ``DIR`` and moved into place only when all
outputs exist (``trajectory.json`` last), so a failing command leaves no partial outputs behind. While it
runs, the command holds the output lock of ``DIR`` (:func:`slt_tms.io.locks.output_lock`): a second run
aimed at the same directory stops at once with one line, and an unwritable ``DIR`` is reported before
any training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slt_tms._rng import spawn_seeds
from slt_tms.commands._args import add_command
from slt_tms.io import save_checkpoint
from slt_tms.io.atomic import atomic_write_text, save_figure
from slt_tms.io.locks import output_lock
from slt_tms.tms import ACTIVATIONS, TMS, OneHotUniform, SparseUniform, fixed_dataset, geometric_importance
from slt_tms.train import OPTIMIZERS, Trajectory, train

__all__ = ["DISTRIBUTIONS", "plot_loss_curve", "register", "run_train"]

#: Input distributions accepted by ``--distribution``.
DISTRIBUTIONS: tuple[str, ...] = ("onehot", "sparse")


def _checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def plot_loss_curve(traj: Trajectory, path: str | os.PathLike[str], title: str = "") -> Path:
    """Plot the logged losses of ``traj`` against the step on log-log axes (step 0 omitted) as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    ax = fig.add_subplot()
    steps = traj.steps
    losses = traj.losses if traj.losses.ndim == 2 else traj.losses[:, None]
    keep = steps > 0
    for j in range(losses.shape[1]):
        y = losses[keep, j]
        ok = np.isfinite(y) & (y > 0)
        ax.loglog(steps[keep][ok], y[ok], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss" if traj.config.get("data", {}).get("kind") == "dataset" else "eval loss")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def run_train(
    *,
    c: int,
    r: int = 2,
    out: str | os.PathLike[str],
    activation: str = "relu",
    gamma: float = 1.0,
    distribution: str = "onehot",
    sparsity: float | None = None,
    importance_decay: float = 1.0,
    n: int | None = None,
    optimizer: str = "sgd",
    lr: float = 0.005,
    batch_size: int = 20,
    steps: int = 10_000,
    weight_decay: float = 0.0,
    num_checkpoints: int = 50,
    init_scale: float = 0.1,
    seed: int = 0,
    device: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    r"""Train one TMS from a random start and write checkpoints, ``trajectory.json`` and ``loss.png``.

    The initial :math:`W` has i.i.d. :math:`N(0, \text{init\_scale}^2)` entries and :math:`b = 0`
    (:class:`slt_tms.tms.TMS`); importance :math:`I_i = \rho^i` with :math:`\rho` = ``importance_decay``.
    Three seeds are derived from ``seed`` (:func:`slt_tms._rng.spawn_seeds`): initialisation, the fixed
    dataset, and the root seed of :func:`slt_tms.train.train`; all are recorded.

    Parameters
    ----------
    c, r : int
        Features and hidden dimensions.
    out : path-like
        Output directory (created; existing files of the same names are replaced).
    distribution : {"onehot", "sparse"}
        :class:`~slt_tms.tms.data.OneHotUniform` or :class:`~slt_tms.tms.data.SparseUniform`
        (needs ``sparsity``).
    n : int, optional
        Size of a fixed training set; None trains on fresh samples every step.
    Other parameters are those of :func:`slt_tms.train.train`.

    Returns
    -------
    dict
        The content written to ``trajectory.json`` plus ``"paths"``: the written files.

    Raises
    ------
    ValueError
        For invalid arguments; nothing is written then.
    """
    # --- build everything that validates input before any work or output
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown --distribution {distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(init_scale, int | float) and init_scale >= 0 and np.isfinite(init_scale)):
        raise ValueError(f"--init-scale must be a finite number >= 0, got {init_scale!r}")
    rho = importance_decay
    if not (isinstance(rho, int | float) and rho > 0 and np.isfinite(rho)):
        raise ValueError(f"--importance-decay must be a finite number > 0, got {importance_decay!r}")
    importance = geometric_importance(c, float(importance_decay))  # also validates c
    if distribution == "sparse":
        if sparsity is None:
            raise ValueError("--distribution sparse needs --sparsity S, a number in [0, 1)")
        dist: OneHotUniform | SparseUniform = SparseUniform(c, sparsity, importance)
    else:
        if sparsity is not None:
            raise ValueError("--sparsity applies only to --distribution sparse (onehot has one feature on)")
        dist = OneHotUniform(c)
    init_seed, data_seed, train_seed = spawn_seeds(seed, 3)
    data = dist if n is None else fixed_dataset(dist, n, seed=data_seed)
    model = TMS(c, r, activation=activation, gamma=gamma, init_scale=float(init_scale),
                generator=torch.Generator().manual_seed(init_seed))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory; {out} is a file")

    # --- from here on the run owns --out: a second run aimed at it stops at once (before any work)
    with output_lock(out):
        args = {
            "c": c, "r": r, "activation": activation, "gamma": float(gamma), "distribution": distribution,
            "sparsity": sparsity, "importance_decay": float(importance_decay), "n": n, "optimizer": optimizer,
            "lr": lr, "batch_size": batch_size, "steps": steps, "weight_decay": weight_decay,
            "num_checkpoints": num_checkpoints, "init_scale": float(init_scale), "seed": seed,
        }
        t0 = time.perf_counter()
        traj = train(
            model.flat(), c=c, r=r, activation=activation, gamma=gamma, data=data, importance=importance,
            optimizer=optimizer, lr=lr, batch_size=batch_size, num_steps=steps, weight_decay=weight_decay,
            num_checkpoints=num_checkpoints, seed=train_seed, progress=False if quiet else None,
            device=device,
        )
        run_time = time.perf_counter() - t0

        from slt_tms import __version__

        ckpt_files = [f"checkpoints/{_checkpoint_name(int(s))}" for s in traj.checkpoint_steps]
        record: dict[str, Any] = {
            "command": "slt-tms train",
            "version": __version__,
            "args": args,
            "seeds": {"seed": seed, "init": init_seed, "data": data_seed, "train": train_seed},
            **traj.to_dict(),
            "checkpoint_files": ckpt_files,
            "final_checkpoint": "checkpoint.safetensors",
            "initial_loss": _num(traj.losses[0]),
            "final_loss": _num(traj.losses[-1]),
            "run_time_s": round(run_time, 3),
        }
        meta = {"c": c, "r": r, "activation": activation, "gamma": float(gamma), "seed": seed}

        # --- write into a staging directory, then move into place
        parent = out.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=parent))
        try:
            for s, w, rel in zip(traj.checkpoint_steps, traj.checkpoints, ckpt_files, strict=True):
                save_checkpoint(staging / rel, w, step=int(s), extra={"args": args}, **meta)
            save_checkpoint(
                staging / "checkpoint.safetensors", traj.final, step=steps, extra={"args": args}, **meta
            )
            title = f"TMS c={c}, r={r}, {activation}, {distribution}, {optimizer} lr={lr}, seed={seed}"
            plot_loss_curve(traj, staging / "loss.png", title=title)
            atomic_write_text(staging / "trajectory.json", _json_lines(record))
            _commit(staging, out, ["checkpoints", "checkpoint.safetensors", "loss.png", "trajectory.json"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)

        paths = [out / "checkpoint.safetensors", out / "checkpoints", out / "trajectory.json",
                 out / "loss.png"]
        if not quiet:
            print(
                f"trained {steps} steps in {run_time:.1f} s: loss {record['initial_loss']} -> "
                f"{record['final_loss']}; wrote {', '.join(str(p) for p in paths)}"
            )
        if record["final_loss"] is None:
            print("slt-tms train: warning: the final loss is not finite (diverged); lower --lr",
                  file=sys.stderr)
        return {**record, "paths": [str(p) for p in paths]}


def _json_lines(record: dict[str, Any]) -> str:
    """JSON with one top-level key per line (arrays kept on one line)."""
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items())
    return "{\n" + body + "\n}\n"


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _commit(staging: Path, out: Path, names: list[str]) -> None:
    """Move ``names`` from ``staging`` into ``out`` (replacing same-named entries); the last one last."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dst = staging / name, out / name
        if src.is_dir():
            if dst.exists():
                os.replace(dst, staging / f".old-{name}")  # removed with the staging directory
            os.replace(src, dst)
        else:
            os.replace(src, dst)


def _handler(ns: argparse.Namespace) -> int:
    run_train(
        c=ns.c, r=ns.r, out=ns.out, activation=ns.activation, gamma=ns.gamma, distribution=ns.distribution,
        sparsity=ns.sparsity, importance_decay=ns.importance_decay, n=ns.n, optimizer=ns.optimizer, lr=ns.lr,
        batch_size=ns.batch_size, steps=ns.steps, weight_decay=ns.weight_decay,
        num_checkpoints=ns.num_checkpoints, init_scale=ns.init_scale, seed=ns.seed, device=ns.device,
        quiet=ns.quiet,
    )
    return 0


def register(subparsers: Any) -> None:
    """train a toy model; write checkpoints, trajectory.json and loss.png.

    Train a TMS f(x) = act(W^T W x + b) by SGD/AdamW on one-hot or sparse uniform inputs. Writes
    DIR/checkpoint.safetensors (final), DIR/checkpoints/step_XXXXXXX.safetensors (log-spaced schedule),
    DIR/trajectory.json and DIR/loss.png.
    """
    p = add_command(subparsers, "train", register)
    p.add_argument("--c", type=int, required=True, help="number of features")
    p.add_argument("--r", type=int, default=2, help="hidden dimensions (default: %(default)s)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="activation of the output layer (default: %(default)s)")
    p.add_argument("--gamma", type=float, default=1.0,
                   help="swish sharpness: z * sigmoid(gamma z) (default: %(default)s)")
    p.add_argument("--distribution", choices=DISTRIBUTIONS, default="onehot",
                   help="input distribution: one-hot or sparse uniform (default: %(default)s)")
    p.add_argument("--sparsity", type=float, default=None,
                   help="S in [0, 1) for --distribution sparse (required there)")
    p.add_argument("--importance-decay", type=float, default=1.0, metavar="RHO",
                   help="importance I_i = RHO^i (default: %(default)s)")
    p.add_argument("--n", type=int, default=None,
                   help="fixed training-set size (default: fresh samples every step)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimiser (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.005, help="learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=20, help="samples per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10_000,
                   help="number of optimiser steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="weight decay of the optimiser (default: %(default)s)")
    p.add_argument("--num-checkpoints", type=int, default=50,
                   help="size of the log-spaced schedule (default: %(default)s)")
    p.add_argument("--init-scale", type=float, default=0.1,
                   help="std of the Gaussian initial W (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=_handler)
