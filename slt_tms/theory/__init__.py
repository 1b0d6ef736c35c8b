"""Exact theory of the TMS: symbolic population loss, k-gon critical points, learning coefficients."""

from slt_tms.theory.critical_point import CriticalPoint
from slt_tms.theory.ground_truth import (
    GroundTruthProblem,
    deep_linear_network,
    normal_crossing,
    reduced_rank_regression,
    regular_quadratic,
    standard_problems,
)
from slt_tms.theory.learning_coefficients import (
    LearningCoefficient,
    dln_lambda,
    minimally_singular_lambda,
    normal_crossing_lambda,
    regular_lambda,
    rrr_case,
    rrr_lambda,
)

__all__ = [  # names in _LAZY are imported on first use (they need sympy)
    "CriticalPoint",
    "GroundTruthProblem",
    "LearningCoefficient",
    "critical_points",
    "deep_linear_network",
    "dln_lambda",
    "find_critical_points",
    "kgon",
    "loss_expression",
    "minimally_singular_lambda",
    "normal_crossing",
    "normal_crossing_lambda",
    "pair_terms",
    "population_grad_flat",
    "population_loss",
    "population_loss_flat",
    "population_value_and_grad_flat",
    "reduced_rank_regression",
    "regular_lambda",
    "regular_quadratic",
    "rrr_case",
    "rrr_lambda",
    "standard_problems",
]

_LAZY = {
    "loss_expression": "slt_tms.theory.symbolic",
    "pair_terms": "slt_tms.theory.symbolic",
    "population_loss": "slt_tms.theory.symbolic",
    "population_grad_flat": "slt_tms.theory.symbolic",
    "population_loss_flat": "slt_tms.theory.symbolic",
    "population_value_and_grad_flat": "slt_tms.theory.symbolic",
    "critical_points": "slt_tms.theory.critical_points",
    "kgon": "slt_tms.theory.critical_points",
    "find_critical_points": "slt_tms.theory.discovery",
}


def __getattr__(name: str):
    """Import the symbolic names on first use (keeps ``import slt_tms.theory`` free of sympy)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
