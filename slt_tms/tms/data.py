r"""Input distributions and fixed datasets of the TMS.

Distributions
-------------
* :class:`OneHotUniform` (the TMS paper, eq. 2): pick :math:`i` uniformly in :math:`\{1..c\}`,
  :math:`\mu \sim U[0,1]`, :math:`x = \mu e_i`. Target :math:`y = x`.
* :class:`SparseUniform` (Elhage et al. 2022): each coordinate is independently 0 with probability
  :math:`S` (the sparsity), otherwise :math:`U[0,1]`; importance weights :math:`I_i`.

The losses on these inputs live in :mod:`slt_tms.tms.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from slt_tms._rng import SeedLike, as_generator
from slt_tms.tms.model import validate_shape
from slt_tms.validation import check_int

__all__ = [
    "OneHotUniform",
    "SparseUniform",
    "check_importance",
    "fixed_dataset",
    "geometric_importance",
]


def _check_n(n: int) -> int:
    return check_int("the number of samples n", n, minimum=1)


def check_importance(importance: Tensor | None, c: int) -> Tensor:
    """Validate importance weights :math:`I` of shape ``(c,)`` (finite, non-negative); None means ones."""
    if importance is None:
        return torch.ones(c)
    imp = torch.as_tensor(importance)
    if not imp.is_floating_point():
        imp = imp.to(torch.get_default_dtype())
    if imp.shape != (c,):
        raise ValueError(f"importance must have shape ({c},), got {tuple(imp.shape)}")
    if not torch.all(torch.isfinite(imp)) or torch.any(imp < 0):
        raise ValueError("importance weights must be finite and non-negative")
    return imp


def geometric_importance(c: int, rho: float) -> Tensor:
    r"""Importance weights :math:`I_i = \rho^i`, :math:`i = 0..c-1` (Elhage et al. use 0.9 or 0.7).

    Examples
    --------
    >>> geometric_importance(3, 0.5).tolist()
    [1.0, 0.5, 0.25]
    """
    validate_shape(c, 1)
    if not 0 < rho:
        raise ValueError(f"rho must be positive, got {rho!r}")
    return torch.tensor([rho**i for i in range(c)], dtype=torch.get_default_dtype())


@dataclass(frozen=True)
class OneHotUniform:
    r"""The TMS paper's input distribution: :math:`x = \mu e_i`, :math:`i \sim U\{1..c\}`,
    :math:`\mu \sim U[0, 1]`.

    Statistics: each coordinate is nonzero with probability :math:`1/c`; :math:`E[x_i] = 1/(2c)`,
    :math:`E[x_i^2] = 1/(3c)`; exactly one coordinate of each sample is nonzero (almost surely).

    Examples
    --------
    >>> x = OneHotUniform(4).sample(3, torch.Generator().manual_seed(0))
    >>> x.shape, int((x > 0).sum())
    (torch.Size([3, 4]), 3)
    """

    c: int
    importance: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validate_shape(self.c, 1)
        object.__setattr__(self, "importance", torch.ones(self.c))

    def sample(self, n: int, generator: SeedLike = None) -> Tensor:
        """Draw ``n`` inputs, shape ``(n, c)``."""
        _check_n(n)
        g = as_generator(generator)
        idx = torch.randint(0, self.c, (n,), generator=g)
        mu = 1.0 - torch.rand(n, generator=g)  # in (0, 1]: exactly one nonzero per row
        x = torch.zeros(n, self.c)
        x[torch.arange(n), idx] = mu
        return x


@dataclass(frozen=True)
class SparseUniform:
    r"""Elhage et al.'s sparse inputs: :math:`x_i = 0` w.p. :math:`S`, else :math:`U[0,1]`.

    Statistics: :math:`P(x_i \neq 0) = 1 - S`, :math:`E[x_i] = (1-S)/2`, :math:`E[x_i^2] = (1-S)/3`.

    Parameters
    ----------
    c : int
        Number of features.
    sparsity : float
        :math:`S \in [0, 1)`; the feature density is :math:`p = 1 - S`.
    importance : Tensor, optional
        Weights :math:`I_i` of shape ``(c,)`` used by the loss (default all ones).

    """

    c: int
    sparsity: float
    importance: Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        validate_shape(self.c, 1)
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, int | float) or not (0.0 <= float(s) < 1.0):
            raise ValueError(f"sparsity must be a number in [0, 1), got {s!r}")
        object.__setattr__(self, "sparsity", float(s))
        object.__setattr__(self, "importance", check_importance(self.importance, self.c))

    @property
    def density(self) -> float:
        """Feature probability :math:`p = 1 - S`."""
        return 1.0 - self.sparsity

    def sample(self, n: int, generator: SeedLike = None) -> Tensor:
        """Draw ``n`` inputs, shape ``(n, c)``."""
        _check_n(n)
        g = as_generator(generator)
        mask = torch.rand(n, self.c, generator=g) >= self.sparsity
        return (1.0 - torch.rand(n, self.c, generator=g)) * mask  # active values in (0, 1]


def fixed_dataset(dist: OneHotUniform | SparseUniform, n: int, seed: SeedLike = 0) -> Tensor:
    """A fixed training set of ``n`` samples drawn from ``dist`` with ``seed`` (shape ``(n, c)``)."""
    return dist.sample(_check_n(n), as_generator(seed))
