"""Rejected Metropolis proposals that reached below every kept draw are reported (a region of lower loss the
chains cannot enter), as a note, not a flag: at the 5-gon in 6 features the dead column borders the narrow,
deep well of the point 5+ (closed form: 1/(4c^2) lower, 60 nats at this nbeta); at the hexagon there is
none."""

from __future__ import annotations

import warnings

import pytest

from slt_tms.estimators import LLCResult, estimate_llc
from slt_tms.estimators.tracks import LOWER_FLOOR, LOWER_MARGIN
from slt_tms.potentials import from_critical_point
from slt_tms.theory.critical_points import kgon


@pytest.mark.parametrize(("k", "well"), [(5, True), (6, False)])
def test_a_lower_region_beside_the_chains_is_reported(k, well, tmp_path):
    pot = from_critical_point(kgon(k, 6, exact=False), None, n=100_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_llc(pot, seed=0, progress=False)
    lower = res.config["lower_region"]
    notes = [str(w.message) for w in caught if "region of lower loss" in str(w.message)]
    assert (lower is not None) is well, res.summary()
    assert ("  lower region    " in res.summary()) is well
    assert len(notes) == int(well)
    if well:
        assert lower["rejected_below"] >= 1
        assert lower["deepest"] < min(lower["lowest_kept"] - LOWER_MARGIN, -LOWER_FLOOR)
        # the draws themselves never went there (none below L(w*)): the number is the basin's, not flagged
        assert res.frac_below_anchor == 0.0 and lower["lowest_kept"] > 0 > lower["deepest"]
        assert res.ok, res.summary()
        back = LLCResult.from_json(res.to_json(tmp_path / "r.json"))
        assert back.config["lower_region"] == lower and "  lower region    " in back.summary()
