"""Fuzz the file loaders: random bytes, truncations and bit flips of valid files.

Whatever the bytes, a loader either returns or raises :class:`ValueError` with a one-line message:
never another exception type, never a hang (each call runs under a 10 s alarm) and never a huge
allocation (the peak resident memory of the process, reset before the test, may grow by at most
512 MiB). The valid files are tiny (a few hundred bytes to 2 KB), so every header field is within reach
of a few bit flips.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from slt_tms.io import load_checkpoint, load_state_dict_file, load_tensors, save_checkpoint
from slt_tms.io.user_models import load_data

#: The loaders that accept each suffix (load_data reads x and y through load_tensors, then checks them).
LOADERS = {
    ".safetensors": (load_tensors, load_checkpoint, load_state_dict_file, load_data),
    ".pt": (load_tensors, load_checkpoint, load_state_dict_file, load_data),
    ".npz": (load_tensors, load_data),
}
#: Seconds one loader call may take before it counts as a hang (they take milliseconds).
TIMEOUT_S = 10
#: Peak-memory growth that counts as a huge allocation (the valid files hold a few hundred bytes).
MAX_GROWTH_KB = 512 * 1024

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)


def _valid_files(d: Path) -> dict[str, bytes]:
    g = torch.Generator().manual_seed(0)
    save_checkpoint(d / "ckpt.safetensors", torch.randn(3, 15, generator=g), c=5, r=2, seed=1, step=3,
                    extra={"lr": 0.01})
    torch.save({"W": torch.randn(2, 5, generator=g), "b": torch.randn(5, generator=g),
                "meta": {"c": 5, "r": 2, "step": 3}}, d / "ckpt.pt")
    torch.save({"epoch": 1, "state_dict": torch.nn.Linear(3, 2).state_dict()}, d / "nested.pt")
    torch.save({"x": torch.randn(6, 3, generator=g), "y": torch.arange(6)}, d / "data.pt")
    save_file({"x": torch.randn(6, 3, generator=g), "y": torch.arange(6)}, str(d / "data.safetensors"))
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x=rng.random((6, 3)).astype("float32"), y=np.arange(6))
    np.savez_compressed(d / "packed.npz", x=rng.random((6, 3)),
                        y=np.asfortranarray(np.arange(12).reshape(6, 2)))
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    files = _valid_files(tmp_path_factory.mktemp("valid"))
    work = tmp_path_factory.mktemp("fuzz")
    made_for = {"ckpt": (load_checkpoint,), "nested": (load_state_dict_file,),
                "data": (load_tensors, load_data), "packed": (load_tensors, load_data)}
    for name, data in files.items():  # the valid files load with the loaders they were made for
        p = work / name
        p.write_bytes(data)
        for fn in made_for[name.split(".")[0]]:
            fn(p)
    return files


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _peak_kb() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: the memory bound is not measured
        return None
    return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM:"))


@pytest.fixture(scope="module", autouse=True)
def memory_bound():
    """Reset the peak RSS (Linux: clear_refs 5), and check its growth once all examples ran."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = _peak_kb()
    except OSError:
        start = None
    yield
    if start is not None:
        assert _peak_kb() - start < MAX_GROWTH_KB, "a loader allocated hundreds of MiB for a tiny file"


@contextlib.contextmanager
def _alarm(seconds: int):
    """TimeoutError if the block runs longer than ``seconds`` (main thread, POSIX); else no guard."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"a loader ran for more than {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _check_loaders(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    for fn in LOADERS[path.suffix]:
        with _alarm(TIMEOUT_S), warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would escape as another exception type
            try:
                fn(path)
            except ValueError as exc:
                msg = str(exc)
                assert msg and "\n" not in msg and msg == msg.strip(), f"{fn.__name__}: {msg!r}"


_names = st.sampled_from(["ckpt.safetensors", "ckpt.pt", "nested.pt", "data.pt", "data.safetensors",
                          "data.npz", "packed.npz"])


@FUZZ
@given(suffix=st.sampled_from(sorted(LOADERS)), data=st.binary(max_size=2048))
def test_random_bytes(work, suffix, data):
    _check_loaders(work / f"random{suffix}", data)


@FUZZ
@given(name=_names, cut=st.floats(0, 1, exclude_max=True))
def test_truncations(valid, work, name, cut):
    raw = valid[name]
    _check_loaders(work / f"cut-{name}", raw[: int(cut * len(raw))])


@FUZZ
@given(name=_names, where=st.data())
def test_bit_flips(valid, work, name, where):
    raw = bytearray(valid[name])
    # half the examples flip bits in the first 256 bytes, where the headers live
    span = where.draw(st.sampled_from([len(raw), min(len(raw), 256)]))
    flips = where.draw(st.lists(st.tuples(st.integers(0, span - 1), st.integers(0, 7)), min_size=1,
                                max_size=8))
    for pos, bit in flips:
        raw[pos] ^= 1 << bit
    _check_loaders(work / f"flip-{name}", bytes(raw))


def test_fuzz_checks_can_fail(work, monkeypatch):
    """Negative control: a loader that leaks another exception type, or a multi-line message, is caught."""
    import slt_tms.io.checkpoints as ck

    monkeypatch.setitem(LOADERS, ".npz", (load_tensors,))
    monkeypatch.setattr(ck, "_read_npz", lambda p: (_ for _ in ()).throw(KeyError("x")))
    with pytest.raises(KeyError):
        _check_loaders(work / "ctl.npz", b"junk")
    monkeypatch.setattr(ck, "_read_npz", lambda p: (_ for _ in ()).throw(ValueError("two\nlines")))
    with pytest.raises(AssertionError, match="two"):
        _check_loaders(work / "ctl.npz", b"junk")
