r"""Batched numeric evaluation of the population loss from the stable pair-term formulas.

:func:`loss_arrays` evaluates :math:`L(W, b) = \frac1c \sum_{i,j} T_{\delta_{ij}}(W_i \cdot W_j, b_i)`
for numpy arrays or torch tensors with leading batch axes: the batch is broadcast, flattened and
evaluated in cache-sized chunks; the pair terms come from ``_stable`` (segment integrals without
cancellation), points whose loss is small against the rounding of their Gram matrix are re-evaluated
with a compensated Gram matrix, and torch inputs that require gradients go through an autograd
``Function`` whose derivatives are the stable segment formulas as well (exact to any order).
The public entry points are :func:`slt_tms.theory.symbolic.population_loss` and
:func:`slt_tms.theory.symbolic.population_loss_flat`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slt_tms.theory._codegen import numpy_indicator, torch_indicator
from slt_tms.theory._stable import gram_compensated, pair_diag, pair_off

__all__ = ["loss_and_grad_arrays", "loss_arrays", "loss_hessian_flat"]


# The loss of a batch of points is computed in chunks of points so that the c x c pair-term arrays and
# the dozens of temporaries of the pair-term formulas stay in cache (about 3x faster than whole-batch
# evaluation for 1e5 points at c = 6). A chunk holds fewer than this many pair entries, which keeps
# every temporary below torch's intra-op parallelism grain (32768 elements): for arrays this small,
# the thread synchronisation costs more than it gains (and a lot more on a loaded machine).
_CHUNK_ENTRIES = (1 << 15) - 1


@functools.lru_cache(maxsize=64)
def _offdiag_mask_cached(c: int, kind: str, dtype: Any, device: Any) -> Any:
    if kind == "torch":
        return 1.0 - torch.eye(c, dtype=dtype, device=device)
    return 1.0 - np.eye(c, dtype=dtype)


def _offdiag_mask(c: int, like: Any) -> Any:
    """1 - I (c x c) of like's dtype/device: zeroes the diagonal entries of the off-diagonal terms."""
    if isinstance(like, Tensor):
        return _offdiag_mask_cached(c, "torch", like.dtype, like.device)
    return _offdiag_mask_cached(c, "numpy", like.dtype, None)


def _gram(W: Any) -> Any:
    """a = W^T W for W (n, r, c): a sum of r outer products for small r (much faster than a batched
    matmul of tiny matrices), a matmul otherwise."""
    r = W.shape[-2]
    if r > 8:
        return W.swapaxes(-1, -2) @ W
    a = W[..., 0, :, None] * W[..., 0, None, :]
    for k in range(1, r):
        a = a + W[..., k, :, None] * W[..., k, None, :]
    return a


def _times_sym(W: Tensor, M: Tensor) -> Tensor:
    """W @ M for W (n, r, c) and a SYMMETRIC M (n, c, c): for small r, c row by row with reductions over
    the contiguous last axis, (W M)_{ki} = sum_j W_{kj} M_{ij}, so no temporary is larger than M
    (batched matmuls of tiny matrices are slow on CPU)."""
    r, c = W.shape[-2:]
    if r > 8 or c > 16:
        return W @ M
    return torch.stack([(W[..., k, None, :] * M).sum(-1) for k in range(r)], dim=-2)


def _expand_bias(b: Any, c: int) -> Any:
    """b_i as a contiguous (n, c, c) array over (output i, input j): same-shape operands are faster
    than broadcasting in the element-wise pair-term code."""
    if isinstance(b, Tensor):
        return b.unsqueeze(-1).expand(*b.shape, c).contiguous()
    return np.ascontiguousarray(np.broadcast_to(b[..., :, None], (*b.shape, c)))


def _diagonal(x: Any) -> Any:
    if isinstance(x, Tensor):
        return torch.diagonal(x, dim1=-2, dim2=-1)
    return np.diagonal(x, axis1=-2, axis2=-1)


def _loss_from_gram(a: Any, b: Any, a_lo: Any = None) -> Any:
    """L for a chunk from its Gram matrices a (n, c, c) (+ a_lo, the compensation) and b (n, c)."""
    ind = torch_indicator if isinstance(a, Tensor) else numpy_indicator
    c = a.shape[-1]
    off = pair_off(a, _expand_bias(b, c), ind, a_lo=a_lo)[0] * _offdiag_mask(c, a)
    diag = pair_diag(_diagonal(a), b, ind, a_lo=None if a_lo is None else _diagonal(a_lo))[0]
    return (off.sum((-1, -2)) + diag.sum(-1)) / c


# A point is re-evaluated with the compensated Gram matrix when its loss is below this times
# c (r + 2)^2 (max_i a_ii + max_i |b_i|)^2 (see _accurate_loss).
_COMPENSATE_BELOW = 4e-6


def _compensated_loss(W: Any, b: Any) -> Any:
    a_hi, a_lo = gram_compensated(W)
    return _loss_from_gram(a_hi, b, a_lo)


def _accurate_loss(W: Any, b: Any, a: Any, v_diag: Any, v_off: Callable[[], Any]) -> Any:
    r"""L for a chunk from the pair values of the rounded Gram matrix ``a``, re-evaluated with the
    compensated Gram matrix where that rounding could matter; ``nan`` / ``inf`` handling.

    ``v_diag`` (n, c) are the diagonal pair values, ``v_off()`` (n, c, c) the off-diagonal ones (asked
    for only when needed). The rounding of :math:`a_{ij}` (at most :math:`r u \max_i a_{ii}`,
    :math:`u` the unit roundoff) and of :math:`a_{ij} + b_i` (:math:`u\,|a_{ij} + b_i|`) are the only
    errors the pair formulas do not control. Since :math:`|\partial_a T| \le 2\sqrt{T/3}` and
    :math:`|\partial_b T| \le 2\sqrt{T}` (Cauchy-Schwarz), they change :math:`L` by at most about
    :math:`2 (r + 2) u S \sqrt{c L}` with :math:`S = \max_i a_{ii} + \max_i |b_i|`, i.e. by less than
    :math:`10^3 u L` unless :math:`L < 4\cdot 10^{-6}\, c\,(r + 2)^2 S^2`. Those points (near-perfect
    configurations, large inputs near kinks) are re-evaluated with the compensated Gram matrix of
    :func:`~slt_tms.theory._stable.gram_compensated`. The diagonal part :math:`D \le L` decides first:
    if :math:`D` is above the threshold for every point of the chunk, nothing is recomputed; if for
    none, the whole chunk is evaluated compensated directly (no plain off-diagonal pass). Then
    non-finite inputs give ``nan``, and a ``nan`` of finite inputs (an overflow; the loss is then above
    the float range) becomes ``inf``.
    """
    torch_ = isinstance(a, Tensor)
    c, r = W.shape[-1], W.shape[-2]
    if torch_:
        scale = _diagonal(a).amax(-1) + b.abs().amax(-1)
    else:
        scale = _diagonal(a).max(-1) + np.abs(b).max(-1)
    threshold = (_COMPENSATE_BELOW * c * (r + 2) ** 2) * scale * scale
    diag_sum = v_diag.sum(-1)
    sure = diag_sum >= c * threshold  # L >= D >= threshold: the plain value is accurate
    try:
        all_sure, none_sure = bool(sure.all()), not bool(sure.any())
    except RuntimeError:  # under torch.func.vmap (no data-dependent control flow)
        all_sure = none_sure = None
    if none_sure:
        L = _compensated_loss(W, b)
    else:
        L = ((v_off() * _offdiag_mask(c, a)).sum((-1, -2)) + diag_sum) / c
        need = L < threshold
        if all_sure is None:  # vmap: every point of the chunk, selected
            L = torch.where(need, _compensated_loss(W, b), L)
        elif not all_sure:
            if torch_:
                idx = need.nonzero()[:, 0]
                if idx.numel():
                    L = L.index_put((idx,), _compensated_loss(W[idx], b[idx]))
            else:
                idx = np.flatnonzero(need)
                if idx.size:
                    L[idx] = _compensated_loss(W[idx], b[idx])
    if torch_:
        finite = torch.isfinite(W).flatten(-2).all(-1) & torch.isfinite(b).all(-1)
        return torch.where(finite, torch.where(torch.isnan(L), torch.inf, L), torch.nan)
    finite = np.isfinite(W).all((-1, -2)) & np.isfinite(b).all(-1)
    return np.where(finite, np.where(np.isnan(L), np.inf, L), np.nan)


def _chunk_value(W: Any, b: Any) -> Any:
    """L for a chunk: W (n, r, c), b (n, c) -> (n,). numpy or torch (no autograd)."""
    ind = torch_indicator if isinstance(W, Tensor) else numpy_indicator
    c = W.shape[-1]
    with np.errstate(over="ignore", invalid="ignore"):  # overflow only when L itself overflows
        a = _gram(W)  # (n, c, c): a[i, j] = W_i . W_j  (output i, input j)
        v_diag = pair_diag(_diagonal(a), b, ind)[0]
        return _accurate_loss(W, b, a, v_diag, lambda: pair_off(a, _expand_bias(b, c), ind)[0])


def _chunk_value_and_grad(
    W: Tensor, b: Tensor, with_value: bool = True
) -> tuple[Tensor | None, Tensor, Tensor]:
    r"""L and its gradient for a chunk of torch points, from the stable pair-term formulas.

    With :math:`G_{ij} = \partial L / \partial a_{ij}` and :math:`a = W^\top W`,
    :math:`\partial L / \partial W = W (G + G^\top)`; :math:`\partial L/\partial b_i` sums the
    :math:`b`-derivatives of the pair terms of output :math:`i`. Plain differentiable torch operations
    (the value, when requested, is not differentiated: it is the output of the autograd Function).
    """
    c = W.shape[-1]
    a = _gram(W)
    bi = _expand_bias(b, c)
    a_diag = _diagonal(a)
    mask = _offdiag_mask(c, a)
    v_off, da_off, db_off = pair_off(a, bi, torch_indicator, value=with_value, grad=True)
    v_diag, da_diag, db_diag = pair_diag(a_diag, b, torch_indicator, value=with_value, grad=True)
    value = _accurate_loss(W, b, a, v_diag, lambda: v_off) if with_value else None
    G = (da_off * mask + da_diag.unsqueeze(-1) * (1.0 - mask)) / c  # diagonal from the diagonal term
    gW = _times_sym(W, G + G.transpose(-1, -2))
    gb = ((db_off * mask).sum(-1) + db_diag) / c
    return value, gW, gb


def _chunks(n: int, c: int) -> list[slice]:
    step = max(1, _CHUNK_ENTRIES // (c * c))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)] or [slice(0, 0)]


def _value_and_grad(W: Tensor, b: Tensor, with_value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    parts = [_chunk_value_and_grad(W[s], b[s], with_value) for s in _chunks(W.shape[0], W.shape[-1])]
    value = torch.cat([p[0] for p in parts]) if with_value else None
    return value, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])


class _PopulationLoss(torch.autograd.Function):
    """L(W, b) for flattened batches W (n, r, c), b (n, c), with derivatives from the stable formulas.

    Forward evaluates L and its gradient together (segment formulas of ``_stable``, chunked,
    no graph recorded). Backward reuses that gradient when grad mode is off during the backward pass
    (an ordinary ``.backward()``); when it is on (``create_graph=True``, ``torch.func`` transforms) it
    re-evaluates the derivative formulas with differentiable torch operations on the saved inputs,
    so Hessians and higher derivatives are exact too. ``jvp`` does the same for forward mode.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        return _value_and_grad(W, b, with_value=True)  # type: ignore[return-value]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        W, b = inputs
        _, gW, gb = output
        ctx.mark_non_differentiable(gW, gb)
        ctx.save_for_backward(W, b, gW, gb)
        ctx.save_for_forward(W, b)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        W, b, gW, gb = ctx.saved_tensors
        if torch.is_grad_enabled():
            _, gW, gb = _value_and_grad(W, b, with_value=False)
        return grad[:, None, None] * gW, grad[:, None] * gb

    @staticmethod
    def jvp(ctx: Any, W_t: Tensor | None, b_t: Tensor | None) -> tuple[Tensor, None, None]:
        W, b = ctx.saved_tensors
        _, gW, gb = _value_and_grad(W, b, with_value=False)
        out = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
        if W_t is not None:
            out = out + (gW * W_t).sum((-1, -2))
        if b_t is not None:
            out = out + (gb * b_t).sum(-1)
        return out, None, None


def loss_arrays(W: Any, b: Any) -> Any:
    """Broadcast, flatten the batch axes, evaluate in chunks, restore the batch shape."""
    torch_ = isinstance(W, Tensor)
    r, c = W.shape[-2:]
    if torch_:
        batch = torch.broadcast_shapes(W.shape[:-2], b.shape[:-1])
        W = W.expand(*batch, r, c).reshape(-1, r, c)
        b = b.expand(*batch, c).reshape(-1, c)
        if torch.is_grad_enabled() and (W.requires_grad or b.requires_grad):
            return _PopulationLoss.apply(W, b)[0].reshape(batch)
        with torch.no_grad():
            out = torch.cat([_chunk_value(W[s], b[s]) for s in _chunks(W.shape[0], c)])
        return out.reshape(batch)
    batch = np.broadcast_shapes(W.shape[:-2], b.shape[:-1])
    W = np.broadcast_to(W, (*batch, r, c)).reshape(-1, r, c)
    b = np.broadcast_to(b, (*batch, c)).reshape(-1, c)
    out = np.concatenate([_chunk_value(W[s], b[s]) for s in _chunks(W.shape[0], c)])
    return out.reshape(batch)


def loss_and_grad_arrays(
    W: Tensor, b: Tensor, with_value: bool = True
) -> tuple[Tensor | None, Tensor, Tensor]:
    """L (None unless ``with_value``) and its gradient for flattened torch batches ``W (n, r, c)``,
    ``b (n, c)``, without autograd: the stable segment formulas of the autograd Function, chunked."""
    with torch.no_grad():
        return _value_and_grad(W, b, with_value=with_value)


# Pair entries per chunk of the element-wise second derivatives (loss_hessian_flat): the autograd graph
# of the pair-term derivative formulas holds a few dozen temporaries of this many entries.
_HESSIAN_CHUNK_ENTRIES = 1 << 16


def _pair_second_derivatives(
    fn: Callable[..., Any], a: Tensor, b: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Element-wise ``(T_a, T_b, T_aa, T_ab, T_ba, T_bb)`` of a pair term at the entries ``(a, b)``.

    ``T_ab`` differentiates :math:`\partial_a T` in :math:`b`, ``T_ba`` differentiates
    :math:`\partial_b T` in :math:`a` (equal up to rounding; kept apart so the Hessian is the Jacobian
    of the gradient, as autograd gives it). The pair formulas are element-wise, so the gradient of the
    sum of a derivative array is the array of its element-wise derivatives; ``mask`` (0/1) multiplies
    the first derivatives before differentiating (the off-diagonal terms at the diagonal entries).
    """
    a = a.detach().requires_grad_(True)
    b = b.detach().requires_grad_(True)
    with torch.enable_grad():
        _, da, db = fn(a, b, torch_indicator, value=False, grad=True)
        if mask is not None:
            da, db = da * mask, db * mask
        daa, dab = torch.autograd.grad(da.sum(), (a, b), retain_graph=True, allow_unused=True)
        dba, dbb = torch.autograd.grad(db.sum(), (a, b), allow_unused=True)

    def val(x: Tensor | None) -> Tensor:
        return torch.zeros_like(a) if x is None else x.detach()

    return da.detach(), db.detach(), val(daa), val(dab), val(dba), val(dbb)


def loss_hessian_flat(W: Tensor, b: Tensor) -> Tensor:
    r"""Hessian of :math:`L` at one point ``W (r, c)``, ``b (c,)`` in the flat layout
    :math:`w = (\mathrm{vec}(W), b)` (rows of ``W`` first), without a batched autograd pass.

    With :math:`a = W^\top W`, the pair derivatives at :math:`(a_{ij}, b_i)` divided by :math:`c`
    (:math:`G = T_a/c`, :math:`A = T_{aa}/c`, :math:`B = T_{ab}/c`, :math:`B' = T_{ba}/c`,
    :math:`C = T_{bb}/c`; diagonal entries from the diagonal pair term) and :math:`S = A + A^\top`,
    :math:`W_p` the :math:`p`-th row of ``W``:

    .. math::

        \frac{\partial^2 L}{\partial W_{pk}\, \partial W_{ql}} &= \delta_{kl} \sum_j S_{kj} W_{pj} W_{qj}
            + S_{kl} W_{qk} W_{pl} + \delta_{pq} (G + G^\top)_{kl}, \\
        \frac{\partial^2 L}{\partial W_{pk}\, \partial b_m} &= \delta_{km} (B W_p)_k + B_{mk} W_{pm},
        \qquad
        \frac{\partial^2 L}{\partial b_m\, \partial W_{ql}} = \delta_{ml} (B' W_q)_m + B'_{ml} W_{qm}, \\
        \frac{\partial^2 L}{\partial b_m\, \partial b_n} &= \delta_{mn} \sum_j C_{mj}.

    The element-wise second derivatives come from differentiating the same stable derivative formulas
    that ``torch.autograd`` differentiates through :class:`_PopulationLoss` (same pieces on a
    boundary), so the result equals the autograd Hessian up to rounding (rows are the gradient
    components, columns the variables). Memory: the :math:`d \times d` result plus a few
    :math:`c \times c` arrays (:math:`d = rc + c`); the pair derivatives are taken in row chunks of
    about ``2**16`` entries. Time :math:`O(r^2 c^2)`.
    """
    W = W.detach()
    b = b.detach()
    r, c = W.shape
    d = r * c + c
    a = _gram(W[None])[0]
    bi = _expand_bias(b, c)
    mask = _offdiag_mask(c, a)
    G, A, B, Bp, C = (torch.empty_like(a) for _ in range(5))
    step = max(1, _HESSIAN_CHUNK_ENTRIES // c)
    for lo in range(0, c, step):
        s = slice(lo, min(lo + step, c))
        da, _, daa, dab, dba, dbb = _pair_second_derivatives(pair_off, a[s], bi[s], mask[s])
        G[s], A[s], B[s], Bp[s], C[s] = da, daa, dab, dba, dbb
    da, _, daa, dab, dba, dbb = _pair_second_derivatives(pair_diag, torch.diagonal(a), b, None)
    for M, v in ((G, da), (A, daa), (B, dab), (Bp, dba), (C, dbb)):
        M.diagonal().copy_(v)
        M /= c
    S = A + A.T
    Gs = G + G.T
    H = W.new_zeros(d, d)
    rc = r * c
    for p in range(r):
        rows = slice(p * c, (p + 1) * c)
        for q in range(r):
            blk = S * (W[q][:, None] * W[p][None, :])
            blk.diagonal().add_(S @ (W[p] * W[q]))
            if p == q:
                blk += Gs
            H[rows, q * c:(q + 1) * c] = blk
        blk = B.T * W[p][None, :]
        blk.diagonal().add_(B @ W[p])
        H[rows, rc:] = blk
        blk = Bp * W[p][:, None]
        blk.diagonal().add_(Bp @ W[p])
        H[rc:, rows] = blk
    H[rc:, rc:].diagonal().copy_(C.sum(1))
    return H
