"""The report's "paper beside ours" table and figure map (slt_tms.io.paper) and their place in the report.

The verdicts are computed from the numbers: each rule is tested on a case that agrees and one that
differs, and the whole table on synthetic stage files holding the paper's values (every row agrees) and
perturbed ones (every row differs), without running a stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slt_tms.commands.reproduce import STAGES
from slt_tms.io import paper
from slt_tms.io.paper import (
    FIGURE_MAP,
    PAPER_VALUES,
    figure_rows,
    paper_rows,
    verdict_estimate,
    verdict_printed,
    verdict_range,
    verdict_sequence,
)
from slt_tms.io.report import write_report

# --------------------------------------------------------------------------------------------------
# the verdict rules


def test_printed_values_agree_to_the_last_printed_digit():
    assert verdict_printed(["1.17046", "-0.28230"], [1.1704596, -0.2822973]).status == "agrees"
    v = verdict_printed(["1.17046", "-0.28230"], [1.17051, -0.2822973])  # 5e-5 off in the 5th decimal
    assert v.status == "differs" and "1.17046" in v.detail and "5e-06" in v.detail
    assert verdict_printed(["601"], [601.4]).status == "agrees"
    assert verdict_printed(["601"], [573.2]).status == "differs"
    assert verdict_printed(["0.06180"], [float("nan")]).status == "differs"
    with pytest.raises(ValueError, match="printed values"):
        verdict_printed(["1", "2"], [1.0])


def test_exact_values_agree_only_to_rounding():
    assert verdict_printed(["8.5"], [8.5], exact=True).status == "agrees"
    assert verdict_printed(["8.5"], [8.5 + 1e-6], exact=True).status == "differs"
    assert verdict_printed(["8.5"], [8.54]).status == "agrees"  # printed: half a unit of the last digit


def test_estimates_agree_within_the_papers_error_bar_plus_two_of_our_se():
    v = verdict_estimate(9.91, 1.27, 8.646, 0.145)
    assert v.status == "agrees" and "1.00 of the paper's error bar" in v.detail
    assert verdict_estimate(9.03, 0.59, 8.0, 0.1).status == "differs"  # 1.03 > 0.59 + 0.2
    assert verdict_estimate(9.03, 0.59, 8.0, 0.3).status == "agrees"  # 1.03 <= 0.59 + 0.6
    assert verdict_estimate(9.03, 0.59, float("nan"), 0.1).status == "differs"


def test_ranges_agree_when_ours_or_its_interval_overlaps():
    assert verdict_range(600, 700, 650).status == "agrees"
    assert verdict_range(600, 700, 560, 520, 610).status == "agrees"  # interval reaches into the range
    below = verdict_range(600, 700, 413, 319, 472)
    assert below.status == "differs" and "below" in below.detail and "128" in below.detail
    above = verdict_range(600, 700, 800)
    assert above.status == "differs" and "above" in above.detail


def test_sequences_agree_when_every_transition_goes_up_in_k_and_sigma():
    assert verdict_sequence([("4", "4+", 7), ("4+", "5", 1), ("5", "5+", 1)]).status == "agrees"
    v = verdict_sequence([("4+", "4++", 2), ("5+", "4++", 1)])
    assert v.status == "differs" and "5+ → 4++" in v.detail
    assert verdict_sequence([("4++", "4+", 1)]).status == "differs"  # same k, fewer positive biases
    assert verdict_sequence([]).status == "not compared"


# --------------------------------------------------------------------------------------------------
# the data tables


def test_every_paper_value_has_a_source_a_rule_and_a_place_to_find_ours():
    keys = [pv.key for pv in PAPER_VALUES]
    assert len(keys) == len(set(keys))
    for pv in PAPER_VALUES:
        assert pv.source.startswith("Chen et al. 2023"), pv
        assert pv.kind in ("printed", "exact", "estimate", "range", "sequence"), pv
        assert pv.key in paper._OURS, pv.key
        if pv.kind == "estimate":
            assert len(pv.error) == len(pv.values) == 1
        if pv.kind in ("printed", "exact", "estimate", "range"):
            [float(v) for v in pv.values]  # numbers as printed
    assert {"7.71", "9.91", "9.03"} == {pv.values[0] for pv in PAPER_VALUES if pv.kind == "estimate"}


def test_the_figure_map_names_real_stages_and_papers():
    names = {s.name for s in STAGES}
    paths = [ref.path for ref in FIGURE_MAP]
    assert len(paths) == len(set(paths))
    for ref in FIGURE_MAP:
        assert ref.stage in names and ref.path.endswith(".png"), ref
        assert ref.chen == "—" or ref.chen.startswith("Chen et al. 2023"), ref
        assert ref.elhage == "—" or ref.elhage.startswith("Elhage et al. 2022"), ref


# --------------------------------------------------------------------------------------------------
# the table on synthetic stage files


def _write(root: Path, rel: str, text: str) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return rel


def _stage_files(root: Path, *, off: float = 0.0) -> list[dict]:
    """Stage outputs holding the paper's values (``off=0``) or values moved away from them."""
    cp = {"4": (1.0, 0.0, 0.11111, ""), "4+": (1.0, 0.0, 0.10417, ""), "5": (1.17046, -0.2823, 0.06874, 7.0),
          "5+": (1.17046, -0.2823, 0.0618, 8.5), "6": (1.32053, -0.61814, 0.04819, 8.5)}
    lines = ["name,k,sigma,phi,l*,b*,loss,lambda_theory"]
    for name, (ls, bs, loss, lam) in cp.items():
        lam_text = "" if lam == "" else lam + off
        lines.append(f"{name},{name[0]},{name.count('+')},0,{ls + off},{bs},{loss + off / 10},{lam_text}")
    theory = [_write(root, "theory/critical_points_c6.csv", "\n".join(lines) + "\n")]
    est = {"5": (7.71, 0.1), "5+": (9.91, 0.1), "6": (9.03, 0.1)}
    rows = ["name,c,lambda_hat_n1e5,se,lambda_asymptotic,se_asymptotic"]
    llc = []
    for name, (v, se) in est.items():
        rows.append(f"{name},6,{v + 3 * off},{se},{v},{se}")
        result = {"n": 5000, "sampler": "sgld", "llc": v}
        llc.append(_write(root, f"llc/llc_c6_{name.replace('+', 'p')}.json", json.dumps(result)))
    llc.append(_write(root, "llc/llc_vs_theory.csv", "\n".join(rows) + "\n"))
    phases = [
        _write(root, "phases/crossovers.csv",
               f"low_n,high_n,n_c,n_c_full,n_c_paper,n_c_point\n5,6,601,112.4,{601 + 100 * off},573.2\n"),
        _write(root, "phases/sample/switch_points.csv",
               f"low_n,high_n,observed_n_switch,ci_lo,ci_hi\n5,6,{650 - 300 * off},{620 - 300 * off},"
               f"{680 - 300 * off}\n"),
        _write(root, "phases/sample/occupancy.json", json.dumps({"config": {"quick": False}})),
    ]
    trans = [("4", "4+", 4, 4, 7), ("4+", "5", 4, 5, 1)] if not off else [("5", "4+", 5, 4, 1)]
    config = {"init": "kgon", "num_steps": 225000, "batch_size": 20, "lr": 0.005}
    runs = [{"seed": 0, "path": ["4", "4+", "5"]}]
    dynamics = [
        _write(root, "dynamics/transition_counts.csv", "source,target,source_k,target_k,count,median_step\n"
               + "".join(f"{s},{t},{a},{b},{n},100\n" for s, t, a, b, n in trans)),
        _write(root, "dynamics/analysis.json", json.dumps({"config": config, "runs": runs})),
    ]
    return [
        {"name": "theory", "ok": True, "files": theory},
        {"name": "llc", "ok": True, "files": llc},
        {"name": "phases", "ok": True, "files": phases},
        {"name": "dynamics", "ok": True, "files": dynamics},
    ]


def test_the_papers_own_values_agree_on_every_row(tmp_path):
    rows = paper_rows(tmp_path, _stage_files(tmp_path))
    assert [r["key"] for r in rows] == [pv.key for pv in PAPER_VALUES]
    assert {r["key"]: r["status"] for r in rows if r["status"] != "agrees"} == {}
    assert all(not r["caveat"] for r in rows)  # made under the paper's conditions: nothing to say
    assert "601 with the paper's O(1) term" in next(r["ours"] for r in rows if r["key"] == "nc-5-6")


def test_values_away_from_the_papers_differ_and_say_why(tmp_path):
    rows = paper_rows(tmp_path, _stage_files(tmp_path, off=0.5))
    assert {r["key"]: r["status"] for r in rows if r["status"] != "differs"} == {}
    switch = next(r for r in rows if r["key"] == "switch-5-6")
    assert "below 600–700" in switch["detail"] and "O(1)" in switch["why"]


def test_missing_stages_files_and_conditions_are_reported(tmp_path):
    stages = _stage_files(tmp_path)
    (tmp_path / "phases" / "crossovers.csv").unlink()  # written, then lost: an error of the run
    stages[1]["ok"] = False  # the llc stage failed
    del stages[3]  # the dynamics stage was not run
    analysis = {"config": {"init": "random", "num_steps": 30000, "batch_size": 20, "lr": 0.005}, "runs": []}
    rows = {r["key"]: r for r in paper_rows(tmp_path, stages)}
    assert rows["nc-5-6"]["status"] == "missing" and "crossovers.csv" in rows["nc-5-6"]["detail"]
    assert rows["K1-5"]["status"] == "missing" and "llc failed" in rows["K1-5"]["detail"]
    assert rows["sgd-sequence"]["status"] == "not compared"
    assert rows["A1-5"]["status"] == "agrees"
    # a quick-profile SGD run: the verdict keeps only what can be compared and says so
    stages.append({"name": "dynamics", "ok": True, "files": [
        _write(tmp_path, "dynamics/transition_counts.csv",
               "source,target,source_k,target_k,count,median_step\n4+,4++,4,4,2,2566\n"),
        _write(tmp_path, "dynamics/analysis.json", json.dumps(analysis)),
    ]})
    seq = next(r for r in paper_rows(tmp_path, stages) if r["key"] == "sgd-sequence")
    assert seq["status"] == "agrees"
    assert "init = random (the paper's: kgon)" in seq["caveat"] and "num_steps = 30000" in seq["caveat"]


def _png(root: Path, rel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from slt_tms.io.atomic import save_figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    save_figure(fig, root / rel)
    return rel


def test_figure_map_marks_missing_figures_as_errors(tmp_path):
    stages = [
        {"name": "superposition-geometry", "ok": True,
         "files": [_png(tmp_path, "superposition/geometry.png"), _png(tmp_path, "superposition/extra.png")]},
        {"name": "superposition-dimensionality", "ok": True, "files": []},  # ran, wrote no figure
        {"name": "superposition-swish", "ok": False, "files": []},
    ]
    rows = {r["path"]: r for r in figure_rows(tmp_path, stages)}
    assert rows["superposition/geometry.png"]["status"] == "present"
    assert rows["superposition/dimensionality.png"]["status"] == "missing"
    assert rows["superposition/swish_metrics.png"]["status"] == "missing"
    assert rows["dynamics/llc_vs_step.png"]["status"] == "not run"
    assert rows["superposition/extra.png"]["status"] == "not in the map"
    assert rows["phases/c7/sample/switch_comparison.png"]["status"] == "not run"
    quick = {r["path"]: r for r in figure_rows(tmp_path, stages, "quick")}
    assert quick["phases/c7/sample/switch_comparison.png"]["status"] == "not in this profile"
    assert quick["superposition/geometry.png"]["status"] == "present"
    page = write_report(tmp_path, {"profile": "test", "seed": 0, "stages": stages}).read_text()
    assert "id='paper-vs-ours'" in page and "id='figure-map-table'" in page
    assert "3 figure(s) missing" in page
    assert "href='#fig-superposition-geometry-png'" in page and 'id="fig-superposition-geometry-png"' in page
