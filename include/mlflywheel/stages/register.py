"""The ``register`` stage: a gate-approved run becomes a model version, found by run key, never twice.

The version gets ``@challenger``; the first model that passes the gate also becomes
``@champion``. After that, promotion belongs to ``deploy_canary``. Aliases, never stages.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from mlflywheel.services import tracking
from mlflywheel.services.errors import RegistryError
from mlflywheel.services.names import (
    CHALLENGER,
    CHAMPION,
    TAG_DECISION,
    TAG_DIGEST,
    TAG_GIT,
    TAG_PIPELINE,
    TAG_PROMOTED_BY,
    TAG_REASONS,
    TAG_RUN_KEY,
    TAG_TRIGGER,
)
from mlflywheel.services.registry import champion_version, find_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)


def _ensure_model(mlflow_client: MlflowClient, config: PipelineConfig) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(config.model_name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(
                config.model_name, tags={TAG_PIPELINE: config.name},
                description=config.description.strip() or None)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _wait_ready(mlflow_client: MlflowClient, name: str, version: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        mv = mlflow_client.get_model_version(name, version)
        if mv.status == "READY":
            return
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"model {name} v{version} is {mv.status}: {mv.status_message}")
        time.sleep(0.5)


def register(config: PipelineConfig, ws: Workspace, *, run_id: str, model_uri: str, run_key: str,
             if_exists: str = "skip") -> dict[str, Any]:
    """Create (or find) the model version for ``run_key`` and point ``@challenger`` at it.

    The challenger's run must carry an ``approved`` gate decision; anything else raises and
    no alias moves. A version already registered for the run key is reused (``skip``) or
    refused (``fail``): a cleared or re-run task never makes a second version.

    Returns:
        ``name``, ``version``, ``aliases`` (all aliases now on the version), ``created``.
    """
    if if_exists not in ("skip", "fail"):
        raise ValueError(f"if_exists must be 'skip' or 'fail', got {if_exists!r}")
    # A ``models:/m-<id>`` source is resolved through MLflow's global tracking URI.
    with tracking.active(ws):
        return _register(config, ws, run_id=run_id, model_uri=model_uri, run_key=run_key, if_exists=if_exists)


def _register(config: PipelineConfig, ws: Workspace, *, run_id: str, model_uri: str, run_key: str,
              if_exists: str) -> dict[str, Any]:
    mlflow_client = tracking.client(ws)
    run = mlflow_client.get_run(run_id)
    decision = run.data.tags.get(TAG_DECISION)
    if decision != "approved":
        raise RegistryError(f"run {run_id} has gate decision {decision!r} (tag {TAG_DECISION}); "
                            "only an approved challenger is registered")
    name = config.model_name
    _ensure_model(mlflow_client, config)
    version = find_version(mlflow_client, name, run_key)
    created = version is None
    if version is not None and if_exists == "fail":
        raise RegistryError(f"{name} v{version.version} already registered for {run_key} (if_exists='fail')")
    if version is None:
        tags = {TAG_RUN_KEY: run_key, TAG_PIPELINE: config.name,
                TAG_DIGEST: run.data.tags.get(TAG_DIGEST, ""),
                TAG_DECISION: decision,
                TAG_REASONS: run.data.tags.get(TAG_REASONS, ""),
                "flywheel.git_commit": run.data.tags.get(TAG_GIT, "unknown"),
                TAG_TRIGGER: run.data.tags.get(TAG_TRIGGER, "")}
        tags.update({f"flywheel.metric.{k[len('holdout_'):]}": f"{v:.6f}"
                     for k, v in run.data.metrics.items() if k.startswith("holdout_")})
        # A tracking server checks that a ``models:/m-<id>`` source names the logged model it
        # registers (the embedded store does not): pass the id along with the source.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = mlflow_client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags,
                                                     model_id=model_id,
                                                     description=f"gate approved; run key {run_key}")
        _wait_ready(mlflow_client, name, version.version)
        log.info("registered %s v%s for %s", name, version.version, run_key)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version.version)
    if champion_version(mlflow_client, name) is None:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version.version)
        mlflow_client.set_model_version_tag(name, version.version, TAG_PROMOTED_BY, "first-approved-model")
        log.info("%s had no @champion: v%s is now champion", name, version.version)
    aliases = sorted(mlflow_client.get_model_version(name, version.version).aliases)
    return {"name": name, "version": str(version.version), "aliases": aliases, "created": created,
            "run_key": run_key}
