"""``benchmarks/seed_study.py``: its statistics on runs whose truth is known, and a short run end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
seed_study = pytest.importorskip("seed_study")


def _runs(est: np.ndarray, se: np.ndarray) -> list[dict]:
    return [{"llc": float(e), "se": float(s), "converged": True, "draws": 500, "cpu_s": 1.0}
            for e, s in zip(est, se, strict=True)]


def test_honest_unbiased_runs_read_as_such():
    rng = np.random.default_rng(1)
    est = 3.0 + 0.1 * rng.standard_normal(400)
    row = seed_study.summarize(_runs(est, np.full(400, 0.1)), ref=3.0, ref_se=0.0)
    lo, hi = row["honest_range"]
    assert lo < 1 < hi and hi - lo < 0.15  # the 95% range of sd / SE for 400 honest runs: 0.93-1.07
    # sd / SE of honest runs has a standard error of about 1 / sqrt(2 (k - 1)): within 4 of them
    assert abs(row["sd_over_rms_se"] - 1) < 4 / math.sqrt(2 * 399)
    assert abs(row["bias_z"]) < 4
    assert row["frac_abs_z_gt_2"] == pytest.approx(0.046, abs=0.04)


def test_understated_se_and_offset_are_caught():
    rng = np.random.default_rng(2)
    est = 2.8 + 0.2 * rng.standard_normal(80)  # spread 0.2, reported SE 0.1, centred 0.2 below (~8 SE)
    row = seed_study.summarize(_runs(est, np.full(80, 0.1)), ref=3.0, ref_se=0.01)
    assert row["sd_over_rms_se"] > row["honest_range"][1]
    assert row["bias_z"] < -3
    assert row["bias_rel"] == pytest.approx((est.mean() - 3.0) / 3.0)
    assert row["se_of_mean"] == pytest.approx(est.std(ddof=1) / math.sqrt(80))


def test_short_run_writes_its_record(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "seed_study.py"), "--seeds", "3", "--only", "regular_quadratic",
         "--set", "num_chains=2", "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "SLT_TMS_NO_PROGRESS": "1"}, capture_output=True,
        text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in rec["runs"]] == [0, 1, 2] and rec["overrides"] == {"num_chains": 2}
    assert all(r["chains"] == 2 for r in rec["runs"])
    (row,) = rec["rows"]
    assert row["problem"] == "regular_quadratic(d=4)" and row["seeds"] == 3
    assert all(math.isfinite(r["llc"]) and r["se"] > 0 for r in rec["runs"])
    assert "| regular_quadratic(d=4) |" in out.with_suffix(".md").read_text()
    # the summaries again from the stored runs, without running: the same numbers
    again = tmp_path / "again"
    assert seed_study.main(["--resummarize", str(out.with_suffix(".json")), "--out", str(again)]) == 0
    rec2 = json.loads(again.with_suffix(".json").read_text())
    assert rec2["rows"] == rec["rows"] and rec2["runs"] == rec["runs"] and "resummarized" in rec2
    assert row["rms_error"] >= abs(row["bias"]) and row["rms_error_over_rms_se"] > 0


def test_too_few_seeds_and_a_foreign_record_are_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        seed_study.main(["--seeds", "2"])
    assert "at least 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        seed_study.main(["--set", "adapt_metric", "--out", str(tmp_path / "x")])
    assert "--set takes FIELD=VALUE" in capsys.readouterr().err
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit):
        seed_study.main(["--resummarize", str(bad), "--out", str(tmp_path / "x")])
    assert "a record written by this script" in capsys.readouterr().err
