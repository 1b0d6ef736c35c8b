"""Configurations and frozen results of the superposition experiments.

Exported by :mod:`slt_tms.experiments.superposition` (import them from there); kept in their own module
only to keep each module short.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slt_tms.io.serialize import to_jsonable
from slt_tms.tms import validate_shape
from slt_tms.validation import check_float, check_int

__all__ = [
    "DimensionalityConfig",
    "DimensionalityResult",
    "GeometryConfig",
    "GeometryResult",
    "PhaseDiagramConfig",
    "PhaseDiagramResult",
    "SwishConfig",
    "SwishResult",
    "TrainConfig",
]


# ============================================================================ configs


def _check_nonempty(values: Sequence[float], name: str) -> tuple[Any, ...]:
    vals = tuple(values)
    if len(vals) == 0:
        raise ValueError(f"{name} must contain at least one value")
    return vals


def _check_sparsities(values: Sequence[float], name: str = "sparsities") -> tuple[float, ...]:
    out = []
    for s in _check_nonempty(values, name):
        try:
            v = check_float("sparsity S", s, lower=0.0)
        except ValueError:
            v = math.nan
        if not v < 1.0:  # also NaN
            raise ValueError(f"every sparsity S must be a number in [0, 1) (density 1 - S > 0); got {s!r}")
        out.append(v)
    return tuple(out)


def _check_positive_floats(values: Sequence[float], name: str) -> tuple[float, ...]:
    vals = _check_nonempty(values, name)
    return tuple(check_float(f"every entry of {name}", x, positive=True) for x in vals)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by the experiments (AdamW on fresh sparse-uniform samples).

    Attributes
    ----------
    num_steps : int
        AdamW updates per instance.
    batch_size : int
        Fresh samples per instance per step.
    lr : float
        AdamW learning rate (no weight decay: Elhage et al. train without it).
    num_restarts : int
        Random initialisations per setting; the one with the lowest final loss is kept.
    eval_size : int
        Fresh samples per instance (drawn once) on which the final losses are measured.
    """

    num_steps: int = 10_000
    batch_size: int = 1024
    lr: float = 1e-3
    num_restarts: int = 4
    eval_size: int = 8192

    def __post_init__(self) -> None:
        for name in ("num_steps", "batch_size", "num_restarts", "eval_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_float("lr", self.lr, positive=True)


def _geometry_sparsities(k: int) -> tuple[float, ...]:
    # Elhage et al.'s notebook grid: densities 20^{-j/(k-1)}, j = 0..k-1, i.e. S from 0 to 0.95.
    return tuple(round(1.0 - 20.0 ** (-j / (k - 1)), 4) for j in range(k))


@dataclass(frozen=True)
class GeometryConfig:
    r"""Settings of :func:`geometry` (Elhage et al.'s :math:`n = 5`, :math:`m = 2` experiment).

    Attributes
    ----------
    n, m : int
        Features and hidden dimensions.
    rho : float
        Importance decay: :math:`I_i = \rho^i`, :math:`i = 0..n-1`.
    sparsities : tuple of float
        The sparsities :math:`S \in [0, 1)`; default :math:`S_j = 1 - 20^{-j/9}`, ``j = 0..9`` (0 to 0.95).
    train : TrainConfig
    """

    n: int = 5
    m: int = 2
    rho: float = 0.9
    sparsities: tuple[float, ...] = field(default_factory=lambda: _geometry_sparsities(10))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(num_steps=10_000, batch_size=1024, lr=5e-3, num_restarts=4)
    )

    def __post_init__(self) -> None:
        validate_shape(self.n, self.m)
        check_float("rho", self.rho, positive=True)
        object.__setattr__(self, "sparsities", _check_sparsities(self.sparsities))

    @classmethod
    def quick(cls) -> GeometryConfig:
        """Six sparsities (0 to 0.95), 3 restarts, 4000 steps of batch 512 at lr 1e-2."""
        return cls(
            sparsities=_geometry_sparsities(6),
            train=TrainConfig(num_steps=4000, batch_size=512, lr=1e-2, num_restarts=3, eval_size=8192),
        )


@dataclass(frozen=True)
class PhaseDiagramConfig:
    r"""Settings of :func:`phase_diagram` (2 features, 1 hidden dimension).

    Attributes
    ----------
    relative_importances : tuple of float
        :math:`I_2 / I_1` (with :math:`I_1 = 1`); default 16 log-spaced values in [0.1, 10]. An even count
        keeps :math:`r = 1` off the grid: there :math:`W = [1, 0]` and :math:`[0, 1]` tie exactly and the
        class between them is arbitrary.
    densities : tuple of float
        :math:`1 - S \in (0, 1]`; default 16 log-spaced values from 1 to 0.01.
    train : TrainConfig
    """

    relative_importances: tuple[float, ...] = field(
        default_factory=lambda: tuple(np.logspace(-1, 1, 16).round(6).tolist())
    )
    densities: tuple[float, ...] = field(
        default_factory=lambda: tuple(np.logspace(0, -2, 16).round(6).tolist())
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(num_steps=5000, batch_size=256, lr=3e-3, num_restarts=5)
    )

    def __post_init__(self) -> None:
        imp = _check_positive_floats(self.relative_importances, "relative_importances")
        object.__setattr__(self, "relative_importances", imp)
        dens = _check_positive_floats(self.densities, "densities")
        if any(p > 1 for p in dens):
            raise ValueError(f"densities 1 - S must lie in (0, 1] (sparsity S in [0, 1)); got {dens}")
        object.__setattr__(self, "densities", dens)

    @classmethod
    def quick(cls) -> PhaseDiagramConfig:
        """An 8 x 8 grid, 4 restarts, 3000 steps of batch 256."""
        return cls(
            relative_importances=tuple(np.logspace(-1, 1, 8).round(6).tolist()),
            densities=tuple(np.logspace(0, -2, 8).round(6).tolist()),
            train=TrainConfig(num_steps=3000, batch_size=256, lr=5e-3, num_restarts=4, eval_size=8192),
        )


@dataclass(frozen=True)
class DimensionalityConfig:
    r"""Settings of :func:`dimensionality` (uniform importance :math:`I_i = 1`).

    Elhage et al. use :math:`n = 400`, :math:`m = 30`; the default here is :math:`n = 100`, :math:`m = 10`
    (they note only :math:`n \gg m` and the ratio of learned features to :math:`m` matter), which keeps
    the full figure to a few minutes on two CPU cores.

    Attributes
    ----------
    n, m : int
    inverse_densities : tuple of float
        Values of :math:`1/(1-S) \ge 1`; default 24 log-spaced values from 1 to 100. Beyond about
        :math:`n/m` the model represents every feature and :math:`D^*` just saturates at
        :math:`\approx m/n`, so larger values show nothing new for these :math:`n, m`.
    train : TrainConfig
    """

    n: int = 100
    m: int = 10
    inverse_densities: tuple[float, ...] = field(
        default_factory=lambda: tuple(np.logspace(0, 2, 24).round(4).tolist())
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(num_steps=5000, batch_size=512, lr=3e-3, num_restarts=1)
    )

    def __post_init__(self) -> None:
        validate_shape(self.n, self.m)
        inv = _check_positive_floats(self.inverse_densities, "inverse_densities")
        if any(v < 1 for v in inv):
            raise ValueError(f"inverse densities 1/(1-S) must be >= 1 (sparsity S in [0, 1)); got {inv}")
        object.__setattr__(self, "inverse_densities", inv)

    @property
    def sparsities(self) -> tuple[float, ...]:
        """:math:`S = 1 - 1 / \\text{inverse density}`."""
        return tuple(1.0 - 1.0 / v for v in self.inverse_densities)

    @classmethod
    def quick(cls) -> DimensionalityConfig:
        """:math:`n = 40`, :math:`m = 4`, 10 values of :math:`1/(1-S)` in [1, 50], 3000 steps."""
        return cls(
            n=40,
            m=4,
            inverse_densities=tuple(np.logspace(0, np.log10(50), 10).round(4).tolist()),
            train=TrainConfig(num_steps=3000, batch_size=512, lr=5e-3, num_restarts=1, eval_size=4096),
        )


@dataclass(frozen=True)
class SwishConfig:
    r"""Settings of :func:`swish_comparison`.

    Attributes
    ----------
    gammas : tuple of float
        Swish sharpness values :math:`\gamma` (ascending).
    geometry : GeometryConfig
        The geometry experiment run for ReLU and for each :math:`\gamma` (same seed, hence the same
        initialisations and samples).
    tolerance : float
        A :math:`\gamma` "matches ReLU" at a sparsity when it represents the same number of features and
        its relative Procrustes distance to the ReLU columns is below ``tolerance``.
    """

    gammas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    geometry: GeometryConfig = field(
        default_factory=lambda: GeometryConfig(
            sparsities=_geometry_sparsities(6),
            train=TrainConfig(num_steps=6000, batch_size=1024, lr=5e-3, num_restarts=3),
        )
    )
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        gam = _check_positive_floats(self.gammas, "gammas")
        object.__setattr__(self, "gammas", tuple(sorted(gam)))
        check_float("tolerance", self.tolerance, positive=True)

    @classmethod
    def quick(cls) -> SwishConfig:
        """Four gammas; 5 sparsities, 3 restarts, 3000 steps of batch 512 at lr 1e-2."""
        geo = GeometryConfig(
            sparsities=_geometry_sparsities(5),
            train=TrainConfig(num_steps=3000, batch_size=512, lr=1e-2, num_restarts=3, eval_size=8192),
        )
        return cls(gammas=(1.0, 4.0, 16.0, 64.0), geometry=geo)

# ============================================================================ results


class _ResultMixin:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field (:func:`slt_tms.io.serialize.to_jsonable`: arrays become
        nested lists, NaN becomes None, nested results their dictionaries)."""
        return to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class GeometryResult(_ResultMixin):
    """Trained columns per sparsity (best of the restarts).

    Attributes
    ----------
    sparsities : ndarray ``(S,)``
    W : ndarray ``(S, m, n)``
        Kept (lowest-loss) weight matrix per sparsity.
    b : ndarray ``(S, n)``
    losses : ndarray ``(S,)``
        Final loss of the kept instance (``eval_size`` fresh samples).
    restart_losses : ndarray ``(S, R)``
    restart_W : ndarray ``(S, R, m, n)``
    norms : ndarray ``(S, n)``
        Column norms :math:`\\|W_i\\|` of the kept instance.
    num_represented : ndarray ``(S,)``
        Columns with norm above :data:`slt_tms.analysis.superposition.REPRESENTED_THRESHOLD`.
    activation : str
    gamma : float
    config : dict
    seed : int
    runtime_seconds : float
    """

    sparsities: np.ndarray
    W: np.ndarray
    b: np.ndarray
    losses: np.ndarray
    restart_losses: np.ndarray
    restart_W: np.ndarray
    norms: np.ndarray
    num_represented: np.ndarray
    activation: str
    gamma: float
    config: dict
    seed: int
    runtime_seconds: float


@dataclass(frozen=True, eq=False)
class PhaseDiagramResult(_ResultMixin):
    """Classified trained models on the (relative importance, density) grid.

    Attributes
    ----------
    relative_importances : ndarray ``(I,)``
    densities : ndarray ``(P,)``
    classes : ndarray ``(I, P)`` of int
        Class of the kept model (codes of :data:`slt_tms.theory.two_feature.PHASE_NAMES`), by
        :func:`slt_tms.analysis.superposition.classify_two_feature`.
    analytic_classes : ndarray ``(I, P)`` of int
        :func:`slt_tms.theory.two_feature.analytic_phase` at the same grid points.
    agreement : float
        Fraction of grid points where the two agree.
    W : ndarray ``(I, P, 2)``
        Kept weights :math:`(w_1, w_2)` (the single row of :math:`W`).
    b : ndarray ``(I, P, 2)``
    losses : ndarray ``(I, P)``
    config : dict
    seed : int
    runtime_seconds : float
    """

    relative_importances: np.ndarray
    densities: np.ndarray
    classes: np.ndarray
    analytic_classes: np.ndarray
    agreement: float
    W: np.ndarray
    b: np.ndarray
    losses: np.ndarray
    config: dict
    seed: int
    runtime_seconds: float


@dataclass(frozen=True, eq=False)
class DimensionalityResult(_ResultMixin):
    """Dimensions per feature against sparsity.

    Attributes
    ----------
    sparsities, inverse_densities : ndarray ``(S,)``
    frobenius_sq : ndarray ``(S,)``
        :math:`\\|W\\|_F^2`.
    dims_per_feature : ndarray ``(S,)``
        :math:`m / \\|W\\|_F^2`.
    feature_dims : ndarray ``(S, n)``
        Per-feature dimensionality :math:`D_i`
        (:func:`slt_tms.analysis.superposition.feature_dimensionality`).
    W : ndarray ``(S, m, n)``
    losses : ndarray ``(S,)``
    config : dict
    seed : int
    runtime_seconds : float
    """

    sparsities: np.ndarray
    inverse_densities: np.ndarray
    frobenius_sq: np.ndarray
    dims_per_feature: np.ndarray
    feature_dims: np.ndarray
    W: np.ndarray
    losses: np.ndarray
    config: dict
    seed: int
    runtime_seconds: float


@dataclass(frozen=True, eq=False)
class SwishResult(_ResultMixin):
    """Swish geometry against ReLU's.

    Attributes
    ----------
    gammas : ndarray ``(G,)``
    sparsities : ndarray ``(S,)``
    relu : GeometryResult
        The reference (same seed as every swish run).
    swish : list of GeometryResult
        One per gamma.
    num_represented : ndarray ``(G, S)``
        Represented features of the kept (lowest-loss) swish solution.
    relu_num_represented : ndarray ``(S,)``
    restart_distances : ndarray ``(G, S, R)``
        :func:`slt_tms.analysis.superposition.procrustes_distance` of swish restart ``k`` to ReLU
        restart ``k`` (same initialisation, same samples).
    restart_matches : ndarray ``(G, S, R)`` of bool
        Restart ``k`` represents as many features as ReLU's restart ``k`` and its distance is below
        ``tolerance``.
    distances : ndarray ``(G, S)``
        Median over the restarts of ``restart_distances``.
    restart_spread : ndarray ``(S,)``
        Median distance of the kept ReLU solution to the other ReLU restarts at the same sparsity (other
        initialisations): how different equally trained ReLU solutions are, for scale.
    max_unrepresented_norm : ndarray ``(G, S)``
        Largest norm among the columns below the threshold (how "not quite zero" the dropped features
        are); ReLU's value is in ``relu_max_unrepresented_norm``.
    relu_max_unrepresented_norm : ndarray ``(S,)``
    matches : ndarray ``(G, S)`` of bool
        More than half of the restarts match.
    matching_gamma : float or None
        Smallest gamma from which on (it and every larger gamma of the grid) all sparsities match.
    config : dict
    seed : int
    runtime_seconds : float
    """

    gammas: np.ndarray
    sparsities: np.ndarray
    relu: GeometryResult
    swish: list
    num_represented: np.ndarray
    relu_num_represented: np.ndarray
    restart_distances: np.ndarray
    restart_matches: np.ndarray
    distances: np.ndarray
    restart_spread: np.ndarray
    max_unrepresented_norm: np.ndarray
    relu_max_unrepresented_norm: np.ndarray
    matches: np.ndarray
    matching_gamma: float | None
    config: dict
    seed: int
    runtime_seconds: float
