r"""Train one or many toy models with SGD or AdamW, recording a log-spaced checkpoint trajectory.

Many independent model instances train in ONE batched run: the flat parameters ``w`` have shape
``(B, d)`` and the loss minimised is the sum of the per-instance losses,

.. math::

    \mathcal{L}(w_1, \dots, w_B) = \sum_{b=1}^{B} L_{\text{batch}}(w_b), \qquad
    L_{\text{batch}}(w_b) = \frac{1}{m} \sum_{k=1}^{m} \sum_{i=1}^{c} I_{b,i}\,
    \bigl(x_{k,i} - f(x_k; w_b)_i\bigr)^2,

so :math:`\partial \mathcal{L} / \partial w_b = \nabla L_{\text{batch}}(w_b)`: every instance gets exactly
its own gradient, and the element-wise optimisers (SGD, AdamW) update each instance as if it were alone.

Data
----
* a distribution with ``.sample(n, generator)`` (e.g. :class:`slt_tms.tms.data.OneHotUniform`): a fresh
  minibatch of ``batch_size`` samples every step;
* a fixed dataset tensor ``(n, c)`` (shared by all instances) or ``(B, n, c)`` (one per instance):
  minibatches drawn without replacement within each epoch (a fresh random permutation per epoch; the
  last incomplete minibatch of an epoch is dropped, so an epoch has ``n // batch_size`` steps);
* a callable ``(batch_size, generator) -> Tensor`` of shape ``(batch_size, c)`` or ``(B, batch_size, c)``.

With ``shared_batches=True`` (the default) the minibatch indices / fresh samples depend only on the seed,
not on ``B``: instance ``b`` of a batched run is the same run as training ``w0[b]`` (on ``data[b]`` for a
``(B, n, c)`` dataset) alone with the same seed. With ``shared_batches=False`` every instance draws its
own minibatches (independent fresh samples or its own permutation of the dataset).

Steps
-----
Step ``t`` means the parameters after ``t`` optimiser updates; step 0 is ``w0``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms._progress import progress as _progress
from slt_tms._rng import spawn_seeds
from slt_tms.io.atomic import atomic_write_text
from slt_tms.tms import activation_fn, forward, num_params, validate_shape
from slt_tms.tms.losses import residual_and_grad, weighted_sq_error
from slt_tms.validation import check_int

__all__ = ["OPTIMIZERS", "Trajectory", "log_checkpoint_schedule", "log_schedule", "train"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")

# Default number of logged steps when ``log_every`` is None (log-spaced, merged with the checkpoints).
_DEFAULT_NUM_LOGGED = 200
# Size of the evaluation batch used for the logged losses when training on fresh samples.
_DEFAULT_EVAL_SIZE = 4096
# Evaluation of the loss on a fixed dataset is chunked so that one chunk holds at most this many
# elements of the (B, chunk, c) prediction tensor (bounded memory for large B * n).
_EVAL_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True, eq=False)
class Trajectory:
    """The record of one (possibly batched) training run.

    Attributes
    ----------
    steps : ndarray, shape ``(T,)``
        Logged steps, ascending, including 0 and ``num_steps``.
    losses : ndarray, shape ``(T,)`` or ``(T, B)``
        Loss at the logged steps: on the full fixed dataset if one was given, otherwise on one evaluation
        batch of ``eval_size`` fresh samples drawn once (from a stream independent of the training one).
    checkpoint_steps : ndarray, shape ``(K,)``
        The log-spaced checkpoint schedule (:func:`log_checkpoint_schedule`), including 0 and ``num_steps``.
    checkpoints : Tensor, shape ``(K, d)`` or ``(K, B, d)``
        Flat parameters at ``checkpoint_steps`` (CPU, detached).
    final : Tensor, shape ``(d,)`` or ``(B, d)``
        Flat parameters after ``num_steps`` updates (equal to ``checkpoints[-1]``).
    config : dict
        Everything needed to redo the run (JSON-serialisable), including the seed.
    seed : int
        The root seed; ``train(w0, ..., seed=seed)`` with the same config reproduces the run exactly.
    """

    steps: np.ndarray
    losses: np.ndarray
    checkpoint_steps: np.ndarray
    checkpoints: Tensor
    final: Tensor
    config: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def num_instances(self) -> int | None:
        """``B`` for a batched run, None for a single ``(d,)`` run."""
        return None if self.final.ndim == 1 else int(self.final.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: steps, losses (non-finite values become None), schedule, config, seed."""
        return {
            "steps": self.steps.tolist(),
            "losses": _finite_or_none(self.losses),
            "checkpoint_steps": self.checkpoint_steps.tolist(),
            "config": self.config,
            "seed": self.seed,
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (parameters are not included: use
        :func:`slt_tms.io.save_checkpoint` for those)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


def _finite_or_none(a: np.ndarray) -> Any:
    if a.ndim == 0:
        v = float(a)
        return v if math.isfinite(v) else None
    return [_finite_or_none(x) for x in a]


def _check_float(name: str, v: Any, *, positive: bool) -> float:
    ok = not isinstance(v, bool) and isinstance(v, int | float | np.floating) and math.isfinite(float(v))
    if not ok or (positive and v <= 0) or (not positive and v < 0):
        kind = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {kind}, got {v!r}")
    return float(v)


def log_checkpoint_schedule(num_steps: int, num_checkpoints: int) -> np.ndarray:
    r"""Log-spaced checkpoint steps: ``min(num_checkpoints, num_steps + 1)`` unique integers in
    ``[0, num_steps]``, ascending, always including 0 and ``num_steps`` (and 1 if there are >= 3).

    The positive steps follow a geometric progression from 1 to ``num_steps``; where rounding would repeat
    a step, consecutive integers are taken and the remaining ratio is recomputed, i.e. with
    :math:`s_1 = 1` and :math:`m - j` steps left,

    .. math:: s_{j+1} = \max\Bigl(s_j + 1,\ \mathrm{round}\bigl(s_j\,(N / s_j)^{1/(m - j)}\bigr)\Bigr).

    Examples
    --------
    >>> log_checkpoint_schedule(1000, 5).tolist()
    [0, 1, 10, 100, 1000]
    >>> log_checkpoint_schedule(3, 10).tolist()
    [0, 1, 2, 3]
    """
    n = check_int("num_steps", num_steps, minimum=1)
    k = check_int("num_checkpoints", num_checkpoints, minimum=2)
    if k >= n + 1:
        return np.arange(n + 1, dtype=np.int64)
    m = k - 1  # number of positive steps
    if m == 1:
        return np.asarray([0, n], dtype=np.int64)
    out = [0, 1]
    for j in range(1, m):
        prev, left = out[-1], m - j
        if left >= n - prev:  # not enough room for gaps: fill with consecutive steps
            out.extend(range(prev + 1, prev + left + 1))
            break
        nxt = round(prev * (n / prev) ** (1.0 / left))
        out.append(int(min(max(prev + 1, nxt), n - left + 1)))
    return np.asarray(out, dtype=np.int64)


def log_schedule(num_steps: int, num_points: int) -> np.ndarray:
    """Alias of :func:`log_checkpoint_schedule` for choosing logged (loss) steps."""
    return log_checkpoint_schedule(num_steps, num_points)


def _data_kind(data: Any) -> str:
    if isinstance(data, Tensor):
        return "dataset"
    if hasattr(data, "sample") and callable(data.sample):
        return "distribution"
    if callable(data):
        return "callable"
    raise ValueError(
        "data must be a distribution with .sample(n, generator), a fixed dataset Tensor of shape (n, c) "
        f"or (B, n, c), or a callable (batch_size, generator) -> Tensor; got {type(data).__name__}"
    )


def _describe_data(data: Any, kind: str) -> dict[str, Any]:
    if kind == "dataset":
        return {"kind": "dataset", "shape": list(data.shape), "n": int(data.shape[-2])}
    if kind == "distribution":
        desc: dict[str, Any] = {"kind": "distribution", "name": type(data).__name__}
        for attr in ("c", "sparsity"):
            v = getattr(data, attr, None)
            if isinstance(v, int | float):
                desc[attr] = v
        return desc
    return {"kind": "callable", "name": getattr(data, "__qualname__", type(data).__name__)}


def _check_batch(x: Any, c: int, B: int | None, size: int, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must return a Tensor, got {type(x).__name__}")
    ok = x.shape == (size, c) or (B is not None and x.shape == (B, size, c))
    if not ok:
        allowed = f"({size}, {c})" + (f" or ({B}, {size}, {c})" if B is not None else "")
        raise ValueError(f"{what} returned shape {tuple(x.shape)}; expected {allowed}")
    return x


def _check_optimizer(optimizer: Any, lr: Any, weight_decay: Any) -> tuple[str, float, float]:
    """The optimizer's name (lower case, one of ``OPTIMIZERS``), learning rate (> 0) and weight decay
    (>= 0), validated."""
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    lr = _check_float("lr (learning rate)", lr, positive=True)
    return optimizer.lower(), lr, _check_float("weight_decay", weight_decay, positive=False)


def _check_w0(w0: Any, c: int, r: int) -> int | None:
    """Validate the initial parameters; return the number of instances B (None for a single ``(d,)``)."""
    d = num_params(c, r)
    if not isinstance(w0, Tensor):
        raise ValueError(f"w0 must be a torch.Tensor of shape (d,) or (B, d), got {type(w0).__name__}")
    if w0.ndim not in (1, 2) or w0.shape[-1] != d or w0.numel() == 0:
        raise ValueError(
            f"w0 must have shape (d,) or (B, d) with d = r*c + c = {d} for c={c}, r={r}; "
            f"got {tuple(w0.shape)}"
        )
    if not w0.is_floating_point():
        raise ValueError(f"w0 must be a floating-point tensor, got dtype {w0.dtype}")
    if not bool(torch.isfinite(w0).all()):
        raise ValueError("w0 contains NaN or infinite values")
    return int(w0.shape[0]) if w0.ndim == 2 else None


def _check_data(data: Any, kind: str, c: int, B: int | None, batch_size: int) -> None:
    """Validate the data against the model (a fixed dataset also against ``batch_size``)."""
    if kind == "dataset":
        ok = data.ndim == 2 or (data.ndim == 3 and B is not None and data.shape[0] == B)
        if not ok or data.shape[-1] != c or data.shape[-2] < 1:
            allowed = f"(n, {c})" + (f" or ({B}, n, {c})" if B is not None else "")
            raise ValueError(f"a fixed dataset must have shape {allowed}; got {tuple(data.shape)}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("the dataset contains NaN or infinite values")
        n_data = int(data.shape[-2])
        if batch_size > n_data:
            raise ValueError(f"batch_size must be <= n = {n_data} (the dataset size), got {batch_size}")
    elif kind == "distribution":
        dc = getattr(data, "c", c)
        if dc != c:
            raise ValueError(f"the distribution has c = {dc} features but the model has c = {c}")


def _importance(
    importance: Tensor | None, data: Any, kind: str, c: int, B: int | None, dtype: torch.dtype,
    dev: torch.device,
) -> Tensor:
    """The importance weights ``(c,)`` or ``(B, c)``: given, else the distribution's, else ones."""
    if importance is None:
        importance = getattr(data, "importance", None) if kind != "dataset" else None
    if importance is None:
        return torch.ones(c, dtype=dtype, device=dev)
    imp = torch.as_tensor(importance).to(device=dev, dtype=dtype)
    if not (imp.shape == (c,) or (B is not None and imp.shape == (B, c))):
        allowed = f"({c},)" + (f" or ({B}, {c})" if B is not None else "")
        raise ValueError(f"importance must have shape {allowed}; got {tuple(imp.shape)}")
    if not bool(torch.isfinite(imp).all()) or bool((imp < 0).any()):
        raise ValueError("importance weights must be finite and non-negative")
    return imp


def _root_seed(seed: int | torch.Generator) -> int:
    """The recorded integer root seed: ``seed`` itself, or one integer drawn from a generator."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed, device=seed.device).item())
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a torch.Generator, got {seed!r}")
    return int(seed)


def _epoch_batches(
    X: Tensor, batch_size: int, n_streams: int, g: torch.Generator, c: int
) -> Callable[[], Tensor]:
    """``next_batch()`` over a fixed dataset ``X`` (``(n, c)`` or ``(B, n, c)``): epochs of a fresh
    permutation (one per stream), ``n // batch_size`` batches each (the remainder is skipped)."""
    n_data = int(X.shape[-2])
    dev = X.device
    per_epoch = n_data // batch_size
    perm: Tensor | None = None
    pos = per_epoch  # forces a new permutation at the first step

    def next_batch() -> Tensor:
        nonlocal perm, pos
        if pos == per_epoch:
            if n_streams == 1:
                perm = torch.randperm(n_data, generator=g).to(dev)
            else:
                perm = torch.rand(n_streams, n_data, generator=g).argsort(-1).to(dev)
            pos = 0
        assert perm is not None
        sl = slice(pos * batch_size, (pos + 1) * batch_size)
        pos += 1
        if n_streams == 1:
            return X[..., perm[sl], :]
        idx = perm[:, sl]  # (B, m)
        if X.ndim == 2:
            return X[idx]
        return torch.gather(X, 1, idx.unsqueeze(-1).expand(-1, -1, c))

    return next_batch


def _fresh_batches(
    data: Any, kind: str, c: int, B: int | None, batch_size: int, n_streams: int, eval_size: int,
    g_train: torch.Generator, g_eval: torch.Generator, dev: torch.device, dtype: torch.dtype,
) -> tuple[Callable[[], Tensor], Tensor]:
    """``next_batch()`` of fresh rows from a distribution or a data callable (``g_train``), and the
    evaluation rows of the logged losses (``eval_size`` of them from ``g_eval``, checked)."""
    draw = _sampler(data, kind)
    what = "data.sample" if kind == "distribution" else "the data callable"

    def next_batch() -> Tensor:
        return draw(batch_size, g_train, n_streams).to(device=dev, dtype=dtype)

    eval_x = _check_batch(draw(eval_size, g_eval, 1), c, B, eval_size, what).to(device=dev, dtype=dtype)
    return next_batch, eval_x


@torch.no_grad()
def _eval_loss(w: Tensor, x: Tensor, imp_b: Tensor, c: int, r: int, activation: str, gamma: float) -> Tensor:
    """The weighted squared error of every instance on the rows ``x``, in chunks of at most
    ``_EVAL_CHUNK_ELEMENTS`` elements (a large evaluation set never needs one huge tensor)."""
    n = x.shape[-2]
    instances = w.shape[0] if w.ndim == 2 else 1
    chunk = max(1, _EVAL_CHUNK_ELEMENTS // (instances * c))
    total = torch.zeros(w.shape[:-1], dtype=w.dtype, device=w.device)
    for start in range(0, n, chunk):
        xs = x[..., start : start + chunk, :]
        pred = forward(w, xs, c, r, activation, gamma)
        total += weighted_sq_error(pred, xs, imp_b) * xs.shape[-2]
    return total / n


def _sampler(data: Any, kind: str) -> Callable[[int, torch.Generator, int], Tensor]:
    """``draw(size, generator, streams)``: fresh rows from a distribution (``data.sample``) or a data
    callable, ``(size, c)`` for one stream, ``(streams, size, c)`` for several."""
    if kind == "distribution":
        def draw(size: int, g: torch.Generator, streams: int) -> Tensor:
            x = data.sample(size * streams, g)
            return x if streams == 1 else x.reshape(streams, size, -1)
    else:
        def draw(size: int, g: torch.Generator, streams: int) -> Tensor:
            x = data(size, g)
            if streams > 1 and x.ndim == 2:
                xs = [x] + [data(size, g) for _ in range(streams - 1)]
                return torch.stack(xs)
            return x
    return draw


def train(
    w0: Tensor,
    *,
    c: int,
    r: int,
    activation: str = "relu",
    gamma: float = 1.0,
    data: Any,
    importance: Tensor | None = None,
    optimizer: str = "sgd",
    lr: float = 1e-3,
    batch_size: int = 32,
    num_steps: int = 1000,
    weight_decay: float = 0.0,
    num_checkpoints: int = 50,
    log_every: int | None = None,
    seed: int | torch.Generator = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    shared_batches: bool = True,
    eval_size: int = _DEFAULT_EVAL_SIZE,
) -> Trajectory:
    r"""Train TMS instance(s) from ``w0`` by minibatch SGD or AdamW; return the trajectory.

    Every step draws a minibatch :math:`x_1..x_m` (:math:`m` = ``batch_size``) and updates

    .. math::

        \text{SGD:}\quad w \leftarrow w - \eta\,\bigl(\nabla L_{\text{batch}}(w) + \lambda w\bigr),
        \qquad
        \text{AdamW:}\quad w \leftarrow w - \eta\,\Bigl(\frac{\hat m}{\sqrt{\hat v} + \epsilon}
        + \lambda w\Bigr),

    (:class:`torch.optim.SGD` / :class:`torch.optim.AdamW` with default betas and eps) where
    :math:`L_{\text{batch}}(w) = \frac1m \sum_k \sum_i I_i (x_{k,i} - f(x_k; w)_i)^2` is
    :func:`slt_tms.tms.losses.weighted_sq_error` of the model :math:`f(x) = \mathrm{act}(W^\top W x + b)`,
    :math:`\eta` = ``lr`` and :math:`\lambda` = ``weight_decay``. With ``w0`` of shape ``(B, d)`` the B
    instances are trained in one batched run, each with its own gradient (see the module docstring).

    Parameters
    ----------
    w0 : Tensor, shape ``(d,)`` or ``(B, d)``
        Initial flat parameters (layout of :func:`slt_tms.tms.pack`, ``d = r c + c``); its floating
        dtype is kept. Not modified.
    c, r : int
        Number of features and hidden dimensions.
    activation : {"relu", "linear", "swish"}
    gamma : float
        Sharpness of swish.
    data : distribution, Tensor or callable
        Fresh samples (``.sample(n, generator)``), a fixed dataset ``(n, c)`` / ``(B, n, c)``, or a
        callable ``(batch_size, generator) -> (batch_size, c) | (B, batch_size, c)``.
    importance : Tensor, shape ``(c,)`` or ``(B, c)``, optional
        Importance weights :math:`I`; default ``data.importance`` if present, else all ones.
    optimizer : {"sgd", "adamw"}
    lr : float
        Learning rate :math:`\eta > 0`.
    batch_size : int
        Minibatch size (at most ``n`` for a fixed dataset).
    num_steps : int
        Number of optimiser updates.
    weight_decay : float
        :math:`\lambda \ge 0` (decoupled for AdamW, L2 added to the gradient for SGD).
    num_checkpoints : int
        Size of the log-spaced checkpoint schedule (:func:`log_checkpoint_schedule`), at least 2.
    log_every : int, optional
        Log the loss every ``log_every`` steps (plus step ``num_steps``). Default: about 200 log-spaced
        steps merged with the checkpoint schedule. Losses are only computed (and moved to the host) at
        logged steps.
    seed : int or torch.Generator
        Root seed. A generator is used once to draw an integer root seed, which is recorded, so the run
        can always be redone from ``Trajectory.seed``. Minibatch indices and samples come from CPU
        generators derived from the root seed (same numbers on any device).
    progress : bool, optional
        Show a tqdm bar (None: on unless the environment variable ``SLT_TMS_NO_PROGRESS=1``).
    device : str or torch.device, optional
        Where to train (default: the device of ``w0``). Results are returned on the CPU.
    shared_batches : bool
        True: all instances see the same minibatches (batched run = separate runs). False: each
        instance draws its own minibatches.
    eval_size : int
        Size of the evaluation batch for the logged losses when ``data`` is not a fixed dataset.

    Returns
    -------
    Trajectory

    Raises
    ------
    ValueError
        On invalid hyper-parameters, an unknown optimizer or activation, or inconsistent shapes of
        ``w0``, ``data`` and ``importance``.

    Examples
    --------
    >>> from slt_tms.tms import OneHotUniform, fixed_dataset
    >>> from slt_tms.tms import TMS
    >>> w0 = TMS(4, 2, generator=torch.Generator().manual_seed(1)).flat()
    >>> traj = train(w0, c=4, r=2, data=fixed_dataset(OneHotUniform(4), 100, seed=0), optimizer="adamw",
    ...              lr=1e-2, batch_size=20, num_steps=200, num_checkpoints=5, progress=False)
    >>> traj.checkpoint_steps.tolist(), tuple(traj.checkpoints.shape)
    ([0, 1, 6, 35, 200], (5, 12))
    >>> bool(traj.losses[-1] < traj.losses[0])
    True
    """
    # ---------------------------------------------------------------- validation
    validate_shape(c, r)
    activation_fn(activation, gamma)  # validates activation / gamma
    gamma = float(gamma)
    optimizer, lr, weight_decay = _check_optimizer(optimizer, lr, weight_decay)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_steps = check_int("num_steps", num_steps, minimum=1)
    num_checkpoints = check_int("num_checkpoints", num_checkpoints, minimum=2)
    eval_size = check_int("eval_size", eval_size, minimum=1)
    log_every = None if log_every is None else check_int("log_every", log_every, minimum=1)
    B = _check_w0(w0, c, r)
    dev = torch.device(device) if device is not None else w0.device
    dtype = w0.dtype
    kind = _data_kind(data)
    _check_data(data, kind, c, B, batch_size)
    imp = _importance(importance, data, kind, c, B, dtype, dev)
    imp_b = imp.unsqueeze(-2)  # (c,) -> (1, c); (B, c) -> (B, 1, c): broadcasts over the minibatch

    # ---------------------------------------------------------------- randomness, schedules, data
    root_seed = _root_seed(seed)
    train_seed, eval_seed = spawn_seeds(root_seed, 2)
    g_train = torch.Generator().manual_seed(train_seed)
    g_eval = torch.Generator().manual_seed(eval_seed)
    n_streams = 1 if (shared_batches or B is None) else B
    ckpt_steps = log_checkpoint_schedule(num_steps, num_checkpoints)
    if log_every is None:
        log_steps = np.union1d(log_schedule(num_steps, _DEFAULT_NUM_LOGGED), ckpt_steps)
    else:
        log_steps = np.union1d(np.arange(0, num_steps + 1, log_every), [num_steps])
    log_set = set(log_steps.tolist())
    ckpt_set = set(ckpt_steps.tolist())
    if kind == "dataset":
        X = data.to(device=dev, dtype=dtype)
        next_batch, eval_x = _epoch_batches(X, batch_size, n_streams, g_train, c), X
    else:
        next_batch, eval_x = _fresh_batches(data, kind, c, B, batch_size, n_streams, eval_size, g_train,
                                            g_eval, dev, dtype)

    # ---------------------------------------------------------------- optimisation
    w = w0.detach().to(device=dev, dtype=dtype).clone().requires_grad_(True)
    make_opt = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    opt = make_opt([w], lr=lr, weight_decay=weight_decay)

    grad_scale = imp_b * (2.0 / batch_size)  # d/dpred of (1/m) sum_k I_i (pred - x)^2

    logged: list[Tensor] = []
    ckpts: list[Tensor] = []
    if 0 in log_set:
        logged.append(_eval_loss(w, eval_x, imp_b, c, r, activation, gamma))
    ckpts.append(w.detach().clone())

    checked = False
    for step in _progress(range(1, num_steps + 1), total=num_steps, desc="train", enabled=progress):
        x = next_batch()
        if not checked:
            if kind == "callable":
                _check_batch(x, c, B, batch_size, "the data callable")
            checked = True
        with torch.no_grad():
            w.grad = residual_and_grad(w, x, grad_scale, c, r, activation, gamma)[1]
        opt.step()
        if step in log_set:
            logged.append(_eval_loss(w, eval_x, imp_b, c, r, activation, gamma))
        if step in ckpt_set:
            ckpts.append(w.detach().clone())

    losses = torch.stack(logged).to("cpu", torch.float64).numpy()
    checkpoints = torch.stack(ckpts).cpu()
    config: dict[str, Any] = {
        "c": c, "r": r, "activation": activation, "gamma": gamma, "optimizer": optimizer, "lr": lr,
        "batch_size": batch_size, "num_steps": num_steps, "weight_decay": weight_decay,
        "num_checkpoints": num_checkpoints, "log_every": log_every, "num_instances": B,
        "data": _describe_data(data, kind), "importance": imp.cpu().tolist(),
        "shared_batches": bool(shared_batches), "eval_size": None if kind == "dataset" else eval_size,
        "dtype": str(dtype).removeprefix("torch."), "device": str(dev), "seed": root_seed,
    }
    return Trajectory(
        steps=log_steps.astype(np.int64),
        losses=losses,
        checkpoint_steps=ckpt_steps,
        checkpoints=checkpoints,
        final=checkpoints[-1].clone(),
        config=config,
        seed=root_seed,
    )

