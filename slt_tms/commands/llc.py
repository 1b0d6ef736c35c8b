r"""``slt-tms llc``: the local learning coefficient of your own checkpoint, or of a TMS critical point.

Two ways in:

* **A checkpoint of any PyTorch model.**
  ``slt-tms llc CHECKPOINT --model MODULE:FACTORY --data FILE --loss mse|cross_entropy`` builds the model
  with ``FACTORY()`` (a zero-argument callable in ``MODULE``, an importable module name or a path to a
  ``.py`` file) and loads ``CHECKPOINT`` into it as a ``state_dict`` (``.safetensors``, or ``.pt`` /
  ``.pth`` / ``.bin`` read only with ``torch.load(weights_only=True)``: a pickle that would import or call
  code is refused). ``slt-tms llc ARCHIVE --torchscript --trust-torchscript ...`` loads a TorchScript
  archive instead (``torch.jit.load``). An archive carries code that runs when it is loaded and evaluated,
  so it is loaded only with ``--trust-torchscript``: only load archives you trust.
* **A named TMS critical point.** ``slt-tms llc --tms-critical 5+ --c 6`` estimates at the k-gon of
  :func:`slt_tms.theory.critical_points.kgon`, with the closed-form population loss (``--potential
  population``, the default; ``n`` is then the nominal sample size) or the empirical loss on ``n``
  fresh one-hot samples (``--potential empirical``).

The data file (``.safetensors``, ``.pt`` / ``.pth`` read with ``weights_only=True``, or ``.npz`` read with
``allow_pickle=False``) holds the inputs under the key ``"x"`` and the targets under ``"y"`` (other names
with ``--x-key`` / ``--y-key``); both share the leading sample axis ``n``. For ``--loss cross_entropy``
the targets are class indices (any integer dtype; converted to int64) or class probabilities (float,
shape of the logits). For ``--loss mse`` integer targets are converted to the model's float dtype.

The estimate is :func:`slt_tms.estimators.estimate_llc`,

.. math::

    \hat\lambda(w^*) = n\beta\,\bigl(\mathbb{E}_{w \sim p_{\mathrm{loc}}}[L_n(w)] - L_n(w^*)\bigr),
    \qquad n\beta = n / \log n \ \text{(default)},

with :math:`w^*` the checkpoint's parameters (all trainable parameters, flattened in
``named_parameters()`` order) and :math:`L_n` the mean loss over the ``n`` rows of the data. Without
``--step-size`` the step size is calibrated automatically (the sweep is recorded in the outputs).

Outputs in ``--out DIR`` (default ``llc_out``): ``llc.nc`` (ArviZ netCDF: the ``(chain, draw)`` loss and
LLC traces, sample stats, and every result field in the posterior attributes) and ``llc.json`` (``llc``,
``se``, the diagnostics, ``config`` with the CLI inputs and SHA-256 of the files read, ``seed``, traces).
Both are written atomically. The summary table (:meth:`LLCResult.summary`) is printed unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slt_tms.estimators.llc import LLCResult, estimate_llc
from slt_tms.io.locks import output_lock
from slt_tms.io.user_models import LOSSES, load_data, load_factory, load_model, sha256

__all__ = [
    "LOSSES",
    "POTENTIALS",
    "load_data",
    "load_factory",
    "load_model",
    "parse_critical_name",
    "register",
    "run_llc",
    "run_llc_critical",
    "torchscript_potential",
    "write_outputs",
]

#: Potentials accepted by ``--potential`` for ``--tms-critical``.
POTENTIALS: tuple[str, ...] = ("population", "empirical")
#: Default sample size for ``--tms-critical`` (the nominal n of the population potential, or the number
#: of one-hot samples of the empirical one); the TMS paper's LLC estimates use datasets of this order.
DEFAULT_CRITICAL_N = 1000

_NAME_RE = re.compile(r"^\s*(\d+)(\+*)(?:\s*,\s*(\d+)\s*-)?\s*$")


# ----------------------------------------------------------------------------------------- validation
def _check_step_size(step_size: float | None) -> None:
    if step_size is None:
        return
    if isinstance(step_size, bool) or not isinstance(step_size, int | float) or not (
        math.isfinite(step_size) and step_size > 0
    ):
        raise ValueError(
            f"--step-size must be a finite positive number (omit it to calibrate automatically), got "
            f"{step_size!r}"
        )


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown --loss {loss!r}; allowed: {', '.join(LOSSES)}")


def _check_int(flag: str, v: Any, minimum: int) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {v!r}")


# ----------------------------------------------------------------------------------------- model
def torchscript_potential(
    module: torch.jit.ScriptModule, loss: str
) -> tuple[Callable[[Tensor, Any], Tensor], Tensor]:
    r"""A potential ``L(w, (X, Y))`` of a TorchScript module over its flat parameters, and :math:`w^*`.

    ``torch.func.functional_call`` refuses TorchScript modules, so the module's ``forward`` graph is
    lowered to a function of ``(x, *parameters)`` (TorchScript's graph-lowering pass; parameters in the
    lowered order, which is the flat layout of :math:`w`) and the loss is vectorised over the leading
    axes of ``w`` with :func:`torch.func.vmap`:

    .. math:: L(w, (X, Y)) = \operatorname{loss}(f(X; w), Y) \quad\text{(mean over rows)}.

    Parameters
    ----------
    module : torch.jit.ScriptModule
    loss : {"mse", "cross_entropy"}

    Returns
    -------
    (potential, w_star)
        ``potential(w (..., d), batch) -> (...)`` and the module's parameters ``(d,)``.
    """
    from torch.func import vmap

    _check_loss(loss)
    loss_fn = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.cross_entropy
    try:
        graph, params = torch._C._jit_pass_lower_graph(module.forward.graph, module._c)
        fn = torch._C._create_function_from_graph("forward", graph)
    except Exception as exc:  # pragma: no cover - depends on the archive
        raise ValueError(f"cannot turn the TorchScript module's forward into a function: {exc}") from exc
    params = [p.detach() for p in params]
    if not params:
        raise ValueError("the TorchScript module has no parameters")
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    w_star = torch.cat([p.reshape(-1) for p in params])
    d = w_star.numel()

    def single(w: Tensor, batch: Any) -> Tensor:
        x, y = (batch, batch) if isinstance(batch, Tensor) else (batch[0], batch[-1])
        pieces = [t.view(s) for t, s in zip(torch.split(w, sizes), shapes, strict=True)]
        return loss_fn(fn(x, *pieces), y)

    def potential(w: Tensor, batch: Any = None) -> Tensor:
        if batch is None:
            raise ValueError("a TorchScript potential needs data")
        if w.ndim == 1:
            return single(w, batch)
        lead = w.shape[:-1]
        out = vmap(single, in_dims=(0, None))(w.reshape(-1, d), batch)
        return out.reshape(lead)

    return potential, w_star


# ----------------------------------------------------------------------------------------- data
# ----------------------------------------------------------------------------------------- running
def _estimate_kwargs(
    *,
    n: int | None,
    num_chains: int,
    num_draws: int,
    num_burnin: int,
    step_size: float | None,
    nbeta: float | None,
    localization: float | None,
    batch_size: int | None,
    seed: int,
    quiet: bool,
    device: str | None,
) -> dict[str, Any]:
    _check_step_size(step_size)
    _check_int("--n", n, 2)
    _check_int("--num-chains", num_chains, 1)
    _check_int("--num-draws", num_draws, 2)
    _check_int("--num-burnin", num_burnin, 0)
    _check_int("--batch-size", batch_size, 1)
    _check_int("--seed", seed, 0)
    if nbeta is not None and not (math.isfinite(nbeta) and nbeta > 0):
        raise ValueError(f"--nbeta must be a finite positive number, got {nbeta!r}")
    if localization is not None and not (math.isfinite(localization) and localization >= 0):
        raise ValueError(f"--localization must be a finite number >= 0, got {localization!r}")
    kw: dict[str, Any] = dict(
        n=n, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
        nbeta=nbeta, batch_size=batch_size, seed=seed, progress=False if quiet else None, device=device,
    )
    if localization is not None:
        kw["localization"] = float(localization)
    return kw


def _run_estimate(potential: Any, w_star: Tensor | None, kw: dict[str, Any], quiet: bool) -> LLCResult:
    """estimate_llc with its warnings shown as one-line ``slt-tms llc: warning:`` messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_llc(potential, w_star, **kw)
    for w in caught:
        if issubclass(w.category, DeprecationWarning | PendingDeprecationWarning):
            continue
        print(f"slt-tms llc: warning: {w.message}", file=sys.stderr)
    return res


def write_outputs(result: LLCResult, out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``out/llc.nc`` (netCDF) and ``out/llc.json``, each atomically; returns the two paths."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise ValueError(f"--out must be a directory; {d} is a file")
    d.mkdir(parents=True, exist_ok=True)
    nc = result.to_netcdf(d / "llc.nc")
    js = result.to_json(d / "llc.json")
    return Path(nc), Path(js)


def _report(result: LLCResult, paths: tuple[Path, Path] | None, extra_lines: list[str], quiet: bool) -> None:
    if quiet:
        return
    print(result.summary())
    for line in extra_lines:
        print(line)
    if paths is not None:
        print(f"wrote {paths[0]} and {paths[1]}")


def run_llc(
    checkpoint: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str],
    model: str | Callable[[], nn.Module] | None = None,
    torchscript: bool = False,
    trust_torchscript: bool = False,
    loss: str = "mse",
    x_key: str = "x",
    y_key: str = "y",
    n: int | None = None,
    num_chains: int = 4,
    num_draws: int = 10_000,
    num_burnin: int = 2000,
    step_size: float | None = None,
    nbeta: float | None = None,
    localization: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    out: str | os.PathLike[str] | None = "llc_out",
    quiet: bool = False,
    device: str | None = None,
) -> LLCResult:
    r"""Estimate the LLC of a checkpoint on a dataset and write ``llc.nc`` / ``llc.json``.

    .. math:: \hat\lambda = n\beta\,\bigl(\overline{L_n(w_t)} - L_n(w^*)\bigr)

    Parameters
    ----------
    checkpoint : path-like
        State dict (with ``model``) or TorchScript archive (with ``torchscript=True``); see
        :func:`load_model`.
    data : path-like
        Data file with inputs ``x_key`` and targets ``y_key`` (:func:`load_data`).
    model : str or callable, optional
        ``"MODULE:FACTORY"`` or a zero-argument factory.
    torchscript, trust_torchscript : bool
        ``checkpoint`` is a TorchScript archive; its code runs when it is loaded and evaluated, so it is
        loaded only with ``trust_torchscript=True`` (see :func:`slt_tms.io.user_models.load_torchscript`).
    loss : {"mse", "cross_entropy"}
    n : int, optional
        Number of training samples behind :math:`L_n` (default: the rows of the data file); sets
        :math:`n\beta = n/\log n`.
    num_chains, num_draws, num_burnin, step_size, nbeta, localization, batch_size, seed, device
        As in :func:`slt_tms.estimators.estimate_llc` (``localization`` None: its default; ``step_size``
        None: calibrated).
    out : path-like or None
        Output directory; None writes nothing.
    quiet : bool
        No progress bars and no printed summary.

    Returns
    -------
    LLCResult
        ``config["cli"]`` records the inputs (paths, SHA-256 of the files, model spec, keys, loss).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> torch.save(torch.nn.Linear(2, 1).state_dict(), tmp / "lin.pt")
    >>> g = np.random.default_rng(0); x = g.normal(size=(64, 2)); y = x @ [[0.5], [-1.0]]
    >>> np.savez(tmp / "data.npz", x=x.astype("float32"), y=y.astype("float32"))
    >>> res = run_llc(tmp / "lin.pt", data=tmp / "data.npz", model=lambda: torch.nn.Linear(2, 1),
    ...               step_size=1e-4, num_chains=2, num_draws=50, num_burnin=10, out=None, quiet=True)
    >>> res.config["cli"]["loss"]
    'mse'
    """
    _check_loss(loss)
    kw = _estimate_kwargs(
        n=n, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
        nbeta=nbeta, localization=localization, batch_size=batch_size, seed=seed, quiet=quiet, device=device,
    )
    ckpt = Path(checkpoint)
    net = load_model(ckpt, model=model, torchscript=torchscript, trust_torchscript=trust_torchscript)
    X, Y = load_data(data, x_key=x_key, y_key=y_key, loss=loss)
    if torchscript:
        pot, w_star = torchscript_potential(net, loss)  # type: ignore[arg-type]
        dtype = w_star.dtype
        X = X.to(dtype) if X.is_floating_point() else X
        Y = Y.to(dtype) if Y.is_floating_point() else Y
        target: Any = pot
        if kw["n"] is None:
            kw["n"] = int(X.shape[0])
        _probe(lambda: pot(w_star, (X[:2], Y[:2])), net, X, Y)
    else:
        target, w_star = net, None
        _probe(lambda: net(X[:2].to(_param_dtype(net)) if X.is_floating_point() else X[:2]), net, X, Y)
    d = sum(p.numel() for p in net.parameters() if p.requires_grad) if not torchscript else w_star.numel()
    if not quiet:
        print(
            f"model: {type(net).__name__} with {d} parameters from {ckpt.name}; data: {tuple(X.shape)} -> "
            f"{tuple(Y.shape)} from {Path(data).name}; loss {loss}",
            file=sys.stderr,
        )
    res = _run_estimate(target, w_star, {**kw, "data": (X, Y), "loss": loss}, quiet)
    cli = {
        "command": "slt-tms llc",
        "checkpoint": str(ckpt),
        "checkpoint_sha256": sha256(ckpt),
        "model": model if isinstance(model, str) else (None if model is None else repr(model)),
        "torchscript": bool(torchscript),
        "data": str(data),
        "data_sha256": sha256(data),
        "x_key": x_key,
        "y_key": y_key,
        "x_shape": list(X.shape),
        "y_shape": list(Y.shape),
        "loss": loss,
    }
    res = dataclasses.replace(res, config={**res.config, "cli": cli})
    paths = write_outputs(res, out) if out is not None else None
    _report(res, paths, [], quiet)
    return res


def _param_dtype(net: nn.Module) -> torch.dtype:
    for p in net.parameters():
        return p.dtype
    return torch.get_default_dtype()


def _probe(call: Callable[[], Any], net: nn.Module, X: Tensor, Y: Tensor) -> None:
    """Run the model on two rows so that a data/model shape mismatch gives one clear line."""
    try:
        with torch.no_grad():
            call()
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ValueError(
            f"the model cannot be applied to the inputs x of shape {tuple(X.shape)} (rows of shape "
            f"{tuple(X.shape[1:])}): {type(exc).__name__}: {first}"
        ) from exc


def parse_critical_name(name: str) -> tuple[int, int, int]:
    """``"5+"`` -> ``(k, sigma, phi) = (5, 1, 0)``; ``"4+,2-"`` -> ``(4, 1, 2)`` (TMS paper names).

    Examples
    --------
    >>> parse_critical_name("5+"), parse_critical_name("6"), parse_critical_name("4,1-")
    ((5, 1, 0), (6, 0, 0), (4, 0, 1))
    """
    m = _NAME_RE.match(name or "")
    if m is None:
        raise ValueError(
            f"unknown critical point name {name!r}; use the TMS paper's names: k followed by sigma plus "
            "signs (e.g. 6, 5, 5+, 4++) and for 4-gons optionally ',PHI-' (e.g. 4+,2-)"
        )
    k, plus, phi = int(m.group(1)), len(m.group(2)), int(m.group(3) or 0)
    return k, plus, phi


def run_llc_critical(
    name: str,
    *,
    c: int,
    potential: str = "population",
    n: int | None = None,
    num_chains: int = 4,
    num_draws: int = 10_000,
    num_burnin: int = 2000,
    step_size: float | None = None,
    nbeta: float | None = None,
    localization: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    out: str | os.PathLike[str] | None = "llc_out",
    quiet: bool = False,
    device: str | None = None,
) -> LLCResult:
    r"""Estimate the LLC at the named k-gon critical point of the TMS with ``c`` features (r = 2).

    The point is :func:`slt_tms.theory.critical_points.kgon` ``(k, c, sigma, phi)`` (certified critical,
    with its theoretical :math:`\lambda` where the theory has one). ``potential="population"`` uses the
    closed-form population loss :math:`L(w)` with nominal sample size ``n`` (default
    :data:`DEFAULT_CRITICAL_N`); ``"empirical"`` the empirical loss :math:`L_n` on ``n`` one-hot samples
    (:class:`slt_tms.tms.data.OneHotUniform`) drawn with a seed derived from ``seed`` (recorded).

    Returns
    -------
    LLCResult
        ``config["cli"]`` records the point (name, k, sigma, phi, c, loss, lambda_theory and its reason).
    """
    from slt_tms._rng import spawn_seeds
    from slt_tms.theory.critical_points import kgon
    from slt_tms.tms import OneHotUniform, fixed_dataset

    if potential not in POTENTIALS:
        raise ValueError(f"unknown --potential {potential!r}; allowed: {', '.join(POTENTIALS)}")
    if isinstance(c, bool) or not isinstance(c, int) or c < 2:
        raise ValueError(f"--c must be an integer >= 2 (the number of features), got {c!r}")
    k, sigma, phi = parse_critical_name(name)
    if n is None:
        n = DEFAULT_CRITICAL_N
    kw = _estimate_kwargs(
        n=n, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
        nbeta=nbeta, localization=localization, batch_size=batch_size, seed=seed, quiet=quiet, device=device,
    )
    if potential == "population" and batch_size is not None:
        raise ValueError("--batch-size applies only to --potential empirical (the population loss is exact)")
    cp = kgon(k, c, sigma, phi)
    cli: dict[str, Any] = {
        "command": "slt-tms llc --tms-critical",
        "critical_point": cp.name, "k": k, "sigma": sigma, "phi": phi, "c": c, "r": cp.r,
        "population_loss": cp.loss, "lambda_theory": cp.lambda_theory, "lambda_reason": cp.lambda_reason,
        "potential": potential,
    }
    if potential == "empirical":
        (data_seed,) = spawn_seeds(seed, 1)
        X = fixed_dataset(OneHotUniform(c), n, seed=data_seed)
        kw["data"] = X
        cli["data_seed"] = data_seed
        cli["data"] = f"OneHotUniform({c}), n={n}"
    if not quiet:
        print(f"critical point {cp.name} at c={c}: L = {cp.loss:.6g}, {potential} potential, n={n}",
              file=sys.stderr)
    res = _run_estimate(cp, None, kw, quiet)
    res = dataclasses.replace(res, config={**res.config, "cli": cli})
    paths = write_outputs(res, out) if out is not None else None
    theory = (
        f"  theory          lambda = {cp.lambda_theory:g} ({cp.lambda_reason})"
        if cp.lambda_theory is not None
        else f"  theory          no closed-form lambda ({cp.lambda_reason})"
    )
    _report(res, paths, [theory], quiet)
    return res


# ----------------------------------------------------------------------------------------- CLI
def _handler(ns: argparse.Namespace) -> int:
    common = dict(
        n=ns.n, num_chains=ns.num_chains, num_draws=ns.num_draws, num_burnin=ns.num_burnin,
        step_size=ns.step_size, nbeta=ns.nbeta, localization=ns.localization, batch_size=ns.batch_size,
        seed=ns.seed, out=ns.out, quiet=ns.quiet, device=ns.device,
    )
    if ns.tms_critical is not None:
        if ns.checkpoint is not None or ns.model is not None or ns.torchscript or ns.data is not None:
            raise ValueError(
                "--tms-critical estimates at a named TMS critical point: do not give CHECKPOINT, --model, "
                "--torchscript or --data with it"
            )
        if ns.c is None:
            raise ValueError(
                "--tms-critical needs --c C (the number of features), e.g. --tms-critical 5+ --c 6"
            )
        with output_lock(ns.out):  # one run per --out; an unwritable --out is refused before any work
            run_llc_critical(ns.tms_critical, c=ns.c, potential=ns.potential, **common)
        return 0
    if ns.c is not None or ns.potential != "population":
        raise ValueError("--c and --potential apply only to --tms-critical")
    if ns.checkpoint is None:
        raise ValueError(
            "give a CHECKPOINT (with --model MODULE:FACTORY or --torchscript, and --data FILE), or "
            "--tms-critical NAME --c C"
        )
    if ns.data is None:
        raise ValueError("--data FILE is required: inputs under 'x' and targets under 'y' (.safetensors, "
                         ".pt or .npz)")
    if ns.model is None and not ns.torchscript:
        raise ValueError("say how to build the model: --model MODULE:FACTORY or --torchscript")
    with output_lock(ns.out):  # one run per --out; an unwritable --out is refused before any work
        run_llc(
            ns.checkpoint, data=ns.data, model=ns.model, torchscript=ns.torchscript,
            trust_torchscript=ns.trust_torchscript, loss=ns.loss,
            x_key=ns.x_key, y_key=ns.y_key, **common,
        )
    return 0


def register(subparsers: Any) -> None:
    """Add the ``llc`` command to the ``slt-tms`` parser."""
    p = subparsers.add_parser(
        "llc",
        help="estimate the local learning coefficient of a checkpoint or a TMS critical point",
        description="Estimate the local learning coefficient lambda_hat +/- SE with batched SGLD "
        "(slt_tms.estimators.estimate_llc) and print its diagnostics (R-hat, ESS, MALA acceptance, "
        "fraction below L(w*), divergences). Either CHECKPOINT with --model MODULE:FACTORY (a state_dict, "
        "loaded safely: safetensors or torch.load(weights_only=True)) or --torchscript --trust-torchscript "
        "(torch.jit.load: the archive's code runs when it is loaded and evaluated; only load archives you "
        "trust), plus --data FILE holding inputs 'x' and targets 'y'; or --tms-critical NAME --c C. "
        "Writes DIR/llc.nc (ArviZ netCDF) and DIR/llc.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", default=None, metavar="CHECKPOINT",
                   help="state_dict (.safetensors/.pt) or, with --torchscript, a TorchScript archive")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, metavar="MODULE:FACTORY",
                     help="zero-argument callable returning the nn.Module (MODULE: import name or .py path)")
    src.add_argument("--torchscript", action="store_true",
                     help="CHECKPOINT is a TorchScript archive (needs --trust-torchscript)")
    src.add_argument("--tms-critical", default=None, metavar="NAME",
                     help="named TMS critical point, e.g. 6, 5, 5+, 4++ (needs --c)")
    p.add_argument("--trust-torchscript", action="store_true",
                   help="allow loading the --torchscript archive: its code runs when it is loaded and "
                   "evaluated, with your rights; only load archives you trust")
    p.add_argument("--data", default=None, metavar="FILE", help="data file (.safetensors, .pt, .npz)")
    p.add_argument("--x-key", default="x", help="name of the inputs in the data file")
    p.add_argument("--y-key", default="y", help="name of the targets in the data file")
    p.add_argument("--loss", default="mse", metavar="{mse,cross_entropy}", help="loss (mean over rows)")
    p.add_argument("--c", type=int, default=None, help="number of features (with --tms-critical)")
    p.add_argument("--potential", default="population", metavar="{population,empirical}",
                   help="closed-form population loss or empirical loss on n samples (--tms-critical)")
    p.add_argument("--n", type=int, default=None,
                   help="training-set size behind L_n, sets nbeta = n/log n (default: rows of the data; "
                   f"{DEFAULT_CRITICAL_N} for --tms-critical)")
    p.add_argument("--num-chains", type=int, default=4)
    p.add_argument("--num-draws", type=int, default=10_000,
                   help="kept draws per chain (the estimator's validated default)")
    p.add_argument("--num-burnin", type=int, default=2000, help="discarded burn-in steps per chain")
    p.add_argument("--step-size", type=float, default=None, help="SGLD step size (default: calibrated)")
    p.add_argument("--nbeta", type=float, default=None, help="n*beta (default n/log n)")
    p.add_argument("--localization", type=float, default=None,
                   help="gamma (default: that of slt_tms.estimators.estimate_llc)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", default="llc_out", metavar="DIR", help="output directory for llc.nc and llc.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=_handler)
