r"""Potentials of PyTorch models: any ``nn.Module`` (with a named loss or an ``evaluate`` hook), TorchScript
modules and HuggingFace-style causal language models.

The flat parameter vector :math:`w` concatenates the SELECTED parameters of the module (``params``
patterns, default every parameter with ``requires_grad``) in ``named_parameters()`` order, each flattened;
the other parameters and all buffers are held at their values in the module. The loss of one parameter
vector on a batch of rows is evaluated with :func:`torch.func.functional_call` and vectorised over chains
with :func:`torch.func.vmap` (a Python loop over chains where ``vmap`` cannot trace the model).

Losses
------
* ``loss="mse"``: :math:`\frac1m\sum_k \overline{(f(x_k; w) - y_k)^2}` (mean over all elements, as
  ``torch.nn.functional.mse_loss``); prediction and target must have the same shape (no broadcasting).
* ``loss="cross_entropy"``: mean of :math:`-\log \mathrm{softmax}(f(x_k; w))_{y_k}` over rows (class axis
  1, as ``torch.nn.functional.cross_entropy``); labels must lie in ``[0, num_classes)``.
* ``loss="causal_lm"``: next-token cross-entropy of a model that maps token ids ``(m, T)`` to logits
  ``(m, T, V)``, with labels ``(m, T)`` (rows ``(X,)``: the ids themselves; ``-100`` ignored): the mean
  over all predicted tokens, as per-row terms (a row's summed token loss over the data's mean number of
  predicted tokens per row), so that minibatches estimate it without bias.
* ``loss=callable(pred, target) -> scalar`` (mean over the batch).
* ``evaluate=callable(model, batch) -> loss`` (devinterp's convention; ``batch`` is whatever the data
  holds: tuples, dicts, several inputs). It may return a scalar tensor, an object or dict with a scalar
  ``loss`` (a HuggingFace ``ModelOutput`` of ``model(**batch, labels=...)``) or a tuple/list whose first
  element is the loss. :func:`causal_lm_loss` is such a hook for causal language models (dict batches
  with ``input_ids``, optional ``attention_mask`` and ``labels``).

A model that returns an object rather than a tensor (a ``ModelOutput``) is read at its ``.logits`` for
the named losses.

Rows ``(X,)`` mean target ``X`` (an autoencoder), ``(X, Y)`` inputs and targets, ``(X, Y, s)`` adds sample
weights :math:`s_k \ge 0` with a named loss: :math:`L_n = \sum_k s_k \ell_k / \sum_k s_k`, estimated on a
batch as :math:`\frac1m \sum_{k \in B} s_k \ell_k / \bar s` (:math:`\bar s` the mean weight over the full
data, so minibatches stay unbiased). More tensors, or dict batches with a named loss, are refused (use
``evaluate=``): nothing in the data is silently ignored.

Train/eval mode
---------------
The model is sampled in **eval mode** on a copy (the caller's module is never changed): BatchNorm uses
its running statistics, dropout is off, so :math:`L` is a deterministic function of :math:`w` as the LLC
requires. Buffers (running statistics) are held fixed.

Vectorisation
-------------
A multilayer perceptron (an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations, on rows
of vectors, with a named loss) is evaluated for all chains in one batched pass and differentiated by
ordinary reverse mode (:mod:`slt_tms.potentials.sequential`; ``info["batched_perceptron"]``). Other models:
chains share one ``vmap`` over the parameters. Per-chain minibatches (``batch_size`` with in-memory
rows) are vmapped over the rows too; a model whose Python control flow looks at its input data
(HuggingFace models check ``input_ids`` for padding and build attention masks with data-dependent
branches) cannot be traced that way, and those batches are then evaluated chain by chain
(``info["grad_mode_per_chain"] == "loop"``). Shared batches (full batch, DataLoader batches) keep ``vmap``.

Linear models
-------------
A purely linear model (``nn.Linear`` layers in ``nn.Sequential`` containers, e.g. reduced-rank
regression or a deep linear network) with ``loss="mse"`` and tensor rows gets its full-batch loss and
gradient from sufficient statistics of the data (:mod:`slt_tms.potentials.linear`): exact, and about as
cheap for :math:`10^4` rows as for a few (``info["full_batch"]`` says which path is used). So does the
restricted LLC of the last layers of an ``nn.Sequential`` when they are linear (``params=["4.*"]`` of an
MLP whose last child is ``nn.Linear``): the rest of the network is then a fixed feature map. Minibatches
and every other model go through the model itself.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from slt_tms.potentials.base import (
    FunctionalPotential,
    RestrictedPotential,
    _vmap_errors,
    check_float_dtype,
    restrict,
)
from slt_tms.potentials.data import DataSource
from slt_tms.potentials.linear import linear_full_batch, linear_layers
from slt_tms.potentials.named_losses import (
    _check_finite_rows,
    _check_named_rows,
    _check_targets,
    _named_loss_fn,
    _prediction,
    causal_lm_loss,
)
from slt_tms.potentials.sequential import mlp_batched, mlp_layers, mlp_value_and_grad
from slt_tms.validation import LOSSES, check_choice, check_device

__all__ = [
    "LOSSES",
    "causal_lm_loss",
    "from_module",
    "from_torchscript",
    "nonfinite_parameters",
    "select_parameters",
]


def nonfinite_parameters(module: nn.Module) -> list[str]:
    """The names of the module's floating parameters that hold NaN or inf (a checkpoint saved after the
    training diverged).

    Examples
    --------
    >>> net = nn.Linear(2, 1)
    >>> with torch.no_grad():
    ...     net.bias.fill_(float("nan"))
    Parameter containing:
    tensor([nan], requires_grad=True)
    >>> nonfinite_parameters(net)
    ['bias']
    """
    return [k for k, p in module.named_parameters() if p.is_floating_point() and not p.isfinite().all()]


def select_parameters(module: nn.Module, params: Sequence[str] | None) -> list[str]:
    """Names of the parameters to sample: those matching any ``fnmatch`` pattern of ``params``
    (e.g. ``["2.*"]``, ``["transformer.h.0.attn.*"]``), default every parameter with ``requires_grad``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> select_parameters(net, ["2.*"])
    ['2.weight', '2.bias']
    """
    names = [k for k, p in module.named_parameters()]
    if params is None:
        chosen = [k for k, p in module.named_parameters() if p.requires_grad]
    else:
        if isinstance(params, str):
            params = [params]
        chosen = [k for k in names if any(fnmatch.fnmatchcase(k, pat) for pat in params)]
        unmatched = [pat for pat in params if not any(fnmatch.fnmatchcase(k, pat) for k in names)]
        if unmatched:
            raise ValueError(
                f"no parameter matches {unmatched}; the module's parameters are: {', '.join(names)}"
            )
    if not chosen:
        raise ValueError(
            "no parameter to sample: the module has no trainable parameters, or params= selects none"
        )
    return chosen


class _Evaluate(nn.Module):
    """``forward(rows) = evaluate(model, rows)``: lets functional_call drive a devinterp-style hook."""

    def __init__(self, model: nn.Module, evaluate: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.evaluate = evaluate

    def forward(self, rows: Any) -> Tensor:
        out = self.evaluate(self.model, rows)
        if not isinstance(out, Tensor):
            loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
            if isinstance(loss, Tensor):
                out = loss  # e.g. a HuggingFace ModelOutput of model(**batch, labels=...)
            elif isinstance(out, tuple | list) and out:
                out = out[0]
        if not isinstance(out, Tensor) or out.ndim != 0:
            raise ValueError(
                "evaluate(model, batch) must return a scalar loss tensor, an object or dict with a scalar "
                "'loss' (e.g. a HuggingFace ModelOutput when labels are passed) or a tuple whose first "
                f"element is one; got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out


def from_module(
    module: nn.Module,
    data: Any,
    *,
    loss: str | Callable[[Tensor, Tensor], Tensor] | None = "mse",
    evaluate: Callable[..., Any] | None = None,
    params: Sequence[str] | None = None,
    masks: Mapping[str, Tensor] | None = None,
    n: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> FunctionalPotential | RestrictedPotential:
    r"""The potential :math:`L_n(w)` of an ``nn.Module`` on its training data (module docstring).

    Parameters
    ----------
    module : nn.Module
        The model at the anchor :math:`w^*` (a trained checkpoint). Not modified.
    data : tensors, tuple/dict of tensors, TensorDataset or DataLoader
        The training rows (a DataLoader is streamed batch by batch, never materialised).
    loss : {"mse", "cross_entropy", "causal_lm"} or callable(pred, target), optional
        Ignored when ``evaluate`` is given.
    evaluate : callable(model, batch) -> loss, optional
        devinterp's evaluation hook; the batch may have any structure.
    params : sequence of str, optional
        ``fnmatch`` patterns of the parameter names to sample (a restricted LLC); the others stay at
        :math:`w^*`. Default: every parameter with ``requires_grad``.
    masks : dict name -> bool Tensor, optional
        Element masks per parameter (devinterp's ``param_masks``): only True elements are sampled.
    n : int, optional
        Training-set size (default: the number of rows).
    device, dtype : optional
        Where and in which precision to evaluate (default: the module's; half precision is refused).

    Returns
    -------
    Potential

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    >>> X = torch.randn(50, 3); Y = torch.randn(50, 1)
    >>> pot = from_module(net, (X, Y), loss="mse")
    >>> pot.w_star.shape, pot.n
    (torch.Size([21]), 50)
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    first = next(iter(module.parameters()), None)
    if first is None:
        raise ValueError("the module has no parameters")
    dev = check_device(device) if device is not None else first.device
    dt = dtype or first.dtype
    check_float_dtype(dt, "the model's parameters" if dtype is None else "dtype")
    if evaluate is None and loss is None:
        raise ValueError("give loss= ('mse', 'cross_entropy' or a callable) or evaluate=fn(model, batch)")
    if evaluate is None and isinstance(loss, str):
        check_choice("loss", loss, LOSSES)
    model = copy.deepcopy(module).to(device=dev, dtype=dt).eval()
    target: nn.Module = model if evaluate is None else _Evaluate(model, evaluate)
    prefix = "" if evaluate is None else "model."
    chosen = select_parameters(model, params)
    named = dict(target.named_parameters())
    sel = [prefix + k for k in chosen]
    frozen = {k: v.detach() for k, v in named.items() if k not in set(sel)}
    buffers = {k: b.detach() for k, b in target.named_buffers()}
    shapes = [named[k].shape for k in sel]
    sizes = [named[k].numel() for k in sel]
    w_star = torch.cat([named[k].detach().reshape(-1) for k in sel]).clone()

    src = data if isinstance(data, DataSource) else DataSource(data, device=dev, dtype=dt, num_rows=n)
    probe = src.head(2)
    weights_mean = None
    all_targets = None
    if evaluate is None:
        _check_named_rows(probe, loss)
        if len(probe) == 3:
            if callable(loss):
                raise ValueError(
                    "sample weights (a third data tensor) need a named loss ('mse' or "
                    "'cross_entropy'); with a callable loss, weight inside evaluate="
                )
            weights_mean = _weights_mean(src)
        if not src.streaming:
            _check_finite_rows(tuple(src.rows))
            if len(probe) >= 2:
                all_targets = src.rows[1]
    per_row = None
    if evaluate is None:
        per_row = _named_loss_fn(loss, None if src.streaming else src.rows[1 if len(probe) >= 2 else 0])
    mean_weight = None if weights_mean is None else torch.tensor(weights_mean, dtype=dt, device=dev)

    def params(w: Tensor) -> dict[str, Tensor]:
        """The module's parameters at the flat point ``w`` (the unselected ones frozen)."""
        p = {k: t.view(s) for k, t, s in zip(sel, torch.split(w, sizes), shapes, strict=True)}
        p.update(frozen)
        return p

    def loss_terms(w: Tensor, rows: Any) -> Tensor:
        """``loss(prediction, target)``: per-row terms ``(m,)`` of a named loss, a callable's scalar."""
        y = rows[1] if len(rows) > 1 else rows[0]
        return per_row(_prediction(functional_call(target, (params(w), buffers), (rows[0],))), y)  # type: ignore[misc]

    def single(w: Tensor, rows: Any) -> Tensor:
        if evaluate is not None:
            return functional_call(target, (params(w), buffers), (rows,))
        ell = loss_terms(w, rows)
        if callable(loss):
            return ell
        if mean_weight is not None:
            return (ell * rows[2]).mean() / mean_weight
        return ell.mean()

    def row_terms(w: Tensor, rows: Any) -> Tensor:
        """Per-row terms ``(m,)`` of a named loss, whose mean is ``single(w, rows)``."""
        ell = loss_terms(w, rows)
        return ell if mean_weight is None else ell * rows[2] / mean_weight

    # probe: shapes, labels, finiteness, and whether vmap can trace the model
    with torch.no_grad():
        if evaluate is None:
            try:
                raw = functional_call(target, (params(w_star), buffers), (probe[0],))
            except Exception as exc:
                first_line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
                shape = tuple(probe[0].shape[1:]) if src.streaming else tuple(src.rows[0].shape)
                hint = (
                    f" (the inputs are {str(probe[0].dtype).replace('torch.', '')}: a model with floating "
                    "weights needs floating inputs, e.g. X.float()"
                    + (" or X.float() / 255 for 8-bit images" if probe[0].dtype == torch.uint8 else "")
                    + "; integer token ids go to an embedding)"
                    if not probe[0].is_floating_point() and "type" in first_line.lower()
                    else ""
                )
                raise ValueError(
                    f"the model cannot be applied to the inputs of shape {shape} (rows of shape "
                    f"{tuple(probe[0].shape[1:])}): {type(exc).__name__}: {first_line}{hint}"
                ) from exc
            pred = _prediction(raw)
            if not callable(loss):
                _check_targets(pred, probe[1] if len(probe) > 1 else probe[0], loss, all_targets)
        value = single(w_star, probe)
    if callable(loss) and evaluate is None and (not isinstance(value, Tensor) or value.ndim != 0):
        raise ValueError(
            "a loss callable loss(prediction, target) must return the mean loss over the batch, a scalar "
            f"tensor; got {getattr(value, 'shape', type(value).__name__)} (per-row losses? reduce them "
            "with .mean())"
        )
    if not bool(torch.isfinite(value)):
        bad = nonfinite_parameters(module)
        if bad:
            more = " ..." if len(bad) > 5 else ""
            raise ValueError(
                f"the model's parameters hold NaN or inf ({', '.join(bad[:5])}{more}): w* must be finite; "
                "load a checkpoint from before the training diverged"
            )
        raise ValueError(f"the loss at w* is not finite ({float(value)}) on the first rows of the data")
    # linear layers under MSE (the whole model, or a linear tail holding every sampled parameter): the full
    # batch from sufficient statistics; a purely linear model always vmaps, so it needs no probe below
    full_batch = None
    if evaluate is None and loss == "mse" and not src.streaming:
        full_batch = linear_full_batch(model, chosen, frozen, src)
    skip_probes = full_batch is not None and linear_layers(model) is not None
    # a multilayer perceptron on rows of vectors: every chain in one batched pass (sequential.py), checked
    # against the generic path on the probe rows
    batched = manual = None
    layers = mlp_layers(model) if evaluate is None and loss in ("mse", "cross_entropy") else None
    if layers is not None and probe[0].ndim == 2:
        candidate = mlp_batched(layers, chosen, frozen, loss, mean_weight)
        with torch.no_grad():
            same = torch.allclose(candidate(w_star.unsqueeze(0), probe)[0], value, rtol=1e-4, atol=1e-6)
        if same:
            batched, skip_probes = candidate, True
            manual = _checked_manual_gradient(
                mlp_value_and_grad(layers, chosen, frozen, loss, mean_weight), candidate, w_star, probe
            )
    grad_mode, grad_mode_per_chain = ("vmap" if batched is None else "autograd"), None
    vmap_error = ""
    if not skip_probes:  # models with data-dependent control flow: loop over chains instead
        shared, per_chain = _vmap_errors(single, w_star, probe, not src.streaming)
        if shared is not None:
            grad_mode, vmap_error = "loop", shared
        elif per_chain is not None:
            # per-chain minibatches vmap over the rows as well: models whose control flow looks at the input
            # data (HuggingFace models check input_ids for padding, build masks from attention_mask) cannot
            # be traced that way; those batches then go chain by chain
            grad_mode_per_chain, vmap_error = "loop", "per-chain batches: " + per_chain
    what = (
        "evaluate hook" if evaluate is not None else f"loss={loss if isinstance(loss, str) else 'callable'}"
    )
    info = {
        "source": "nn.Module",
        "module": type(module).__name__,
        "loss": None if evaluate is not None else (loss if isinstance(loss, str) else "callable"),
        "evaluate": None if evaluate is None else getattr(evaluate, "__name__", "callable"),
        "parameters": chosen,
        "num_parameters": int(w_star.numel()),
        "mode": "eval",
        "sample_weights": weights_mean is not None,
        "grad_mode": grad_mode,
        "grad_mode_per_chain": grad_mode_per_chain or grad_mode,
        "batched_perceptron": batched is not None,
        "manual_gradient": manual is not None,
        "data": src.describe(),
    }
    if vmap_error:
        info["vmap_error"] = vmap_error
    info["full_batch"] = "sufficient statistics (linear layers, mse)" if full_batch is not None else "model"
    pot = FunctionalPotential(
        w_star=w_star,
        n=src.num_rows if n is None else int(n),
        data=src,
        description=f"nn.Module {type(module).__name__} ({w_star.numel()} parameters), {what}"
        + (" (linear layers: exact full batch from sufficient statistics)" if full_batch is not None else ""),
        single=single,
        batched=batched,
        batched_per_chain=batched is not None,
        closed_form=manual,
        full_batch=full_batch,
        grad_mode=grad_mode,
        grad_mode_per_chain=grad_mode_per_chain,
        row_losses=row_terms if evaluate is None and isinstance(loss, str) else None,
        info=info,
    )
    if masks:
        return restrict(pot, _mask_vector(masks, chosen, model), tuple(sorted(masks)))
    return pot


def _checked_manual_gradient(
    manual: Callable[[Tensor, Any], tuple[Tensor, Tensor]] | None,
    batched: Callable[[Tensor, Any], Tensor],
    w_star: Tensor,
    probe: Any,
) -> Callable[[Tensor, Any], tuple[Tensor, Tensor]] | None:
    """The perceptron's hand-written gradient where it agrees with autograd of the batched loss on the probe
    rows, at w* and at a point beside it (relative 1e-4 of the gradient's scale), else None."""
    if manual is None:
        return None
    g = torch.Generator(device="cpu").manual_seed(0)
    jitter = torch.randn(w_star.shape, generator=g, dtype=torch.float64, device="cpu").to(w_star)
    w = torch.stack([w_star, w_star + 0.1 * jitter * (w_star.abs().mean() + 1e-3)])
    try:
        val, grad = manual(w, probe)
        wr = w.detach().requires_grad_(True)
        with torch.enable_grad():
            ref_val = batched(wr, probe)
            (ref_grad,) = torch.autograd.grad(ref_val.sum(), wr)
    except Exception:  # the hand-written pass does not fit these rows: autograd then
        return None
    scale = float(ref_grad.abs().max()) + 1e-12
    ok = torch.allclose(val, ref_val.detach(), rtol=1e-4, atol=1e-6) and bool(
        ((grad - ref_grad).abs() <= 1e-4 * scale).all()
    )
    return manual if ok else None


def _weights_mean(src: DataSource) -> float:
    total, rows = 0.0, 0
    for part, m in src.chunks(8192):
        s = part[2]
        if s.shape != (m,) or not s.is_floating_point():
            raise ValueError(
                f"sample weights (the third data tensor) must be a float tensor of shape (n,); "
                f"got {tuple(s.shape)} {s.dtype}"
            )
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError("sample weights must be finite and non-negative")
        total += float(s.sum())
        rows += m
    if not total > 0:
        raise ValueError("the sample weights sum to zero")
    return total / rows


def _mask_vector(masks: Mapping[str, Tensor], chosen: list[str], model: nn.Module) -> Tensor:
    named = dict(model.named_parameters())
    unknown = [k for k in masks if k not in chosen]
    if unknown:
        raise ValueError(f"masks for parameters that are not sampled: {unknown}; sampled: {chosen}")
    parts = []
    for k in chosen:
        p = named[k]
        m = masks.get(k)
        if m is None:
            parts.append(torch.ones(p.numel(), dtype=torch.bool, device="cpu"))
            continue
        m = torch.as_tensor(m, device="cpu")  # the mask vector is assembled on the CPU, moved by restrict()
        if m.dtype != torch.bool or m.shape != p.shape:
            raise ValueError(
                f"mask of {k!r} must be a boolean tensor of shape {tuple(p.shape)}, got "
                f"{m.dtype} {tuple(m.shape)}"
            )
        parts.append(m.reshape(-1))
    return torch.cat(parts)


def from_torchscript(
    module: torch.jit.ScriptModule,
    data: Any,
    *,
    loss: str = "mse",
    n: int | None = None,
    device: str | torch.device | None = None,
) -> FunctionalPotential:
    r"""The potential of a TorchScript module over its flat parameters.

    ``torch.func.functional_call`` refuses TorchScript modules, so the module's ``forward`` graph is
    lowered to a function of ``(x, *parameters)`` (TorchScript's graph-lowering pass; parameters in the
    lowered order, which is the flat layout of :math:`w`) and the loss is vectorised over chains with
    :func:`torch.func.vmap`: :math:`L(w) = \mathrm{loss}(f(X; w), Y)` (mean over rows).

    Loading an archive runs its code: load it with :func:`slt_tms.io.user_models.load_torchscript` only if
    you trust it.
    """
    check_choice("loss", loss, LOSSES)
    try:
        graph, params = torch._C._jit_pass_lower_graph(module.forward.graph, module._c)
        fn = torch._C._create_function_from_graph("forward", graph)
    except Exception as exc:  # pragma: no cover - depends on the archive
        raise ValueError(f"cannot turn the TorchScript module's forward into a function: {exc}") from exc
    params = [p.detach() for p in params]
    if not params:
        raise ValueError("the TorchScript module has no parameters")
    dev = check_device(device) if device is not None else params[0].device
    check_float_dtype(params[0].dtype, "the TorchScript module's parameters")
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    w_star = torch.cat([p.reshape(-1) for p in params]).to(dev)
    src = (
        data if isinstance(data, DataSource) else DataSource(data, device=dev, dtype=w_star.dtype, num_rows=n)
    )
    probe = src.head(2)
    _check_named_rows(probe, loss)
    if len(probe) == 3:
        raise ValueError("sample weights are not supported for TorchScript potentials")
    per_row = _named_loss_fn(loss, None if src.streaming else src.rows[1 if len(probe) >= 2 else 0])

    def single(w: Tensor, rows: Any) -> Tensor:
        x = rows[0]
        y = rows[1] if len(rows) > 1 else rows[0]
        pieces = [t.view(s) for t, s in zip(torch.split(w, sizes), shapes, strict=True)]
        return per_row(fn(x, *pieces), y).mean()

    with torch.no_grad():
        pieces = [t.view(s) for t, s in zip(torch.split(w_star, sizes), shapes, strict=True)]
        pred = fn(probe[0], *pieces)
        _check_targets(
            pred,
            probe[1] if len(probe) > 1 else probe[0],
            loss,
            None if src.streaming or len(probe) < 2 else src.rows[1],
        )
    return FunctionalPotential(
        w_star=w_star,
        n=src.num_rows if n is None else int(n),
        data=src,
        description=f"TorchScript module ({w_star.numel()} parameters), loss={loss}",
        single=single,
        info={
            "source": "torchscript",
            "loss": loss,
            "data": src.describe(),
            "num_parameters": int(w_star.numel()),
        },
    )
