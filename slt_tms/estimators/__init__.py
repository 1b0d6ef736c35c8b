"""LLC estimation: :func:`estimate_llc` with :class:`LLCConfig` (the one source of defaults), the result
:class:`LLCResult`, the asymptotic fit over a ladder of inverse temperatures."""

from slt_tms.estimators.config import FIELD_HELP, SAMPLERS, LLCConfig, default_nbeta
from slt_tms.estimators.llc import estimate_llc, fit_asymptotic
from slt_tms.estimators.result import AsymptoticFit, Calibration, LLCResult

__all__ = [
    "FIELD_HELP",
    "SAMPLERS",
    "AsymptoticFit",
    "Calibration",
    "LLCConfig",
    "LLCResult",
    "default_nbeta",
    "estimate_llc",
    "fit_asymptotic",
]
