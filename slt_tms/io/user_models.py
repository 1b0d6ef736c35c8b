r"""Loading what a user brings: a model factory, a checkpoint into it, a TorchScript archive, a data file.

What runs whose code
--------------------
* A **state_dict checkpoint** (``.safetensors``; ``.pt`` / ``.pth`` / ``.bin``) is read with safetensors
  or ``torch.load(weights_only=True)`` only (:mod:`slt_tms.io.checkpoints`): a pickle that would import
  or call code is refused, so the file itself can run nothing.
* The **model** comes from the user's own module (``MODULE:FACTORY``, :func:`load_factory`), imported
  like any Python module: the code you name runs, nothing else.
* A **TorchScript archive** (``torch.jit.save``) carries code (TorchScript methods, such as a
  ``__setstate__`` that ``torch.jit.load`` calls while loading, and ``forward``). That code runs when the
  archive is loaded and whenever the model is evaluated, with the rights of this process. It is therefore
  loaded only on request, ``trust=True`` (:func:`load_torchscript`), ``trust_torchscript=True``
  (:func:`load_model`) or ``--trust-torchscript`` on the command line: load only archives you trust, as
  you would only run scripts you trust.
* A **data file** is read by :func:`slt_tms.io.load_tensors` (safetensors, ``weights_only`` torch files,
  ``.npz`` without pickles).

Examples
--------
>>> import tempfile, pathlib, torch
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> torch.save(torch.nn.Linear(2, 1).state_dict(), tmp / "lin.pt")
>>> net = load_model(tmp / "lin.pt", model=lambda: torch.nn.Linear(2, 1))
>>> net.training, len(sha256(tmp / "lin.pt"))
(False, 64)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import uuid
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from slt_tms.io.atomic import sha256
from slt_tms.io.checkpoints import _existing, load_state_dict_file, load_tensors
from slt_tms.validation import LOSSES, check_choice

__all__ = [
    "LOSSES",
    "load_data",
    "load_factory",
    "load_model",
    "load_torchscript",
    "match_state_dict",
    "sha256",
    "state_dict_mismatch",
    "wrapper_note",
]

# LOSSES (the names of ``--loss``, defined with the potentials that compute them): :func:`load_data`
# turns integer targets into class indices (token ids) for ``"cross_entropy"`` and ``"causal_lm"`` and floats
# for ``"mse"``.

_TRUST_HINT = (
    "its code runs when it is loaded and when the model is evaluated; load only archives you trust and "
    "say so with --trust-torchscript (trust_torchscript=True in Python), or pass a state_dict with --model "
    "MODULE:FACTORY, which runs no code from the file"
)


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


# ----------------------------------------------------------------------------------------- model
def load_factory(spec: str) -> Callable[[], nn.Module]:
    """Resolve ``"MODULE:FACTORY"`` to the factory callable.

    Parameters
    ----------
    spec : str
        ``MODULE`` is a path to a ``.py`` file (anything ending in ``.py`` or containing a path
        separator), executed as a fresh module, or a dotted module name, imported with the current
        directory first on ``sys.path`` (as ``python -m`` does). ``FACTORY`` is a Python name in it.
        Only the user's own module code runs; no checkpoint is unpickled here.

    Returns
    -------
    callable
        ``FACTORY`` itself (not called).

    Raises
    ------
    ValueError
        Malformed spec, module that cannot be imported, missing or non-callable ``FACTORY``.
    FileNotFoundError
        A ``.py`` path that does not exist.
    """
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise ValueError(
            f"--model must be MODULE:FACTORY (e.g. my_models:make_mlp or path/to/file.py:make_mlp), got "
            f"{spec!r}"
        )
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr.isidentifier():
        raise ValueError(f"--model must be MODULE:FACTORY with FACTORY a Python name, got {spec!r}")
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        path = _existing(mod_name, "model file")
        unique = f"_slt_tms_user_model_{uuid.uuid4().hex}"
        ms = importlib.util.spec_from_file_location(unique, path)
        if ms is None or ms.loader is None:
            raise ValueError(f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(ms)
        sys.modules[unique] = module
        try:
            ms.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(unique, None)
            raise ValueError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        cwd = os.getcwd()
        added = cwd not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"cannot import module {mod_name!r} ({exc}); give an importable module name or a path to a "
                ".py file, e.g. --model path/to/models.py:make_model"
            ) from exc
        except Exception as exc:
            raise ValueError(f"importing {mod_name!r} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if added and cwd in sys.path:
                sys.path.remove(cwd)
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ValueError(
            f"factory {attr!r} not found in {mod_name}; callables defined there: "
            f"{', '.join(found) if found else '(none)'}"
        )
    factory = getattr(module, attr)
    if not callable(factory):
        raise ValueError(f"{spec}: {attr!r} is a {type(factory).__name__}, not a callable factory")
    return factory


def state_dict_mismatch(model: nn.Module, state: dict[str, Tensor]) -> str | None:
    """What keeps ``state`` from loading into ``model`` strictly, in one line (None if it fits): the keys
    missing from the checkpoint, those the model does not have, and shapes that differ (a few of each)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(want[k].shape)}"
        for k in want
        if k in state and tuple(state[k].shape) != tuple(want[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing in checkpoint: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        parts.append(f"not in model: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        parts.append(f"shape mismatch: {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
    return "; ".join(parts) if parts else None


def match_state_dict(
    model: nn.Module, state: dict[str, Tensor]
) -> tuple[dict[str, Tensor], str | None]:
    """``state`` under ``model``'s own key names, where a training wrapper or a saver renamed or dropped keys.

    Two things are mended, and only where the result then fits ``model`` exactly (every key, every shape),
    so nothing is guessed: a checkpoint of another architecture still fails to load, naming what does not
    fit.

    * **A wrapper's prefix.** A model trained through ``nn.DataParallel`` or ``DistributedDataParallel``
      saves its keys as ``module.<name>``, one compiled with ``torch.compile`` as ``_orig_mod.<name>``,
      and a training framework often as ``<attribute>.<name>`` (``model.``, ``net.``). A prefix that
      every key carries is removed.
    * **Tied weights saved once.** Parameters that the model ties together (a language model's input
      embedding and output projection) are written once by ``safetensors.torch.save_model`` and by
      HuggingFace's ``save_pretrained``; the missing names are filled from their present twin (the model
      ties them again when loading).

    Parameters
    ----------
    model : nn.Module
        The architecture the state dict is meant for.
    state : dict
        The checkpoint's tensors.

    Returns
    -------
    (dict, str or None)
        The state dict to load and the prefix removed (None: no prefix; the state dict is then ``state``
        or ``state`` with tied names filled).

    Examples
    --------
    >>> net = nn.Linear(2, 1)
    >>> state, prefix = match_state_dict(net, nn.DataParallel(net).state_dict())
    >>> sorted(state), prefix
    (['bias', 'weight'], 'module.')
    """
    want = model.state_dict()
    keys = list(state)
    filled = _fill_tied(want, state)
    if not keys or set(filled) == set(want):
        return filled, None
    parts = keys[0].split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i]) + "."
        if not all(k.startswith(prefix) for k in keys):
            break
        stripped = _fill_tied(want, {k[len(prefix):]: v for k, v in state.items()})
        if set(stripped) == set(want) and all(
            tuple(stripped[k].shape) == tuple(want[k].shape) for k in want
        ):
            return stripped, prefix
    return state, None


def _fill_tied(want: dict[str, Tensor], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the names of ``want``'s tied tensors (the same storage) that it lacks filled from a
    present twin; returned as given where there is nothing to fill."""
    twins: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for k, t in want.items():
        if t.numel():
            twins.setdefault((t.data_ptr(), tuple(t.shape)), []).append(k)
    fill: dict[str, Tensor] = {}
    for names in twins.values():
        present = [k for k in names if k in state]
        if present:
            fill.update({k: state[present[0]] for k in names if k not in state})
    return {**state, **fill} if fill else state


def wrapper_note(name: str, prefix: str) -> str:
    """The warning for checkpoints loaded without a wrapper's key prefix (:func:`match_state_dict`).

    Parameters
    ----------
    name : str
        What was loaded, e.g. ``"checkpoint ckpt_100.pt"``.
    prefix : str
        The prefix removed.

    Returns
    -------
    str
    """
    return (
        f"{name}: every key carries the prefix {prefix!r} (saved through a wrapper: DataParallel, "
        "torch.compile or a training framework); loaded without it, where the keys and shapes fit the "
        "model exactly"
    )


def load_torchscript(path: str | os.PathLike[str], *, trust: bool = False) -> torch.jit.ScriptModule:
    """Load a TorchScript archive (``torch.jit.save``), only when you say you trust it.

    An archive carries TorchScript code: ``torch.jit.load`` runs its ``__setstate__`` methods while
    loading, and its ``forward`` runs whenever the model is evaluated, with the rights of this process.
    Without ``trust=True`` the archive is not opened at all.

    Parameters
    ----------
    path : path-like
        The archive.
    trust : bool
        Confirm that the archive comes from a source you trust (``--trust-torchscript``).

    Returns
    -------
    torch.jit.ScriptModule
        On the CPU, in eval mode.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        ``trust`` not given (one line naming ``--trust-torchscript``), or the file is not a TorchScript
        archive.
    """
    p = _existing(path, "checkpoint")
    if trust is not True:
        raise ValueError(f"refusing to load the TorchScript archive {p.name}: {_TRUST_HINT}")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript as deprecated; asked for here
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.* is deprecated", category=DeprecationWarning
            )
            mod = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ValueError(
            f"cannot load {p} as a TorchScript archive ({_first_line(exc)}); save one with "
            "torch.jit.save(torch.jit.script(model), path), or pass a state_dict with --model MODULE:FACTORY"
        ) from exc
    return mod.eval()


def load_model(
    checkpoint: str | os.PathLike[str],
    *,
    model: str | Callable[[], nn.Module] | None = None,
    torchscript: bool = False,
    trust_torchscript: bool = False,
) -> nn.Module:
    """Build the model and load the checkpoint into it, safely.

    Parameters
    ----------
    checkpoint : path-like
        A ``state_dict`` file (``.safetensors``; ``.pt`` / ``.pth`` / ``.bin`` via
        ``torch.load(weights_only=True)``; a nested ``{"state_dict": ...}`` training checkpoint is
        unwrapped; see :func:`slt_tms.io.load_state_dict_file`), or with ``torchscript=True`` a TorchScript
        archive written by ``torch.jit.save``.
    model : str or callable, optional
        ``"MODULE:FACTORY"`` (:func:`load_factory`) or the factory itself; required unless ``torchscript``.
    torchscript : bool
        ``checkpoint`` is a TorchScript archive (:func:`load_torchscript`). Its code runs when it is loaded
        and when the model is evaluated, so it is loaded only with ``trust_torchscript=True``.
    trust_torchscript : bool
        Confirm that the archive comes from a source you trust (``--trust-torchscript``).

    Returns
    -------
    nn.Module
        On the CPU, in eval mode (dropout / batch-norm statistics fixed).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; unsafe, untrusted or unreadable checkpoint; factory problems; keys or shapes that do
        not match (a prefix that a training wrapper added to every key is removed where the rest fits
        exactly, with a warning; tied weights saved once are filled in: :func:`match_state_dict`).
    """
    path = _existing(checkpoint, "checkpoint")
    if torchscript:
        if model is not None:
            raise ValueError("give either --model MODULE:FACTORY or --torchscript, not both")
        return load_torchscript(path, trust=trust_torchscript)
    if model is None:
        raise ValueError(
            "say how to build the model: --model MODULE:FACTORY (a zero-argument callable returning the "
            "nn.Module whose state_dict the checkpoint holds) or --torchscript for a TorchScript archive"
        )
    factory = load_factory(model) if isinstance(model, str) else model
    name = model if isinstance(model, str) else getattr(model, "__name__", "factory")
    try:
        net = factory()
    except Exception as exc:
        hint = (
            "; the factory is called without arguments: wrap it, e.g. def make(): return "
            f"{getattr(factory, '__name__', 'factory')}(width=16), and name the wrapper"
            if isinstance(exc, TypeError) and "argument" in str(exc)
            else ""
        )
        raise ValueError(f"calling {name}() failed: {type(exc).__name__}: {exc}{hint}") from exc
    if not isinstance(net, nn.Module):
        raise ValueError(f"{name}() must return a torch.nn.Module, got {type(net).__name__}")
    state, prefix = match_state_dict(net, load_state_dict_file(path))
    if prefix is not None:
        warnings.warn(wrapper_note(f"checkpoint {path.name}", prefix), UserWarning, stacklevel=2)
    problem = state_dict_mismatch(net, state)
    if problem is not None:
        raise ValueError(f"checkpoint {path.name} does not fit the model from {name}: {problem}")
    net.load_state_dict(state, strict=True)
    return net.eval()


# ----------------------------------------------------------------------------------------- data
def load_data(
    path: str | os.PathLike[str],
    *,
    x_key: str = "x",
    y_key: str = "y",
    loss: str | None = None,
    labels: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Read inputs and targets from a data file.

    Parameters
    ----------
    path : path-like
        ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` (``weights_only=True``) or ``.npz``
        (no pickles), read by :func:`slt_tms.io.load_tensors`.
    x_key, y_key : str
        Names of the inputs ``(n, ...)`` and targets ``(n, ...)``.
    loss : {"mse", "cross_entropy", "causal_lm"}, optional
        Integer targets become int64 class indices (token ids) for cross-entropy and ``"causal_lm"`` and
        floats (the default dtype) for MSE (also when neither ``loss`` nor ``labels`` is given).
    labels : bool, optional
        The same choice as a flag: ``True`` keeps integer targets as int64 class labels (cross-entropy),
        ``False`` makes them floats. Give ``loss`` or ``labels``; both must agree if both are given.

    Returns
    -------
    (X, Y) : tuple of Tensor
        Sharing the leading sample axis ``n >= 1``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, unreadable or unsafe file, missing keys (the message lists the keys found),
        different numbers of rows, empty data.
    """
    if loss is not None:
        check_choice("loss", loss, LOSSES)
        if labels is not None and bool(labels) != (loss != "mse"):
            raise ValueError(f"loss={loss!r} and labels={labels!r} disagree; give one of them")
        as_labels = loss != "mse"
    else:
        as_labels = bool(labels)
    p = _existing(path, "data file")
    tensors = load_tensors(p)
    missing = [(flag, k) for flag, k in (("--x-key", x_key), ("--y-key", y_key)) if k not in tensors]
    if missing:
        found = ", ".join(f"{k!r} {tuple(v.shape)}" for k, v in sorted(tensors.items())) or "(none)"
        want = " and ".join(f"{k!r} ({'inputs' if flag == '--x-key' else 'targets'})" for flag, k in missing)
        raise ValueError(
            f"{p.name} has no {want}; found: {found}. Store the inputs as 'x' and the targets as 'y', or "
            "name them with --x-key / --y-key"
        )
    X, Y = tensors[x_key], tensors[y_key]
    if X.ndim == 0 or Y.ndim == 0 or X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise ValueError(
            f"{p.name}: inputs {x_key!r} {tuple(X.shape)} and targets {y_key!r} {tuple(Y.shape)} must share "
            "a non-empty leading sample axis n"
        )
    if not Y.is_floating_point():
        Y = Y.long() if as_labels else Y.to(torch.get_default_dtype())
    return X, Y
