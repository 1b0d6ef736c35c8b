"""Shared test references."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from scipy import integrate


def normal_crossing_exact(power: int, nbeta: float) -> float:
    """nbeta E[w1^2 w2^power] under exp(-nbeta w1^2 w2^power - |w|^2 / 2): -d log Z / d log nbeta with
    Z(s) = int exp(-w^2/2) sqrt(2 pi / (1 + 2 s w^power)) dw (w1 integrated out), by quadrature."""

    def log_z(s: float) -> float:
        f = lambda w: math.exp(-w * w / 2) * math.sqrt(2 * math.pi / (1 + 2 * s * w**power))  # noqa: E731
        a = s ** (-1.0 / power)
        return math.log(integrate.quad(f, 0, a, limit=500)[0] + integrate.quad(f, a, 40, limit=500)[0])

    h = 1e-4
    return -(log_z(nbeta * (1 + h)) - log_z(nbeta * (1 - h))) / (2 * h)


@pytest.fixture
def nc_exact() -> Callable[[int, float], float]:
    """The quadrature reference of a 2-D normal crossing (:func:`normal_crossing_exact`)."""
    return normal_crossing_exact
