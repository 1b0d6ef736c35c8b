"""slt_tms: singular learning theory on the Toy Model of Superposition."""

from importlib.metadata import PackageNotFoundError, version

from slt_tms.tms import (
    TMS,
    OneHotUniform,
    SparseUniform,
    empirical_loss,
    fixed_dataset,
    forward,
    num_params,
    pack,
    unpack,
)

try:
    __version__ = version("slt_tms")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "TMS",
    "OneHotUniform",
    "SparseUniform",
    "__version__",
    "empirical_loss",
    "fixed_dataset",
    "forward",
    "num_params",
    "pack",
    "unpack",
]
