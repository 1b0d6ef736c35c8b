r"""Elhage et al. (2022) superposition experiments, each trained as ONE batched run of many instances.

Four experiments (THEORY.md §8), every one a pure function returning a frozen result dataclass that
records its configuration, seed and run time, with a separate plotting function:

* :func:`geometry` -- :math:`n = 5` features in :math:`m = 2` hidden dimensions, importance
  :math:`I_i = 0.9^i`, a grid of sparsities :math:`S`: the columns :math:`W_i` in the plane, for ReLU and
  for the linear baseline (:func:`plot_geometry`).
* :func:`phase_diagram` -- 2 features in 1 hidden dimension over relative importance
  :math:`I_2 / I_1 \in [0.1, 10]` and density :math:`1 - S \in [0.01, 1]`; every trained model is
  classified (:func:`classify_two_feature`) and compared with the analytic phase
  (:func:`analytic_phase`), whose boundaries come from the population losses of :math:`W = [1, 0]`,
  :math:`[0, 1]`, :math:`[1, -1]` with optimal biases, derived with sympy (:func:`two_feature_losses`).
* :func:`dimensionality` -- dimensions per feature :math:`m / \|W\|_F^2` against :math:`1/(1-S)` and the
  per-feature dimensionality :math:`D_i` (:func:`feature_dimensionality`).
* :func:`swish_comparison` -- the geometry experiment with :math:`\mathrm{swish}_\gamma` at several
  :math:`\gamma` beside ReLU, measuring how far the geometry is from ReLU's (:func:`procrustes_distance`,
  :func:`count_represented`).

The model is :math:`f(x) = \mathrm{act}(W^\top W x + b)` (:mod:`slt_tms.tms`), the data are sparse uniform
(each :math:`x_i` is 0 with probability :math:`S`, else :math:`U[0, 1]`) and the loss is
:math:`\sum_i I_i (x_i - f(x)_i)^2` (:mod:`slt_tms.tms.losses`). Training is :func:`slt_tms.train.train` with
AdamW on fresh samples: all instances of an experiment (sparsities x restarts, or the whole grid) are
stacked on the batch axis and each gets its own gradient. Each instance sees its own samples (the data
callable draws per instance). Of the ``num_restarts`` random initialisations per setting, the one with the
lowest final loss (on ``eval_size`` fresh samples drawn once per instance) is kept, as Elhage et al.
discard their worst runs.

References
----------
N. Elhage et al., *Toy Models of Superposition*, Transformer Circuits Thread (2022).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sympy
import torch
from torch import Tensor

from slt_tms._progress import progress as _progress
from slt_tms._rng import spawn_seeds
from slt_tms.tms import activation_fn, unpack, validate_shape

__all__ = [
    "DEDICATED",
    "NOT_REPRESENTED",
    "PHASE_NAMES",
    "PLATEAUS",
    "REPRESENTED_THRESHOLD",
    "SUPERPOSITION",
    "DimensionalityConfig",
    "DimensionalityResult",
    "GeometryConfig",
    "GeometryResult",
    "PhaseDiagramConfig",
    "PhaseDiagramResult",
    "SwishConfig",
    "SwishResult",
    "TrainConfig",
    "analytic_boundaries",
    "analytic_phase",
    "classify_two_feature",
    "column_norms",
    "count_represented",
    "dimensionality",
    "dimensions_per_feature",
    "feature_dimensionality",
    "geometry",
    "optimal_two_feature_losses",
    "phase_diagram",
    "plot_dimensionality",
    "plot_geometry",
    "plot_phase_diagram",
    "plot_swish",
    "procrustes_distance",
    "sparse_uniform_sampler",
    "swish_comparison",
    "two_feature_losses",
]

#: Phase labels of the 2-features-in-1-dimension diagram, indexed by class code. They describe the
#: second ("extra") feature: not represented (W = [1, 0]), given the dimension (W = [0, 1]), or stored
#: in superposition with the first (W = [1, -1]).
PHASE_NAMES: tuple[str, ...] = ("not represented", "dedicated dimension", "superposition")
NOT_REPRESENTED, DEDICATED, SUPERPOSITION = 0, 1, 2

#: A feature counts as represented when its column norm :math:`\|W_i\|` exceeds this. Represented
#: features of the trained models have :math:`\|W_i\| \approx 1` (a feature reconstructed through
#: :math:`\mathrm{ReLU}(\|W_i\|^2 x_i + b_i)` needs :math:`\|W_i\|^2 \approx 1`), unrepresented ones decay
#: towards 0; 0.5 sits halfway and is far from both.
REPRESENTED_THRESHOLD: float = 0.5

#: Fractional dimensionalities at which Elhage et al. observe plateaus ("sticky points"), with the
#: geometry behind each: D = 1 dedicated dimension, 3/4 tetrahedron, 2/3 triangle, 1/2 antipodal pair,
#: 2/5 pentagon, 3/8 square antiprism.
PLATEAUS: tuple[tuple[float, str], ...] = (
    (1.0, "1"),
    (3 / 4, "3/4"),
    (2 / 3, "2/3"),
    (1 / 2, "1/2"),
    (2 / 5, "2/5"),
    (3 / 8, "3/8"),
)


# ============================================================================ configs


def _check_positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _check_sparsities(values: Sequence[float], name: str = "sparsities") -> tuple[float, ...]:
    vals = tuple(values)
    if len(vals) == 0:
        raise ValueError(f"{name} must contain at least one value")
    for s in vals:
        if isinstance(s, bool) or not isinstance(s, int | float | np.floating) or not 0.0 <= float(s) < 1.0:
            raise ValueError(f"every sparsity S must be a number in [0, 1) (density 1 - S > 0); got {s!r}")
    return tuple(float(s) for s in vals)


def _check_positive_floats(values: Sequence[float], name: str) -> tuple[float, ...]:
    vals = tuple(values)
    if len(vals) == 0:
        raise ValueError(f"{name} must contain at least one value")
    for x in vals:
        ok = not isinstance(x, bool) and isinstance(x, int | float | np.floating)
        if not ok or not math.isfinite(float(x)) or float(x) <= 0:
            raise ValueError(f"every entry of {name} must be a finite number > 0, got {x!r}")
    return tuple(float(x) for x in vals)


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
            _check_positive_int(name, getattr(self, name))
        _check_positive_floats([self.lr], "lr")


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
        _check_positive_floats([self.rho], "rho")
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
        _check_positive_floats([self.tolerance], "tolerance")

    @classmethod
    def quick(cls) -> SwishConfig:
        """Four gammas; 5 sparsities, 3 restarts, 3000 steps of batch 512 at lr 1e-2."""
        geo = GeometryConfig(
            sparsities=_geometry_sparsities(5),
            train=TrainConfig(num_steps=3000, batch_size=512, lr=1e-2, num_restarts=3, eval_size=8192),
        )
        return cls(gammas=(1.0, 4.0, 16.0, 64.0), geometry=geo)


# ============================================================================ results


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Tensor):
        return _jsonable(x.detach().cpu().tolist())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    return x


class _ResultMixin:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field (arrays become nested lists, non-finite floats None)."""
        return _jsonable({k: getattr(self, k) for k in self.__dataclass_fields__})  # type: ignore[attr-defined]


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
        Columns with norm above :data:`REPRESENTED_THRESHOLD`.
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
        Class of the kept model (codes of :data:`PHASE_NAMES`), by :func:`classify_two_feature`.
    analytic_classes : ndarray ``(I, P)`` of int
        :func:`analytic_phase` at the same grid points.
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
        Per-feature dimensionality :math:`D_i` (:func:`feature_dimensionality`).
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
        :func:`procrustes_distance` of swish restart ``k`` to ReLU restart ``k`` (same initialisation,
        same samples).
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

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["relu"] = self.relu.to_dict()
        out["swish"] = [g.to_dict() for g in self.swish]
        return out


# ============================================================================ measurements


def column_norms(W: Tensor | np.ndarray) -> np.ndarray:
    r"""Norms :math:`\|W_i\|` of the columns of ``W`` of shape ``(..., m, n)``; returns ``(..., n)``."""
    W = np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=float)
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., m, n); got {W.shape}")
    return np.linalg.norm(W, axis=-2)


def count_represented(W: Tensor | np.ndarray, threshold: float = REPRESENTED_THRESHOLD) -> np.ndarray:
    r"""Number of columns with :math:`\|W_i\| >` ``threshold`` (see :data:`REPRESENTED_THRESHOLD`).

    Examples
    --------
    >>> int(count_represented(np.array([[1.0, 0.0, 0.1], [0.0, 0.9, 0.0]])))
    2
    """
    return (column_norms(W) > threshold).sum(-1)


def dimensions_per_feature(W: Tensor | np.ndarray) -> np.ndarray:
    r"""Elhage et al.'s :math:`D^* = m / \|W\|_F^2` for ``W`` of shape ``(..., m, n)``.

    Since :math:`\|W_i\|^2 \approx 1` for a represented feature and 0 otherwise, :math:`\|W\|_F^2` counts
    the represented features and :math:`D^*` is the number of hidden dimensions per represented feature.
    """
    W = np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=float)
    return W.shape[-2] / (W**2).sum((-1, -2))


def feature_dimensionality(W: Tensor | np.ndarray, eps: float = 1e-12) -> np.ndarray:
    r"""Per-feature dimensionality (Elhage et al.)

    .. math:: D_i = \frac{\|W_i\|^2}{\sum_j (\hat W_i \cdot W_j)^2}, \qquad \hat W_i = W_i / \|W_i\|,

    for ``W`` of shape ``(..., m, n)``; returns ``(..., n)``. A dedicated dimension gives 1, an antipodal
    pair 1/2, a regular pentagon in the plane 2/5, an unlearned feature (:math:`W_i = 0`) 0. Columns with
    :math:`\|W_i\| <` ``eps`` get 0.

    Examples
    --------
    >>> feature_dimensionality(np.array([[1.0, -1.0, 0.0]])).round(3).tolist()
    [0.5, 0.5, 0.0]
    """
    W = np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=float)
    norms = np.linalg.norm(W, axis=-2)  # (..., n)
    safe = np.where(norms > eps, norms, 1.0)
    Wh = W / safe[..., None, :]
    proj = np.einsum("...ki,...kj->...ij", Wh, W)  # (Ŵ_i · W_j)
    denom = (proj**2).sum(-1)
    return np.where(norms > eps, norms**2 / np.where(denom > 0, denom, 1.0), 0.0)


def procrustes_distance(A: Tensor | np.ndarray, B: Tensor | np.ndarray) -> np.ndarray:
    r"""Relative distance between two sets of columns modulo an orthogonal map of the hidden space.

    .. math::

        d(A, B) = \min_{Q \in O(m)} \frac{\|Q A - B\|_F}{\|B\|_F}
        = \frac{\sqrt{\|A\|_F^2 + \|B\|_F^2 - 2\,\|B A^\top\|_*}}{\|B\|_F},

    (orthogonal Procrustes; :math:`\|\cdot\|_*` is the nuclear norm), so rotations, reflections and the
    global sign :math:`W \mapsto -W` of the hidden plane are ignored while feature identities are kept.
    ``A`` and ``B`` have shapes ``(..., m, n)`` (leading axes broadcast); returns ``(...)``. ``B`` is the
    reference (ReLU).

    Examples
    --------
    >>> B = np.array([[1.0, 0.0], [0.0, 1.0]]); A = np.array([[0.0, -1.0], [1.0, 0.0]])  # a rotation of B
    >>> float(procrustes_distance(A, B)) < 1e-12
    True
    """
    A = np.asarray(A.detach().cpu() if isinstance(A, Tensor) else A, dtype=float)
    B = np.asarray(B.detach().cpu() if isinstance(B, Tensor) else B, dtype=float)
    if A.ndim < 2 or B.ndim < 2 or A.shape[-2:] != B.shape[-2:]:
        raise ValueError(f"A and B must have shapes (..., m, n) with equal m, n; got {A.shape}, {B.shape}")
    A, B = np.broadcast_arrays(A, B)
    nuc = np.linalg.svd(B @ np.swapaxes(A, -1, -2), compute_uv=False).sum(-1)
    na2, nb2 = (A**2).sum((-1, -2)), (B**2).sum((-1, -2))
    return np.sqrt(np.maximum(na2 + nb2 - 2 * nuc, 0.0)) / np.maximum(np.sqrt(nb2), 1e-12)


def classify_two_feature(
    W: Tensor | np.ndarray, threshold: float = REPRESENTED_THRESHOLD
) -> np.ndarray:
    r"""Phase class of trained 2-feature, 1-dimension models from :math:`W = (w_1, w_2)`.

    Rule: feature :math:`i` is represented when :math:`|w_i| >` ``threshold``. Then

    * feature 2 not represented :math:`\Rightarrow` :data:`NOT_REPRESENTED` (the :math:`W = [1, 0]` family,
      also when feature 1 is dropped as well);
    * feature 2 represented, feature 1 not :math:`\Rightarrow` :data:`DEDICATED` (:math:`W = [0, 1]`);
    * both represented :math:`\Rightarrow` :data:`SUPERPOSITION` (:math:`W = [1, -1]`: in the trained
      models the two then point in opposite directions, see ``PhaseDiagramResult.W``).

    The biases do not enter: a dropped feature's bias only sets its constant output. ``W`` has shape
    ``(..., 2)``, the single row :math:`(w_1, w_2)` of each model; returns int codes of shape ``(...)``.

    Examples
    --------
    >>> classify_two_feature(np.array([[1.0, 0.02], [0.0, 1.0], [0.9, -0.9]])).tolist()
    [0, 1, 2]
    """
    W = np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=float)
    if W.shape[-1:] != (2,):
        raise ValueError(
            f"W must have shape (..., 2): the row (w_1, w_2) of a 2-feature, 1-dimension model; got {W.shape}"
        )
    rep = np.abs(W) > threshold
    out = np.full(W.shape[:-1], NOT_REPRESENTED, dtype=np.int64)
    out[rep[..., 1] & ~rep[..., 0]] = DEDICATED
    out[rep[..., 1] & rep[..., 0]] = SUPERPOSITION
    return out


# ============================================================================ analytic phase diagram


@functools.lru_cache(maxsize=1)
def _two_feature_pieces() -> dict[str, list[tuple[float, float, sympy.Expr]]]:
    r"""Per-feature population losses of the three configurations, as polynomials in (p, beta) on the
    bias intervals [-1, 0] and [0, 1], derived by sympy integration over the regions where the ReLU
    fires (the region boundaries are worked out in docs/superposition.md)."""
    p, beta, u, v = sympy.symbols("p beta u v", real=True)
    third = sympy.Rational(1, 3)
    # Feature not represented (w_i = 0): output ReLU(beta), a constant.
    off_neg = p * sympy.integrate(u**2, (u, 0, 1))  # ReLU(beta) = 0: error x_i^2
    off_pos = (1 - p) * beta**2 + p * sympy.integrate((u - beta) ** 2, (u, 0, 1))
    # Feature with a dedicated dimension (w_i = 1, the other column 0): output ReLU(x_i + beta).
    ded_pos = (1 - p) * beta**2 + p * sympy.integrate((u - (u + beta)) ** 2, (u, 0, 1))
    ded_neg = p * (sympy.integrate(u**2, (u, 0, -beta)) + sympy.integrate(beta**2, (u, -beta, 1)))
    # Antipodal pair W = [1, -1]: feature 1's output ReLU(x_1 - x_2 + beta); by symmetry feature 2 has the
    # same loss. Sparsity patterns: (0,0) w.p. (1-p)^2, (x1,0) and (0,x2) w.p. p(1-p), (x1,x2) w.p. p^2.
    only1_pos = sympy.integrate(beta**2, (u, 0, 1))  # fires always: error -beta
    only2_pos = sympy.integrate((beta - v) ** 2, (v, 0, beta))  # fires for v < beta
    both_pos = (  # fires where v < u + beta: error (v - beta)^2, else error u^2
        sympy.integrate(sympy.integrate((v - beta) ** 2, (v, 0, u + beta)), (u, 0, 1 - beta))
        + sympy.integrate(sympy.integrate((v - beta) ** 2, (v, 0, 1)), (u, 1 - beta, 1))
        + sympy.integrate(sympy.integrate(u**2, (v, u + beta, 1)), (u, 0, 1 - beta))
    )
    sup_pos = (1 - p) ** 2 * beta**2 + p * (1 - p) * (only1_pos + only2_pos) + p**2 * both_pos
    only1_neg = ded_neg / p
    both_neg = third + sympy.integrate(  # fires where u > v - beta
        sympy.integrate((v - beta) ** 2 - u**2, (u, v - beta, 1)), (v, 0, 1 + beta)
    )
    sup_neg = p * (1 - p) * only1_neg + p**2 * both_neg
    ex = sympy.expand
    return {
        "off": [(-1.0, 0.0, ex(off_neg)), (0.0, 1.0, ex(off_pos))],
        "dedicated": [(-1.0, 0.0, ex(ded_neg)), (0.0, 1.0, ex(ded_pos))],
        "superposition": [(-1.0, 0.0, ex(sup_neg)), (0.0, 1.0, ex(sup_pos))],
    }


def two_feature_losses() -> dict[str, sympy.Piecewise]:
    r"""Sympy expressions of the per-feature population losses of the three candidate solutions.

    For density :math:`p = 1 - S` and a feature's bias :math:`\beta`, with :math:`x_1, x_2` independent,
    0 w.p. :math:`1 - p`, else :math:`U[0, 1]`:

    * ``"off"`` (:math:`w_i = 0`): :math:`\ell_{\rm off}(p, \beta) = E[(x_i - \mathrm{ReLU}(\beta))^2]`;
    * ``"dedicated"`` (:math:`w_i = 1`, other column 0):
      :math:`\ell_{\rm ded}(p, \beta) = E[(x_i - \mathrm{ReLU}(x_i + \beta))^2]`;
    * ``"superposition"`` (:math:`W = [1, -1]`):
      :math:`\ell_{\rm sup}(p, \beta) = E[(x_1 - \mathrm{ReLU}(x_1 - x_2 + \beta))^2]`.

    Each is a piecewise polynomial in :math:`(p, \beta)` for :math:`\beta \in [-1, 1]` (pieces
    :math:`\beta \le 0` and :math:`\beta \ge 0`); the integrals are evaluated by sympy over the regions
    where the ReLU is active (docs/superposition.md). Outside :math:`[-1, 1]` no bias is better: for
    :math:`\beta \le -1` the ReLUs never fire (constant loss, equal to the value at -1) and for
    :math:`\beta \ge 1` every loss increases with :math:`\beta`. Returns Piecewise expressions in the
    real symbols ``p`` and ``beta`` (``sympy.Symbol("p", real=True)``, ``sympy.Symbol("beta", real=True)``).

    Examples
    --------
    >>> p, beta = sympy.symbols("p beta", real=True)
    >>> two_feature_losses()["off"].subs({p: 1, beta: sympy.Rational(1, 2)})
    1/12
    """
    beta = sympy.Symbol("beta", real=True)
    out = {}
    for name, pieces in _two_feature_pieces().items():
        (_, hi0, e0), (_, _, e1) = pieces
        out[name] = sympy.Piecewise((e0, beta <= hi0), (e1, True))
    return out


@functools.lru_cache(maxsize=1)
def _piece_polys() -> dict[str, list[tuple[float, float, list[Callable[[np.ndarray], np.ndarray]]]]]:
    p, beta = sympy.symbols("p beta", real=True)
    out: dict[str, list] = {}
    for name, pieces in _two_feature_pieces().items():
        lst = []
        for lo, hi, expr in pieces:
            coeffs = sympy.Poly(expr, beta).all_coeffs()  # highest degree first, each a polynomial in p
            lst.append((lo, hi, [sympy.lambdify(p, cf, "numpy") for cf in coeffs]))
        out[name] = lst
    return out


def _min_piecewise_poly(pieces: list, p: float) -> tuple[float, float]:
    best = (math.inf, math.nan)
    for lo, hi, fns in pieces:
        coeffs = np.array([float(f(p)) for f in fns])
        cands = [lo, hi]
        if len(coeffs) > 2:  # degree >= 2: interior stationary points are roots of the derivative
            for rt in np.roots(np.polyder(coeffs)):
                if abs(rt.imag) < 1e-12 and lo <= rt.real <= hi:
                    cands.append(float(rt.real))
        for bta in cands:
            val = float(np.polyval(coeffs, bta))
            if val < best[0]:
                best = (val, bta)
    return best


def optimal_two_feature_losses(density: float | np.ndarray) -> dict[str, np.ndarray]:
    r"""Per-feature losses minimised over the bias, and the optimal biases, at density(ies) :math:`p`.

    .. math:: \ell^*_k(p) = \min_{\beta \in [-1, 1]} \ell_k(p, \beta), \quad k \in
        \{\text{off}, \text{dedicated}, \text{superposition}\},

    computed from the piecewise polynomials of :func:`two_feature_losses` by comparing the interval end
    points with the real stationary points (roots of the derivative) inside each piece. Closed forms that
    follow: :math:`\ell^*_{\rm off} = p/3 - p^2/4` at :math:`\beta = p/2`, :math:`\ell^*_{\rm ded} = 0` at
    :math:`\beta = 0`.

    Returns a dict with keys ``"off"``, ``"dedicated"``, ``"superposition"`` (losses) and
    ``"beta_off"``, ``"beta_dedicated"``, ``"beta_superposition"`` (minimisers), arrays shaped like
    ``density``.
    """
    dens = np.asarray(density, dtype=float)
    if np.any(~np.isfinite(dens)) or np.any(dens <= 0) or np.any(dens > 1):
        raise ValueError("density 1 - S must lie in (0, 1] (sparsity S in [0, 1))")
    polys = _piece_polys()
    out: dict[str, np.ndarray] = {}
    flat = dens.reshape(-1)
    for name, pieces in polys.items():
        vals = np.array([_min_piecewise_poly(pieces, float(pv)) for pv in flat])
        out[name] = vals[:, 0].reshape(dens.shape)
        out[f"beta_{name}"] = vals[:, 1].reshape(dens.shape)
    return out


def _configuration_losses(relative_importance: np.ndarray, density: np.ndarray) -> np.ndarray:
    r, p = np.broadcast_arrays(np.asarray(relative_importance, dtype=float), np.asarray(density, dtype=float))
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("relative importance I_2 / I_1 must be a finite number > 0")
    opt = optimal_two_feature_losses(p)
    off, ded, sup = opt["off"], opt["dedicated"], opt["superposition"]
    # L([1,0]) = 1 * ded + r * off;  L([0,1]) = off + r * ded;  L([1,-1]) = (1 + r) * sup.
    return np.stack([ded + r * off, off + r * ded, (1 + r) * sup], axis=-1)


def analytic_phase(
    relative_importance: float | np.ndarray, density: float | np.ndarray
) -> np.ndarray:
    r"""Analytic class at (relative importance :math:`r = I_2/I_1`, density :math:`p = 1 - S`).

    The class is the configuration of lowest population loss (with :math:`I_1 = 1`)

    .. math::

        L_{[1,0]} = \ell^*_{\rm ded} + r\,\ell^*_{\rm off}, \quad
        L_{[0,1]} = \ell^*_{\rm off} + r\,\ell^*_{\rm ded}, \quad
        L_{[1,-1]} = (1 + r)\,\ell^*_{\rm sup}

    (:func:`optimal_two_feature_losses`), coded as in :data:`PHASE_NAMES` (ties go to the lower code).
    Arguments broadcast; returns int codes.

    Examples
    --------
    >>> analytic_phase([0.1, 10.0, 1.0], [1.0, 1.0, 0.01]).tolist()   # dense: keep the more important one
    [0, 1, 2]
    """
    return np.argmin(_configuration_losses(relative_importance, density), axis=-1)


def analytic_boundaries(density: float | np.ndarray) -> dict[str, np.ndarray]:
    r"""Phase boundaries in relative importance at the given density(ies).

    Since :math:`\ell^*_{\rm ded} = 0`, superposition wins iff
    :math:`(1 + r)\,\ell^*_{\rm sup} < \min(1, r)\,\ell^*_{\rm off}`, i.e. with
    :math:`g(p) = \ell^*_{\rm sup}(p) / \ell^*_{\rm off}(p)`,

    .. math::

        r_{\rm low}(p) = \frac{g}{1 - g} < r < r_{\rm high}(p) = \frac{1 - g}{g} = \frac{1}{r_{\rm low}},

    non-empty iff :math:`g < 1/2`. Outside it the dense boundary is :math:`r = 1` (keep the more important
    feature). Returns ``{"r_low", "r_high", "g"}`` (``r_low``/``r_high`` NaN where :math:`g \ge 1/2`) and
    ``"p_critical"``, the density where :math:`g = 1/2` (the tip of the superposition region at
    :math:`r = 1`), found by bisection.
    """
    p = np.asarray(density, dtype=float)
    opt = optimal_two_feature_losses(p)
    g = opt["superposition"] / opt["off"]
    with np.errstate(divide="ignore", invalid="ignore"):
        r_low = np.where(g < 0.5, g / (1 - g), np.nan)
        r_high = np.where(g < 0.5, (1 - g) / g, np.nan)

    def gm(x: float) -> float:
        o = optimal_two_feature_losses(x)
        return float(o["superposition"] / o["off"]) - 0.5

    lo, hi = 1e-3, 1.0
    if gm(lo) < 0 < gm(hi):
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if gm(mid) < 0 else (lo, mid)
        p_crit = 0.5 * (lo + hi)
    else:
        p_crit = math.nan
    return {"r_low": r_low, "r_high": r_high, "g": g, "p_critical": np.asarray(p_crit)}


# ============================================================================ training helpers


def sparse_uniform_sampler(
    densities: Tensor, c: int
) -> Callable[[int, torch.Generator], Tensor]:
    r"""Data callable for :func:`slt_tms.train.train`: per-instance sparse uniform samples.

    Instance :math:`k` has density :math:`p_k` (``densities`` of shape ``(B,)``). One uniform draw
    :math:`u` per entry gives

    .. math:: x = \max\Bigl(\frac{u - (1 - p_k)}{p_k}, 0\Bigr),

    which is 0 with probability :math:`1 - p_k` and, given :math:`u > 1 - p_k`, uniform on
    :math:`(0, 1]`: exactly the sparse uniform law, with half the random numbers of drawing the mask and
    the value separately. Returns ``(batch_size, generator) -> Tensor (B, batch_size, c)`` on the
    generator's device.
    """
    dens = torch.as_tensor(densities, dtype=torch.get_default_dtype()).reshape(-1)
    if dens.numel() == 0 or bool(((dens <= 0) | (dens > 1)).any()):
        raise ValueError("densities 1 - S must lie in (0, 1] (sparsity S in [0, 1))")
    B = dens.numel()
    cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def sample(batch_size: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        if dev not in cache:
            d = dens.to(dev)[:, None, None]
            cache[dev] = (1 - d, d)
        s, d = cache[dev]
        u = torch.rand(B, batch_size, c, generator=generator, device=dev)
        return torch.clamp_min((u - s) / d, 0.0)

    return sample


def _init_params(
    num: int, n: int, m: int, seed: int, device: str | torch.device | None
) -> Tensor:
    # Xavier-normal W (std sqrt(2 / (n + m)), as the Elhage et al. notebook) and zero biases.
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(num, m, n, generator=g) * math.sqrt(2.0 / (n + m))
    w = torch.cat([W.reshape(num, m * n), torch.zeros(num, n)], dim=-1)
    return w.to(device) if device is not None else w


def _train_batched(
    *,
    n: int,
    m: int,
    densities: np.ndarray,
    importance: np.ndarray,
    train_config: TrainConfig,
    activation: str,
    gamma: float,
    seed: int,
    progress: bool | None,
    device: str | torch.device | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train len(densities) instances in one run; return (W (B, m, n), b (B, n), final losses (B,))."""
    from slt_tms.train import train

    B = len(densities)
    init_seed, train_seed = spawn_seeds(seed, 2)
    w0 = _init_params(B, n, m, init_seed, device)
    data = sparse_uniform_sampler(torch.as_tensor(densities, dtype=torch.get_default_dtype()), n)
    traj = train(
        w0,
        c=n,
        r=m,
        activation=activation,
        gamma=gamma,
        data=data,
        importance=torch.as_tensor(importance, dtype=torch.get_default_dtype()),
        optimizer="adamw",
        lr=train_config.lr,
        batch_size=train_config.batch_size,
        num_steps=train_config.num_steps,
        weight_decay=0.0,
        num_checkpoints=3,  # steps 0, 1, num_steps (3: see the schedule function)
        log_every=train_config.num_steps,
        seed=train_seed,
        progress=progress,
        device=device,
        eval_size=train_config.eval_size,
    )
    W, b = unpack(traj.final.to(torch.float64), n, m)
    return W.numpy(), b.numpy(), np.asarray(traj.losses[-1], dtype=float)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# ============================================================================ experiments


def geometry(
    config: GeometryConfig | None = None,
    *,
    activation: str = "relu",
    gamma: float = 1.0,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> GeometryResult:
    r"""Train the :math:`n`-feature, :math:`m`-dimension model at every sparsity (Elhage et al. Fig. 2-3).

    All ``len(sparsities) * num_restarts`` instances train in one batched run; per sparsity the restart
    with the lowest final loss is kept. With ReLU, at :math:`S = 0` only the two most important features
    get (orthogonal) columns; as :math:`S` grows less important features enter in superposition (about 4
    at intermediate sparsity, a pentagon of all 5 at :math:`S \gtrsim 0.85`). The linear baseline
    (``activation="linear"``) keeps the top-:math:`m` features at every sparsity.

    Parameters
    ----------
    config : GeometryConfig, optional
        Default: the full settings ``GeometryConfig()``; ``GeometryConfig.quick()`` for a fast run.
    activation : {"relu", "linear", "swish"}
    gamma : float
        Swish sharpness.
    seed : int
        Root seed (initialisations and samples); the same seed gives the same initialisations for every
        activation.
    progress : bool, optional
        Training progress bar.
    device : str or torch.device, optional

    Returns
    -------
    GeometryResult

    Examples
    --------
    >>> cfg = GeometryConfig(sparsities=(0.0,), train=TrainConfig(num_steps=20, num_restarts=1))
    >>> geometry(cfg, progress=False).W.shape
    (1, 2, 5)
    """
    config = GeometryConfig() if config is None else config
    seed = _check_seed(seed)
    activation_fn(activation, gamma)  # validates
    t0 = time.perf_counter()
    tc, n, m = config.train, config.n, config.m
    S = np.asarray(config.sparsities)
    R = tc.num_restarts
    dens = np.repeat(1.0 - S, R)
    imp = np.tile(config.rho ** np.arange(n), (len(dens), 1))
    W, b, losses = _train_batched(
        n=n, m=m, densities=dens, importance=imp, train_config=tc, activation=activation, gamma=float(gamma),
        seed=seed, progress=progress, device=device,
    )
    W, b, losses = W.reshape(len(S), R, m, n), b.reshape(len(S), R, n), losses.reshape(len(S), R)
    best = np.argmin(losses, axis=1)
    idx = np.arange(len(S))
    Wb, bb = W[idx, best], b[idx, best]
    return GeometryResult(
        sparsities=S,
        W=Wb,
        b=bb,
        losses=losses[idx, best],
        restart_losses=losses,
        restart_W=W,
        norms=column_norms(Wb),
        num_represented=count_represented(Wb),
        activation=activation,
        gamma=float(gamma),
        config={**asdict(config), "activation": activation, "gamma": float(gamma),
                "represented_threshold": REPRESENTED_THRESHOLD},
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


def phase_diagram(
    config: PhaseDiagramConfig | None = None,
    *,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> PhaseDiagramResult:
    r"""Train 2-feature, 1-dimension ReLU models over (relative importance, density) and classify them.

    Feature 1 has importance 1, feature 2 importance :math:`r`; both have density :math:`p`. All
    ``I * P * num_restarts`` instances train in one batched run; per grid point the lowest-loss restart is
    kept and classified by :func:`classify_two_feature`; :func:`analytic_phase` gives the analytic class.

    Returns
    -------
    PhaseDiagramResult
        With ``agreement`` = fraction of grid points where trained and analytic classes agree.

    Examples
    --------
    >>> cfg = PhaseDiagramConfig(relative_importances=(0.1,), densities=(1.0,),
    ...                          train=TrainConfig(num_steps=10, num_restarts=1))
    >>> phase_diagram(cfg, progress=False).classes.shape
    (1, 1)
    """
    config = PhaseDiagramConfig() if config is None else config
    seed = _check_seed(seed)
    t0 = time.perf_counter()
    tc = config.train
    r = np.asarray(config.relative_importances)
    p = np.asarray(config.densities)
    R = tc.num_restarts
    rr, pp = np.meshgrid(r, p, indexing="ij")  # (I, P)
    dens = np.repeat(pp.reshape(-1), R)
    imp = np.stack([np.ones_like(dens), np.repeat(rr.reshape(-1), R)], axis=-1)
    W, b, losses = _train_batched(
        n=2, m=1, densities=dens, importance=imp, train_config=tc, activation="relu", gamma=1.0,
        seed=seed, progress=progress, device=device,
    )
    I, P = rr.shape
    W = W.reshape(I, P, R, 2)
    b = b.reshape(I, P, R, 2)
    losses = losses.reshape(I, P, R)
    best = np.argmin(losses, axis=-1)
    ii, jj = np.meshgrid(np.arange(I), np.arange(P), indexing="ij")
    Wb, bb = W[ii, jj, best], b[ii, jj, best]
    classes = classify_two_feature(Wb)
    analytic = analytic_phase(rr, pp)
    return PhaseDiagramResult(
        relative_importances=r,
        densities=p,
        classes=classes,
        analytic_classes=analytic,
        agreement=float((classes == analytic).mean()),
        W=Wb,
        b=bb,
        losses=losses[ii, jj, best],
        config={**asdict(config), "represented_threshold": REPRESENTED_THRESHOLD,
                "phase_names": list(PHASE_NAMES)},
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


def dimensionality(
    config: DimensionalityConfig | None = None,
    *,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> DimensionalityResult:
    r"""Dimensions per feature :math:`m / \|W\|_F^2` and per-feature :math:`D_i` against :math:`1/(1-S)`.

    Uniform importance :math:`I_i = 1`; one instance per sparsity (``num_restarts`` > 1 keeps the best),
    all trained in one batched run. Elhage et al. find :math:`m/\|W\|_F^2` "sticky" at 1 and 1/2 and the
    :math:`D_i` clustering at the fractions of :data:`PLATEAUS`.

    Examples
    --------
    >>> cfg = DimensionalityConfig(n=6, m=2, inverse_densities=(1.0, 10.0),
    ...                            train=TrainConfig(num_steps=10, num_restarts=1))
    >>> dimensionality(cfg, progress=False).feature_dims.shape
    (2, 6)
    """
    config = DimensionalityConfig() if config is None else config
    seed = _check_seed(seed)
    t0 = time.perf_counter()
    tc, n, m = config.train, config.n, config.m
    S = np.asarray(config.sparsities)
    R = tc.num_restarts
    dens = np.repeat(1.0 - S, R)
    W, _, losses = _train_batched(
        n=n, m=m, densities=dens, importance=np.ones((len(dens), n)), train_config=tc, activation="relu",
        gamma=1.0, seed=seed, progress=progress, device=device,
    )
    W, losses = W.reshape(len(S), R, m, n), losses.reshape(len(S), R)
    best = np.argmin(losses, axis=1)
    idx = np.arange(len(S))
    Wb = W[idx, best]
    fro = (Wb**2).sum((-1, -2))
    return DimensionalityResult(
        sparsities=S,
        inverse_densities=np.asarray(config.inverse_densities),
        frobenius_sq=fro,
        dims_per_feature=dimensions_per_feature(Wb),
        feature_dims=feature_dimensionality(Wb),
        W=Wb,
        losses=losses[idx, best],
        config=asdict(config),
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


def _max_unrepresented(norms: np.ndarray) -> np.ndarray:
    masked = np.where(norms > REPRESENTED_THRESHOLD, -np.inf, norms)
    out = masked.max(-1)
    return np.where(np.isfinite(out), out, np.nan)


def swish_comparison(
    config: SwishConfig | None = None,
    *,
    seed: int = 0,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> SwishResult:
    r"""How large must :math:`\gamma` be before :math:`\mathrm{swish}_\gamma` gives ReLU's geometry?

    :math:`\mathrm{swish}_\gamma(z) = z\,\sigma(\gamma z) \to \mathrm{ReLU}(z)` as :math:`\gamma \to \infty`.
    The geometry experiment (:func:`geometry`) runs for ReLU and for each :math:`\gamma` with the same seed
    (same initialisations, same samples), so differences come from the activation alone; restart
    :math:`k` of swish is compared with restart :math:`k` of ReLU. Per :math:`(\gamma, S)` we record the
    number of represented features, the relative Procrustes distance of the columns to ReLU's modulo
    :math:`O(m)` (:func:`procrustes_distance`, median over restarts) and the largest norm of a dropped
    column. For scale, the distance between ReLU solutions from different initialisations (the restarts)
    is recorded as ``restart_spread``. A restart *matches* when its count equals ReLU's and its distance
    is below ``config.tolerance``; :math:`(\gamma, S)` matches when more than half of the restarts do;
    ``matching_gamma`` is the smallest :math:`\gamma` of the grid from which on every sparsity matches.

    Examples
    --------
    >>> geo = GeometryConfig(sparsities=(0.0,), train=TrainConfig(num_steps=10, num_restarts=1))
    >>> swish_comparison(SwishConfig(gammas=(4.0,), geometry=geo), progress=False).distances.shape
    (1, 1)
    """
    config = SwishConfig() if config is None else config
    seed = _check_seed(seed)
    t0 = time.perf_counter()
    geo = config.geometry
    relu = geometry(geo, activation="relu", seed=seed, progress=progress, device=device)
    kept = np.argmin(relu.restart_losses, axis=1)
    spread = np.full(len(relu.sparsities), np.nan)
    for j in range(len(relu.sparsities)):
        others = [k for k in range(relu.restart_W.shape[1]) if k != kept[j]]
        if others:
            spread[j] = float(np.median(procrustes_distance(relu.restart_W[j, others], relu.W[j])))
    runs = [
        geometry(geo, activation="swish", gamma=g, seed=seed, progress=progress, device=device)
        for g in _progress(config.gammas, desc="swish gammas", enabled=progress)
    ]
    counts = np.stack([r.num_represented for r in runs])
    r_dist = np.stack([procrustes_distance(r.restart_W, relu.restart_W) for r in runs])  # (G, S, R)
    r_counts = np.stack([count_represented(r.restart_W) for r in runs])
    r_match = (r_counts == count_represented(relu.restart_W)[None]) & (r_dist < config.tolerance)
    matches = r_match.mean(-1) > 0.5
    all_match = matches.all(axis=1)
    matching_gamma = None
    for k in range(len(runs)):
        if all_match[k:].all():
            matching_gamma = float(config.gammas[k])
            break
    return SwishResult(
        gammas=np.asarray(config.gammas),
        sparsities=relu.sparsities,
        relu=relu,
        swish=runs,
        num_represented=counts,
        relu_num_represented=relu.num_represented,
        restart_distances=r_dist,
        restart_matches=r_match,
        distances=np.median(r_dist, axis=-1),
        restart_spread=spread,
        max_unrepresented_norm=np.stack([_max_unrepresented(r.norms) for r in runs]),
        relu_max_unrepresented_norm=_max_unrepresented(relu.norms),
        matches=matches,
        matching_gamma=matching_gamma,
        config=asdict(config),
        seed=seed,
        runtime_seconds=time.perf_counter() - t0,
    )


# ============================================================================ plotting


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _draw_columns(ax, W: np.ndarray, title: str, lim: float = 1.35) -> None:
    import matplotlib as mpl

    n = W.shape[-1]
    cmap = mpl.colormaps["viridis"]
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.85", lw=0.8, zorder=0)
    ax.axhline(0, color="0.92", lw=0.6, zorder=0)
    ax.axvline(0, color="0.92", lw=0.6, zorder=0)
    for i in range(n):
        col = cmap(i / max(n - 1, 1))
        x, y = W[0, i], (W[1, i] if W.shape[0] > 1 else 0.0)
        ax.plot([0, x], [0, y], color=col, lw=2)
        ax.scatter([x], [y], color=col, s=18, zorder=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _label(res: GeometryResult) -> str:
    return f"swish γ={res.gamma:g}" if res.activation == "swish" else res.activation


def plot_geometry(results: Sequence[GeometryResult], path: str) -> Any:
    r"""Draw the columns :math:`W_i` in the plane: one row per result (e.g. ReLU, linear), one column per
    sparsity; colour = feature index (dark = most important). Saved atomically as PNG; returns the path."""
    from slt_tms.io.atomic import save_figure

    if len(results) == 0:
        raise ValueError("plot_geometry needs at least one GeometryResult")
    if results[0].W.shape[-2] != 2:
        raise ValueError("plot_geometry draws columns in the plane: needs m = 2 hidden dimensions")
    plt = _plt()
    ncol = max(len(r.sparsities) for r in results)
    size = (max(1.6 * ncol + 0.8, 7.5), 2.0 * len(results) + 1.1)
    lim = max(1.35, 1.1 * max(float(column_norms(r.W).max()) for r in results))
    fig, axes = plt.subplots(len(results), ncol, figsize=size, squeeze=False)
    for row, res in enumerate(results):
        for j in range(ncol):
            ax = axes[row, j]
            if j >= len(res.sparsities):
                ax.axis("off")
                continue
            _draw_columns(ax, res.W[j], f"S={res.sparsities[j]:.2f}  k={int(res.num_represented[j])}", lim)
        axes[row, 0].set_ylabel(_label(res), fontsize=10)
    import matplotlib as mpl

    n = results[0].W.shape[-1]
    rho = results[0].config.get("rho")
    cmap = mpl.colormaps["viridis"]
    handles = [plt.Line2D([], [], color=cmap(i / max(n - 1, 1)), lw=2,
                          label=f"$W_{{{i + 1}}}$" + (f" ($I$={rho**i:.2f})" if rho is not None else ""))
               for i in range(n)]
    fig.legend(handles=handles, loc="lower center", ncol=min(n, 8), fontsize=8, frameon=False)
    fig.suptitle(f"Columns $W_i$ of W in the hidden plane (n={n}, m=2; k = #features with "
                 f"$\\|W_i\\| > {REPRESENTED_THRESHOLD}$)", fontsize=9)
    height = size[1]
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.35 / height))  # room for the legend and the title
    return save_figure(fig, path, dpi=130)


_PHASE_COLORS = ("#f2f2f2", "#3b6fd6", "#d64541")


def plot_phase_diagram(result: PhaseDiagramResult, path: str) -> Any:
    """Trained classes (left) and analytic classes on a fine grid (right), analytic boundaries overlaid on
    both. Saved atomically as PNG; returns the path."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from slt_tms.io.atomic import save_figure

    plt = _plt()
    cmap = ListedColormap(_PHASE_COLORS)
    r, p = result.relative_importances, result.densities
    fine_r = np.logspace(np.log10(r.min()), np.log10(r.max()), 160)
    fine_p = np.logspace(np.log10(p.min()), np.log10(p.max()), 120)
    bnd = analytic_boundaries(fine_p)
    p_crit = float(bnd["p_critical"])

    def edges(v: np.ndarray) -> np.ndarray:
        lv = np.log10(v)
        if len(v) == 1:
            return 10 ** np.array([lv[0] - 0.1, lv[0] + 0.1])
        mids = (lv[1:] + lv[:-1]) / 2
        return 10 ** np.concatenate([[2 * lv[0] - mids[0]], mids, [2 * lv[-1] - mids[-1]]])

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    panels = [
        (edges(np.sort(r)), edges(np.sort(p)), result.classes[np.argsort(r)][:, np.argsort(p)],
         f"trained (best of {result.config['train']['num_restarts']}); agreement {result.agreement:.0%}"),
        (edges(fine_r), edges(fine_p), analytic_phase(fine_r[:, None], fine_p[None, :]), "analytic"),
    ]
    for ax, (xe, ye, cls, title) in zip(axes, panels, strict=True):
        ax.pcolormesh(xe, ye, cls.T, cmap=cmap, vmin=-0.5, vmax=2.5, shading="flat")
        ax.plot(bnd["r_low"], fine_p, color="k", lw=1.5)
        ax.plot(bnd["r_high"], fine_p, color="k", lw=1.5)
        if math.isfinite(p_crit):
            ax.plot([1, 1], [p_crit, fine_p.max()], color="k", lw=1.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])  # density 1 at the top, sparse data at the bottom
        ax.set_xlabel("relative importance of feature 2,  $I_2/I_1$")
        ax.set_ylabel("feature density  $1-S$")
        ax.set_title(title, fontsize=10)
    handles = [Patch(facecolor=c, edgecolor="0.5", label=f"{nm} ({w})") for c, nm, w in
               zip(_PHASE_COLORS, PHASE_NAMES, ("W=[1,0]", "W=[0,1]", "W=[1,-1]"), strict=True)]
    handles.append(plt.Line2D([], [], color="k", lw=1.5, label="analytic boundary"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("2 features in 1 dimension: fate of feature 2", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path, dpi=130)


def plot_dimensionality(result: DimensionalityResult, path: str) -> Any:
    r"""Dimensions per feature :math:`m/\|W\|_F^2` (line) and per-feature :math:`D_i` (dots) against
    :math:`1/(1-S)` (log x), with the plateau fractions of :data:`PLATEAUS`. Saved atomically as PNG."""
    from slt_tms.io.atomic import save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = result.inverse_densities
    for val, lab in PLATEAUS:
        ax.axhline(val, color="0.7", lw=0.8, ls="--", zorder=0)
        ax.text(x.max() * 1.15, val, lab, va="center", fontsize=8, color="0.4")
    fd = result.feature_dims
    xs = np.repeat(x[:, None], fd.shape[1], axis=1)
    jitter = np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, size=fd.shape))  # display only
    keep = column_norms(result.W) > REPRESENTED_THRESHOLD  # unlearned features (D_i ~ 0) are not drawn
    ax.scatter((xs * jitter)[keep], fd[keep], s=5, alpha=0.35, color="tab:orange",
               label="$D_i$ of represented features")
    ax.plot(x, result.dims_per_feature, "o-", color="tab:blue", lw=1.8, ms=4, label="$m/\\|W\\|_F^2$")
    ax.set_xscale("log")
    ax.set_xlim(x.min() / 1.1, x.max() * 1.4)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("$1/(1-S)$  (1 / feature density)")
    ax.set_ylabel("dimensions per feature")
    n, m = result.W.shape[-1], result.W.shape[-2]
    ax.set_title(f"Dimensionality, n={n} features in m={m} dimensions (uniform importance)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)


def plot_swish(result: SwishResult, geometry_path: str, metrics_path: str) -> tuple[Any, Any]:
    r"""Two PNGs: the columns for ReLU and each :math:`\gamma` (rows) at every sparsity (columns), and the
    metrics against :math:`\gamma` (Procrustes distance to ReLU per sparsity with the ReLU
    restart-to-restart spread and the tolerance; number of represented features; largest dropped-column
    norm)."""
    from slt_tms.io.atomic import save_figure

    p1 = plot_geometry([result.relu, *result.swish], geometry_path)
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    g = result.gammas
    import matplotlib as mpl

    cmap = mpl.colormaps["plasma"]
    S = result.sparsities
    for j, s in enumerate(S):
        col = cmap(j / max(len(S) - 1, 1) * 0.85)
        axes[0].plot(g, result.distances[:, j], "o-", color=col, ms=3, label=f"S={s:.2f}")
        off = 0.03 * (j - (len(S) - 1) / 2)  # small vertical offset so that equal counts stay visible
        axes[1].plot(g, result.num_represented[:, j] + off, "o-", color=col, ms=3)
        axes[1].axhline(result.relu_num_represented[j] + off, color=col, ls=":", lw=1)
        axes[2].plot(g, result.max_unrepresented_norm[:, j], "o-", color=col, ms=3)
    axes[0].axhline(result.config["tolerance"], color="k", ls="--", lw=1, label="tolerance")
    if np.isfinite(result.restart_spread).any():
        axes[0].axhline(float(np.nanmedian(result.restart_spread)), color="0.5", ls=":", lw=1.2,
                        label="ReLU restart-to-restart (median)")
    axes[0].set_ylabel("Procrustes distance to ReLU")
    axes[1].set_ylabel("# represented features (dotted: ReLU)")
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    axes[2].set_ylabel(f"largest dropped-column norm (< {REPRESENTED_THRESHOLD})")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("swish γ")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    mg = result.matching_gamma
    verdict = (f"matches ReLU for every γ ≥ {mg:g}" if mg is not None
               else "no γ in the grid matches ReLU at all sparsities")
    fig.suptitle("swish$_\\gamma$ vs ReLU geometry: " + verdict, fontsize=10)
    fig.tight_layout()
    p2 = save_figure(fig, metrics_path, dpi=130)
    return p1, p2
