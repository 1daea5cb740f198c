"""Prometheus metrics of the model server, on a registry of its own (one per app)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PREFIX = "flywheel_serving"
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
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered, by route, model version, role and status",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
