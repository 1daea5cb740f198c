"""The ``feature_materialize`` stage: feature tables, Feast apply and materialize, the training snapshot.

The training frame of the window is joined point in time and written once under its content
digest (``snapshots/<pipeline>/<digest>/frame.parquet`` with a ``snapshot.json``), so every
later stage reads exactly the rows training saw.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflywheel.services.data.io import days_between, write_parquet_atomic, write_text_atomic
from mlflywheel.services.dataset import SNAPSHOT_FILE, SNAPSHOT_META, snapshot_dir
from mlflywheel.services.errors import FeatureError
from mlflywheel.services.features import (
    apply_repo,
    build_feature_tables,
    check_views,
    frame_digest,
    load_store,
    materialize,
    training_frame,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A point-in-time training frame: where it is and what it contains."""

    uri: str
    digest: str
    rows: int
    positives: int
    start: str
    end: str
    feature_views: list[str]
    columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- the repo --------------------------------------------------------------------------


def write_snapshot(frame: pd.DataFrame, config: PipelineConfig, ws: Workspace, start: dt.date,
                   end: dt.date) -> Snapshot:
    """Write ``frame`` once under its digest; an identical frame reuses the existing file."""
    digest = frame_digest(frame)
    folder = snapshot_dir(ws, config.name, digest)
    path = folder / SNAPSHOT_FILE
    if not path.is_file():
        write_parquet_atomic(frame, path)
    snapshot = Snapshot(uri=str(path), digest=digest, rows=len(frame),
                        positives=int(frame[config.data.label].sum()), start=start.isoformat(),
                        end=end.isoformat(), feature_views=[v.name for v in config.features.views],
                        columns=list(frame.columns))
    write_text_atomic(json.dumps(snapshot.to_dict(), indent=2), folder / SNAPSHOT_META)
    return snapshot


def materialize_and_snapshot(config: PipelineConfig, ws: Workspace, *, interval_end: dt.datetime,
                             window_days: int) -> dict[str, Any]:
    """The ``feature_materialize`` step: tables, apply, materialize, point-in-time snapshot.

    Args:
        config: the pipeline.
        ws: the workspace.
        interval_end: end of the data interval (exclusive); the window ends here.
        window_days: training window length in days.

    Returns:
        A JSON-safe summary: snapshot (uri, digest, rows), feature views, rows per view.
    """
    end_day = interval_end.astimezone(dt.UTC).date()
    days = days_between(end_day - dt.timedelta(days=window_days), end_day)
    store = load_store(ws)
    applied = apply_repo(store, ws)
    check_views(store, config)
    # Feature rows are stamped at the end of each day, so the window's first day needs
    # the previous day's row.
    table_days = [days[0] - dt.timedelta(days=1), *days]
    view_rows = build_feature_tables(config, ws, store, table_days)
    materialize(store, config, interval_end.astimezone(dt.UTC))
    frame = training_frame(config, ws, store, days)
    if frame.empty:
        raise FeatureError(f"the training frame for {days[0]}..{days[-1]} is empty")
    snapshot = write_snapshot(frame, config, ws, days[0], days[-1])
    log.info("snapshot %s: %d rows, %d positives, digest %s", snapshot.uri, snapshot.rows,
             snapshot.positives, snapshot.digest)
    return {"snapshot": snapshot.to_dict(), "applied_views": applied,
            "feature_view_rows": view_rows, "online_until": interval_end.isoformat()}
