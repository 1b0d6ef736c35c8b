"""Output locks: one run per output directory, stale locks taken over, unwritable outputs refused early."""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slt_tms.io.locks as locks
from slt_tms.cli import main
from slt_tms.io.locks import LOCK_NAME, output_lock

HOLD = """
import sys, time
from slt_tms.io.locks import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def _holder(out: Path):
    """A separate process that holds the lock of ``out`` until the block ends (then it is SIGKILLed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("slt-tms: error: ") and err.count("\n") == 1, err
    return err


def test_doctests():
    assert doctest.testmod(locks).failed == 0


def test_second_process_is_refused_and_dead_holders_are_taken_over(tmp_path):
    out = tmp_path / "run"
    with _holder(out) as proc:
        with pytest.raises(ValueError) as info:
            with output_lock(out):
                pytest.fail("entered a directory locked by another process")
        msg = str(info.value)
        assert re.fullmatch(
            rf"another slt-tms run \(pid {proc.pid}, started at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\) is "
            rf"writing into {re.escape(str(out))}; wait for it or choose another --out", msg
        ), msg
        proc.kill()  # kill -9: the process cannot clean up, its lock file stays behind
        proc.wait()
        assert (out / LOCK_NAME).exists()
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
        with output_lock(out):  # the kernel released the dead process's lock: taken over
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()  # removed when the run ends


def test_reentrant_within_a_process_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a" / "b"
    with output_lock(out), output_lock(out):  # nested: a command running a sweep into its own --out
        assert (out / LOCK_NAME).exists()
    assert not out.parent.exists()  # created for the run and left empty: removed again
    with pytest.raises(RuntimeError), output_lock(out):
        (out / "partial.json").write_text("{")
        raise RuntimeError("the run failed")
    assert sorted(p.name for p in out.iterdir()) == ["partial.json"]  # results are never removed
    # another thread of work in this process after release: the lock is free again
    with output_lock(out):
        pass


def test_taking_the_lock_removes_the_temporaries_of_a_killed_run(tmp_path):
    """A write killed half-way leaves ``.NAME.XXXXXXXX.tmp.SUFFIX``; the next holder of the lock deletes it
    (only directly inside the directory; a re-entered lock deletes nothing: the holder may be writing)."""
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    stale = out / ".analysis.json.ck3syy5i.tmp.json"
    for p in (stale, out / "sub" / ".t.csv.a1b2c3d4.tmp.csv", out / ".notes", out / "result.json"):
        p.write_text("half")
    with output_lock(out):
        assert not stale.exists()
        live = out / ".fig.png.zz_9y8x7.tmp.png"
        live.write_text("being written")
        with output_lock(out):
            assert live.exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        ".fig.png.zz_9y8x7.tmp.png", ".notes", "result.json", "sub", "sub/.t.csv.a1b2c3d4.tmp.csv"]


def test_file_paths_are_refused(tmp_path):
    f = tmp_path / "results.json"
    f.write_text("{}")
    with pytest.raises(ValueError, match=r"^--out .*results\.json is a file, not a directory; choose a dir"):
        with output_lock(f):
            pass
    with pytest.raises(ValueError, match=r"^cannot create the out_dir directory .*json/sub: Not a dir"):
        with output_lock(f / "sub", flag="out_dir"):
            pass
    assert f.read_text() == "{}"


@contextlib.contextmanager
def _read_only(d: Path):
    """Make ``d`` unwritable for this process: mode 0o555, or for root (who ignores modes) immutable."""
    if os.geteuid() != 0:
        d.chmod(0o555)
        try:
            yield
        finally:
            d.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a directory read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(d)], check=True)


def test_read_only_directory_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    with _read_only(out):
        with pytest.raises(OSError):  # the directory really is read-only (so the next check can fail)
            (out / "probe").write_text("x")
        with pytest.raises(ValueError, match=r"^cannot write into --out .*ro: .*; choose a writable dir"):
            with output_lock(out):
                pass

        import slt_tms.commands.llc as llc_cmd
        import slt_tms.commands.train as train_cmd

        def no_work(*args, **kwargs):
            raise AssertionError("work started before the output directory was checked")

        monkeypatch.setattr(train_cmd, "train", no_work)
        monkeypatch.setattr(llc_cmd, "load_model", no_work)
        assert main(["train", "--c", "3", "--steps", "5", "--out", str(out)]) == 2
        assert "cannot write into --out" in _one_line_error(capsys)
        assert main(["llc", "ckpt.pt", "--model", "m.py:f", "--data", "d.npz", "--out", str(out)]) == 2
        assert "cannot write into --out" in _one_line_error(capsys)
    assert list(out.iterdir()) == []


def test_commands_refuse_a_file_as_out_before_any_work(tmp_path, monkeypatch, capsys):
    import slt_tms.commands.llc as llc_cmd
    import slt_tms.commands.train as train_cmd

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output directory was checked")

    monkeypatch.setattr(train_cmd, "train", no_work)
    monkeypatch.setattr(llc_cmd, "load_model", no_work)
    f = tmp_path / "file"
    f.write_text("")
    assert main(["train", "--c", "3", "--steps", "5", "--out", str(f)]) == 2
    assert "is a file" in _one_line_error(capsys)
    assert main(["llc", "ckpt.pt", "--model", "m.py:f", "--data", "d.npz", "--out", str(f)]) == 2
    assert "is a file" in _one_line_error(capsys)


def test_two_train_processes_on_one_out(tmp_path, capsys):
    """A real ``slt-tms train`` process holds --out; a second train (and an llc) on it stop at once."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "slt_tms", "train", "--c", "3", "--steps", "10000000", "--quiet", "--out",
           str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the first run never took its lock"
            with contextlib.suppress(OSError, ValueError, KeyError):
                if json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid:
                    break
            time.sleep(0.05)
        t0 = time.monotonic()
        assert main(["train", "--c", "3", "--steps", "5", "--out", str(out)]) == 2
        err = _one_line_error(capsys)
        assert f"another slt-tms run (pid {proc.pid}, started at " in err and "choose another --out" in err
        assert main(["llc", "ckpt.pt", "--model", "m.py:f", "--data", "d.npz", "--out", str(out)]) == 2
        assert f"(pid {proc.pid}," in _one_line_error(capsys)
        assert time.monotonic() - t0 < 10  # refused at once, not after waiting
        assert proc.poll() is None  # the first run is untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    # after the first run died, the directory can be used again
    assert main(["train", "--c", "3", "--steps", "5", "--num-checkpoints", "2", "--quiet", "--out",
                 str(out)]) == 0
    assert (out / "trajectory.json").is_file() and not (out / LOCK_NAME).exists()


#: Every command that writes into a directory, with the function whose call is its first real work.
LOCKED_COMMANDS = {
    "dynamics-run": (["dynamics", "run", "--quick", "--seeds", "1", "--quiet", "--out", "{out}"],
                     "slt_tms.experiments.sgd_dynamics", "run"),
    "dynamics-llc": (["dynamics", "llc", "{out}", "--quiet"],
                     "slt_tms.commands.dynamics", "llc_along_training"),
    "phases-predict": (["phases", "predict", "--c", "6", "--quiet", "--out", "{out}"],
                       "slt_tms.commands.phases", "_critical_points"),
    "phases-sample": (["phases", "sample", "--c", "6", "--quick", "--quiet", "--out", "{out}"],
                      "slt_tms.commands.phases", "_critical_points"),
    "superposition": (["superposition", "geometry", "--quick", "--quiet", "--out", "{out}"],
                      "slt_tms.experiments.superposition", "geometry"),
    "reproduce": (["reproduce", "--profile", "quick", "--quiet", "--out", "{out}"],
                  "slt_tms.commands.reproduce", "_source_digest"),
    "llc-critical": (["llc", "--tms-critical", "5+", "--c", "6", "--quiet", "--out", "{out}"],
                     "slt_tms.commands.llc", "from_critical_point"),
    "llc": (["llc", "ckpt.pt", "--model", "m.py:f", "--data", "d.npz", "--out", "{out}"],
            "slt_tms.commands.llc", "load_data"),
    "train": (["train", "--c", "3", "--steps", "5", "--out", "{out}"], "slt_tms.commands.train", "train"),
}


@pytest.mark.parametrize("command", sorted(LOCKED_COMMANDS))
def test_every_writing_command_refuses_a_locked_directory_before_any_work(tmp_path, monkeypatch, capsys,
                                                                          command):
    import importlib

    argv, module, work = LOCKED_COMMANDS[command]

    def no_work(*args, **kwargs):
        raise AssertionError(f"{command}: work started in a directory another run holds")

    monkeypatch.setattr(importlib.import_module(module), work, no_work)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # 'dynamics llc' first checks that DIR holds a run
    with _holder(out) as proc:
        t0 = time.monotonic()
        assert main([a.replace("{out}", str(out)) for a in argv]) == 2
        err = _one_line_error(capsys)
        assert f"another slt-tms run (pid {proc.pid}, started at " in err, err
        assert time.monotonic() - t0 < 10
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "config.json"]  # nothing written
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # the holder's lock untouched
