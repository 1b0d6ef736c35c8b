"""``slt-tms llc --tms-critical`` compares its asymptotic estimate with theory in words, and says loudly
when they disagree (e.g. at large c, where the dead columns' flat region slows the approach to lambda)."""

from __future__ import annotations

import json

import pytest

from slt_tms.cli import main
from slt_tms.commands.llc import THEORY_TOLERANCE, theory_verdict


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
