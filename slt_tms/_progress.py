"""Progress bars that can be silenced (tqdm): one bar per stage of work."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "progress_bar", "progress_disabled"]

T = TypeVar("T")


def progress_disabled(progress: bool | None) -> bool:
    """True when bars should be hidden: ``progress=False`` or env ``SLT_TMS_NO_PROGRESS=1``."""
    if progress is None:
        return os.environ.get("SLT_TMS_NO_PROGRESS", "") not in ("", "0")
    return not progress


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool | None = None
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar unless disabled (``enabled=False`` or the env switch)."""
    return iter(tqdm(iterable, total=total, desc=desc, disable=progress_disabled(enabled),
                     leave=False, dynamic_ncols=True))


def progress_bar(*, total: int, desc: str = "", enabled: bool | None = None) -> Any:
    """A manual tqdm bar (``update(k)``, ``close()``) unless disabled; one bar can span several runs."""
    return tqdm(total=total, desc=desc, disable=progress_disabled(enabled), leave=False, dynamic_ncols=True,
                mininterval=0.5)
