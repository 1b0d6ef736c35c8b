"""Progress bars that can be silenced (tqdm): one bar per stage of work.

:func:`progress` wraps an iterable and :func:`progress_bar` gives a manual bar. Inside
:func:`progress_group` neither opens a bar of its own: every one of them adds its total to the group's
single bar and advances it (its description shows what is running), so a stage made of many pieces of
work (critical points for several c, an LLC estimate per critical point, one training run per sparsity)
shows one bar, not one per piece.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "progress_bar", "progress_disabled", "progress_group"]

T = TypeVar("T")


def _placement() -> dict[str, Any]:
    """tqdm's placement: on a terminal, bars open together stack (tqdm moves the cursor between their lines);
    where stderr is a file or a pipe (a log, CI) every bar writes on its own line's carriage return
    (``position=0``), so no cursor-movement escape codes end up in the log."""
    stream = sys.stderr
    try:
        tty = bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return {} if tty else {"position": 0}


def progress_disabled(progress: bool | None) -> bool:
    """True when bars should be hidden: ``progress=False`` or env ``SLT_TMS_NO_PROGRESS=1``."""
    if progress is None:
        return os.environ.get("SLT_TMS_NO_PROGRESS", "") not in ("", "0")
    return not progress


class _Group:
    """The one bar of a :func:`progress_group`. It is on screen while a piece of work reports to it and
    cleared in between (so what a stage prints between two pieces is not written over the bar); the
    counts carry over from one piece to the next."""

    def __init__(self, desc: str, disabled: bool) -> None:
        self.desc = desc
        self.disabled = disabled
        self.bar: Any = None
        self.n = 0
        self.total = 0
        self.open_pieces = 0

    def _label(self, desc: str) -> str:
        return f"{self.desc}: {desc}" if desc else self.desc

    def open(self, total: int, desc: str) -> None:
        self.open_pieces += 1
        self.grow(total, desc)

    def grow(self, k: int, desc: str) -> None:
        self.total += k
        if self.disabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=self.n, desc=self._label(desc), leave=False,
                            dynamic_ncols=True, mininterval=0.5, **_placement())
            return
        self.bar.total = self.total
        self.bar.set_description(self._label(desc), refresh=False)
        self.bar.refresh()

    def update(self, k: int) -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)

    def shrink(self, k: int) -> None:
        """Take ``k`` units that will not be done (a piece that stopped early) off the total."""
        if k <= 0:
            return
        self.total = max(self.total - k, self.n)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def close_piece(self) -> None:
        self.open_pieces -= 1
        if self.open_pieces <= 0:
            self.close()

    def close(self) -> None:
        self.open_pieces = 0
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_GROUP: contextvars.ContextVar[_Group | None] = contextvars.ContextVar("slt_tms_progress_group", default=None)


class _Piece:
    """What :func:`progress_bar` returns inside a group: a bar-like object that reports to the group.

    Supports what the package's callers use of a tqdm bar: ``update(k)``, ``n``, ``total`` (settable:
    ``bar.total = bar.n`` marks an early stop), ``set_description``, ``set_postfix`` and ``close()``.
    """

    def __init__(self, group: _Group, total: int, desc: str) -> None:
        self._group = group
        self._total = int(total)
        self.n = 0
        self.desc = desc
        self._closed = False
        group.open(self._total, desc)

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        value = int(value)
        if value < self._total:
            self._group.shrink(self._total - value)
        else:
            self._group.grow(value - self._total, self.desc)
        self._total = value

    def update(self, k: int = 1) -> None:
        self.n += k
        self._group.update(k)

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._group.shrink(self._total - self.n)
            self._group.close_piece()

    def __enter__(self) -> _Piece:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _active_group(enabled: bool | None) -> _Group | None:
    """The group to report to, unless the caller asked for no bar (``enabled=False`` stays silent)."""
    group = _GROUP.get()
    if group is None or enabled is False:
        return None
    return group


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool | None = None
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar unless disabled (``enabled=False`` or the env switch); inside
    :func:`progress_group` the items advance the group's bar instead."""
    group = _active_group(enabled)
    if group is None:
        return iter(tqdm(iterable, total=total, desc=desc, disable=progress_disabled(enabled),
                         leave=False, dynamic_ncols=True, **_placement()))
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = 0
    return _grouped(iterable, _Piece(group, total, desc))


def _grouped(iterable: Iterable[T], piece: _Piece) -> Iterator[T]:
    try:
        for item in iterable:
            yield item
            piece.update(1)
    finally:
        piece.close()


def progress_bar(*, total: int, desc: str = "", enabled: bool | None = None) -> Any:
    """A manual tqdm bar (``update(k)``, ``close()``) unless disabled; one bar can span several runs.
    Inside :func:`progress_group` it is a part of the group's bar."""
    group = _active_group(enabled)
    if group is not None:
        return _Piece(group, total, desc)
    return tqdm(total=total, desc=desc, disable=progress_disabled(enabled), leave=False, dynamic_ncols=True,
                mininterval=0.5, **_placement())


@contextmanager
def progress_group(desc: str, *, enabled: bool | None = None) -> Iterator[None]:
    """One progress bar for all the work inside the ``with`` block.

    Every :func:`progress` and :func:`progress_bar` opened inside (at any depth, in this thread) adds its
    total to one bar named ``desc`` and advances it; a piece that stops early (e.g. an estimator that
    converged before its budget) takes its unused part off the total. The bar opens at the first piece
    of work and closes with the block. ``enabled=False`` (or the env switch) silences it and everything
    inside. Groups do not nest: an inner group joins the outer one.

    Examples
    --------
    >>> with progress_group("stage", enabled=False):
    ...     sum(progress(range(3), desc="part a")) + sum(progress(range(4), desc="part b"))
    9
    """
    outer = _GROUP.get()
    if outer is not None:
        yield
        return
    token = _GROUP.set(_Group(desc, progress_disabled(enabled)))
    try:
        yield
    finally:
        group = _GROUP.get()
        _GROUP.reset(token)
        if group is not None:
            group.close()
