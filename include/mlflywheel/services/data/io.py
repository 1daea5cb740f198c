"""Landing-zone IO: one Parquet partition per day, ``<landing>/ds=YYYY-MM-DD/part-00000.parquet``.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a reader
never sees half a partition.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlflywheel.services.errors import DataNotFound

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

PART = "part-00000.parquet"


def landing_dir(config: PipelineConfig, ws: Workspace) -> Path:
    """The pipeline's landing folder (``data.landing``, relative to the landing root)."""
    path = Path(config.data.landing)
    return path if path.is_absolute() else ws.landing_root / path


def partition_path(config: PipelineConfig, ws: Workspace, day: dt.date) -> Path:
    return landing_dir(config, ws) / f"ds={day.isoformat()}" / PART


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Days ``start <= d < end``."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def utc_date(when: dt.datetime) -> dt.date:
    """The UTC calendar day of ``when`` (a naive datetime is taken as UTC)."""
    return (when if when.tzinfo is None else when.astimezone(dt.UTC)).date()


def interval_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The daily partitions a data interval ``[start, end)`` reads: UTC days ``start <= D < end``.

    An interval shorter than a day, or one that starts and ends inside the same day, reads
    the day it starts in: every stage (validate, batch scoring, the S3 mirror) sees at
    least one partition, the same one.
    """
    first, last = utc_date(start), utc_date(end)
    return days_between(first, last) or [first]


def available_days(config: PipelineConfig, ws: Workspace) -> list[dt.date]:
    root = landing_dir(config, ws)
    if not root.is_dir():
        return []
    days = []
    for child in root.iterdir():
        if child.name.startswith("ds=") and (child / PART).is_file():
            days.append(dt.date.fromisoformat(child.name[3:]))
    return sorted(days)


def read_days(config: PipelineConfig, ws: Workspace, days: list[dt.date], *,
              require_all: bool = True) -> pd.DataFrame:
    """Concatenate the partitions of ``days``.

    Raises:
        DataNotFound: a required partition is missing (names the path).
    """
    import pandas as pd

    frames = []
    for day in days:
        path = partition_path(config, ws, day)
        if not path.is_file():
            if require_all:
                raise DataNotFound(f"{path}: landing partition for {day} not found "
                                  f"(pipeline {config.name!r}, data.landing={config.data.landing!r})")
            continue
        frames.append(pd.read_parquet(path))
    if not frames:
        raise DataNotFound(f"{landing_dir(config, ws)}: no landing partitions for {days[0]}..{days[-1]}"
                          if days else f"{landing_dir(config, ws)}: no days requested")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # not "*.parquet": a reader globbing the folder must never open a half-written file
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet.partial", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
