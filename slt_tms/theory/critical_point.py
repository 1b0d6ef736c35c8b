"""The :class:`CriticalPoint` record shared by theory, estimators, phases and dynamics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["DEAD_BIAS", "CriticalPoint"]

#: Default bias of dead columns without positive bias (flat direction: any b < 0 gives the same loss).
DEAD_BIAS = -1.0


@dataclass(frozen=True)
class CriticalPoint:
    r"""A critical point of the TMS population loss.

    Parameters
    ----------
    name : str
        The TMS paper's name: ``"5"``, ``"5+"``, ``"4++"``, ``"4+,2-"`` ...
    k, c, r : int
        Number of live polygon vertices, features, hidden dimensions.
    sigma : int
        Number of dead columns carrying the positive bias :math:`1/(2c)`.
    phi : int
        Number of polygon columns switched off by a negative bias (4-gon variants only).
    W : ndarray, shape ``(r, c)``
    b : ndarray, shape ``(c,)``
    loss : float
        Population loss :math:`L(w^*)`.
    length, bias : float
        The solved :math:`(l^*, b^*)` of the symmetric family.
    hessian_eigenvalues : ndarray or None
        Spectrum of the Hessian of :math:`L` at :math:`w^*` (None where :math:`L` is not
        :math:`C^2`).
    index : int or None
        Number of negative Hessian eigenvalues.
    num_zero_modes : int or None
        Number of (numerically) zero eigenvalues, decided by a reported eigenvalue gap.
    is_c2 : bool
        Whether :math:`L` is twice continuously differentiable at :math:`w^*`.
    lambda_theory : float or None
        Theoretical learning coefficient (``rank(H)/2`` for minimally singular points), or None.
    lambda_reason : str
        Why ``lambda_theory`` is what it is (or why it is None).
    extra : dict
        Anything else a producer wants to record (eigenvalue gap, gradient norm, ...).
    """

    name: str
    k: int
    c: int
    r: int
    sigma: int
    phi: int
    W: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)
    loss: float
    length: float = math.nan
    bias: float = math.nan
    hessian_eigenvalues: np.ndarray | None = field(default=None, repr=False)
    index: int | None = None
    num_zero_modes: int | None = None
    is_c2: bool = True
    lambda_theory: float | None = None
    lambda_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def d(self) -> int:
        """Number of parameters ``r c + c``."""
        return self.r * self.c + self.c

    def flat(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """The point as a flat parameter vector (layout of :func:`slt_tms.tms.pack`)."""
        w = np.concatenate([np.asarray(self.W, dtype=float).reshape(-1), np.asarray(self.b, dtype=float)])
        return torch.as_tensor(w, dtype=dtype, device=device)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (arrays as nested lists)."""
        out = asdict(self)
        for key in ("W", "b", "hessian_eigenvalues"):
            if out[key] is not None:
                out[key] = np.asarray(out[key]).tolist()
        return out
