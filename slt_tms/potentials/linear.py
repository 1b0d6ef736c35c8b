r"""The exact full-batch loss of a purely linear model under MSE, from sufficient statistics.

A model that is a chain of affine layers (``nn.Linear``, possibly inside nested ``nn.Sequential``
containers with ``nn.Identity``) computes :math:`f(x; w) = \tilde M(w)\,\tilde x` with
:math:`\tilde x = (x, 1)` and the augmented product

.. math::

    \begin{pmatrix} \tilde M \\ 0 \;\; 1 \end{pmatrix} = \tilde A_L \cdots \tilde A_1, \qquad
    \tilde A_l = \begin{pmatrix} W_l & b_l \\ 0 & 1 \end{pmatrix}

(:math:`b_l = 0` for a layer without bias). Reduced-rank regression and deep linear networks are such
models. With sample weights :math:`s_i` (1 without), :math:`N = \sum_i s_i`, :math:`k` outputs and the
residuals :math:`r_i = y_i - \tilde M^* \tilde x_i` at the anchor, the MSE loss (mean over rows and
outputs, as ``torch.nn.functional.mse_loss``) is, with :math:`\Delta = \tilde M(w) - \tilde M^*`,

.. math::

    L_n(w) = L_n(w^*) + \frac{1}{Nk}\Bigl(\operatorname{tr}(\Delta S_{xx}\Delta^\top)
             - 2\operatorname{tr}(\Delta S_{xr})\Bigr), \qquad
    S_{xx} = \sum_i s_i \tilde x_i \tilde x_i^\top,\quad S_{xr} = \sum_i s_i \tilde x_i r_i^\top,

an identity, not an approximation: the data enter only through :math:`S_{xx}`, :math:`S_{xr}` and
:math:`L_n(w^*)`, computed once in float64. Its gradient in :math:`\tilde M` is
:math:`G = \frac{2}{Nk}(\Delta S_{xx} - S_{xr}^\top)`, and with the padded :math:`\tilde G = (G; 0)` the
gradient in layer :math:`l` is :math:`(\tilde A_L\cdots\tilde A_{l+1})^\top\,\tilde G\,
(\tilde A_{l-1}\cdots\tilde A_1)^\top`, whose blocks are :math:`\nabla W_l` and :math:`\nabla b_l`.
A full-batch gradient then costs :math:`O(C\sum_l h_l h_{l-1}\,(p+1))` for :math:`C` chains instead of
:math:`O(C\,n\sum_l h_l h_{l-1})`: on :math:`10^4` rows, about the cost of a handful of rows. Writing the
loss around :math:`w^*` keeps its differences (of order :math:`1/n`, what the LLC is made of) free of
cancellation.

The same holds after a fixed head: when an ``nn.Sequential`` ends in such layers (:func:`linear_tail`)
and only their parameters are sampled (a restricted LLC of the last layers, ``params=["4.*"]``), the
head's outputs :math:`h(x_i)` are fixed features and take the place of :math:`x_i` above (computed once,
with the model in eval mode).

:func:`linear_full_batch` returns this evaluator when the model, the loss and the data allow it, and None
otherwise; minibatches always go through the model itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from slt_tms.potentials.base import ANCHOR_CHUNK
from slt_tms.potentials.data import DataSource

__all__ = ["global_hooks", "linear_full_batch", "linear_layers", "linear_tail", "sequential_leaves"]

#: Largest augmented input width p + 1 for which the Gram matrix is kept (float64: at most 32 MB).
MAX_GRAM_WIDTH = 2048


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def global_hooks() -> bool:
    """Whether forward (pre-)hooks are registered for every module (``register_module_forward_hook``):
    they would change any model's forward pass, so the structural fast paths are refused.

    Examples
    --------
    >>> global_hooks()
    False
    """
    from torch.nn.modules import module as _module

    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)


def sequential_leaves(
    m: nn.Module, kinds: tuple[type[nn.Module], ...], prefix: str = ""
) -> list[tuple[str, nn.Module]] | None:
    """The leaf modules ``(qualified name, module)`` of ``m`` in forward order (``m`` itself, or the leaves
    of an ``nn.Sequential`` tree), or None where a leaf is not exactly of one of the classes ``kinds`` (a
    subclass may change ``forward``) or a module has forward hooks or its own instance-level ``forward``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.Identity(), nn.Linear(2, 1)))
    >>> [name for name, _ in sequential_leaves(net, (nn.Linear, nn.Identity))]
    ['0', '1.0', '1.1']
    >>> sequential_leaves(net, (nn.Linear,)) is None
    True
    """
    if _has_hooks(m) or "forward" in vars(m):
        return None
    if type(m) in kinds:
        return [(prefix, m)]
    if type(m) is not nn.Sequential:
        return None
    found: list[tuple[str, nn.Module]] = []
    for key, sub in m.named_children():
        leaves = sequential_leaves(sub, kinds, f"{prefix}.{key}" if prefix else key)
        if leaves is None:
            return None
        found += leaves
    return found


def _affine(m: nn.Module, prefix: str = "") -> list[tuple[str, nn.Linear]] | None:
    """The ``nn.Linear`` layers of ``m`` if it is purely linear (Linear and Identity only), else None."""
    leaves = sequential_leaves(m, (nn.Linear, nn.Identity), prefix)
    return None if leaves is None else [(k, layer) for k, layer in leaves if type(layer) is nn.Linear]


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]] | None:
    """The affine layers ``(qualified name, layer)`` of a purely linear model, in forward order, or None.

    A purely linear model is an ``nn.Linear``, or an ``nn.Sequential`` (nested ones included) of
    ``nn.Linear`` and ``nn.Identity`` only, of exactly those classes (a subclass may change ``forward``)
    and without forward hooks.

    Examples
    --------
    >>> [name for name, _ in linear_layers(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 3)))]
    ['0', '1']
    >>> linear_layers(nn.Sequential(nn.Linear(3, 2), nn.ReLU())) is None
    True
    """
    found = None if global_hooks() else _affine(model)
    return found or None


def linear_tail(model: nn.Module) -> tuple[list[nn.Module], list[tuple[str, nn.Linear]]] | None:
    """``(head, layers)``: the model as a fixed head followed by its longest purely linear tail, or None.

    A purely linear model has an empty head. An ``nn.Sequential`` whose last children are purely linear
    (:func:`linear_layers`) splits into the children before them (the head, any modules) and the affine
    layers of the tail, named as in the whole model. Where only tail parameters are sampled, the head's
    output is a fixed feature matrix and the loss is a linear model's on it.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 1))
    >>> head, layers = linear_tail(net)
    >>> len(head), [name for name, _ in layers]
    (2, ['2', '3'])
    """
    layers = linear_layers(model)
    if layers is not None:
        return [], layers
    if type(model) is not nn.Sequential or _has_hooks(model) or global_hooks():
        return None
    children = list(model.named_children())
    start, parts = len(children), []  # the tail children[start:], grown backwards while they are linear
    while start > 0:
        key, child = children[start - 1]
        part = _affine(child, key)
        if part is None:
            break
        parts.insert(0, part)
        start -= 1
    found = [layer for part in parts for layer in part]
    return ([child for _, child in children[:start]], found) if found else None


def _augmented(weight: Tensor, bias: Tensor | None) -> Tensor:
    """``[[W, b], [0, 1]]`` of shape ``(C, out + 1, in + 1)`` from ``W (C, out, in)``, ``b (C, out)``."""
    C, out, inp = weight.shape
    top = torch.cat([weight, weight.new_zeros(C, out, 1) if bias is None else bias.unsqueeze(-1)], dim=-1)
    last = weight.new_zeros(C, 1, inp + 1)
    last[..., -1] = 1.0
    return torch.cat([top, last], dim=1)


def linear_full_batch(
    model: nn.Module,
    selected: Sequence[str],
    frozen: dict[str, Tensor],
    data: DataSource,
) -> Callable[[Tensor], tuple[Tensor, Tensor]] | None:
    r"""``vg(w (C, d)) -> (L_n (C,), grad (C, d))`` on the full data of a linear model under MSE, or None.

    Parameters
    ----------
    model : nn.Module
        The model at the anchor (its parameters define the frozen values and :math:`w^*`).
    selected : sequence of str
        The sampled parameter names, in the order of the flat vector :math:`w`.
    frozen : dict
        The other parameters, held at their values.
    data : DataSource
        In-memory rows ``(X,)``, ``(X, Y)`` or ``(X, Y, s)``: the full training data (the sample weights
        ``s`` as in :func:`~slt_tms.potentials.module.from_module`), read once in chunks.

    Returns
    -------
    callable or None
        None when the model is neither purely linear nor a fixed head with a linear tail that holds every
        sampled parameter (:func:`linear_tail`), the inputs (or the head's outputs) or targets are not
        matrices ``(n, p)`` / ``(n, k)``, or the Gram matrix would not be smaller than the data
        (:math:`p + 1 \ge n`, or :math:`p + 1 >` ``MAX_GRAM_WIDTH``).

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    >>> X, Y = torch.randn(100, 3, dtype=torch.float64), torch.randn(100, 1, dtype=torch.float64)
    >>> net = net.double()
    >>> vg = linear_full_batch(net, [k for k, _ in net.named_parameters()], {}, DataSource((X, Y)))
    >>> w = torch.cat([p.detach().reshape(-1) for p in net.parameters()])[None]
    >>> bool(torch.allclose(vg(w)[0], torch.nn.functional.mse_loss(net(X), Y).reshape(1)))
    True
    """
    split = linear_tail(model)
    if split is None or data.streaming or not isinstance(data.rows, tuple) or not 1 <= len(data.rows) <= 3:
        return None
    head, layers = split
    x = data.rows[0]
    y = data.rows[1] if len(data.rows) > 1 else x  # (X,): the target is X
    n = data.num_rows
    if (not head and x.ndim != 2) or y.ndim != 2 or not y.is_floating_point():
        return None
    p, k = layers[0][1].in_features, y.shape[1]
    if k != layers[-1][1].out_features:
        return None
    if not p + 1 < min(n, MAX_GRAM_WIDTH + 1):
        return None  # the Gram matrix would not be smaller than the data
    names = {f"{prefix}.{what}" if prefix else what for prefix, _ in layers for what in ("weight", "bias")}
    params = dict(model.named_parameters())
    sel = list(selected)
    if not set(sel) <= names:
        return None  # a sampled parameter in the head: the features are not fixed

    def features(rows_x: Tensor) -> Tensor | None:
        """The head's output on some rows (the inputs themselves without a head), or None if not (m, p)."""
        with torch.no_grad():
            for m in head:
                rows_x = m(rows_x)
        ok = isinstance(rows_x, Tensor) and rows_x.ndim == 2 and rows_x.shape[1] == p
        return rows_x if ok else None

    dev = x.device
    f64 = torch.float64
    shapes = [params[name].shape for name in sel]
    sizes = [params[name].numel() for name in sel]
    index = {name: i for i, name in enumerate(sel)}
    fixed = {name: t.detach().to(dev, f64) for name, t in frozen.items() if name in names}
    position = {prefix: i for i, (prefix, _) in enumerate(layers)}
    # affine: some layer has a bias (then augmented matrices with a column for it), else plain products
    affine = any(layer.bias is not None for _, layer in layers)
    extra = 1 if affine else 0
    q = p + extra
    slots = []  # per selected parameter: (layer, is its weight, the layer's output and input widths)
    for name in sel:
        prefix, _, what = name.rpartition(".")
        layer = layers[position[prefix]][1]
        slots.append((position[prefix], what == "weight", layer.out_features, layer.in_features))
    keys = [(f"{prefix}.weight", f"{prefix}.bias") if prefix else ("weight", "bias") for prefix, _ in layers]
    w_star = torch.cat([params[name].detach().reshape(-1) for name in sel]).to(dev, f64)

    def product(w: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The (augmented) layer matrices ``A_l`` and their prefix products ``A_l ... A_1``."""
        C = w.shape[0]
        pieces = torch.split(w, sizes, dim=1)

        def get(name: str) -> Tensor | None:
            if name in index:
                i = index[name]
                return pieces[i].reshape(C, *shapes[i])
            t = fixed.get(name)
            return None if t is None else t.expand(C, *t.shape)  # None: a layer without bias

        mats: list[Tensor] = []
        prefixes: list[Tensor] = []
        for weight_key, bias_key in keys:
            weight = get(weight_key)
            assert weight is not None
            a = _augmented(weight, get(bias_key)) if affine else weight
            mats.append(a)
            prefixes.append(a if not prefixes else torch.matmul(a, prefixes[-1]))
        return mats, prefixes

    # sufficient statistics, in float64 and in chunks of rows (memory bounded by the chunk)
    m_star = product(w_star[None])[1][-1][0, :k]
    sxx = torch.zeros(q, q, dtype=f64, device=dev)
    sxr = torch.zeros(q, k, dtype=f64, device=dev)
    rss = torch.zeros((), dtype=f64, device=dev)
    total_weight = torch.zeros((), dtype=f64, device=dev)
    for part, _ in data.chunks(ANCHOR_CHUNK):
        h = features(part[0])
        if h is None:
            return None  # the head does not give one feature row per input row
        xa = h.to(f64)
        if affine:
            xa = torch.cat([xa, xa.new_ones(xa.shape[0], 1)], dim=1)
        r = (part[1] if len(part) > 1 else part[0]).to(f64) - xa @ m_star.T
        s = part[2].to(f64).unsqueeze(-1) if len(part) == 3 else None
        sx = xa if s is None else xa * s
        sxx += sx.T @ xa
        sxr += sx.T @ r
        rss += (r.square() if s is None else r.square() * s).sum()
        total_weight += xa.shape[0] if s is None else s.sum()
    scale = 1.0 / (total_weight * k)
    anchor = rss * scale
    sxr_t = sxr.T.contiguous()

    def vg(w: Tensor) -> tuple[Tensor, Tensor]:
        C = w.shape[0]
        mats, prefixes = product(w.to(f64))
        delta = prefixes[-1][:, :k] - m_star
        ds = torch.matmul(delta, sxx)
        value = anchor + scale * ((ds - 2.0 * sxr_t) * delta).sum((1, 2))
        g = (2.0 * scale) * (ds - sxr_t)
        if affine:  # the augmented product's last row is constant
            g = torch.cat([g, g.new_zeros(C, 1, q)], dim=1)
        # d/dA_l = (A_L ... A_{l+1})^T G (A_{l-1} ... A_1)^T
        grads: list[Tensor] = [g] * len(mats)
        left = g
        for l in range(len(mats) - 1, -1, -1):
            grads[l] = left if l == 0 else torch.matmul(left, prefixes[l - 1].transpose(1, 2))
            if l:
                left = torch.matmul(mats[l].transpose(1, 2), left)
        out = [
            grads[l][:, :h, :i].reshape(C, -1) if weight else grads[l][:, :h, i]
            for l, weight, h, i in slots
        ]
        return value.to(w.dtype), torch.cat(out, dim=1).to(w.dtype)

    return vg
