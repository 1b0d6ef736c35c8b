r"""Every loss of the TMS, defined once: empirical loss, its closed-form gradient, the exact one-hot
prefix-sum evaluator and the negative log posterior.

Loss (squared error, NOT halved; importance weights :math:`I_i`, all ones for the TMS paper):

.. math::

    L_n(w) = \frac1n \sum_{k=1}^n \sum_{i=1}^c I_i \,\bigl(x_{k,i} - f(x_k; w)_i\bigr)^2,
    \qquad f(x; w) = \mathrm{act}(W^\top W x + b).

Closed-form gradient (:func:`residual_and_grad`): with :math:`h = x W^\top`, :math:`z = h W + b`,
:math:`f = \mathrm{act}(z)` and :math:`\delta = \frac{2}{m} I \odot (f - x) \odot \mathrm{act}'(z)` on a
batch of :math:`m` rows,

.. math::

    \nabla_b L = \sum_k \delta_k, \qquad \nabla_W L = h^\top \delta + (\delta W^\top)^\top x ,

the decoder and the encoder path of the SAME matrix :math:`W`.

Posterior (prior :math:`N(0, I)`, the TMS paper's convention): :math:`U(w) = n L_n(w) + \tfrac12\lVert w
\rVert^2` (:func:`posterior_potential`).

The closed-form *population* loss (expectation over the one-hot distribution) is derived symbolically in
:mod:`slt_tms.theory.symbolic`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from slt_tms.tms.data import check_importance
from slt_tms.tms.model import forward, unpack

__all__ = [
    "OneHotSums",
    "empirical_loss",
    "empirical_value_and_grad",
    "posterior_potential",
    "residual_and_grad",
    "weighted_sq_error",
]


def weighted_sq_error(pred: Tensor, x: Tensor, importance: Tensor | None = None) -> Tensor:
    r"""Mean over samples of :math:`\sum_i I_i (x_i - \hat x_i)^2` (not halved).

    ``pred`` has shape ``(*B, n, c)``; ``x`` has shape ``(n, c)`` or ``(*B, n, c)``. Returns ``(*B,)``.

    Examples
    --------
    >>> float(weighted_sq_error(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])))
    0.5
    """
    if pred.shape[-1] != x.shape[-1]:
        raise ValueError(f"prediction and input widths differ: {pred.shape[-1]} vs {x.shape[-1]}")
    sq = (x - pred) ** 2
    if importance is not None:
        sq = sq * importance.to(sq)
    return sq.sum(-1).mean(-1)


def empirical_loss(
    w: Tensor,
    x: Tensor,
    c: int,
    r: int,
    activation: str = "relu",
    gamma: float = 1.0,
    importance: Tensor | None = None,
) -> Tensor:
    r"""Empirical loss :math:`L_n(w)` of flat parameters ``w (*B, d)`` on data ``x (n, c)``.

    .. math:: L_n(w) = \frac1n \sum_k \sum_i I_i (x_{k,i} - f(x_k; w)_i)^2

    Returns a tensor of shape ``(*B,)``, differentiable in ``w``.

    Examples
    --------
    >>> from slt_tms.tms.model import pack
    >>> w = pack(torch.zeros(2, 3), -torch.ones(3))   # everything dead: f = 0
    >>> x = torch.tensor([[0.5, 0.0, 0.0]])
    >>> float(empirical_loss(w, x, c=3, r=2))
    0.25
    """
    if importance is not None:
        importance = check_importance(importance, c)
    return weighted_sq_error(forward(w, x, c, r, activation, gamma), x, importance)


def residual_and_grad(
    w: Tensor, x: Tensor, scale: Tensor, c: int, r: int, activation: str = "relu", gamma: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""Residual :math:`f(x; w) - x` and the closed-form gradient of the weighted squared error.

    With :math:`h = x W^\top`, :math:`z = h W + b`, :math:`f = \mathrm{act}(z)` and
    :math:`\delta = \mathrm{scale} \odot (f - x) \odot \mathrm{act}'(z)` (``scale`` = :math:`2I/m` for the
    mean over :math:`m` rows of the importance-weighted squared error):

    .. math::

        \nabla_b = \sum_k \delta_k, \qquad
        \nabla_W = h^\top \delta + (\delta W^\top)^\top x .

    Vectorised over leading axes of ``w (*B, d)`` and ``x (*B, m, c)`` or ``(m, c)``; no autograd
    (tested against autograd). Returns ``(residual (*B, m, c), grad (*B, d))``; the residual lets a caller
    form the loss value without a second forward pass.

    Examples
    --------
    >>> from slt_tms.tms.model import pack
    >>> w = pack(torch.eye(2, 3), torch.zeros(3)).requires_grad_(True)
    >>> x = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
    >>> _, g = residual_and_grad(w.detach(), x, torch.tensor(2.0 / 5), c=3, r=2)
    >>> auto = torch.autograd.grad(empirical_loss(w, x, c=3, r=2), w)[0]
    >>> bool(torch.allclose(g, auto))
    True
    """
    W = w[..., : r * c].unflatten(-1, (r, c))
    b = w[..., r * c :]
    Wt = W.transpose(-1, -2)
    h = x @ Wt  # (*, m, r)
    z = (h @ W).add_(b.unsqueeze(-2))  # (*, m, c)
    if activation == "relu":
        residual = torch.relu(z).sub_(x)
        delta = residual * (z > 0)
    elif activation == "linear":
        residual = z - x
        delta = residual.clone()
    else:  # swish: f = z s, f' = s (1 + gamma z (1 - s)), s = sigmoid(gamma z)
        s = torch.sigmoid(gamma * z)
        fprime = s * (1.0 + gamma * z * (1.0 - s))
        residual = z * s - x
        delta = residual * fprime
    delta.mul_(scale)
    grad_W = h.transpose(-1, -2) @ delta + (delta @ Wt).transpose(-1, -2) @ x
    return residual, torch.cat([grad_W.flatten(-2), delta.sum(-2)], dim=-1)


def empirical_value_and_grad(
    c: int, r: int, activation: str = "relu", gamma: float = 1.0, weight: float = 1.0
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    r"""Closed-form value and gradient of the (scaled) TMS empirical loss, batched over chains.

    .. math::

        L_B(w) = \frac{\omega}{m} \sum_{k=1}^m \lVert \mathrm{act}(x_k W^\top W + b) - x_k\rVert^2

    (:math:`\omega` = ``weight``: 1 for :func:`empirical_loss`, :math:`1/c` for ``F.mse_loss`` of a
    :class:`~slt_tms.tms.model.TMS` module on its own inputs). The gradient is :func:`residual_and_grad`;
    the value is the mean over rows of the squared residual it returns (no second forward pass).

    Returns ``vg(w (C, d), x) -> (loss (C,), grad (C, d))`` with ``x`` either shared ``(m, c)`` or per
    chain ``(C, m, c)``. Shapes are not re-validated per call (the caller checked them once).
    """
    scales: dict[tuple, Tensor] = {}

    def vg(w: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        m = x.shape[-2]
        key = (m, x.dtype, x.device)
        scale = scales.get(key)
        if scale is None:  # d/df of (w/m) sum_k |f_k - x_k|^2 is (2 w/m)(f - x)
            scale = scales[key] = torch.full((), 2.0 * weight / m, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            residual, grad = residual_and_grad(w.detach(), x, scale, c, r, activation, gamma)
            loss = residual.square_().sum(-1).mean(-1)
            if weight != 1.0:
                loss = loss.mul_(weight)
        return loss, grad

    return vg


def _assemble(A: Tensor, B: Tensor, s0: Tensor, s1: Tensor, s2: Tensor, tot2: Tensor) -> Tensor:
    """For :class:`OneHotSums`: the squared errors from the partial sums ``s0, s1, s2`` of ``1, mu, mu^2``
    over each block's active set and ``tot2``, the sum of ``mu^2`` per input feature."""
    delta = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    D = delta - A
    terms = delta * tot2 + (D * D - delta) * s2 - 2 * B * D * s1 + B * B * s0
    return terms.sum((-1, -2))


class _GroupConstants(NamedTuple):
    """What :class:`OneHotSums` needs per call besides the parameters, for chains on groups ``g``."""

    g: Tensor  # (M or 1, c, 1): the (dataset, size, input feature) group of every block row
    key_offset: Tensor  # float64 g * span + 1: where group g's keys start in the shared key array
    tot: Tensor  # (3, M or 1, c, 1): the sums of 1, mu, mu^2 over each group
    tot2: Tensor  # (M or 1,): the sum of all mu^2
    tiny_neg: Tensor  # the divisor where A = 0 (see OneHotSums._active_sums)
    eye: Tensor  # (c, c)


class OneHotSums:
    r"""Exact :math:`n L_n(w)` of one-hot data in :math:`O(c^2 \log n)` per chain (independent of ``n``).

    For one-hot inputs :math:`x_s = \mu_s e_{i_s}` the squared error of sample :math:`s` is
    :math:`\sum_j (\delta_{i_s j}\mu_s - \mathrm{ReLU}(\mu_s a_{i_s j} + b_j))^2`. For fixed
    :math:`(i, j)` the ReLU is active on a half-line of :math:`\mu` (:math:`\mu > -b/a` for :math:`a > 0`,
    :math:`\mu < -b/a` for :math:`a < 0`, all or nothing for :math:`a = 0`), where the term is
    :math:`((\delta - a)\mu - b)^2`, and :math:`\delta\mu^2` elsewhere. With the :math:`\mu`'s of feature
    :math:`i` sorted and prefix sums of :math:`1, \mu, \mu^2`, each :math:`(i, j)` block is a closed-form
    quadratic in the three partial sums over the active set, located by binary search. Differentiable in
    :math:`w` (the active set is locally constant), equal to :func:`empirical_loss` times ``n`` (tested).

    Parameters
    ----------
    X : Tensor, shape ``(K, n_max, c)``
        ``K`` one-hot datasets (ReLU TMS, all importance weights 1).
    sizes : sequence of int
        Nested subset sizes: ``total(w, k, h)`` sums over the first ``sizes[h]`` rows of ``X[k]``.

    Examples
    --------
    >>> from slt_tms.tms.data import OneHotUniform
    >>> X = OneHotUniform(3).sample(50, torch.Generator().manual_seed(0)).double()
    >>> sums = OneHotSums(X[None], [50])
    >>> w = torch.randn(2, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    >>> zero = torch.zeros(2, dtype=torch.long)
    >>> bool(torch.allclose(sums.total(w, zero, zero, 2), 50 * empirical_loss(w, X, 3, 2)))
    True
    """

    def __init__(self, X: Tensor, sizes: Sequence[int]) -> None:
        K, _, c = X.shape
        H = len(sizes)
        self.c = c
        feat = X.argmax(-1)  # (K, n_max)
        mu = X.amax(-1)
        counts = torch.zeros(K, H, c, dtype=torch.long, device=X.device)
        for h, m in enumerate(sizes):
            counts[:, h] = torch.nn.functional.one_hot(feat[:, :m], c).sum(1)
        P = int(counts.max())
        seq = torch.full((K, H, c, P), math.inf, dtype=X.dtype, device=X.device)
        for k in range(K):
            for h, m in enumerate(sizes):
                for i in range(c):
                    v = torch.sort(mu[k, :m][feat[k, :m] == i]).values
                    seq[k, h, i, : v.numel()] = v
        finite = torch.where(torch.isfinite(seq), seq, torch.zeros_like(seq))
        pad = (1, 0)
        self.seq = seq
        self.p0 = torch.nn.functional.pad(torch.isfinite(seq).to(X.dtype).cumsum(-1), pad)
        self.p1 = torch.nn.functional.pad(finite.cumsum(-1), pad)
        self.p2 = torch.nn.functional.pad((finite * finite).cumsum(-1), pad)
        self.counts = counts
        # One sorted key array for every (dataset, size, feature) group g, so a single binary search serves
        # every chain without copying its group's data: key = g * span + (mu + 1), padding just below the
        # next group. Thresholds are clamped to [-1, mu_max + 1] first (same count of mu < t: mu >= 0).
        self._num_groups, self._P = K * H * c, P
        self._mu_hi = float(finite.max()) + 1.0 if finite.numel() else 1.0
        self._span = self._mu_hi + 2.0
        off = torch.arange(self._num_groups, dtype=torch.float64, device=X.device) * self._span
        keys = torch.where(torch.isfinite(seq), seq, torch.full_like(seq, self._mu_hi + 0.5)).double()
        self._keys = (keys.reshape(self._num_groups, P) + 1.0 + off[:, None]).reshape(-1).contiguous()
        self._prefix = torch.stack([self.p0, self.p1, self.p2]).reshape(3, -1)  # (3, G (P + 1))
        prefixes = (self.p0, self.p1, self.p2)
        tot = torch.stack([pref.gather(-1, counts[..., None])[..., 0] for pref in prefixes])
        self._tot = tot.reshape(3, self._num_groups)  # (3, G): the sums of 1, mu, mu^2 per group
        self._cache: dict[tuple, _GroupConstants] = {}

    def _groups(self, kk: Tensor, hh: Tensor) -> Tensor:
        """Group index ``g (M, c, 1)`` of every chain's (dataset, size, input feature)."""
        H, c = self.counts.shape[1], self.c
        return ((kk * H + hh)[:, None] * c + torch.arange(c, device=kk.device)).reshape(-1, c, 1)

    def _constants(self, g: Tensor, dtype: torch.dtype) -> _GroupConstants:
        """What a call needs besides ``w`` for the chains of groups ``g`` (see :class:`_GroupConstants`)."""
        tot = self._tot[:, g].to(dtype)
        return _GroupConstants(
            g=g,
            key_offset=g.to(torch.float64) * self._span + 1.0,  # float64: float32 would blur the keys
            tot=tot,
            tot2=tot[2, :, :, 0].sum(-1),
            tiny_neg=torch.full((), -torch.finfo(dtype).tiny, dtype=dtype, device=g.device),
            eye=torch.eye(self.c, dtype=dtype, device=g.device),
        )

    def _prefix_at(self, t: Tensor, k: _GroupConstants) -> Tensor:
        """The prefix sums of ``1, mu, mu^2`` over the ``mu < t`` of group ``k.g``, shape ``(3, *t.shape)``:
        one binary search of all thresholds in the shared key array (its position is ``g P`` plus the
        count), then one gather from the flattened prefix sums (row ``g`` starts at ``g (P + 1)``)."""
        tk = t.to(torch.float64).clamp(-1.0, self._mu_hi).add_(k.key_offset)
        q = torch.searchsorted(self._keys, tk.reshape(-1)).reshape(t.shape)
        return self._prefix.index_select(1, (q + k.g).reshape(-1)).reshape(3, *t.shape).to(t.dtype)

    def _active_sums(self, A: Tensor, B: Tensor, k: _GroupConstants) -> Tensor:
        """The sums ``(3, M, c, c)`` of ``1, mu, mu^2`` over the active set of every block, for
        ``A = W^T W`` and ``B (M, 1, c)`` (the biases ``b_j``), both without gradient.

        The ReLU is active for ``mu > t`` where ``A > 0`` and for ``mu < t`` where ``A < 0``, ``t = -B/A``.
        Where ``A = 0`` it is on for all ``mu`` if ``b > 0`` and off otherwise: the smallest negative normal
        number as the divisor sends ``t`` to ``+inf`` (``b > 0``: all ``mu < t``) or ``-inf`` (``b < 0``:
        none) through the ``A < 0`` branch, and ``b = 0`` gives ``t = 0``: none.
        """
        if self._keys.device != A.device:
            raise ValueError(f"the one-hot sums are on {self._keys.device}, the parameters on {A.device}")
        A_div = torch.where(A != 0, A, k.tiny_neg)
        s = self._prefix_at(B.neg() / A_div, k)
        return torch.where(A_div > 0, k.tot - s, s)

    def total(self, w: Tensor, kk: Tensor, hh: Tensor, r: int) -> Tensor:
        r""":math:`\sum_s \lVert x_s - f(x_s; w)\rVert^2` over the first ``sizes[hh]`` rows of ``X[kk]``.

        ``w`` has shape ``(M, d)``; ``kk`` and ``hh`` (long, shape ``(M,)``) pick the dataset and the
        subset size of every row. Returns shape ``(M,)``, differentiable in ``w`` (the active sets are
        locally constant). Memory :math:`O(M c^2)`: one binary search over all groups, no per-row copy of
        the data.
        """
        W, b = unpack(w, self.c, r)
        A = W.transpose(-1, -2) @ W
        B = b[:, None, :].expand_as(A)  # expanded, not broadcast: one reduction in the backward pass
        k = self._constants(self._groups(kk, hh), w.dtype)
        s0, s1, s2 = self._active_sums(A.detach(), B.detach(), k).unbind(0)
        return _assemble(A, B, s0, s1, s2, k.tot[2])

    def value_and_grad(self, w: Tensor, kk: Tensor, hh: Tensor, r: int) -> tuple[Tensor, Tensor]:
        r""":meth:`total` and its gradient in closed form (no autograd).

        With :math:`D = I - A`, :math:`A = W^\top W`, :math:`B_{ij} = b_j` and the active-set sums
        :math:`s_0, s_1, s_2` (locally constant), the total is
        :math:`\sum_i T_i - \operatorname{tr} s_2 + \sum_{ij} (D \odot E + B \odot F)_{ij}` with
        :math:`E = D \odot s_2 - B \odot s_1`, :math:`F = B \odot s_0 - D \odot s_1` and :math:`T_i` the
        sum of :math:`\mu^2` over feature :math:`i`'s rows, so

        .. math::

            \partial/\partial A = -2E, \qquad
            \nabla_W = -2\, W (E + E^\top), \qquad
            \nabla_{b_j} = 2 \sum_i F_{ij}.

        Returns ``(total (M,), grad (M, d))``; equal to autograd through :meth:`total` (tested). About
        twenty tensor operations per call, whatever the number of chains.
        """
        return self._value_and_grad(w.detach(), r, self._constants(self._groups(kk, hh), w.dtype))

    def value_and_grad_at(self, w: Tensor, k: int, h: int, r: int) -> tuple[Tensor, Tensor]:
        """:meth:`value_and_grad` with every chain on dataset ``k`` at size ``sizes[h]`` (a potential)."""
        key = (k, h, w.dtype, w.device)
        consts = self._cache.get(key)
        if consts is None:
            idx = torch.tensor([k], device=w.device)
            consts = self._cache[key] = self._constants(self._groups(idx, idx * 0 + h), w.dtype)
        return self._value_and_grad(w.detach(), r, consts)

    def _value_and_grad(self, w: Tensor, r: int, k: _GroupConstants) -> tuple[Tensor, Tensor]:
        c, M = self.c, w.shape[0]
        W = w[:, : r * c].reshape(M, r, c)
        B = w[:, None, r * c :]  # (M, 1, c): b_j for every input i
        A = W.transpose(1, 2) @ W
        s0, s1, s2 = self._active_sums(A, B, k).unbind(0)
        D = k.eye - A
        E = D * s2 - B * s1
        F = B * s0 - D * s1
        value = (D * E + B * F - k.eye * s2).reshape(M, -1).sum(-1).add_(k.tot2)
        grad_W = (W @ (E + E.transpose(1, 2))).mul_(-2.0)
        return value, torch.cat([grad_W.reshape(M, r * c), F.sum(1).mul_(2.0)], dim=1)

    def total_one(self, w: Tensor, k: int, h: int, r: int) -> Tensor:
        r""":meth:`total` of many rows ``w (M, d)`` on ONE dataset ``k`` and subset size ``sizes[h]``
        (for importance weights over many draws and permutations)."""
        idx = torch.zeros(w.shape[0], dtype=torch.long, device=w.device)
        return self.total(w, idx + k, idx + h, r)


def posterior_potential(
    x: Tensor, c: int, r: int = 2, n: int | None = None, *, exact_one_hot: bool = False
) -> Callable[[Tensor], Tensor]:
    r"""Negative log posterior (up to a constant) of the TMS with prior :math:`N(0, I)`:

    .. math:: U(w) = n L_n(w) + \tfrac12 \lVert w\rVert^2,

    :math:`L_n` = :func:`empirical_loss` on the dataset ``x (n, c)``.

    Parameters
    ----------
    x : Tensor, shape ``(n, c)``
    c, r : int
    n : int, optional
        Multiplier of the loss (defaults to ``len(x)``; a different value tempers the posterior).
    exact_one_hot : bool
        Evaluate :math:`n L_n` with :class:`OneHotSums` (one-hot ReLU data; :math:`O(c^2\log n)` per
        chain, equal in value and gradient). Only with ``n`` = ``len(x)``.

    Returns
    -------
    callable ``U(w (K, d)) -> (K,)``, differentiable.
    """
    if x.ndim != 2 or x.shape[1] != c:
        raise ValueError(f"the dataset must have shape (n, c) with c = {c}; got {tuple(x.shape)}")
    nn_ = int(x.shape[0]) if n is None else int(n)
    if exact_one_hot:
        if nn_ != x.shape[0]:
            raise ValueError("exact_one_hot needs n = len(x) (no tempering)")
        sums = OneHotSums(x[None], [int(x.shape[0])])

        def fast(w: Tensor) -> Tensor:
            zeros = torch.zeros(w.shape[0], dtype=torch.long, device=w.device)
            return sums.total(w, zeros, zeros, r) + 0.5 * (w * w).sum(-1)

        return fast

    def potential(w: Tensor) -> Tensor:
        return nn_ * empirical_loss(w, x.to(w), c, r) + 0.5 * (w * w).sum(-1)

    return potential
