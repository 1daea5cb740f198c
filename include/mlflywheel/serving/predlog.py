"""The prediction log: every answered prediction, durably appended before the 2xx goes out.

Embedded default: one SQLite database in WAL mode per pipeline,
``$FLYWHEEL_HOME/serving/<pipeline>/predictions.db``. A batch is one transaction; the
server answers only after the commit returns, so an acknowledged request is in the log
even if the process is killed the next instant (``synchronous=NORMAL``: a commit is in the
OS before it returns; ``full`` also survives power loss, at one fsync per batch). Rows are
keyed by ``(request_id, row, role)`` and inserted with ``INSERT OR IGNORE``: a retried
request id is logged once. Shadow answers are rows with role ``shadow``.

Readers (the drift monitor, the rollout analysis) use :func:`read_predictions`, which opens
the database read-only and never blocks the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from mlflywheel.settings import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id    TEXT    NOT NULL,
    row           INTEGER NOT NULL,
    role          TEXT    NOT NULL,
    ts            REAL    NOT NULL,
    entity_id     TEXT,
    record_id     TEXT,
    model_name    TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    route         TEXT    NOT NULL,
    features      TEXT    NOT NULL,
    score         REAL    NOT NULL,
    latency_ms    REAL    NOT NULL,
    fallback      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (request_id, row, role)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
"""
_encode = msgspec.json.Encoder().encode  # 5x json.dumps; NaN/inf are written as null
COLUMNS = ("request_id", "row", "role", "ts", "entity_id", "record_id", "model_name", "model_version",
           "route", "features", "score", "latency_ms", "fallback")


def log_path(ws: Workspace, pipeline: str) -> Path:
    """Where the embedded prediction log of ``pipeline`` lives."""
    return ws.home / "serving" / pipeline / "predictions.db"


@dataclass(slots=True)
class Prediction:
    """One logged answer (one row of one request, for one role); ``features`` is stored as JSON."""

    request_id: str
    row: int
    role: str
    ts: float
    entity_id: str | None
    record_id: str | None
    model_name: str
    model_version: str
    route: str
    features: dict[str, Any]
    score: float
    latency_ms: float
    fallback: bool = False

    def values(self) -> tuple[Any, ...]:
        features = _encode(self.features).decode()
        return (self.request_id, self.row, self.role, self.ts, self.entity_id, self.record_id,
                self.model_name, self.model_version, self.route, features, self.score,
                self.latency_ms, int(self.fallback))


class PredictionLog:
    """Append-only writer; thread-safe; one transaction per :meth:`append` call.

    Args:
        path: the SQLite file (created with its folder).
        synchronous: ``normal`` (survives a process kill) or ``full`` (also power loss).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', found {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, check_same_thread=False,
                                                                isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._conn.executescript(SCHEMA)
        self.appended = 0
        self._insert = f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def append(self, rows: list[Prediction]) -> int:
        """Write ``rows`` in one transaction; returns how many were new (duplicates are ignored)."""
        if not rows:
            return 0
        with self._lock:
            if self._conn is None:
                raise RuntimeError(f"prediction log {self.path} is closed")
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(self._insert, [r.values() for r in rows])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            added = self._conn.total_changes - before
            self.appended += added
            return added

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None


def _epoch(value: dt.datetime | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    if value.tzinfo is None:
        raise ValueError(f"{value!r}: give a timezone-aware datetime (the log is in UTC)")
    return value.timestamp()


def read_predictions(path: str | Path, start: dt.datetime | float | None = None,
                     end: dt.datetime | float | None = None, *, role: str | None = None,
                     model_version: str | None = None, expand_features: bool = False) -> pd.DataFrame:
    """Logged predictions with ``start <= ts < end`` as a frame, oldest first.

    Args:
        path: the prediction log (see :func:`log_path`).
        start: window start (aware datetime or epoch seconds; default: the beginning).
        end: window end, exclusive (default: now).
        role: only this role (``champion``, ``canary``, ``challenger``, ``shadow``).
        model_version: only this version.
        expand_features: add one column per feature (``feature.<name>``) from the JSON.

    Returns:
        Columns ``request_id, row, role, ts`` (UTC datetime), ``entity_id, record_id,
        model_name, model_version, route, features`` (JSON text), ``score, latency_ms, fallback``
        (bool).

    Raises:
        FileNotFoundError: there is no log at ``path``.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prediction log (has the server for this pipeline run?)")
    sql = f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE ts >= ? AND ts < ?"
    params: list[Any] = [_epoch(start, 0.0), _epoch(end, time.time() + 1e-6)]
    if role is not None:
        sql += " AND role = ?"
        params.append(role)
    if model_version is not None:
        sql += " AND model_version = ?"
        params.append(str(model_version))
    sql += " ORDER BY ts, request_id, row"
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        frame = pd.read_sql_query(sql, conn, params=params)
    finally:
        conn.close()
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    frame["fallback"] = frame["fallback"].astype(bool)
    if expand_features and not frame.empty:
        features = pd.DataFrame([json.loads(f) for f in frame["features"]]).add_prefix("feature.")
        frame = pd.concat([frame, features], axis=1)
    return frame
