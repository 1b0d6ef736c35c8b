"""Samplers: kernels with one convention, composable adaptation, one chain loop, diagnostics.

* :mod:`~slt_tms.samplers.base` -- the tempered target :math:`U = n\\beta L + \\frac{\\gamma}{2}|w - w_0|^2`,
  per-chain random streams, the batch supply;
* kernels :class:`~slt_tms.samplers.sgld.SGLD`, :class:`~slt_tms.samplers.mala.MALA`,
  :class:`~slt_tms.samplers.hmc.HMC`: ``init(w0, target, batch) -> State`` and
  ``step(state, target, step_size, batch, draws, metric) -> (State, Info)``;
* :mod:`~slt_tms.samplers.adaptation` (dual averaging, windowed metric),
  :mod:`~slt_tms.samplers.preconditioners` (RMSProp), :mod:`~slt_tms.samplers.exchange` (replica exchange);
* :mod:`~slt_tms.samplers.run` -- the chain loop with warmup, hooks and stopping rules;
* :mod:`~slt_tms.samplers.diagnostics` -- R-hat, ESS, MCSE (ArviZ) and friends.
"""

from slt_tms.samplers import diagnostics
from slt_tms.samplers.adaptation import DualAveraging, MetricWindows
from slt_tms.samplers.base import (
    BatchSupply,
    CenterLoss,
    ChainStreams,
    Draws,
    Evaluation,
    Info,
    PointState,
    Tempered,
    select_state,
)
from slt_tms.samplers.exchange import exchange, swap_rungs
from slt_tms.samplers.hmc import HMC
from slt_tms.samplers.mala import MALA
from slt_tms.samplers.preconditioners import RMSProp
from slt_tms.samplers.run import RunResult, SampleResult, Warmup, run_chains, sample
from slt_tms.samplers.sgld import SGLD

__all__ = [
    "HMC",
    "MALA",
    "SGLD",
    "BatchSupply",
    "CenterLoss",
    "ChainStreams",
    "Draws",
    "DualAveraging",
    "Evaluation",
    "Info",
    "MetricWindows",
    "PointState",
    "RMSProp",
    "RunResult",
    "SampleResult",
    "Tempered",
    "Warmup",
    "diagnostics",
    "exchange",
    "run_chains",
    "sample",
    "select_state",
    "swap_rungs",
]
