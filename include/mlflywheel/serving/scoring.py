"""Scoring one batch in a worker thread: features, model, prediction log, per-job results.

Runs in the batcher's thread pool. For ``/predict`` jobs it fetches the store features of
the batch's entities in one lookup (cached), merges them with the request-time features
(the request's own values win for request features; store features come only from the
store), applies the unknown-entity policy, scores the whole batch in one
:meth:`OnnxModel.predict_proba` call and appends every answered row to the prediction log
in one transaction. Only then are the results handed back, so nothing is acknowledged
that is not in the log. A log that cannot be written fails the batch (503), fail closed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflywheel.services.predlog import Answer
from mlflywheel.serving.contract import RequestError

if TYPE_CHECKING:
    from mlflywheel.services.online import OnlineFeatures
    from mlflywheel.services.predlog import PredictionLog
    from mlflywheel.serving.batching import Job
    from mlflywheel.serving.metrics import ServerMetrics
    from mlflywheel.serving.models import Loaded


@dataclass
class Payload:
    """What a job carries besides its rows (the rows are feature dicts, one per record)."""

    request_id: str
    route: str
    role: str
    model: Loaded
    received: float
    entity_ids: list[Any] | None = None
    record_ids: list[str | None] | None = None
    row_index: list[int] | None = None
    lookup: bool = False
    fallback: list[bool] | None = None


@dataclass
class Scored:
    """The answer for one job: a score per row, the features scored, fallback flags."""

    scores: list[float]
    features: list[dict[str, Any]]
    fallback: list[bool] = field(default_factory=list)


class _Column:
    __slots__ = ("_values",)

    def __init__(self, values: Any) -> None:
        self._values = values

    @property
    def dtype(self) -> Any:
        return self._values.dtype

    def to_numpy(self, dtype: Any = None, na_value: Any = None) -> Any:
        return self._values if dtype is None else self._values.astype(dtype, copy=False)


class Columns:
    """Named numpy columns, read by :meth:`OnnxModel.feed` the way it reads a DataFrame.

    ``feed`` only needs ``columns``, ``[name].dtype`` and ``[name].to_numpy()``; building a
    DataFrame and its Series for a handful of rows costs more than the model itself
    (about 0.4 ms of a 0.6 ms single-row batch), so the server hands it plain arrays. Every
    check of ``feed`` (schema, dtypes, unseen categories) still runs.
    """

    def __init__(self, arrays: dict[str, Any]) -> None:
        self._arrays = arrays
        self.columns = list(arrays)

    def __getitem__(self, name: str) -> _Column:
        return _Column(self._arrays[name])

    def __len__(self) -> int:
        return len(next(iter(self._arrays.values()))) if self._arrays else 0


class Scorer:
    """The ``process`` function of the micro-batcher.

    Args:
        model_name: the registered model name (logged with every row).
        log: the prediction log.
        metrics: scores, unseen categories, fallbacks.
        online: the store lookup, or ``None`` when ``/predict`` records carry every input.
        unknown_entity: ``fallback`` (score with ``fallback_features``, flagged) or ``reject`` (404).
        fallback_features: store-feature values for an unknown entity (missing names: null).
    """

    def __init__(self, model_name: str, log: PredictionLog, metrics: ServerMetrics, *,
                 online: OnlineFeatures | None = None, unknown_entity: str = "fallback",
                 fallback_features: dict[str, Any] | None = None) -> None:
        self.model_name, self.log, self.metrics, self.online = model_name, log, metrics, online
        self.unknown_entity = unknown_entity
        self.fallback = {name: (fallback_features or {}).get(name) for name in (online.features if online else [])}

    def _merge(self, jobs: list[Job]) -> dict[int, Exception]:
        """Add store features to the rows of lookup jobs; returns failures by job index."""
        assert self.online is not None
        ids = [eid for job in jobs if job.payload.lookup for eid in job.payload.entity_ids]
        failures: dict[int, Exception] = {}
        if not ids:
            return failures
        found = iter(self.online.lookup(ids))
        for j, job in enumerate(jobs):
            if not job.payload.lookup:
                continue
            flags = []
            for i, row in enumerate(job.rows):
                stored = next(found)
                if stored is None:
                    if self.unknown_entity == "reject" and j not in failures:
                        failures[j] = RequestError(404, "unknown_entity", f"entity {job.payload.entity_ids[i]!r} "
                                                   "has no features in the online store",
                                                   f"records[{job.payload.row_index[i]}]")
                    stored = self.fallback
                    self.metrics.fallbacks.inc()
                flags.append(stored is self.fallback)
                row.update(stored)
            job.payload.fallback = flags
        return failures

    def _frame(self, rows: list[dict[str, Any]], model: Loaded) -> Columns:
        import numpy as np

        columns: dict[str, Any] = {}
        for name, kind in model.model.inputs.items():
            values = [row.get(name) for row in rows]
            if kind == "tensor(string)":
                columns[name] = np.array(values, dtype=object)
            else:
                columns[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
        return Columns(columns)

    def __call__(self, jobs: list[Job]) -> list[Any]:
        """Score ``jobs`` (all for one model version); one result or exception per job."""
        failures = self._merge(jobs) if self.online is not None else {}
        live = [(j, job) for j, job in enumerate(jobs) if j not in failures]
        results: list[Any] = [failures.get(j) for j in range(len(jobs))]
        if not live:
            return results
        model = live[0][1].payload.model
        rows = [row for _, job in live for row in job.rows]
        scores = model.model.predict_proba(self._frame(rows, model)).tolist()
        for column, count in model.model.last_unseen.items():
            self.metrics.unseen.labels(column).inc(count)
        now = time.time()
        done = time.perf_counter()
        logged: list[Answer] = []
        at = 0
        for j, job in live:
            p = job.payload
            job_scores = scores[at:at + len(job.rows)]
            at += len(job.rows)
            logged.append(Answer(p.request_id, p.role, now, self.model_name, model.version, p.route, job.rows,
                                 job_scores, (done - p.received) * 1000.0, rows=p.row_index,
                                 entity_ids=None if p.entity_ids is None else [str(e) for e in p.entity_ids],
                                 record_ids=p.record_ids, fallback=p.fallback))
            results[j] = Scored(job_scores, job.rows, p.fallback or [False] * len(job.rows))
        try:
            added = self.log.append(logged)
        except Exception as exc:  # never acknowledge what is not in the log
            logging.getLogger(__name__).exception("prediction log append failed")
            error = RequestError(503, "log_unavailable", f"prediction log {self.log.path} not writable: {exc}",
                                 headers={"Retry-After": "1"})
            return [error if not isinstance(r, Exception) else r for r in results]
        self.metrics.logged.inc(added)
        for j, job in live:
            role = job.payload.role
            self.metrics.predictions.labels(model.version, role).inc(len(job.rows))
            hist = self.metrics.scores.labels(model.version, role)
            for score in results[j].scores:
                hist.observe(score)
        return results
