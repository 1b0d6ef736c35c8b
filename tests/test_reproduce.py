"""Tests of the reproduction driver's bookkeeping (skipping up-to-date stages) and the HTML report."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from slt_tms.commands.reproduce import Stage, _summary, run_stages
from slt_tms.io.atomic import atomic_write_text, save_figure
from slt_tms.io.report import write_report


def _stages(calls: list[str]):
    def good(out, profile, seed, quiet):
        calls.append("good")
        fig, ax = plt.subplots()
        ax.plot([0, 1], [seed, 1])
        png = save_figure(fig, out / "good" / "fig.png")
        csv = atomic_write_text(out / "good" / "table.csv", "name,value\na,0.5\n")
        res = atomic_write_text(out / "good" / "result.json", json.dumps({"llc": 1.25, "seed": seed}))
        return [png, csv, res]

    def bad(out, profile, seed, quiet):
        calls.append("bad")
        raise RuntimeError("stage failed on purpose")

    return [Stage("good", "a stage that works", good), Stage("bad", "a stage that fails", bad)]


def test_rerun_skips_up_to_date_stages_and_reruns_failed_ones(tmp_path):
    calls: list[str] = []
    stages = _stages(calls)
    first = run_stages(tmp_path, "quick", seed=3, quiet=True, stages=stages)
    assert [o.ok for o in first] == [True, False] and calls == ["good", "bad"]
    second = run_stages(tmp_path, "quick", seed=3, quiet=True, stages=stages)
    assert second[0].cached and not second[1].ok
    assert calls == ["good", "bad", "bad"]  # the good stage was not redone, the failed one was
    # a different seed, a missing output or force=True make the stage run again
    run_stages(tmp_path, "quick", seed=4, quiet=True, stages=stages)
    assert calls[-2:] == ["good", "bad"]
    (tmp_path / "good" / "table.csv").unlink()
    run_stages(tmp_path, "quick", seed=4, quiet=True, stages=stages)
    assert calls[-2:] == ["good", "bad"]
    run_stages(tmp_path, "quick", seed=4, quiet=True, stages=stages, force=True)
    assert calls[-2:] == ["good", "bad"]
    # an output truncated to 0 bytes (or edited) is not up to date: the stage runs again
    (tmp_path / "good" / "table.csv").write_text("")
    run_stages(tmp_path, "quick", seed=4, quiet=True, stages=stages)
    assert calls[-2:] == ["good", "bad"]
    (tmp_path / "good" / "result.json").write_text('{"llc": 99}')
    again = run_stages(tmp_path, "quick", seed=4, quiet=True, stages=stages)
    assert calls[-2:] == ["good", "bad"] and not again[0].cached


def test_relative_out_from_another_directory_and_missing_files_are_errors(tmp_path, monkeypatch):
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    stages = _stages([])
    outcomes = run_stages("results", "quick", seed=1, quiet=True, stages=stages)
    summary = _summary(outcomes, "quick", 1, work / "results")
    assert summary["stages"][0]["files"] == ["good/fig.png", "good/table.csv", "good/result.json"]
    page = write_report("results", summary).read_text()
    assert "data:image/png;base64," in page and "<td>0.5</td>" in page
    (work / "results" / "good" / "fig.png").unlink()
    page = write_report(work / "results", summary).read_text()
    assert "MISSING" in page and "good/fig.png" in page


def test_report_is_self_contained_and_shows_failures(tmp_path):
    stages = _stages([])
    outcomes = run_stages(tmp_path, "quick", seed=3, quiet=True, stages=stages)
    summary = _summary(outcomes, "quick", 3, tmp_path)
    page = write_report(tmp_path, summary).read_text()
    assert "data:image/png;base64," in page  # figure embedded, no external file needed
    assert "<td>0.5</td>" in page  # the CSV table rendered
    assert "FAILED" in page and "stage failed on purpose" in page
    assert "&quot;llc&quot;: 1.25" in page  # the JSON result shown (HTML-escaped)
    assert "torch" in page and "Profile <b>quick</b>" in page


def test_report_without_summary_says_what_to_run(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="slt-tms reproduce"):
        write_report(tmp_path)
