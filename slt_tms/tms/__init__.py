"""The Toy Model of Superposition: the model over flat parameters, its input distributions, its losses.

The bottom layer of the package: nothing here knows about singular learning theory.

* :mod:`slt_tms.tms.model`: ``pack``/``unpack``/``forward`` over flat parameters and the ``TMS`` module;
* :mod:`slt_tms.tms.data`: the one-hot and sparse input distributions, fixed datasets;
* :mod:`slt_tms.tms.losses`: every TMS loss and gradient (empirical, closed-form gradient, one-hot prefix
  sums, the negative log posterior).
"""

from slt_tms.tms.data import OneHotUniform, SparseUniform, fixed_dataset, geometric_importance
from slt_tms.tms.losses import (
    OneHotSums,
    empirical_loss,
    empirical_value_and_grad,
    posterior_potential,
    residual_and_grad,
    weighted_sq_error,
)
from slt_tms.tms.model import (
    ACTIVATIONS,
    TMS,
    activation_fn,
    forward,
    num_params,
    pack,
    unpack,
    validate_shape,
)

__all__ = [
    "ACTIVATIONS",
    "TMS",
    "OneHotSums",
    "OneHotUniform",
    "SparseUniform",
    "activation_fn",
    "empirical_loss",
    "empirical_value_and_grad",
    "fixed_dataset",
    "forward",
    "geometric_importance",
    "num_params",
    "pack",
    "posterior_potential",
    "residual_and_grad",
    "unpack",
    "validate_shape",
    "weighted_sq_error",
]
