"""Experiments: a configuration goes in, a frozen result comes out; no files, no plots (the commands write
them).

* :mod:`~slt_tms.experiments.posterior` and :mod:`~slt_tms.experiments.occupancy` -- the Bayesian posterior
  of the TMS over sample sizes and its phase occupancy;
* :mod:`~slt_tms.experiments.sgd_dynamics` and :mod:`~slt_tms.experiments.sgd_llc` -- SGD trajectories and
  the LLC along them;
* :mod:`~slt_tms.experiments.superposition` -- the toy-model experiments of Elhage et al. (2022).
"""
