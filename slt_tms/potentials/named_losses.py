r"""The named losses of a model's potential: per-row terms, their checks, and the causal-LM hook.

A named loss turns a model's prediction and a row's target into a per-row term :math:`r_k(w)` whose
mean over a batch's rows is the batch loss :math:`L_B(w) = \frac1{|B|}\sum_{k\in B} r_k(w)`:

* ``"mse"``: :math:`r_k = \frac1p \lVert f_w(x_k) - y_k\rVert^2` (the mean over the output's entries);
* ``"cross_entropy"``: :math:`r_k = -\log \mathrm{softmax}(f_w(x_k))_{y_k}` (classes on axis 1, as in
  torch; several positions per row are averaged);
* ``"causal_lm"``: next-token cross-entropy, for a model that maps token ids ``(m, T)`` to logits
  ``(m, T, V)``. Row :math:`k` predicts the positions :math:`V_k` whose label is not ``-100``; its term is
  its summed token loss over the mean number of predicted positions per row of the whole data,
  :math:`r_k = \frac{n}{N}\sum_{t \in V_k} -\log p_w(y_{k,t+1} \mid x_{k,\le t})` with
  :math:`N = \sum_k |V_k|`. The mean of the terms over all n rows is then the mean over all N predicted
  tokens (the language-model convention, and :func:`causal_lm_loss`'s on the full batch), and a
  minibatch's mean of terms estimates it without bias. For streamed data (a DataLoader) :math:`N` is not
  known in advance, and a batch's terms use the batch's own mean number of predicted positions per row.

:func:`causal_lm_loss` is the ``evaluate(model, batch)`` hook for dict batches (HuggingFace style, with an
``attention_mask``); its mean runs over the tokens of each batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slt_tms.validation import LOSSES, check_choice

__all__ = ["causal_lm_loss"]


def causal_lm_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    r"""Per-token next-token cross-entropy of a HuggingFace-style causal LM (an ``evaluate`` hook).

    ``batch["input_ids"]`` has shape ``(m, T)``; optional ``attention_mask`` ``(m, T)``, ``labels``
    (default: the inputs, with the positions where ``attention_mask`` is 0 ignored; ``-100`` marks ignored
    positions) and any other model inputs (``token_type_ids``, ``position_ids``, ...), passed on as
    keywords. The model is called as ``model(input_ids=..., attention_mask=..., ...)`` (never with
    ``labels``) and must return logits ``(m, T, V)`` (a tensor, an object with ``.logits``, or a tuple
    whose first element they are).

    .. math:: L = \frac{1}{|\{(k, t)\}|}\sum_{k,\,t < T} -\log p_w(y_{k,t+1} \mid y_{k,\le t})

    (the mean over the predicted positions that are not ignored, devinterp's convention for language
    models).
    """
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise ValueError(
            "a causal-LM batch must be a dict with 'input_ids' (and optionally 'attention_mask', 'labels')"
        )
    ids = batch["input_ids"]
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    logits = _prediction(out)
    labels = batch.get("labels")
    if labels is None:
        labels = ids
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def _prediction(out: Any) -> Any:
    """A model's prediction tensor: the output itself, its ``.logits`` (HuggingFace ``ModelOutput`` and
    similar objects) or the first element of a tuple/list output."""
    if isinstance(out, Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise ValueError(
        f"the model returned {type(out).__name__}, not a tensor of predictions (nor an object with a "
        "'.logits' tensor); pass evaluate=fn(model, batch) -> loss to say how to get the loss from it"
    )


def _named_loss_fn(
    loss: str | Callable[[Tensor, Tensor], Tensor], all_targets: Tensor | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-row losses ``(m,)`` of a named loss, or a callable's batch-mean loss (scalar).

    ``all_targets`` (the targets of all rows, ``None`` for streamed data) fixes ``"causal_lm"``'s mean
    number of predicted positions per row; an integer ``(n, T)`` tensor whose labels after the first
    position are all ``-100`` is refused (nothing to predict)."""
    if callable(loss):
        return loss
    check_choice("loss", loss, LOSSES)
    if loss == "mse":
        return lambda pred, y: (pred - y).square().reshape(pred.shape[0], -1).mean(1)
    if loss == "causal_lm":
        per_row = None
        if all_targets is not None and all_targets.ndim == 2 and not all_targets.is_floating_point():
            per_row = float((all_targets[:, 1:] != -100).sum()) / all_targets.shape[0]
            if per_row == 0:
                raise ValueError(
                    "loss='causal_lm': every label after the first position is -100, so there is no "
                    "token to predict; mark only the positions to skip (padding) with -100"
                )
        return lambda logits, ids: _next_token_rows(logits, ids, per_row)
    return lambda pred, y: F.cross_entropy(pred, y, reduction="none").reshape(pred.shape[0], -1).mean(1)


def _next_token_rows(logits: Tensor, ids: Tensor, per_row: float | None = None) -> Tensor:
    """Per-row next-token terms ``(m,)`` of logits ``(m, T, V)`` against token ids ``(m, T)``: each row's
    summed cross-entropy over the positions ``t < T - 1`` whose next label is not ``-100``, divided by
    ``per_row``, the data's mean number of such positions per row (``None``: this batch's mean)."""
    target = ids[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none", ignore_index=-100)
    counted = (target != -100).to(ce.dtype)
    if per_row is None:
        per_row_t = counted.sum(1).mean().clamp(min=1)
        return (ce * counted).sum(1) / per_row_t
    return (ce * counted).sum(1) / per_row


def _check_named_rows(rows: Any, loss: Any) -> None:
    if not isinstance(rows, tuple) or not 1 <= len(rows) <= 3:
        kind = type(rows).__name__ if not isinstance(rows, tuple) else f"{len(rows)} tensors"
        raise ValueError(
            f"with loss={loss!r} the data must be (X,), (X, Y) or (X, Y, sample_weights); got {kind}. "
            "For other batch structures (dicts, several inputs) pass evaluate=fn(model, batch) -> loss"
        )


def _check_finite_rows(rows: tuple[Tensor, ...]) -> None:
    """Refuse NaN or infinite values in in-memory data, naming the tensor and the first bad row, before the
    loss at :math:`w^*` is blamed for them."""
    for name, t in zip(("inputs (X)", "targets (Y)", "sample weights"), rows, strict=False):
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        bad = ~torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1) if t.ndim else ~torch.isfinite(t)
        if bool(bad.any()):
            where = bad.nonzero().reshape(-1)
            kind = "NaN" if bool(torch.isnan(t).any()) else "infinite values"
            raise ValueError(
                f"the data's {name} contain {kind} in {where.numel()} of {t.shape[0]} rows (the first: row "
                f"{int(where[0])}); remove or impute those rows"
            )


def _rows(t: Tensor | tuple[int, ...], n: int | None) -> str:
    """The shape of ``t`` with its row axis written as the data's ``n`` rows (``"n"`` when unknown), not
    the probe batch's few rows: ``(600, 3)``, ``(n,)``."""
    shape = tuple(t.shape) if isinstance(t, Tensor) else tuple(t)
    rest = ", ".join(map(str, shape[1:])) if len(shape) > 1 else ""
    return f"({'n' if n is None else n},{' ' + rest if rest else ''})"


def _looks_like_labels(pred: Tensor, targets: Tensor) -> bool:
    """Targets ``(m,)`` of whole numbers in ``[0, K)`` for predictions ``(m, K)``, K >= 2: class labels."""
    if pred.ndim != 2 or pred.shape[1] < 2 or targets.ndim != 1:
        return False
    t = targets.double()
    return bool(((t == t.round()) & (t >= 0) & (t < pred.shape[1])).all())


def _check_targets(pred: Tensor, y: Tensor, loss: Any, all_targets: Tensor | None) -> None:
    """Refuse shape broadcasting and out-of-range labels before any sampling (shapes are named with the
    data's number of rows)."""
    n = None if all_targets is None else int(all_targets.shape[0])
    if loss == "mse":
        if pred.shape != y.shape:
            if _looks_like_labels(pred, y if all_targets is None else all_targets):
                raise ValueError(
                    f"loss='mse': the model returns {_rows(pred, n)} but the targets {_rows(y, n)} are whole "
                    f"numbers in [0, {pred.shape[1] - 1}], class labels: use loss='cross_entropy' "
                    "(--loss cross_entropy)"
                )
            raise ValueError(
                f"loss='mse': the model's prediction has shape {_rows(pred, n)} but the targets have "
                f"{_rows(y, n)}; they would broadcast. Reshape the targets (e.g. Y.unsqueeze(-1) or "
                "Y.reshape(pred.shape)) so that they match"
            )
        if not y.is_floating_point():
            raise ValueError("loss='mse' needs floating targets; convert them with Y.float()")
    elif loss == "causal_lm":
        shape_ok = pred.ndim == 3 and tuple(y.shape) == tuple(pred.shape[:2]) and y.shape[1] >= 2
        if not shape_ok or y.is_floating_point():
            raise ValueError(
                "loss='causal_lm' needs a model that maps token ids (m, T) to logits (m, T, V) and integer "
                f"labels (m, T) with T >= 2 (usually the token ids themselves); got logits "
                f"{tuple(pred.shape)} and labels {tuple(y.shape)} ({str(y.dtype).replace('torch.', '')})"
            )
        labels = y if all_targets is None else all_targets
        bad = (labels != -100) & ((labels < 0) | (labels >= pred.shape[2]))
        if bool(bad.any()):
            raise ValueError(
                f"loss='causal_lm': labels must lie in [0, {pred.shape[2] - 1}] for a vocabulary of "
                f"{pred.shape[2]} (or be -100, ignored); found {int(labels[bad][0])}"
            )
    elif loss == "cross_entropy":
        if pred.ndim < 2 or pred.shape[1] < 2:
            raise ValueError(
                f"loss='cross_entropy' needs logits with a class axis of size >= 2 (axis 1); the model "
                f"returns shape {_rows(pred, n)}. For a single logit: in Python, evaluate= with "
                "binary_cross_entropy_with_logits; from the shell, a factory whose model outputs two logits "
                "(logit and 0, e.g. torch.cat([z, torch.zeros_like(z)], 1))"
            )
        if y.is_floating_point():
            if y.shape != pred.shape:
                raise ValueError(
                    f"loss='cross_entropy' with floating targets needs class probabilities of the logits' "
                    f"shape {_rows(pred, n)}; got {_rows(y, n)}. Integer class labels go as int64 "
                    "(Y.long(); a data file's integer y is read as labels)"
                )
        else:
            want = (pred.shape[0], *pred.shape[2:])
            if tuple(y.shape) != want:
                hint = (
                    "; for a language model's (m, T, V) logits with (m, T) token targets use "
                    "loss='causal_lm' (--loss causal_lm) or evaluate=causal_lm_loss (next-token "
                    "cross-entropy)"
                    if pred.ndim == 3 and y.ndim == 2 and tuple(y.shape) != (*want, 1)
                    else "; drop the last axis (Y.squeeze(-1), or store y with shape (n,))"
                    if tuple(y.shape) == (*want, 1)
                    else ""
                )
                raise ValueError(
                    f"loss='cross_entropy': integer labels for logits of shape {_rows(pred, n)} "
                    f"(classes on axis 1) must have shape {_rows(want, n)}; got "
                    f"{_rows(y, n)}{hint}"
                )
            if pred.ndim == 3 and pred.shape[1] == pred.shape[2]:  # (m, K, K): axis 1 or 2 the classes?
                warnings.warn(
                    f"loss='cross_entropy': logits of shape {tuple(pred.shape)} are read with the classes on "
                    "axis 1 (torch's convention); if they are a language model's (m, T, V) logits, use "
                    "loss='causal_lm' (--loss causal_lm) or permute them to (m, V, T)",
                    UserWarning,
                    stacklevel=4,
                )
            if y.dtype not in (torch.int64, torch.uint8):
                raise ValueError(
                    f"loss='cross_entropy': integer labels must be int64 (torch's cross-entropy takes no "
                    f"{str(y.dtype).replace('torch.', '')}); pass Y.long()"
                )
            labels = y if all_targets is None else all_targets
            lo, hi = int(labels.min()), int(labels.max())
            k = pred.shape[1]
            if lo < 0 or hi >= k:
                raise ValueError(
                    f"loss='cross_entropy': labels must lie in [0, {k - 1}] for {k} classes; found labels in "
                    f"[{lo}, {hi}]"
                )
