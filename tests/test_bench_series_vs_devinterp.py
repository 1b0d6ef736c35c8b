"""``benchmarks/bench_series_vs_devinterp.py --quick`` runs end to end and writes its record (a smoke test of
the script, not a measurement).

devinterp is installed only in the benchmark environment (``benchmarks/.venv-bench``, built by
``benchmarks/setup_bench_env.sh``), not in the main one, so this test is skipped wherever devinterp (or
transformers) cannot be imported by the Python running the tests: in the main environment it is always
skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("devinterp")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_series_vs_devinterp.py"


def test_quick_run_writes_both_libraries_side_by_side(tmp_path):
    out = tmp_path / "series_vs_devinterp.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(out.read_text())
    for prob in ("mlp", "lm"):
        entry = rec["results"][prob]
        ours, dev = entry["slt_tms"], entry["devinterp"]
        assert len(ours["rows"]) == len(dev["rows"]) == 4
        assert all(math.isfinite(r["llc"]) and r["ess"] > 0 for r in ours["rows"])
        assert all(math.isfinite(r["llc"]) for r in dev["rows"])
        assert ours["peak_rss_mb"] > 0 and dev["peak_rss_mb"] > 0
        assert entry["summary"]["wall_ratio"] > 0
    assert rec["table"].startswith("| problem | library |") and "wrote" in proc.stdout
