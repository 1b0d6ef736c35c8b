"""Output locks: one slt-tms run writes into an output directory at a time.

:func:`output_lock` checks, before any work is done, that results can be written into the directory, and
takes an exclusive, non-blocking ``flock`` on a lock file inside it (:data:`LOCK_NAME`). A second run
aimed at the same directory stops at once with one line naming the process that holds it. The kernel
drops the lock when its process ends, however it ends (a crash, ``kill -9``), so the lock of a dead run
is simply taken over; nothing needs cleaning by hand: the run that takes the lock also deletes the
temporary files that writes of a killed run left in the directory
(:func:`slt_tms.io.atomic.remove_stale_temporaries`; only the lock's holder writes there).

The lock is advisory (it binds slt-tms runs, not other programs) and re-entrant within one process (a
command that holds the lock of its ``--out`` may run a sweep into the same directory). On platforms
without ``fcntl`` (Windows) and on file systems without ``flock`` only the writability check is made.

Examples
--------
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
>>> with output_lock(out):
...     _ = (out / "result.json").write_text("{}")
>>> sorted(p.name for p in out.iterdir())  # the lock file is gone once the run ends
['result.json']
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slt_tms.io.atomic import remove_stale_temporaries

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, only the writability check
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "output_lock"]

#: Name of the lock file inside a locked output directory (hidden; removed when the run ends).
LOCK_NAME = ".slt-tms.lock"

#: How often to retry when the lock file was replaced between opening and locking it (a holder
#: finishing at that moment removes it); each retry either locks the new file or finds it held.
_MAX_ATTEMPTS = 20


@dataclass
class _Held:
    fd: int | None
    path: Path
    count: int = 1
    created: list[Path] = field(default_factory=list)


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def _make_dir(d: Path, flag: str) -> list[Path]:
    """Create ``d`` (and missing parents); return the directories created, outermost first."""
    if d.exists() and not d.is_dir():
        raise ValueError(f"{flag} {d} is a file, not a directory; choose a directory")
    missing = []
    probe = d
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot create the {flag} directory {d}: {exc.strerror or exc}; choose a writable directory"
        ) from None
    return missing[::-1]


def _remove_empty(dirs: list[Path]) -> None:
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:  # not empty (or gone): keep it
            return


def _check_writable(d: Path, flag: str) -> None:
    """Create and remove a file in ``d``: the only check that is honest for every user (also root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".slt-tms-probe.", dir=d)
    except OSError as exc:
        raise ValueError(
            f"cannot write into {flag} {d}: {exc.strerror or exc}; choose a writable directory"
        ) from None
    os.close(fd)
    os.unlink(name)


def _holder(path: Path) -> str:
    """``pid N, started at T`` of the current holder, from the lock file it wrote."""
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {int(info['pid'])}, started at {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # it is still writing its details
        return "pid unknown, just started"


def _discard(fd: int, path: Path) -> None:
    os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()


def _acquire(d: Path, flag: str) -> int | None:
    """Open and flock the lock file of ``d``; the file descriptor, or None where flock is unavailable."""
    path = d / LOCK_NAME
    for _ in range(_MAX_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ValueError(
                f"cannot write into {flag} {d}: {exc.strerror or exc}; choose a writable directory"
            ) from None
        if fcntl is None:  # pragma: no cover - Windows
            _discard(fd, path)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(
                f"another slt-tms run ({_holder(path)}) is writing into {d}; wait for it or choose another "
                f"{flag}"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                _discard(fd, path)
                return None  # a file system without flock (some network mounts): no lock, as before
            os.close(fd)
            raise
        # The previous holder removes the file when it finishes; if it did so between our open and our
        # flock we hold a lock on an orphaned inode, so check that the path is still our file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
            return fd
        os.close(fd)
    raise ValueError(f"cannot lock {flag} {d}: the lock file keeps changing; another run is starting there")


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike[str], *, flag: str = "--out") -> Iterator[Path]:
    """Hold the output lock of ``out_dir`` for the duration of the block.

    On entry, before any work: the directory is created if needed (and removed again on exit if the
    run left it empty), checked to be writable, and locked with a non-blocking exclusive ``flock`` on
    ``out_dir/.slt-tms.lock``, into which the holder writes its pid, start time and command line; the
    temporary files of interrupted atomic writes directly inside ``out_dir`` (a killed run's) are then
    deleted. On exit the lock file is removed and the lock released.

    Parameters
    ----------
    out_dir : path-like
        The output directory of the run.
    flag : str
        How the directory was given, named in the messages (``"--out"``, ``"out_dir"``).

    Yields
    ------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        One line, before any work: ``out_dir`` is a file or cannot be created or written; or another
        live slt-tms run holds the lock ("another slt-tms run (pid N, started at T) is writing into DIR;
        wait for it or choose another --out").
    """
    d = Path(out_dir)
    created = _make_dir(d, flag)
    key = os.path.realpath(d)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:  # re-entrant within this process
            held.count += 1
    fresh = held is None
    if fresh:
        try:
            _check_writable(d, flag)
            fd = _acquire(d, flag)
        except BaseException:
            _remove_empty(created)
            raise
        held = _Held(fd=fd, path=d / LOCK_NAME, created=created)
        with _HELD_GUARD:
            _HELD[key] = held
    try:
        if fresh and held.fd is not None:  # the directory is ours alone: its temporaries are a dead run's
            remove_stale_temporaries(d)
        yield d
    finally:
        with _HELD_GUARD:
            held.count -= 1
            last = held.count == 0
            if last:
                del _HELD[key]
        if last:
            if held.fd is not None:
                with contextlib.suppress(OSError):
                    held.path.unlink()  # while still locked: a waiting run re-checks the path
                os.close(held.fd)  # releases the flock
            _remove_empty(held.created)
