"""Pure analysis: no sampling, no files, no plots.

* :mod:`~slt_tms.analysis.free_energy` -- local free energies, crossovers, the asymptotic prediction;
* :mod:`~slt_tms.analysis.kgon_classify` -- the one classifier of TMS parameters into critical-point basins;
* :mod:`~slt_tms.analysis.switch` -- observed switch points of occupancies, bootstrap intervals;
* :mod:`~slt_tms.analysis.plateaus` -- plateaus, segments, transitions and orderings of SGD runs;
* :mod:`~slt_tms.analysis.superposition` -- geometry of trained toy models (dimensionality, phase maps).
"""
