"""Build the model server for a pipeline and run it on uvicorn with a graceful shutdown.

Shutdown on SIGTERM (or Ctrl-C): readiness turns false at once (load balancers stop
sending), requests keep being served for ``drain_grace_s``, then the listener closes,
requests already accepted complete, the queue is scored, the prediction log is
checkpointed and closed, and the process exits 0. A second signal skips the grace period;
a third forces the exit.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.predlog import PredictionLog, log_path
from mlflywheel.serving.app import ModelServer
from mlflywheel.serving.contract import build_contract
from mlflywheel.serving.metrics import drift_verdicts_dir

if TYPE_CHECKING:
    from types import FrameType

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace
    from mlflywheel.serving.models import ModelSource

log = logging.getLogger(__name__)


def build_server(config: PipelineConfig, ws: Workspace, *, source: ModelSource | None = None,
                 **overrides: Any) -> ModelServer:
    """The :class:`ModelServer` of ``config`` on ``ws``.

    Args:
        config: the pipeline (its ``serving`` section, features, expectation suite).
        ws: the workspace (registry, Feast store, prediction log location).
        source: the registry to follow (default: the workspace's MLflow registry).
        overrides: ``serving`` keys to change for this run (for example ``feast_lookup=False``).
    """
    from pydantic import ValidationError

    from mlflywheel.services.errors import ConfigError
    from mlflywheel.services.suites import load_suite
    from mlflywheel.serving.models import MlflowSource

    try:  # overrides are validated like the YAML
        spec = type(config.serving).model_validate({**config.serving.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(f"serving settings of {config.name!r} (with overrides {overrides}): {exc}") from exc
    suite = load_suite(ws.expectations_dir, config.validation.suite)
    contract = build_contract(config, suite, feast_lookup=spec.feast_lookup, max_rows=spec.max_rows)
    online = None
    if spec.feast_lookup:
        from mlflywheel.services.online import feast_lookup

        online = feast_lookup(ws, config, ttl_s=spec.feature_cache_ttl_s)
    path = Path(spec.log_path) if spec.log_path else log_path(ws, config.name)
    prediction_log = PredictionLog(path, synchronous=spec.log_synchronous)
    source = source or MlflowSource(ws, config, list(spec.providers))
    server = ModelServer(config.model_name, source, contract, prediction_log, spec, online=online)
    server.metrics.watch_drift(config.name, drift_verdicts_dir(ws.reports_dir, config.name))
    return server


def run(server: ModelServer, *, host: str, port: int, log_level: str = "info") -> int:
    """Serve until SIGTERM/SIGINT, then drain (see the module docstring); returns the exit code."""
    import uvicorn

    class _Graceful(uvicorn.Server):
        signals = 0

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.signals += 1
            if self.signals == 1:
                server.draining = True
                grace = server.spec.drain_grace_s
                log.info("signal %s: readiness is false; serving %.1f s more, then draining", sig, grace)
                timer = threading.Timer(grace, self._exit)
                timer.daemon = True
                timer.start()
            elif self.signals == 2:
                self.should_exit = True
            else:
                self.force_exit = True

        def _exit(self) -> None:
            self.should_exit = True

    config = uvicorn.Config(server.app(), host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_level=log_level, backlog=4096,
                            # uvicorn annotates int, but hands the value to asyncio.wait_for: seconds as a float
                            timeout_graceful_shutdown=server.spec.shutdown_timeout_s,  # type: ignore[arg-type]
                            timeout_keep_alive=30)
    instance = _Graceful(config)
    instance.run()
    return 0 if server.started else 1


def serve(config: PipelineConfig, ws: Workspace, *, host: str | None = None, port: int | None = None,
          **overrides: Any) -> int:
    """``flywheel serve``: build the server of ``config`` and run it (blocks until shutdown)."""
    server = build_server(config, ws, **overrides)
    host = host or server.spec.host
    port = server.spec.port if port is None else port
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the server is reachable from other machines", host)
    return run(server, host=host, port=port)
