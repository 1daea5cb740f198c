"""The labels zone: outcomes that land later than the rows they label, keyed by the row id.

A fraud label is known when a chargeback arrives (or a dispute window closes), days after the
transaction. Labels are written by the day they *arrive*:
``$FLYWHEEL_LABELS_ROOT/<data.landing>/ds=<arrival day>/events-<event day>.parquet`` with the
columns ``<id_column>``, ``<label>``, ``label_timestamp`` (default root
``$FLYWHEEL_HOME/labels``). One file per (arrival day, event day) keeps every write atomic and
idempotent: generating the same event day again rewrites the same files.

The landing partitions keep their label column (training reads matured history from them);
the drift monitor never trusts a label it reads there for a current window: live metrics
come from this zone, as of the check time.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlflywheel.services.data.io import days_between, read_days, write_parquet_atomic
from mlflywheel.services.errors import DriftInputError

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

LABEL_TS = "label_timestamp"


def labels_dir(config: PipelineConfig, ws: Workspace) -> Path:
    """The pipeline's labels folder (``FLYWHEEL_LABELS_ROOT`` or ``$FLYWHEEL_HOME/labels``)."""
    root = Path(os.environ.get("FLYWHEEL_LABELS_ROOT") or ws.home / "labels")
    landing = Path(config.data.landing)
    return landing if landing.is_absolute() else root / landing


def write_labels(config: PipelineConfig, ws: Workspace, *, start: dt.date, end: dt.date, delay_days: float,
                 jitter_days: float = 1.0, seed: int = 0) -> list[str]:
    """Publish the labels of landing days ``start <= d < end``, each arriving after a delay.

    A row's label arrives at ``event time + delay_days + U(0, jitter_days)`` days (seeded per
    event day). The labels are the landing partition's own, so live metrics and training
    agree on the truth.

    Returns:
        The files written.
    """
    import numpy as np
    import pandas as pd

    from mlflywheel.services.data.generate import day_rng

    data = config.data
    written = []
    for day in days_between(start, end):
        frame = read_days(config, ws, [day])[[data.id_column, data.timestamp, data.label]]
        rng = day_rng(seed, f"labels:{config.name}", day)
        delay = pd.to_timedelta(delay_days + rng.uniform(0, jitter_days, len(frame)), unit="D")
        labels = pd.DataFrame({data.id_column: frame[data.id_column].to_numpy(),
                               data.label: frame[data.label].to_numpy(),
                               LABEL_TS: (frame[data.timestamp] + delay).dt.floor("s").to_numpy()})
        arrival = labels[LABEL_TS].dt.tz_convert("UTC").dt.date
        for arrival_day in np.unique(arrival):
            path = labels_dir(config, ws) / f"ds={arrival_day.isoformat()}" / f"events-{day.isoformat()}.parquet"
            written.append(str(write_parquet_atomic(labels[arrival == arrival_day].reset_index(drop=True), path)))
    return written


def read_labels(config: PipelineConfig, ws: Workspace, *, since: dt.date, as_of: dt.datetime) -> pd.DataFrame:
    """Labels that arrived between ``since`` (a day) and ``as_of`` (inclusive), one row per id.

    Raises:
        DriftInputError: a labels file lacks the id, label or ``label_timestamp`` column.
    """
    import pandas as pd

    data = config.data
    columns = [data.id_column, data.label, LABEL_TS]
    root = labels_dir(config, ws)
    frames = []
    for day in days_between(since, as_of.astimezone(dt.UTC).date() + dt.timedelta(days=1)):
        for path in sorted((root / f"ds={day.isoformat()}").glob("*.parquet")):
            frame = pd.read_parquet(path)
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise DriftInputError(f"{path}: labels file lacks column(s) {missing}; expected {columns}, "
                                      f"found {list(frame.columns)}")
            frames.append(frame[columns])
    if not frames:
        return pd.DataFrame({data.id_column: pd.Series(dtype=object), data.label: pd.Series(dtype="int64"),
                             LABEL_TS: pd.Series(dtype="datetime64[ns, UTC]")})
    labels = pd.concat(frames, ignore_index=True)
    labels = labels[labels[LABEL_TS] <= pd.Timestamp(as_of)]
    # A corrected label supersedes the earlier one.
    return labels.sort_values(LABEL_TS, kind="stable").drop_duplicates(data.id_column, keep="last")
