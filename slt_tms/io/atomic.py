"""Atomic file output: nothing half-written is left behind when a command fails.

A file is written under a temporary name beside its destination (``.NAME.XXXXXXXX.tmp.SUFFIX``),
flushed to disk (``fsync``) and renamed onto the destination, and the directory entry is flushed too,
so that after a crash, even a power loss, the destination holds either the old or the new content,
never an empty or partial file. A process killed mid-write leaves only its temporary file, which
:func:`remove_stale_temporaries` deletes (call it only while no other writer uses the directory, e.g.
holding :func:`slt_tms.io.locks.output_lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "prepare_output_dir",
    "prepare_output_file",
    "remove_stale_temporaries",
    "save_figure",
    "sha256",
]

#: Names of the temporary files of :func:`atomic_path`: ``.`` + name + ``.`` + the 8 random characters
#: of :func:`tempfile.mkstemp` + ``.tmp`` + the destination's suffix.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")

# The process umask, read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "x.txt").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual permissions (0666 & ~umask).
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        _fsync(tmp_path)  # the data reaches the disk before the name does
        os.replace(tmp_path, path)
        _fsync(path.parent)  # and the new name itself
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories cannot be opened on Windows: nothing to flush there
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems that cannot fsync (some network mounts, directories on some systems)
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` writes interrupted by a crash left behind.

    Only files named like those temporaries (``.NAME.XXXXXXXX.tmp[.SUFFIX]``) directly inside
    ``directory`` are removed. Call it only while no other process writes into ``directory`` (hold
    :func:`slt_tms.io.locks.output_lock`), or a live write could lose its temporary file.

    Returns
    -------
    list of Path
        The files removed (empty if ``directory`` does not exist).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.json.k3j2h1g0.tmp.json").write_text("{")  # a write killed half-way
    >>> _ = (d / ".notes").write_text("mine")
    >>> [p.name for p in remove_stale_temporaries(d)], sorted(p.name for p in d.iterdir())
    (['.a.json.k3j2h1g0.tmp.json'], ['.notes'])
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.iterdir()):
        if _TEMPORARY.match(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (64 hex digits), recorded with results so inputs can be checked later.

    Parameters
    ----------
    path : path-like
        A readable file; read in 1 MiB chunks (constant memory).

    Returns
    -------
    str
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(fig, path: str | os.PathLike[str], **kwargs) -> Path:
    """Save a matplotlib figure atomically (format from the suffix: .png or .svg) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, **kwargs)
    finally:
        plt.close(fig)
    return path


def prepare_output_dir(path: str | os.PathLike[str]) -> Path:
    """Check, BEFORE any work is done, that results can be written into the directory ``path``.

    Nothing is created (a failed run leaves no empty directory behind): an existing directory must be
    writable; a missing one must have a writable existing ancestor. The writers create it when they
    write.

    Raises
    ------
    ValueError
        One line saying what is wrong: the path is a file, or the directory cannot be written.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {p} is a file, not a directory; choose a directory")
    probe = p
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        raise ValueError(f"--out {p}: {probe} is a file, not a directory; choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into --out {p}: {probe} is not writable; choose a writable directory")
    return p


def prepare_output_file(path: str | os.PathLike[str], flag: str = "--output") -> Path:
    """Check, BEFORE any work is done, that the file ``path`` can be written (atomically: a temporary
    file beside it, then a rename): it is not a directory, and its directory exists and is writable.

    Raises
    ------
    ValueError
        One line naming ``flag``, what is wrong and what to do.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a directory; give a file name, e.g. {p / 'points.csv'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(
            f"{flag} {p}: the directory {parent} does not exist; create it or choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {flag} {p}: {parent} is not writable; choose a writable directory")
    return p
