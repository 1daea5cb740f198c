"""The prediction log: every answered prediction, durably appended before the 2xx goes out.

Embedded default: one SQLite database in WAL mode per pipeline,
``$FLYWHEEL_HOME/serving/<pipeline>/predictions.db``. A scoring batch is one transaction;
the server answers only after the commit returns, so an acknowledged request is in the log
even if the process is killed the next instant (``synchronous=NORMAL``: a commit is in the
OS before it returns; ``full`` also survives power loss, at one fsync per batch).

Storage is one row per *answer* (table ``answers``): the rows of one request scored by one
role, with their features, scores, entity ids and fallback flags as JSON arrays. A 32-row
request is one insert, not 32: the log cost about as much as the model itself when every
row was its own B-tree entry. Answers are unique on ``(request_id, role, row0)`` (``row0``:
the answer's first record index) and inserted with ``INSERT OR IGNORE``, so a retried
request id is logged once. Shadow answers have role ``shadow``.

The view ``predictions`` shows one row per prediction (``request_id, row, role, ts,
entity_id, record_id, model_name, model_version, route, features, score, latency_ms,
fallback``), so ad-hoc SQL reads the log as before. A log written by an older version (a
``predictions`` table, one row per prediction) is converted in place, in one transaction,
when a writer opens it.

Readers (the drift monitor, the rollout analysis) use :func:`read_predictions`, which opens
the database read-only and never blocks the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from mlflywheel.services.settings import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    request_id    TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    row0          INTEGER NOT NULL,  -- the first record index of this answer in its request
    ts            REAL    NOT NULL,
    model_name    TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    route         TEXT    NOT NULL,
    n             INTEGER NOT NULL,  -- rows
    rows          TEXT,              -- JSON array of record indexes; NULL: row0 .. row0 + n - 1
    entity_ids    TEXT,              -- JSON array of strings or nulls; NULL: no entity ids
    record_ids    TEXT,              -- JSON array of strings or nulls; NULL: no record ids
    features      TEXT    NOT NULL,  -- JSON array of objects, one per row (NaN written as null)
    scores        TEXT    NOT NULL,  -- JSON array of numbers
    latency_ms    REAL    NOT NULL,
    fallback      TEXT,              -- JSON array of booleans; NULL: no fallback row
    UNIQUE (request_id, role, row0)
);
CREATE INDEX IF NOT EXISTS answers_ts ON answers (ts);
"""
VIEW = """
CREATE VIEW IF NOT EXISTS predictions AS
SELECT a.request_id AS request_id,
       CASE WHEN a.rows IS NULL THEN a.row0 + f.key ELSE a.rows ->> f.key END AS row,
       a.role AS role, a.ts AS ts, a.entity_ids ->> f.key AS entity_id, a.record_ids ->> f.key AS record_id,
       a.model_name AS model_name, a.model_version AS model_version, a.route AS route,
       f.value AS features, a.scores ->> f.key AS score, a.latency_ms AS latency_ms,
       coalesce(a.fallback ->> f.key, 0) AS fallback
FROM answers AS a, json_each(a.features) AS f;
"""
# one row per prediction, the layout before answers (converted by _upgrade)
LEGACY = """
INSERT OR IGNORE INTO answers (request_id, role, row0, ts, model_name, model_version, route, n, rows,
                               entity_ids, record_ids, features, scores, latency_ms, fallback)
SELECT request_id, role, row, ts, model_name, model_version, route, 1, NULL,
       CASE WHEN entity_id IS NULL THEN NULL ELSE json_array(entity_id) END,
       CASE WHEN record_id IS NULL THEN NULL ELSE json_array(record_id) END,
       json_array(json(features)), json_array(score), latency_ms,
       CASE WHEN fallback THEN '[true]' ELSE NULL END
FROM predictions
"""
_encode = msgspec.json.Encoder().encode  # 5x json.dumps; NaN/inf are written as null
ANSWER_COLUMNS = ("request_id", "role", "row0", "ts", "model_name", "model_version", "route", "n", "rows",
                  "entity_ids", "record_ids", "features", "scores", "latency_ms", "fallback")
COLUMNS = ("request_id", "row", "role", "ts", "entity_id", "record_id", "model_name", "model_version",
           "route", "features", "score", "latency_ms", "fallback")


def log_path(ws: Workspace, pipeline: str) -> Path:
    """Where the embedded prediction log of ``pipeline`` lives."""
    return ws.home / "serving" / pipeline / "predictions.db"


def _array(values: Sequence[Any] | None) -> str | None:
    return None if values is None else _encode(values).decode()


@dataclass(slots=True)
class Answer:
    """The rows of one request scored by one role: what the server logs per scoring job.

    ``rows`` are the records' indexes in the request (``None``: ``0 .. n - 1``);
    ``entity_ids``, ``record_ids`` and ``fallback`` are per row, or ``None`` when there are none.
    """

    request_id: str
    role: str
    ts: float
    model_name: str
    model_version: str
    route: str
    features: Sequence[dict[str, Any]]
    scores: Sequence[float]
    latency_ms: float
    rows: Sequence[int] | None = None
    entity_ids: Sequence[str | None] | None = None
    record_ids: Sequence[str | None] | None = None
    fallback: Sequence[bool] | None = None

    def values(self) -> tuple[Any, ...]:
        rows = self.rows
        row0 = rows[0] if rows else 0
        if rows is not None and all(r == row0 + k for k, r in enumerate(rows)):
            rows = None  # contiguous: row0 says it all
        fallback = self.fallback if self.fallback is not None and any(self.fallback) else None
        return (self.request_id, self.role, row0, self.ts, self.model_name, self.model_version, self.route,
                len(self.scores), _array(rows), _array(self.entity_ids), _array(self.record_ids),
                _encode(self.features).decode(), _encode(self.scores).decode(), self.latency_ms, _array(fallback))


@dataclass(slots=True)
class Prediction:
    """One logged prediction (one row of one request, for one role): a one-row :class:`Answer`."""

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

    def answer(self) -> Answer:
        return Answer(self.request_id, self.role, self.ts, self.model_name, self.model_version, self.route,
                      [self.features], [self.score], self.latency_ms, rows=[self.row],
                      entity_ids=None if self.entity_id is None else [self.entity_id],
                      record_ids=None if self.record_id is None else [self.record_id],
                      fallback=[self.fallback])


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
        self._upgrade(self._conn)
        self.appended = 0
        self._insert = (f"INSERT OR IGNORE INTO answers ({', '.join(ANSWER_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(ANSWER_COLUMNS))})")

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """Create the schema; convert a log of the one-row-per-prediction layout in place."""
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        try:
            legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'predictions'"
                                  ).fetchone() is not None
            if legacy:
                conn.execute(LEGACY)
                conn.execute("DROP TABLE predictions")
            conn.execute(VIEW)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def append(self, answers: Sequence[Answer | Prediction]) -> int:
        """Write ``answers`` in one transaction; returns how many rows were new (a repeated
        ``(request_id, role, row0)`` is ignored)."""
        if not answers:
            return 0
        entries = [a.answer() if isinstance(a, Prediction) else a for a in answers]
        values = [a.values() for a in entries]
        with self._lock:
            if self._conn is None:
                raise RuntimeError(f"prediction log {self.path} is closed")
            cursor = self._conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                added = 0
                for v in values:
                    cursor.execute(self._insert, v)
                    added += v[7] if cursor.rowcount == 1 else 0  # 0: a retried request, logged already
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
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
