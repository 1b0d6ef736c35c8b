"""Writers of tabular results (atomic, like every file the package writes)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slt_tms.io.atomic import atomic_write_text

__all__ = ["write_csv"]


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], header: Sequence[str]) -> Path:
    """Write ``rows`` (dicts; keys outside ``header`` ignored, missing ones empty) as CSV, atomically."""
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(header), extrasaction="ignore", lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow(r)
    return atomic_write_text(path, buf.getvalue())
