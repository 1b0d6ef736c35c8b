r"""Measurements of trained superposition models: which features are represented, and how.

All functions take weight matrices :math:`W` of shape ``(..., m, n)`` (numpy arrays or torch tensors;
leading axes are batch axes) whose columns :math:`W_i \in \mathbb{R}^m` embed the :math:`n` features in
the :math:`m` hidden dimensions, and return numpy arrays:

* :func:`column_norms` :math:`\|W_i\|`, :func:`count_represented` (norm above
  :data:`REPRESENTED_THRESHOLD`) and :func:`max_unrepresented_norm` (the largest dropped column);
* :func:`dimensions_per_feature` :math:`D^* = m / \|W\|_F^2` and the per-feature dimensionality
  :func:`feature_dimensionality` :math:`D_i`, with the plateau values :data:`PLATEAUS`;
* :func:`procrustes_distance`, the distance of two sets of columns modulo :math:`O(m)`;
* :func:`classify_two_feature`, the class of a 2-feature, 1-dimension model (codes of
  :data:`slt_tms.theory.two_feature.PHASE_NAMES`).

Pure numpy: no sampling, no files, no plots.

References
----------
N. Elhage et al., *Toy Models of Superposition*, Transformer Circuits Thread (2022).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from slt_tms.theory.two_feature import DEDICATED, NOT_REPRESENTED, SUPERPOSITION

__all__ = [
    "PLATEAUS",
    "REPRESENTED_THRESHOLD",
    "classify_two_feature",
    "column_norms",
    "count_represented",
    "dimensions_per_feature",
    "feature_dimensionality",
    "max_unrepresented_norm",
    "procrustes_distance",
]

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


def _as_array(W: Tensor | np.ndarray) -> np.ndarray:
    """``W`` as a float64 numpy array (tensors are detached and moved to the CPU)."""
    return np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=float)


def column_norms(W: Tensor | np.ndarray) -> np.ndarray:
    r"""Norms :math:`\|W_i\|` of the columns of ``W`` of shape ``(..., m, n)``; returns ``(..., n)``.

    Examples
    --------
    >>> column_norms(np.array([[3.0, 0.0], [4.0, 0.5]])).tolist()
    [5.0, 0.5]
    """
    W = _as_array(W)
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


def max_unrepresented_norm(W: Tensor | np.ndarray, threshold: float = REPRESENTED_THRESHOLD) -> np.ndarray:
    r"""Largest column norm among the columns that are not represented (:math:`\|W_i\| \le` ``threshold``).

    How "not quite zero" the dropped features are: :math:`\max\{\|W_i\| : \|W_i\| \le t\}` over the
    columns of ``W`` of shape ``(..., m, n)``; returns ``(...)``, NaN where every column is represented.

    Examples
    --------
    >>> max_unrepresented_norm(np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 0.9]])).item()
    0.1
    >>> max_unrepresented_norm(np.eye(2)).item()
    nan
    """
    norms = column_norms(W)
    masked = np.where(norms > threshold, -np.inf, norms)
    out = masked.max(-1)
    return np.where(np.isfinite(out), out, np.nan)


def dimensions_per_feature(W: Tensor | np.ndarray) -> np.ndarray:
    r"""Elhage et al.'s :math:`D^* = m / \|W\|_F^2` for ``W`` of shape ``(..., m, n)``.

    Since :math:`\|W_i\|^2 \approx 1` for a represented feature and 0 otherwise, :math:`\|W\|_F^2` counts
    the represented features and :math:`D^*` is the number of hidden dimensions per represented feature.
    Returns ``(...)``.

    Examples
    --------
    >>> float(dimensions_per_feature(np.array([[1.0, -1.0, 0.0]])))   # an antipodal pair in 1 dimension
    0.5
    """
    W = _as_array(W)
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
    W = _as_array(W)
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
    A = _as_array(A)
    B = _as_array(B)
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
    W = _as_array(W)
    if W.shape[-1:] != (2,):
        raise ValueError(
            f"W must have shape (..., 2): the row (w_1, w_2) of a 2-feature, 1-dimension model; got {W.shape}"
        )
    rep = np.abs(W) > threshold
    out = np.full(W.shape[:-1], NOT_REPRESENTED, dtype=np.int64)
    out[rep[..., 1] & ~rep[..., 0]] = DEDICATED
    out[rep[..., 1] & rep[..., 0]] = SUPERPOSITION
    return out

