"""Reading the MLflow model registry: the version behind an alias, the version of a run key.

Aliases (names in :mod:`mlflywheel.services.names`): ``challenger`` (passed the gate, not yet
serving), ``champion`` (serving), ``canary`` and ``previous_champion`` (set by the rollout).
Registering is the ``register`` stage; moving who serves is :mod:`mlflywheel.services.deployments`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlflywheel.services.names import (
    CHAMPION,
    TAG_RUN_KEY,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


log = logging.getLogger(__name__)


def alias_version(mlflow_client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``name@alias``, or ``None`` when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion_version(mlflow_client: MlflowClient, name: str) -> ModelVersion | None:
    return alias_version(mlflow_client, name, CHAMPION)


def find_version(mlflow_client: MlflowClient, name: str, run_key: str) -> ModelVersion | None:
    """The version registered for ``run_key`` (oldest if several), or ``None``."""
    versions = mlflow_client.search_model_versions(
        f"name = '{name}' and tags.`{TAG_RUN_KEY}` = '{run_key}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None
