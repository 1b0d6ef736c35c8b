r"""The Toy Model of Superposition (TMS).

Parameters :math:`w = (W, b)` with :math:`W \in \mathbb{R}^{r \times c}` (columns :math:`W_i` are the
feature vectors) and :math:`b \in \mathbb{R}^c`; :math:`d = rc + c`. The model is

.. math::

    f(x; w) = \mathrm{act}(W^\top W x + b),

with ONE weight matrix used both to encode (:math:`h = Wx`) and to decode (:math:`W^\top h`).

Flat parameters
---------------
Everything that samples or differentiates works on flat vectors ``w`` of shape ``(..., d)``; leading
axes are chains, grid points or model instances. The layout is ``w = concat(W.reshape(rc), b)`` with
``W`` in row-major order, i.e. ``w[j * c + i] = W[j, i]`` and ``w[rc + i] = b[i]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from slt_tms.validation import check_int

__all__ = [
    "ACTIVATIONS",
    "TMS",
    "activation_fn",
    "forward",
    "num_params",
    "pack",
    "unpack",
    "validate_shape",
]

Activation = Literal["relu", "linear", "swish"]
ACTIVATIONS: tuple[str, ...] = ("relu", "linear", "swish")


def validate_shape(c: int, r: int) -> None:
    """Check that ``c`` (features) and ``r`` (hidden dimensions) are positive integers.

    Raises
    ------
    ValueError
        If either is not an integer >= 1.
    """
    check_int("c (number of features)", c, minimum=1)
    check_int("r (hidden dimensions)", r, minimum=1)


def num_params(c: int, r: int) -> int:
    """Number of parameters ``d = r c + c`` of the TMS with ``c`` features and ``r`` hidden dims.

    Examples
    --------
    >>> num_params(6, 2)
    18
    """
    validate_shape(c, r)
    return r * c + c


def pack(W: Tensor, b: Tensor) -> Tensor:
    """Flatten ``(W, b)`` into ``w`` of shape ``(..., r c + c)``.

    Parameters
    ----------
    W : Tensor, shape ``(..., r, c)``
    b : Tensor, shape ``(..., c)``

    Examples
    --------
    >>> W = torch.arange(6.0).reshape(2, 3); b = torch.tensor([6.0, 7.0, 8.0])
    >>> pack(W, b)
    tensor([0., 1., 2., 3., 4., 5., 6., 7., 8.])
    """
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., r, c); got shape {tuple(W.shape)}")
    r, c = W.shape[-2:]
    if b.shape[-1:] != (c,):
        raise ValueError(f"b must have shape (..., c) with c = {c}; got shape {tuple(b.shape)}")
    batch = torch.broadcast_shapes(W.shape[:-2], b.shape[:-1])
    W = W.expand(*batch, r, c)
    b = b.expand(*batch, c)
    return torch.cat([W.reshape(*batch, r * c), b], dim=-1)


def unpack(w: Tensor, c: int, r: int) -> tuple[Tensor, Tensor]:
    """Split flat ``w`` of shape ``(..., r c + c)`` into ``W (..., r, c)`` and ``b (..., c)``.

    Views, not copies: gradients flow through.

    Examples
    --------
    >>> W, b = unpack(torch.arange(9.0), c=3, r=2)
    >>> W.shape, b.tolist()
    (torch.Size([2, 3]), [6.0, 7.0, 8.0])
    """
    d = num_params(c, r)
    if w.shape[-1:] != (d,):
        raise ValueError(
            f"flat parameters for c={c}, r={r} must have last dimension d = r*c + c = {d}; "
            f"got shape {tuple(w.shape)}"
        )
    W = w[..., : r * c].unflatten(-1, (r, c))
    b = w[..., r * c :]
    return W, b


def activation_fn(activation: str = "relu", gamma: float = 1.0) -> Callable[[Tensor], Tensor]:
    r"""Return the activation as a function.

    ``"relu"``: :math:`\max(z, 0)`; ``"linear"``: identity (the Elhage et al. linear baseline);
    ``"swish"``: :math:`\mathrm{swish}_\gamma(z) = z\,\sigma(\gamma z)`, an analytic approximation of
    ReLU that becomes exact as :math:`\gamma \to \infty`.
    """
    if activation == "relu":
        return torch.relu
    if activation == "linear":
        return lambda z: z
    if activation == "swish":
        if not (isinstance(gamma, int | float) and gamma > 0):
            raise ValueError(f"swish gamma must be a positive number, got {gamma!r}")
        g = float(gamma)
        return lambda z: z * torch.sigmoid(g * z)
    raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")


def forward(w: Tensor, x: Tensor, c: int, r: int, activation: str = "relu", gamma: float = 1.0) -> Tensor:
    r"""Functional TMS forward pass over flat parameters.

    .. math:: f(x; w) = \mathrm{act}(W^\top W x + b)

    Parameters
    ----------
    w : Tensor, shape ``(*B, d)``
        Flat parameters; ``*B`` are batch axes (chains / model instances).
    x : Tensor, shape ``(n, c)`` or ``(*B, n, c)``
        Inputs, one per row. A 2-D ``x`` is shared by every parameter vector.
    c, r : int
        Number of features and hidden dimensions.
    activation : {"relu", "linear", "swish"}
    gamma : float
        Sharpness of swish (ignored otherwise).

    Returns
    -------
    Tensor, shape ``(*B, n, c)``

    Examples
    --------
    >>> w = pack(torch.eye(2, 3), torch.zeros(3))
    >>> forward(w, torch.tensor([[1.0, 0.5, 0.2]]), c=3, r=2)
    tensor([[1.0000, 0.5000, 0.0000]])
    """
    W, b = unpack(w, c, r)
    if x.shape[-1:] != (c,):
        raise ValueError(f"inputs must have shape (..., n, c) with c = {c}; got {tuple(x.shape)}")
    act = activation_fn(activation, gamma)
    h = x @ W.transpose(-1, -2)  # (*B, n, r)
    return act(h @ W + b.unsqueeze(-2))


class TMS(nn.Module):
    r"""The toy model as an ``nn.Module``: one weight matrix ``W (r, c)`` and a bias ``b (c,)``.

    .. math:: f(x) = \mathrm{act}(W^\top W x + b)

    The encoder and decoder are the same :class:`~torch.nn.Parameter` ``W`` (never two aliased
    parameters), so ``len(list(model.parameters())) == 2``.

    Parameters
    ----------
    c : int
        Number of features (input = output dimension).
    r : int
        Hidden dimension.
    activation : {"relu", "linear", "swish"}
    gamma : float
        Sharpness of swish, :math:`z \sigma(\gamma z)`.
    init_scale : float
        Standard deviation of the Gaussian initialisation of ``W`` (``b`` starts at 0).
    generator : torch.Generator, optional
        Source of randomness for the initialisation; a fresh default-seeded one if None.

    Examples
    --------
    >>> model = TMS(5, 2, generator=torch.Generator().manual_seed(0))
    >>> model(torch.rand(4, 5)).shape
    torch.Size([4, 5])
    >>> model.flat().shape
    torch.Size([15])
    """

    def __init__(
        self,
        c: int,
        r: int,
        activation: str = "relu",
        gamma: float = 1.0,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        validate_shape(c, r)
        activation_fn(activation, gamma)  # validates
        self.c, self.r, self.activation, self.gamma = c, r, activation, float(gamma)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(r, c, generator=generator) * init_scale)
        self.b = nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        act = activation_fn(self.activation, self.gamma)
        return act((x @ self.W.T) @ self.W + self.b)

    def flat(self) -> Tensor:
        """The parameters as a flat vector ``w`` (a detached copy) in the layout of :func:`pack`."""
        return pack(self.W.detach(), self.b.detach()).clone()

    @torch.no_grad()
    def load_flat(self, w: Tensor) -> TMS:
        """Copy a flat parameter vector of shape ``(d,)`` into the module (in place); returns self."""
        W, b = unpack(w, self.c, self.r)
        if W.ndim != 2:
            raise ValueError(f"load_flat expects one parameter vector of shape (d,), got {tuple(w.shape)}")
        self.W.copy_(W)
        self.b.copy_(b)
        return self

    @classmethod
    def from_flat(cls, w: Tensor, c: int, r: int, activation: str = "relu", gamma: float = 1.0) -> TMS:
        """Build a module from a flat parameter vector."""
        return cls(c, r, activation=activation, gamma=gamma).load_flat(w)

    def extra_repr(self) -> str:
        g = f", gamma={self.gamma}" if self.activation == "swish" else ""
        return f"c={self.c}, r={self.r}, activation={self.activation!r}{g}"
