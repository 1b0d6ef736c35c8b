r"""Loading what a user brings: a model factory, a checkpoint into it, a TorchScript archive, a data file.

Safety: a checkpoint is read with safetensors or ``torch.load(weights_only=True)`` only (a pickle that
would import or call code is refused, see :mod:`slt_tms.io.checkpoints`). The model's code is the user's
own module (``MODULE:FACTORY``), imported like any Python module. A TorchScript archive is different: it
carries code that runs when it is loaded and when the model is evaluated, so :func:`load_model` loads one
only with ``trust_torchscript=True`` (``--trust-torchscript`` on the command line): load only archives you
trust, as you would run a script.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from slt_tms.io.checkpoints import load_state_dict_file, load_tensors

__all__ = ["load_data", "load_factory", "load_model", "sha256"]


def sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (hex), recorded with results so that inputs can be checked later."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _existing_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    if not p.is_file():
        raise ValueError(f"{what} {p} is not a regular file")
    return p


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """Resolve ``MODULE:FACTORY`` to the factory callable.

    ``MODULE`` is a path to a ``.py`` file (anything ending in ``.py`` or containing a path separator),
    which is executed as a module, or a dotted module name, imported with the current directory first on
    ``sys.path`` (as ``python -m`` does). Only the user's own module code runs; no checkpoint is
    unpickled here.

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
        raise ValueError(
            f"--model must be MODULE:FACTORY with FACTORY a Python name, got {spec!r}"
        )
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        path = _existing_file(mod_name, "model file")
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


def _state_dict_mismatch(model: nn.Module, state: dict[str, Tensor]) -> str | None:
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
        parts.append(
            f"not in model: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    if shapes:
        parts.append(f"shape mismatch: {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
    return "; ".join(parts) if parts else None


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
        ``torch.load(weights_only=True)``, a nested ``{"state_dict": ...}`` training checkpoint is
        unwrapped; see :func:`slt_tms.io.load_state_dict_file`), or with ``torchscript=True`` a TorchScript
        archive written by ``torch.jit.save``.
    model : str or callable, optional
        ``"MODULE:FACTORY"`` (:func:`load_factory`) or the factory itself; required unless ``torchscript``.
    torchscript : bool
        ``checkpoint`` is a TorchScript archive (``torch.jit.save``). An archive holds code (TorchScript
        functions) that runs when it is loaded and whenever the model is evaluated, with the rights of
        this process: it is loaded only with ``trust_torchscript=True``.
    trust_torchscript : bool
        Confirm that the archive comes from a source you trust (``--trust-torchscript``).

    Returns
    -------
    nn.Module
        On the CPU, in eval mode (dropout / batch-norm statistics fixed).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; unsafe or unreadable checkpoint; factory problems; keys or shapes that do not match.
    """
    path = _existing_file(checkpoint, "checkpoint")
    if torchscript:
        if model is not None:
            raise ValueError("give either --model MODULE:FACTORY or --torchscript, not both")
        if not trust_torchscript:
            raise ValueError(
                f"{path.name} is a TorchScript archive: its code runs when it is loaded and evaluated. Load "
                "only archives you trust, and say so with --trust-torchscript (trust_torchscript=True); or "
                "pass a state_dict with --model MODULE:FACTORY, which runs no code from the file"
            )
        try:
            with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript as deprecated; asked for here
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.* is deprecated", category=DeprecationWarning
                )
                mod = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ValueError(
                f"cannot load {path} as a TorchScript archive ({first}); save one with "
                "torch.jit.save(torch.jit.script(model), path), or pass a state_dict with --model "
                "MODULE:FACTORY"
            ) from exc
        return mod.eval()
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
        raise ValueError(f"calling {name}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise ValueError(f"{name}() must return a torch.nn.Module, got {type(net).__name__}")
    state = load_state_dict_file(path)
    problem = _state_dict_mismatch(net, state)
    if problem is not None:
        raise ValueError(f"checkpoint {path.name} does not fit the model from {name}: {problem}")
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_data(
    path: str | os.PathLike[str],
    *,
    x_key: str = "x",
    y_key: str = "y",
    labels: bool = False,
) -> tuple[Tensor, Tensor]:
    """Read inputs and targets from a data file.

    Parameters
    ----------
    path : path-like
        ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` (``weights_only=True``) or ``.npz``
        (``allow_pickle=False``), read by :func:`slt_tms.io.load_tensors`.
    x_key, y_key : str
        Names of the inputs ``(n, ...)`` and targets ``(n, ...)``.
    labels : bool
        Integer targets are class labels (int64, for cross-entropy); otherwise they become floats.

    Returns
    -------
    (X, Y) : tuple of Tensor

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, unreadable or unsafe file, missing keys (the message lists the keys found),
        different numbers of rows, empty data.
    """
    p = _existing_file(path, "data file")
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
        if labels:
            Y = Y.long()
        else:
            Y = Y.to(torch.get_default_dtype())
    return X, Y
