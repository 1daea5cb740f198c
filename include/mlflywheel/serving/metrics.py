"""Prometheus metrics of the model server, on a registry of its own (one per app).

Besides the request metrics, :meth:`ServerMetrics.watch_drift` exports the latest drift check
of the served pipeline (``flywheel_drift_*``), read from the verdict JSON files that
:func:`mlflywheel.stages.drift_check.check.run_drift_check` writes under
``$FLYWHEEL_HOME/reports/<pipeline>/drift/verdicts/``. They are read at scrape time, and only
when a file changed (a ``stat`` of the folder and of the newest file otherwise).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from prometheus_client import Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PREFIX = "flywheel_serving"
DRIFT_PREFIX = "flywheel_drift"
#: per-column statistics of a verdict exported as ``flywheel_drift_score{stat=...}`` (when not null)
DRIFT_STATS = ("score", "psi", "ks", "wasserstein", "jensen_shannon", "chi2", "p_value", "unseen_share",
               "null_share_current")
#: decisions that mean "a trigger fired" (``suppressed``: it fired inside a cooldown or as a duplicate)
DRIFT_FOUND = ("retrain", "suppressed")
RECENT_NS = 2_000_000_000
log = logging.getLogger(__name__)


def _in_process_values() -> None:
    """Keep metric values in this process's memory.

    Feast sets ``PROMETHEUS_MULTIPROC_DIR`` when it is imported; a ``prometheus_client``
    imported after that stores every value in shared files, keyed by metric name and pid,
    so two servers in one process would add up each other's counts. The model server is
    one process and exports its own registry: it wants plain in-memory values.
    """
    if values.ValueClass is not values.MutexValue:
        log.warning("prometheus_client was in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by Feast); "
                    "the model server keeps its metrics in process memory")
        values.ValueClass = values.MutexValue


class ServerMetrics:
    """Every metric the server exports. Label ``version`` is the model version that answered
    (``none`` for requests rejected before a model was chosen, ``mixed`` when one request's
    records went to several versions)."""

    def __init__(self) -> None:
        _in_process_values()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests",
                                "HTTP requests answered, by route, model version, role and status",
                                ["route", "version", "role", "code"], registry=r)
        self.errors = Counter(f"{PREFIX}_errors", "Non-2xx answers, by route, model version and error code",
                              ["route", "version", "code"], registry=r)
        self.rejected = Counter(f"{PREFIX}_rejected", "Requests refused (4xx, or 503 when the queue is full "
                                "or the server is not ready), by route and reason", ["route", "reason"], registry=r)
        self.latency = Histogram(f"{PREFIX}_request_latency_seconds", "Server-side request latency",
                                 ["route", "version", "role"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter(f"{PREFIX}_predictions", "Rows scored, by model version and role",
                                   ["version", "role"], registry=r)
        self.scores = Histogram(f"{PREFIX}_score", "Predicted positive-class probability",
                                ["version", "role"], buckets=SCORE_BUCKETS, registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Rows waiting for a model session", registry=r)
        self.in_flight = Gauge(f"{PREFIX}_in_flight_requests", "Requests being handled", registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Rows per model call", ["version"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.shadow = Counter(f"{PREFIX}_shadow", "Shadow copies by outcome (ok, failed, dropped)",
                              ["version", "outcome"], registry=r)
        self.shadow_diff = Histogram(f"{PREFIX}_shadow_abs_diff", "|shadow score - returned score|",
                                     ["version"], buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                                     registry=r)
        self.model_info = Gauge(f"{PREFIX}_model_info", "1 for each loaded model version and its role",
                                ["role", "version", "variant", "provider"], registry=r)
        self.canary_weight = Gauge(f"{PREFIX}_canary_weight_percent", "Canary weight in force", registry=r)
        self.reloads = Counter(f"{PREFIX}_model_reloads", "Model versions loaded after start", ["role"], registry=r)
        self.load_failures = Counter(f"{PREFIX}_model_load_failures", "Model versions refused (load or hash check)",
                                     ["role", "version"], registry=r)
        self.registry_errors = Counter(f"{PREFIX}_registry_poll_errors", "Registry polls that failed", registry=r)
        self.unseen = Counter(f"{PREFIX}_unseen_categories", "Category values the model never saw, by column",
                              ["column"], registry=r)
        self.fallbacks = Counter(f"{PREFIX}_feature_fallbacks", "Records of unknown entities scored with the "
                                 "configured fallback features", registry=r)
        self.logged = Counter(f"{PREFIX}_prediction_log_rows", "Rows appended to the prediction log", registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the server is ready for traffic", registry=r)

    def watch_drift(self, pipeline: str, verdicts: Path) -> DriftGauges:
        """Export the latest drift verdict of ``pipeline`` found in the folder ``verdicts``."""
        gauges = DriftGauges(pipeline, verdicts)
        self.registry.register(gauges)
        return gauges

    def render(self) -> bytes:
        return generate_latest(self.registry)


def drift_verdicts_dir(reports_dir: Path, pipeline: str) -> Path:
    """Where the drift checks of ``pipeline`` write their verdicts (``check.drift_dir(...)/verdicts``)."""
    return reports_dir / pipeline / "drift" / "verdicts"


class DriftGauges:
    """A Prometheus collector of the newest drift verdict (by ``as_of``) in one folder.

    Exported (every series labelled ``pipeline``): ``flywheel_drift_score{feature,stat}`` (each
    column's statistics, and ``feature="prediction"`` for the score's drift),
    ``flywheel_drift_feature_drifted{feature}``, ``flywheel_drift_detected`` (1 when a trigger
    fired, 0 for no drift; absent when the check was skipped: it could not judge),
    ``flywheel_drift_drifted_share``, ``flywheel_drift_check_timestamp_seconds``,
    ``flywheel_drift_check_info{check_id,decision,champion_version}`` and
    ``flywheel_drift_verdict_read_errors_total`` (files that could not be read; they are skipped).
    No verdict yet: only the error counter.
    """

    def __init__(self, pipeline: str, verdicts: Path) -> None:
        self.pipeline, self.verdicts = pipeline, verdicts
        self.read_errors = 0
        self.reads = 0  # JSON parses so far (how tests see that an unchanged file is not reread)
        self._lock = threading.Lock()
        self._dir_key: tuple[int, int] | None = None
        self._files: dict[str, tuple[tuple[int, int], float | None]] = {}  # name -> (stat key, as_of)
        self._latest: tuple[str, tuple[int, int], dict[str, Any]] | None = None

    # --- reading -----------------------------------------------------------------------
    @staticmethod
    def _key(st: os.stat_result) -> tuple[int, int]:
        return st.st_mtime_ns, st.st_size

    def _read(self, path: Path) -> dict[str, Any] | None:
        self.reads += 1
        try:
            verdict: dict[str, Any] = json.loads(path.read_text())
            as_of = dt.datetime.fromisoformat(verdict["as_of"]).timestamp()
            if not isinstance(verdict.get("decision"), str):
                raise ValueError(f"'decision' is {verdict.get('decision')!r}, expected a string")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.read_errors += 1
            log.warning("drift verdict %s skipped: %s: %s", path, type(exc).__name__, exc)
            return None
        verdict["_as_of_ts"] = as_of
        return verdict

    def refresh(self) -> dict[str, Any] | None:
        """The newest readable verdict (``None`` when there is none); rereads changed files only."""
        with self._lock:
            try:
                st = self.verdicts.stat()
            except FileNotFoundError:
                self._dir_key, self._files, self._latest = None, {}, None
                return None
            dir_key = self._key(st)
            # mtimes tick coarsely (a few ms): a folder changed in the last seconds is rescanned
            recent = time.time_ns() - st.st_mtime_ns < RECENT_NS
            if dir_key != self._dir_key or recent:  # files added, removed or replaced (written atomically)
                self._rescan()
                self._dir_key = dir_key
            elif self._latest is not None:  # the same files: only the newest one can matter
                name, key, _ = self._latest
                try:
                    changed = self._key((self.verdicts / name).stat()) != key
                except FileNotFoundError:
                    changed = True
                if changed:
                    self._rescan()
            return self._latest[2] if self._latest else None

    def _rescan(self) -> None:
        seen: dict[str, tuple[tuple[int, int], float | None]] = {}
        parsed: dict[str, dict[str, Any]] = {}
        with os.scandir(self.verdicts) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or entry.name.startswith(".") or not entry.is_file():
                    continue
                key = self._key(entry.stat())
                old = self._files.get(entry.name)
                if old is not None and old[0] == key:
                    seen[entry.name] = old
                    continue
                verdict = self._read(self.verdicts / entry.name)
                seen[entry.name] = (key, verdict["_as_of_ts"] if verdict else None)
                if verdict is not None:
                    parsed[entry.name] = verdict
        self._files = seen
        readable = [(as_of, name) for name, (_, as_of) in seen.items() if as_of is not None]
        if not readable:
            self._latest = None
            return
        _, name = max(readable)
        key = seen[name][0]
        if self._latest is not None and self._latest[0] == name and self._latest[1] == key:
            return
        verdict = parsed.get(name) or self._read(self.verdicts / name)
        self._latest = (name, key, verdict) if verdict is not None else None

    # --- the collector protocol --------------------------------------------------------
    def _families(self) -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        labels = ["pipeline"]
        return {
            "score": GaugeMetricFamily(f"{DRIFT_PREFIX}_score", "Latest drift check: a statistic of one input "
                                       "column (feature=prediction: the model's score) vs the champion's snapshot",
                                       labels=[*labels, "feature", "stat"]),
            "drifted": GaugeMetricFamily(f"{DRIFT_PREFIX}_feature_drifted", "Latest drift check: 1 when the "
                                         "column drifted", labels=[*labels, "feature"]),
            "detected": GaugeMetricFamily(f"{DRIFT_PREFIX}_detected", "Latest drift check: 1 when a retrain "
                                          "trigger fired (even if suppressed), 0 for no drift", labels=labels),
            "share": GaugeMetricFamily(f"{DRIFT_PREFIX}_drifted_share", "Latest drift check: share of input "
                                       "columns that drifted", labels=labels),
            "time": GaugeMetricFamily(f"{DRIFT_PREFIX}_check_timestamp_seconds", "Latest drift check: its as_of "
                                      "time (Unix seconds)", labels=labels),
            "info": GaugeMetricFamily(f"{DRIFT_PREFIX}_check_info", "Latest drift check: 1, labelled with its "
                                      "id, decision and reference champion version",
                                      labels=[*labels, "check_id", "decision", "champion_version"]),
            "errors": CounterMetricFamily(f"{DRIFT_PREFIX}_verdict_read_errors", "Drift verdict files that could "
                                          "not be read", labels=labels),
        }

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        try:
            verdict = self.refresh()
        except OSError as exc:  # never break /metrics over the drift folder
            log.warning("drift verdicts in %s not readable: %s", self.verdicts, exc)
            self.read_errors += 1
            verdict = None
        families = self._families()
        p = self.pipeline
        families["errors"].add_metric([p], self.read_errors)
        if verdict is None:
            yield families["errors"]
            return
        columns = [c for c in verdict.get("columns") or [] if isinstance(c, dict) and "column" in c]
        for column in columns:
            for stat in DRIFT_STATS:
                if isinstance(column.get(stat), int | float) and not isinstance(column.get(stat), bool):
                    families["score"].add_metric([p, column["column"], stat], float(column[stat]))
            families["drifted"].add_metric([p, column["column"]], 1.0 if column.get("drifted") else 0.0)
        for stat, value in (verdict.get("prediction_drift") or {}).items():
            if stat in DRIFT_STATS and isinstance(value, int | float) and not isinstance(value, bool):
                families["score"].add_metric([p, "prediction", stat], float(value))
        decision = verdict["decision"]
        if decision != "skipped":
            families["detected"].add_metric([p], 1.0 if decision in DRIFT_FOUND else 0.0)
        if isinstance(verdict.get("drifted_share"), int | float):
            families["share"].add_metric([p], float(verdict["drifted_share"]))
        families["time"].add_metric([p], verdict["_as_of_ts"])
        version = str((verdict.get("reference") or {}).get("version", ""))
        families["info"].add_metric([p, str(verdict.get("check_id", "")), decision, version], 1.0)
        yield from families.values()
