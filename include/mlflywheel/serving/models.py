"""Follow the registry: load ``@champion``, ``@canary`` and ``@challenger``, hot-reload on change.

One poll is one ``get_registered_model`` call (aliases and tags together). When an alias
moves, the new version is downloaded, hash-checked and loaded through
:func:`mlflywheel.services.served.load_version` in the watcher's thread while the current one keeps
serving; then the whole deployment (models and routing) is swapped in one assignment, so a
request sees either the old deployment or the new one, never a mix. A version that fails
to load or fails its hash check is refused: the alias keeps its current version (or, for a
new canary, gets no traffic), the refusal is counted and logged, and the version is retried
only after ``retry_refused_s``. At most one session per alias is held (three at most), plus
the ones in flight during a swap.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mlflywheel.services.errors import RegistryError
from mlflywheel.services.names import CANARY, CHALLENGER, CHAMPION, TAG_SERVE_VARIANT
from mlflywheel.services.served import variant_precision
from mlflywheel.serving.routing import RoutingError, RoutingState, parse_routing

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.runtime import OnnxModel
    from mlflywheel.services.settings import Workspace
    from mlflywheel.serving.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """A model version ready to score."""

    version: str
    model: OnnxModel
    variant: str

    @property
    def sha256(self) -> str:
        return self.model.sha256


@dataclass(frozen=True)
class Deployment:
    """What serves now: a loaded version per alias and the routing state."""

    models: dict[str, Loaded] = field(default_factory=dict)
    routing: RoutingState = field(default_factory=RoutingState)

    @property
    def available(self) -> frozenset[str]:
        return frozenset(self.models)

    def by_version(self, version: str) -> Loaded | None:
        return next((m for m in self.models.values() if m.version == version), None)


class ModelSource(Protocol):
    """Where deployment state and model files come from (the MLflow registry in production)."""

    model_name: str

    def state(self) -> tuple[dict[str, str], dict[str, str]]:
        """``({alias: version}, registered-model tags)``."""

    def load(self, version: str) -> Loaded:
        """The version's serving variant, hash-checked; raises on any problem."""


class MlflowSource:
    """Deployment state and ONNX variants from the MLflow registry of a workspace.

    Args:
        ws: the workspace (tracking and registry URIs).
        config: the pipeline (model name, expected model inputs).
        providers: execution providers in order of preference.
    """

    def __init__(self, ws: Workspace, config: PipelineConfig, providers: list[str]) -> None:
        from mlflywheel.services import tracking

        self.ws, self.config, self.providers = ws, config, providers
        self.model_name = config.model_name
        self.client = tracking.client(ws)

    def state(self) -> tuple[dict[str, str], dict[str, str]]:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            raise RegistryError(f"registered model {self.model_name!r} not readable at "
                                f"{self.ws.registry_uri}: {exc}") from exc
        return {k: str(v) for k, v in (model.aliases or {}).items()}, dict(model.tags or {})

    def load(self, version: str) -> Loaded:
        from mlflywheel.services.served import load_version

        mv = self.client.get_model_version(self.model_name, version)
        variant = mv.tags.get(TAG_SERVE_VARIANT, "onnx-fp32")
        precision = variant_precision(variant)
        model = load_version(self.ws, self.model_name, version, precision=precision, providers=self.providers,
                             intra_op_threads=1, expected_features=self.config.feature_columns)
        return Loaded(version=str(version), model=model, variant=variant)


class ModelWatcher:
    """Polls a :class:`ModelSource` and keeps :attr:`current` up to date.

    Args:
        source: the registry.
        metrics: where reloads and refusals are counted.
        poll_interval_s: seconds between polls.
        retry_refused_s: a refused version is tried again after this long.
    """

    def __init__(self, source: ModelSource, metrics: ServerMetrics, *, poll_interval_s: float = 5.0,
                 retry_refused_s: float = 60.0) -> None:
        self.source, self.metrics = source, metrics
        self.poll_interval_s, self.retry_refused_s = poll_interval_s, retry_refused_s
        self.current = Deployment()
        self.refused: dict[str, dict[str, Any]] = {}
        self.last_error: str | None = None
        self.last_poll: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return CHAMPION in self.current.models

    def _wanted(self, aliases: dict[str, str], routing: RoutingState) -> dict[str, str]:
        wanted = {}
        if CHAMPION in aliases:
            wanted[CHAMPION] = aliases[CHAMPION]
        if CANARY in aliases:
            wanted[CANARY] = aliases[CANARY]
        if routing.mode in ("shadow", "ab") and CHALLENGER in aliases:
            wanted[CHALLENGER] = aliases[CHALLENGER]
        return wanted

    def refresh(self) -> Deployment:
        """One poll: read the registry, load what changed, swap. Never raises for registry trouble."""
        with self._lock:
            self.last_poll = time.time()
            try:
                aliases, tags = self.source.state()
            except Exception as exc:  # the registry is down: keep serving what we have
                self.metrics.registry_errors.inc()
                self.last_error = f"registry poll failed: {exc}"
                log.warning("%s", self.last_error)
                return self.current
            current = self.current
            try:
                routing = parse_routing(tags)
            except RoutingError as exc:
                self.metrics.registry_errors.inc()
                self.last_error = str(exc)
                log.error("%s; keeping the routing in force (%s)", exc, current.routing)
                routing = current.routing
            models: dict[str, Loaded] = {}
            for role, version in self._wanted(aliases, routing).items():
                models_role = self._resolve(role, version, current, models)
                if models_role is not None:
                    models[role] = models_role
            new = Deployment(models=models, routing=routing)
            if new != current:
                self._announce(current, new)
                self.current = new
            return self.current

    def _resolve(self, role: str, version: str, current: Deployment, fresh: dict[str, Loaded]) -> Loaded | None:
        have = current.models.get(role)
        if have is not None and have.version == version:
            return have
        reuse = current.by_version(version) or next((m for m in fresh.values() if m.version == version), None)
        if reuse is not None:
            return reuse
        refusal = self.refused.get(version)
        if refusal is not None and time.time() - refusal["at"] < self.retry_refused_s:
            return have
        try:
            loaded = self.source.load(version)
        except Exception as exc:  # any failure refuses the version; the current one keeps serving
            self.refused[version] = {"role": role, "reason": str(exc)[:2000], "at": time.time()}
            self.metrics.load_failures.labels(role, version).inc()
            log.error("%s v%s (@%s) refused: %s; %s", self.source.model_name, version, role, exc,
                      f"v{have.version} keeps serving" if have else "it gets no traffic")
            return have
        self.refused.pop(version, None)
        if current.models:
            self.metrics.reloads.labels(role).inc()
        log.info("%s v%s loaded for @%s (%s, %s, sha256 %s)", self.source.model_name, version, role,
                 loaded.variant, loaded.model.provider, loaded.sha256[:12])
        return loaded

    def _announce(self, old: Deployment, new: Deployment) -> None:
        self.metrics.model_info.clear()
        for role, loaded in new.models.items():
            self.metrics.model_info.labels(role, loaded.version, loaded.variant, loaded.model.provider).set(1)
        self.metrics.canary_weight.set(new.routing.canary_weight if CANARY in new.models else 0.0)
        before = {r: m.version for r, m in old.models.items()}
        after = {r: m.version for r, m in new.models.items()}
        if before != after or old.routing != new.routing:
            log.info("deployment of %s: %s %s -> %s %s", self.source.model_name, before, old.routing, after,
                     new.routing)

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="flywheel-model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """Loaded versions, routing, refusals, last error: for ``GET /v2/models/{name}``."""
        dep = self.current
        return {"roles": {r: {"version": m.version, "variant": m.variant, "sha256": m.sha256,
                              "provider": m.model.provider} for r, m in dep.models.items()},
                "routing": dep.routing.__dict__,
                "refused": {v: {"role": r["role"], "reason": r["reason"]} for v, r in self.refused.items()},
                "last_error": self.last_error, "last_poll": self.last_poll}
