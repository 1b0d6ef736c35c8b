"""The reference the potential tests compare with: plain autograd through a copy of the module."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def autograd_loss_and_grad(
    net: nn.Module,
    w: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient at the flat vector ``w`` of the parameters ``names`` (default: all, in
    ``named_parameters()`` order), by autograd of ``loss_fn`` on a copy of ``net``. With ``weights`` the loss
    is the weighted mean over rows of the per-row mean squared error."""
    m = copy.deepcopy(net)
    params = dict(m.named_parameters())
    names = list(params) if names is None else list(names)
    sizes = [params[k].numel() for k in names]
    with torch.no_grad():
        for k, piece in zip(names, torch.split(w, sizes), strict=True):
            params[k].copy_(piece.view_as(params[k]))
    pred = m(X)
    if weights is None:
        val = loss_fn(pred, Y)
    else:
        val = ((pred - Y).square().mean(1) * weights).sum() / weights.sum()
    grads = torch.autograd.grad(val, [params[k] for k in names])
    return val.detach(), torch.cat([g.reshape(-1) for g in grads])
