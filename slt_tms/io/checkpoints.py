r"""Safe reading and writing of checkpoints and data files.

TMS checkpoints
---------------
:func:`save_checkpoint` writes a `safetensors <https://huggingface.co/docs/safetensors>`_ file holding two
tensors, ``"W"`` of shape ``(..., r, c)`` and ``"b"`` of shape ``(..., c)`` (the names of the
:class:`slt_tms.tms.TMS` state dict, so ``TMS(c, r).load_state_dict(safetensors.torch.load_file(path))``
works for a single model), and string metadata:

========================  ==========================================================
``format``                ``"slt_tms.checkpoint"``
``format_version``        ``"1"``
``c``, ``r``              integers
``activation``            ``relu`` | ``linear`` | ``swish``
``gamma``                 float (``repr``, round-trips exactly)
``seed``, ``step``        integers, or ``"null"``
``extra``                 JSON object with anything else (e.g. the training config)
========================  ==========================================================

:func:`load_checkpoint` reads that format, or a ``.pt`` / ``.pth`` file saved by ``torch.save`` of a dict
with ``"W"`` and ``"b"`` (e.g. ``model.state_dict()``) and optionally a ``"meta"`` dict with the keys
above. ``.pt`` files are ONLY read with ``torch.load(weights_only=True)``, which refuses any pickle that
would import or call arbitrary code; nothing else in this package unpickles.

Saving is atomic: a failed save leaves the previous file (if any) untouched and no partial file behind.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slt_tms.io.atomic import atomic_path
from slt_tms.tms import ACTIVATIONS, TMS, activation_fn, num_params, pack, validate_shape

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "load_checkpoint",
    "load_state_dict_file",
    "load_tensors",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "slt_tms.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

_SAFETENSORS = (".safetensors",)
_TORCH = (".pt", ".pth", ".bin")
_NPZ = (".npz",)
_META_KEYS = ("c", "r", "activation", "gamma", "seed", "step")


# ----------------------------------------------------------------------------- low-level readers
def _existing(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` as a Path if it is an existing regular file (``what`` names it in the error)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found (no such file): {p}")
    if not p.is_file():
        raise ValueError(f"{what} {p} is not a regular file")
    return p


def _suffix_error(p: Path, allowed: tuple[str, ...], what: str) -> ValueError:
    return ValueError(
        f"cannot read {what} from {p.name!r}: unknown file type {p.suffix or '(no suffix)'!r}; "
        f"allowed suffixes: {', '.join(allowed)}"
    )


class _FormatError(ValueError):
    """A ValueError whose message is already the one-line report for the user (passed through as is)."""


#: Longest reason quoted from a third-party error (safetensors lists every dtype it knows, for instance).
_MAX_REASON = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(exc: BaseException) -> str:
    """One line of ``exc`` for an error message: its first non-empty line, without terminal escapes."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _read_safetensors(p: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError, ...: the file is not a valid safetensors file
        raise ValueError(
            f"{p} is not a valid safetensors file (corrupt or truncated?): {_reason(exc)}"
        ) from exc
    return tensors, meta


_GLOBAL_RE = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")
_SAVE_PLAIN = "save a plain state_dict or safetensors"
#: What to do with a refused data file (tensors, not numpy arrays or other objects, inside a .pt file).
_SAVE_DATA = (
    "save the data as tensors: torch.save({'x': torch.as_tensor(X), 'y': torch.as_tensor(Y)}, path), or "
    "as .npz (numpy.savez(path, x=X, y=Y)) or .safetensors"
)
_REFUSED = "Weights only load failed"


def _refusal(p: Path, exc: pickle.UnpicklingError, advice: str = _SAVE_PLAIN) -> str:
    """The reason of torch's weights-only refusal, without its advice to load with weights_only=False;
    ``advice`` says what to save instead (a checkpoint's or a data file's)."""
    text = _ANSI.sub("", str(exc))
    if "WeightsUnpickler error:" not in text and _REFUSED not in text:  # the pickle stream is broken
        return f"{p} is not a readable torch file (corrupt or truncated?): {_reason(exc)}"
    tail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    m = _GLOBAL_RE.search(tail)
    if m is not None:
        what = "numpy arrays" if m.group(1).startswith("numpy") else "Python objects"
        return (
            f"cannot load {p}: the file contains {what} ({m.group(1)}) that weights-only loading "
            f"(torch.load(weights_only=True), which never runs code from the file) refuses; {advice}"
        )
    if "WeightsUnpickler error:" not in text:  # torch's own advice (load with weights_only=False) is dropped
        return (
            f"cannot load {p}: weights-only loading (torch.load(weights_only=True), which never runs code "
            f"from the file) refused it: the file contains Python objects beyond tensors; {advice}"
        )
    reason = _reason(ValueError(tail)).split(". Please use")[0]
    return (
        f"cannot load {p}: weights-only loading (torch.load(weights_only=True)) refused it ({reason}): the "
        f"file is corrupt or contains Python objects; {advice}"
    )


def _read_torch(p: Path, advice: str = _SAVE_PLAIN) -> Any:
    """``torch.load(weights_only=True)``: plain containers of tensors and numbers only, never code
    (``advice``: what a refusal tells the user to save instead)."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it "might not support"
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(_refusal(p, exc, advice)) from exc
    except RuntimeError as exc:
        if "TorchScript archive" in str(exc) and advice is _SAVE_DATA:
            raise ValueError(f"{p} is a TorchScript archive (a model), not a data file; {advice}") from exc
        if "TorchScript archive" in str(exc):
            raise ValueError(
                f"{p} is a TorchScript archive (code and weights), which weights-only loading refuses: load "
                "it as a model with --torchscript --trust-torchscript (torchscript=True, "
                f"trust_torchscript=True in Python) if you trust its source; otherwise {_SAVE_PLAIN}"
            ) from exc
        raise ValueError(f"{p} is not a readable torch file (corrupt or truncated?): {_reason(exc)}") from exc
    except Exception as exc:  # EOFError, BadZipFile, struct.error, ...: a damaged file
        raise ValueError(f"{p} is not a readable torch file (corrupt or truncated?): {_reason(exc)}") from exc


#: Deflate expands data at most 1032-fold (a 258-byte match coded in at least 2 bits), so a member that
#: claims more uncompressed bytes than that is corrupt; checked before anything is decompressed.
_DEFLATE_MAX_RATIO = 1032
_NPY = ".npy"


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path) -> np.ndarray:
    """One ``.npy`` member, its header checked against the member's size before any data is read."""
    key = info.filename[: -len(_NPY)]
    where = f"{p}: array {key!r}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _FormatError(f"{where} uses zip compression method {info.compress_type}; numpy writes stored "
                           "or deflated members only (corrupt file?)")
    if (info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) or (
        info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024
    ):
        raise _FormatError(f"{where}: the zip entry declares {info.file_size} bytes from "
                           f"{info.compress_size} stored bytes; the .npz is corrupt")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _FormatError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
        if dtype.hasobject:
            raise _FormatError(f"{where} holds Python objects (dtype {dtype}); object arrays are refused "
                               "(they would need unpickling)")
        if dtype.kind not in "biuf":
            raise _FormatError(f"{where} has dtype {dtype}; only numeric arrays are allowed")
        nbytes = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
        available = info.file_size - f.tell()
        if nbytes != available:
            state = "truncated or corrupt" if nbytes > available else "corrupt"
            raise _FormatError(
                f"{where} declares shape {tuple(shape)} of {dtype} ({nbytes} bytes) but the file holds "
                f"{available} bytes for it: the .npz is {state}"
            )
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):  # reading to the end also checks the member's CRC
            raise _FormatError(f"{where}: the data is truncated or corrupt")
    order = "F" if fortran else "C"
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order=order)
    return arr.astype(dtype.newbyteorder("="), order="C")  # a writable native-endian copy


def _read_npz(p: Path) -> dict[str, Tensor]:
    """The arrays of an ``.npz`` (numeric only, never unpickled), as tensors."""
    out: dict[str, Tensor] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(_NPY):
                    raise _FormatError(f"{p}: the member {info.filename!r} is not a .npy array; an .npz "
                                       "written by numpy.savez holds only .npy arrays")
                arr = _npz_member(zf, info, p)
                try:
                    out[info.filename[: -len(_NPY)]] = torch.from_numpy(arr)
                except TypeError as exc:
                    raise _FormatError(f"{p}: array {info.filename[:-4]!r} has dtype {arr.dtype}, which "
                                       "torch does not support") from exc
    except _FormatError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, a malformed .npy header, ...
        raise ValueError(f"{p} is not a readable .npz file (corrupt or truncated?): {_reason(exc)}") from exc
    return out


def _tensor_dict(obj: Any, p: Path, what: str, *, allow_bare: bool = False) -> dict[str, Tensor]:
    if allow_bare and isinstance(obj, Tensor):
        return {"data": obj}
    if not isinstance(obj, Mapping):
        raise ValueError(f"{p} must hold a dict of tensors ({what}); found a {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"{p} must hold a dict mapping names to tensors ({what}); entries that are not tensors: "
            f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}"
        )
    return dict(obj)


# ----------------------------------------------------------------------------- TMS checkpoints
def _meta_str(v: Any) -> str:
    return "null" if v is None else str(v)


def save_checkpoint(
    path: str | os.PathLike[str],
    w_or_model: Tensor | TMS,
    *,
    c: int,
    r: int,
    activation: str = "relu",
    gamma: float = 1.0,
    seed: int | None = None,
    step: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save flat TMS parameters (or a :class:`~slt_tms.tms.TMS` module) as a safetensors checkpoint.

    Parameters
    ----------
    path : path-like
        Destination; must end in ``.safetensors``. Parent directories are created. Written atomically.
    w_or_model : Tensor, shape ``(..., d)``, or TMS
        Flat parameters (layout of :func:`slt_tms.tms.pack`, any leading batch axes, any float dtype,
        stored bit-exactly) or a module (its ``c``, ``r`` must match).
    c, r : int
        Number of features and hidden dimensions.
    activation : {"relu", "linear", "swish"}
    gamma : float
        Swish sharpness.
    seed, step : int or None
        The seed that produced the parameters and the training step.
    extra : mapping, optional
        Anything JSON-serialisable (stored as the ``extra`` metadata entry).

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ckpt.safetensors"
    >>> w = torch.arange(6.0)
    >>> _ = save_checkpoint(p, w, c=2, r=2, seed=0, step=10)
    >>> w2, meta = load_checkpoint(p)
    >>> torch.equal(w, w2), meta["c"], meta["step"]
    (True, 2, 10)
    """
    from safetensors.torch import save_file

    validate_shape(c, r)
    activation_fn(activation, gamma)
    d = num_params(c, r)
    p = Path(path)
    if p.suffix not in _SAFETENSORS:
        raise ValueError(f"checkpoints are saved as safetensors: the path must end in .safetensors, got {p}")
    for name, v in (("seed", seed), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0):
            raise ValueError(f"{name} must be a non-negative integer or None, got {v!r}")
    if isinstance(w_or_model, TMS):
        if (w_or_model.c, w_or_model.r) != (c, r):
            raise ValueError(
                f"the module has c={w_or_model.c}, r={w_or_model.r} but c={c}, r={r} were given"
            )
        w = w_or_model.flat()
    elif isinstance(w_or_model, Tensor):
        w = w_or_model
    else:
        raise ValueError(f"expected a flat parameter Tensor or a TMS module, got {type(w_or_model).__name__}")
    if w.shape[-1:] != (d,) or not w.is_floating_point():
        raise ValueError(
            f"flat parameters for c={c}, r={r} must be a float tensor of shape (..., {d}); "
            f"got {w.dtype} {tuple(w.shape)}"
        )
    w = w.detach().cpu()
    tensors = {
        "W": w[..., : r * c].unflatten(-1, (r, c)).contiguous(),
        "b": w[..., r * c :].contiguous(),
    }
    try:
        extra_json = json.dumps(dict(extra) if extra is not None else {}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"extra must be JSON-serialisable (finite numbers, strings, lists, dicts): {exc}"
        ) from exc
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(CHECKPOINT_FORMAT_VERSION),
        "c": str(c),
        "r": str(r),
        "activation": activation,
        "gamma": repr(float(gamma)),
        "seed": _meta_str(None if seed is None else int(seed)),
        "step": _meta_str(None if step is None else int(step)),
        "extra": extra_json,
    }
    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return p


def _parse_int(meta: Mapping[str, Any], key: str, p: Path, *, optional: bool) -> int | None:
    v = meta.get(key)
    if v is None or v == "null":
        if optional:
            return None
        raise ValueError(f"{p}: checkpoint metadata lacks {key!r} (expected an integer)")
    try:
        if isinstance(v, bool):
            raise ValueError
        out = int(v)
        if isinstance(v, float) and out != v:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{p}: checkpoint metadata {key!r} must be an integer, got {v!r}") from None
    return out


def _parse_meta(raw: Mapping[str, Any], p: Path, W: Tensor) -> dict[str, Any]:
    """Typed metadata from raw (string or python) values; c and r default to W's shape."""
    fmt_version = _parse_int(raw, "format_version", p, optional=True)
    if fmt_version is not None and fmt_version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{p} has checkpoint format version {fmt_version}; this slt_tms reads versions <= "
            f"{CHECKPOINT_FORMAT_VERSION}. Upgrade slt_tms."
        )
    r_shape, c_shape = int(W.shape[-2]), int(W.shape[-1])
    c = _parse_int(raw, "c", p, optional=True)
    r = _parse_int(raw, "r", p, optional=True)
    c = c_shape if c is None else c
    r = r_shape if r is None else r
    activation = str(raw.get("activation", "relu"))
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{p}: unknown activation {activation!r} in metadata; allowed: {', '.join(ACTIVATIONS)}"
        )
    try:
        gamma = float(raw.get("gamma", 1.0))
    except (TypeError, ValueError):
        raise ValueError(f"{p}: metadata 'gamma' must be a number, got {raw.get('gamma')!r}") from None
    if not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"{p}: metadata 'gamma' must be a positive number, got {gamma!r}")
    extra: Any = raw.get("extra", {})
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: metadata 'extra' is not valid JSON: {exc}") from exc
    return {
        "c": c,
        "r": r,
        "activation": activation,
        "gamma": gamma,
        "seed": _parse_int(raw, "seed", p, optional=True),
        "step": _parse_int(raw, "step", p, optional=True),
        "format_version": fmt_version,
        "extra": extra,
    }


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Tensor, dict[str, Any]]:
    """Load a TMS checkpoint: flat parameters and typed metadata.

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file written by :func:`save_checkpoint`, or a ``.pt`` / ``.pth`` file holding a
        dict with tensors ``"W"`` ``(..., r, c)`` and ``"b"`` ``(..., c)`` and optionally a ``"meta"`` dict
        (read with ``torch.load(weights_only=True)`` only).

    Returns
    -------
    w : Tensor, shape ``(..., r c + c)``
        Flat parameters, bit-exact, in the stored dtype.
    meta : dict
        ``c``, ``r`` (int), ``activation`` (str), ``gamma`` (float), ``seed``, ``step`` (int or None),
        ``format_version`` (int or None for ``.pt``), ``extra`` (dict). For ``.pt`` files without
        metadata, ``c`` and ``r`` come from the shape of ``W``, ``activation="relu"``, ``gamma=1.0``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Unknown suffix, corrupt or truncated file, a pickle with code in it, missing ``W``/``b``, shapes
        inconsistent with each other or with the metadata.
    """
    p = _existing(path)
    suffix = p.suffix.lower()
    if suffix in _SAFETENSORS:
        tensors, raw = _read_safetensors(p)
    elif suffix in _TORCH:
        obj = _read_torch(p)
        if not isinstance(obj, Mapping):
            raise ValueError(f"{p} must hold a dict with tensors 'W' and 'b'; found a {type(obj).__name__}")
        raw = obj.get("meta", {})
        if not isinstance(raw, Mapping):
            raise ValueError(f"{p}: 'meta' must be a dict with keys {', '.join(_META_KEYS)}")
        tensors = {k: v for k, v in obj.items() if k != "meta"}
    else:
        raise _suffix_error(p, _SAFETENSORS + _TORCH, "a TMS checkpoint")

    missing = [k for k in ("W", "b") if k not in tensors]
    if missing:
        raise ValueError(
            f"{p}: missing tensor(s) {', '.join(map(repr, missing))}; a TMS checkpoint holds 'W' of shape "
            f"(..., r, c) and 'b' of shape (..., c); found keys {sorted(tensors)}"
        )
    W, b = tensors["W"], tensors["b"]
    if not isinstance(W, Tensor) or not isinstance(b, Tensor):
        raise ValueError(f"{p}: 'W' and 'b' must be tensors")
    if W.ndim < 2 or b.ndim < 1:
        raise ValueError(
            f"{p}: 'W' must have shape (..., r, c) and 'b' shape (..., c); got {tuple(W.shape)} and "
            f"{tuple(b.shape)}"
        )
    if raw.get("format") == CHECKPOINT_FORMAT:  # written by save_checkpoint: every key must be there
        missing = [k for k in ("format_version", *_META_KEYS) if k not in raw]
        if missing:
            raise ValueError(
                f"{p}: checkpoint metadata lacks {', '.join(map(repr, missing))}; expected the keys "
                f"format_version, {', '.join(_META_KEYS)}"
            )
    meta = _parse_meta(raw, p, W)
    c, r = meta["c"], meta["r"]
    try:
        validate_shape(c, r)
    except ValueError as exc:
        raise ValueError(f"{p}: invalid metadata: {exc}") from None
    lead = tuple(W.shape[:-2])
    if tuple(W.shape) != (*lead, r, c) or tuple(b.shape) != (*lead, c):
        raise ValueError(
            f"{p}: wrong shapes for c={c}, r={r}: expected 'W' {(*lead, r, c)} and 'b' {(*lead, c)}, "
            f"got {tuple(W.shape)} and {tuple(b.shape)}"
        )
    if W.dtype != b.dtype or not W.is_floating_point():
        raise ValueError(f"{p}: 'W' and 'b' must share one floating dtype; got {W.dtype} and {b.dtype}")
    return pack(W, b), meta


# ----------------------------------------------------------------------------- general files
def load_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load named tensors from a data file (e.g. a dataset ``x`` of shape ``(n, c)``).

    Supported: ``.safetensors``; ``.pt`` / ``.pth`` / ``.bin`` (``torch.load(weights_only=True)``, a
    tensor or a dict of tensors; a bare tensor is returned under the key ``"data"``); ``.npz``
    (numeric ``.npy`` members only, read without pickles; each header is checked against the member's
    size before anything is allocated, so a header that declares more data than the file holds is
    reported as truncated or corrupt).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; unknown suffix; corrupt file; entries that are not tensors / numeric arrays.
    """
    p = _existing(path)
    suffix = p.suffix.lower()
    if suffix in _SAFETENSORS:
        return _read_safetensors(p)[0]
    if suffix in _TORCH:
        return _tensor_dict(_read_torch(p, _SAVE_DATA), p, "a data file", allow_bare=True)
    if suffix in _NPZ:
        return _read_npz(p)
    raise _suffix_error(p, _SAFETENSORS + _TORCH + _NPZ, "tensors")


_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load the ``state_dict`` of a general :class:`torch.nn.Module` from a user's checkpoint file.

    ``.safetensors`` or ``.pt`` / ``.pth`` / ``.bin`` (``torch.load(weights_only=True)`` only). A training
    checkpoint that nests the weights under ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` (with
    other, non-tensor entries such as the epoch) is unwrapped; so is one with a single entry of another
    name that maps names to tensors (``{"net": ..., "optimizer": ..., "epoch": 3}``: an optimizer's state
    is not such an entry). Several such entries (``"net"`` and ``"ema"``) are refused, naming them: save
    the one to estimate alone. Whatever is unwrapped must still fit the model's keys and shapes exactly
    where it is loaded.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "lin.pt"
    >>> lin = torch.nn.Linear(3, 2)
    >>> torch.save({"epoch": 3, "state_dict": lin.state_dict()}, p)
    >>> sorted(load_state_dict_file(p))
    ['bias', 'weight']
    """
    p = _existing(path)
    suffix = p.suffix.lower()
    if suffix in _SAFETENSORS:
        return _read_safetensors(p)[0]
    if suffix not in _TORCH:
        raise _suffix_error(p, _SAFETENSORS + _TORCH, "a state_dict")
    obj = _read_torch(p)
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only=True never returns modules
        raise ValueError(f"{p} holds a whole module; save module.state_dict() instead")
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        nested = [k for k in _NESTED_STATE_KEYS if isinstance(obj.get(k), Mapping)]
        if not nested:  # another name: the one entry that maps names to tensors
            nested = [k for k, v in obj.items() if isinstance(v, Mapping) and v
                      and all(isinstance(t, Tensor) for t in v.values())]
            if len(nested) > 1:
                names = ", ".join(repr(k) for k in nested)
                raise ValueError(
                    f"{p} holds several state dicts ({names}): save the one to estimate alone, e.g. "
                    f"torch.save(checkpoint[{nested[0]!r}], path)"
                )
        if nested:
            obj = obj[nested[0]]
    return _tensor_dict(obj, p, "a state_dict: parameter name -> tensor")
