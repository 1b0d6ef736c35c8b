"""Progress bars: inside a progress group every piece of work reports to one bar (one bar per stage)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from slt_tms import _progress
from slt_tms._progress import progress, progress_bar, progress_group


class _FakeBar:
    """Records what a tqdm bar would show; counts the bars open at once."""

    created: ClassVar[list[_FakeBar]] = []
    open_now = 0
    most_open = 0

    def __init__(self, iterable=None, *, total=None, desc="", disable=False, initial=0, **kwargs):
        self.iterable, self.total, self.desc, self.disable, self.n = iterable, total, desc, disable, initial
        self.closed = False
        _FakeBar.created.append(self)
        if not disable:
            _FakeBar.open_now += 1
            _FakeBar.most_open = max(_FakeBar.most_open, _FakeBar.open_now)

    def __iter__(self):
        yield from self.iterable

    def update(self, k=1):
        self.n += k

    def set_description(self, desc, refresh=True):
        self.desc = desc

    def refresh(self):
        pass

    def close(self):
        if not self.closed and not self.disable:
            _FakeBar.open_now -= 1
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def bars(monkeypatch):
    monkeypatch.setattr(_progress, "tqdm", _FakeBar)
    monkeypatch.delenv("SLT_TMS_NO_PROGRESS", raising=False)
    _FakeBar.created, _FakeBar.open_now, _FakeBar.most_open = [], 0, 0
    return _FakeBar


def _stage_work() -> list[int]:
    out = [x for c in range(3) for x in progress(range(4), desc=f"critical points c={c}")]
    bar = progress_bar(total=100, desc="LLC estimate")  # stops early, as a converged estimator does
    bar.update(30)
    bar.total = bar.n
    bar.close()
    with progress_bar(total=5, desc="LLC estimate") as bar:
        bar.update(5)
    out += list(progress(range(2), desc="silent", enabled=False))  # asked for no bar: not counted
    return out


def test_a_group_shows_one_bar_for_every_piece_of_work(bars):
    with progress_group("llc"):
        items = _stage_work()
    assert items == [0, 1, 2, 3] * 3 + [0, 1]
    shown = [b for b in bars.created if not b.disable]
    assert bars.most_open == 1 and bars.open_now == 0  # never two bars on screen; closed at the end
    assert all(b.desc.startswith("llc: ") for b in shown)
    last = shown[-1]
    assert last.n == last.total == 3 * 4 + 30 + 5  # the early stop took its unused 70 off the total
    assert shown[0].desc == "llc: critical points c=0" and last.desc == "llc: LLC estimate"


def test_without_a_group_every_piece_has_its_own_bar(bars):
    _stage_work()
    shown = [b for b in bars.created if not b.disable]
    assert len(shown) == 5  # three loops and two manual bars
    assert [b.desc for b in shown][:2] == ["critical points c=0", "critical points c=1"]


@pytest.mark.parametrize("how", ["enabled", "env"])
def test_a_silenced_group_silences_everything_inside(bars, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("SLT_TMS_NO_PROGRESS", "1")
    with progress_group("quiet stage", enabled=False if how == "enabled" else None):
        assert sum(progress(range(3))) == 3
        bar = progress_bar(total=3, desc="x")
        bar.update(3)
        bar.close()
    assert not [b for b in bars.created if not b.disable]


def test_groups_do_not_nest_and_the_bar_closes_on_errors(bars):
    with pytest.raises(RuntimeError), progress_group("outer"):
        with progress_group("inner"):
            list(progress(range(2), desc="a"))
            progress_bar(total=4, desc="b").update(1)
            raise RuntimeError("stage failed")
    shown = [b for b in bars.created if not b.disable]
    assert shown and all(b.desc.startswith("outer: ") for b in shown)
    assert bars.open_now == 0


def _square(task: dict) -> dict:
    return {"y": task["x"] ** 2}


def test_a_sweep_inside_a_group_joins_its_bar(bars, tmp_path):
    """``dynamics run`` inside ``reproduce``: the sweep over seeds reports to the stage's one bar."""
    from slt_tms.sweep import run_sweep

    with progress_group("dynamics"):
        results = run_sweep(_square, [{"x": i} for i in range(3)], out_dir=tmp_path / "runs", max_workers=1)
        list(progress(range(2), desc="after the sweep"))
    assert [r["y"] for r in results] == [0, 1, 4]
    shown = [b for b in bars.created if not b.disable]
    assert bars.most_open == 1 and all(b.desc.startswith("dynamics: ") for b in shown)
    assert shown[-1].n == shown[-1].total == 3 + 2


def test_bars_open_together_write_no_cursor_codes_into_a_log():
    """Where stderr is a file or pipe (a log, CI), a bar opened inside another writes on the same line
    (carriage returns only): tqdm's stacking moves the cursor up with escape codes that litter a log."""
    import subprocess
    import sys

    code = (
        "from slt_tms._progress import progress_bar\n"
        "a = progress_bar(total=3, desc='outer', enabled=True)\n"
        "for _ in range(3):\n"
        "    b = progress_bar(total=2, desc='inner', enabled=True); b.update(2); b.close(); a.update(1)\n"
        "a.close()\n"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "inner" in err and "outer" in err  # the bars are shown
    assert "\x1b[" not in err, repr(err)
