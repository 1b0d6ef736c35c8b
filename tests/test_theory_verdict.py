"""``slt-tms llc --tms-critical`` compares its asymptotic estimate with theory in words, and says loudly
when they disagree (e.g. at large c, where the dead columns' flat region slows the approach to lambda)."""

from __future__ import annotations

import json

import pytest

from slt_tms.cli import main
from slt_tms.commands._tms_wells import lower_wells, wells_line
from slt_tms.commands.llc import THEORY_TOLERANCE, parse_critical_name, theory_verdict
from slt_tms.theory.critical_points import kgon


@pytest.mark.parametrize(
    ("estimate", "se", "dead", "agrees", "explains"),
    [
        (8.5 * (1 + 0.9 * THEORY_TOLERANCE), 0.01, 0, True, False),  # within 5%, tiny error
        (8.5 * (1 - 0.9 * THEORY_TOLERANCE), 0.01, 3, True, False),
        (8.5 * 1.10, 0.4, 0, True, False),  # 10% off but within 3 standard errors (0.85 < 1.2)
        (8.5 * 1.10, 0.1, 0, False, False),  # 10% off, 8.5 standard errors, no dead columns
        (8.5 * 1.20, 0.1, 24, False, True),  # above, with dead columns: the reason is given
        (8.5 * 0.80, 0.1, 24, False, False),  # below: the dead columns do not explain that
    ],
)
def test_verdict(estimate, se, dead, agrees, explains):
    line = theory_verdict(estimate, se, 8.5, dead)
    assert line.startswith(f"asymptotic estimate off by {100 * (estimate / 8.5 - 1):+.1f}%")
    assert ("(agrees:" in line) is agrees
    assert ("[DISAGREES with theory" in line) is (not agrees)
    assert (f"{dead} dead columns" in line) is explains
    # a flagged estimate: agreement within 3 of its (wide) errors is no verdict; a disagreement stays one
    flagged = theory_verdict(estimate, se, 8.5, dead, trustworthy=False)
    within5 = abs(estimate / 8.5 - 1) <= THEORY_TOLERANCE
    assert ("[NO VERDICT" in flagged) is (agrees and not within5)
    assert ("[DISAGREES with theory" in flagged) is (not agrees)
    assert ("flagged not trustworthy" in flagged) is agrees


def test_cli_records_and_prints_the_verdict(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLT_TMS_NO_PROGRESS", "1")
    out = tmp_path / "run"
    code = main(["llc", "--tms-critical", "6", "--c", "7", "--num-draws", "150", "--num-burnin", "100",
                 "--seed", "3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    rec = json.loads((out / "llc.json").read_text())
    fit = rec["asymptotic"]
    verdict = rec["config"]["cli"]["theory_verdict"]
    assert verdict == theory_verdict(fit["llc"], fit["se"], 8.5, 1, trustworthy=not rec["flags"])
    theory_line = next(ln for ln in printed.splitlines() if ln.lstrip().startswith("theory"))
    assert theory_line.endswith(verdict)
    # the hexagon in 7 features has one dead column: its well (the point 6+) is named, with each rung's depth
    wells = rec["config"]["cli"]["lower_wells"]
    assert wells["columns"] == 1 and wells["neighbour"] == "6+"
    assert wells["nbeta"] == pytest.approx(fit["nbeta"])
    assert wells["depth_nats"] == pytest.approx([nb / (4 * 7**2) for nb in fit["nbeta"]])
    assert wells["draws_below"] == [r["frac_below_anchor"] for r in rec["config"]["rungs"]]
    assert wells_line(wells) in printed


@pytest.mark.parametrize(("c", "noted"), [(6, False), (8, False), (9, True), (4, True)])
def test_a_c_outside_the_validated_range_is_noted_up_front(c, noted, tmp_path, capsys, monkeypatch):
    """Before sampling, a c outside the validated range says so (cost and the theory comparison)."""
    import slt_tms.commands.llc as llc_command

    def stop(*_a, **_k):
        raise KeyboardInterrupt  # the note comes before any sampling: stop there

    monkeypatch.setattr(llc_command, "estimate_llc", stop)
    assert main(["llc", "--tms-critical", "4", "--c", str(c), "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert ("the defaults are validated at c = 5..8" in err) is noted, err
    if noted:
        assert f"at c = {c} (d = {3 * c})" in err and f"{(c / 6) ** 2:.3g} times" in err
        assert ("dead columns" in err) is (c > 4)


@pytest.mark.parametrize(("name", "c"), [("5", 6), ("6", 8), ("4+", 8), ("4,1-", 7), ("3", 5)])
def test_the_wells_match_the_certified_neighbouring_point(name, c):
    """The well next to a dead column is the certified point with one more '+': its loss is lower by the
    stated amount (closed forms of both points) and its bias sits at the stated distance."""
    k, sigma, phi = parse_critical_name(name)
    w = lower_wells(k, c, sigma, phi, [1e4, 2e4], [0.0, 0.01], 1.0)
    here, there = kgon(k, c, sigma, phi), kgon(k, c, *parse_critical_name(w["neighbour"])[1:])
    assert w["columns"] == c - k - sigma
    assert here.loss - there.loss == pytest.approx(w["delta_loss"], rel=1e-9, abs=1e-15)
    assert w["depth_nats"] == pytest.approx([1e4 * w["delta_loss"], 2e4 * w["delta_loss"]])
    j = k + sigma  # the first dead column with a negative bias, the one the neighbour switches on
    assert float(there.b[j] - here.b[j]) == pytest.approx(w["distance"])
    assert w["localization_nats"] == pytest.approx(0.5 * w["distance"] ** 2)
    line = wells_line(w)
    assert "[NO DRAW IN THE WELLS at some nbeta" in line and "0% / 1%" in line


def test_no_wells_without_dead_columns_or_beyond_the_localization():
    assert lower_wells(6, 6, 0, 0, [1e4], [0.0], 1.0) is None  # no dead column
    assert lower_wells(5, 6, 1, 0, [1e4], [0.0], 1.0) is None  # 5+: its dead column is the well's bottom
    # the localization (0.59 nats) lifts the well (depth 50 / 144 = 0.35 nats) above w*: no line
    assert lower_wells(5, 6, 0, 0, [50.0], [0.0], 1.0) is None
    assert lower_wells(5, 6, 0, 0, [50.0], [0.0], 0.1) is not None
    visited = lower_wells(5, 6, 0, 0, [1e4], [0.2], 1.0)
    assert "NO DRAW" not in wells_line(visited)


def test_the_reproductions_llc_table_names_the_wells(tmp_path, monkeypatch):
    """The reproduction's LLC table carries the same wells for the 5-gon in 6 features (and none for the
    hexagon there); short chains, as only the table's column is under test."""
    import csv

    import slt_tms.commands.reproduce as rep

    real = rep.estimate_llc
    monkeypatch.setitem(rep._LLC_POINTS, "quick", [("5", 6), ("6", 6)])
    monkeypatch.setattr(rep, "estimate_llc", lambda *a, **k: real(*a, **k, num_draws=60, num_burnin=60))
    with pytest.warns(RuntimeWarning):  # short chains: not converged
        rep._llc_stage(tmp_path, "quick", 0, quiet=True)
    with open(tmp_path / "llc" / "llc_vs_theory.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    rec = json.loads((tmp_path / "llc" / "llc_c6_5.json").read_text())
    below = [r["frac_below_anchor"] for r in rec["config"]["rungs"]]
    depths = " / ".join(f"{-nb / 144:.3g}" for nb in rec["asymptotic"]["nbeta"])
    assert rows["5"]["lower_wells"].startswith(f"1 x 5+, {depths} nats; draws below L(w*) ")
    assert rows["5"]["lower_wells"].endswith("the estimate describes the basin of w*") is (not all(below))
    assert rows["6"]["lower_wells"] == ""
