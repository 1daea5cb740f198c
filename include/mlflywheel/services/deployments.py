"""Deployments: what serves now, and the only functions that change it.

Every change of who serves (a canary weight, a promotion, a rollback, a manual return to the
previous champion) moves registry aliases and the routing tags the model server follows,
then appends a ``deploy`` line to the pipeline's append-only ledger
(``reports/<pipeline>/deployments.jsonl``) and, when the pipeline asks for it, the same state
as a KServe ``InferenceService``. ``deploy_canary``, the ``rollback`` stage and ``flywheel
rollback`` all go through here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import RegistryError
from mlflywheel.services.names import (
    CANARY,
    CHAMPION,
    PREVIOUS_CHAMPION,
    TAG_CANARY_WEIGHT,
    TAG_ONNX,
    TAG_PROMOTED_BY,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace


def ledger_path(ws: Workspace, config: PipelineConfig) -> Path:
    """The append-only deployment ledger of a pipeline (one JSON object per line)."""
    return ws.reports_dir / config.name / "deployments.jsonl"


def append_ledger(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one event (``at`` added when missing) and fsync: the ledger survives a crash."""
    event = {"at": dt.datetime.now(dt.UTC).isoformat(), **event}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(event, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return event


def serving_at(path: Path, when: dt.datetime) -> dict[str, Any]:
    """What served at ``when``, replayed from the ledger's registry events (``deploy`` lines)."""
    state: dict[str, Any] = {"champion": None, "canary": None, "canary_weight": 0.0, "since": None}
    if not path.is_file():
        return state
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if dt.datetime.fromisoformat(event["at"]) > when:
            break
        if event.get("event") == "deploy":
            state.update({k: event[k] for k in ("champion", "canary", "canary_weight") if k in event})
            state["since"] = event["at"]
    return state


# --- registry actions --------------------------------------------------------------------
def deploy_event(ws: Workspace, config: PipelineConfig, client: MlflowClient, reason: str) -> dict[str, Any]:
    from mlflywheel.services.registry import alias_version

    name = config.model_name
    champion, canary = alias_version(client, name, CHAMPION), alias_version(client, name, CANARY)
    weight = float(client.get_registered_model(name).tags.get(TAG_CANARY_WEIGHT) or 0) if canary else 0.0
    event = append_ledger(ledger_path(ws, config), {
        "event": "deploy", "model": name, "champion": str(champion.version) if champion else None,
        "canary": str(canary.version) if canary else None, "canary_weight": weight, "reason": reason})
    from mlflywheel.services import kserve

    kserve.sync(ws, config, client)  # the same change on Kubernetes, when rollout.kserve asks for it
    return event


def set_canary(ws: Workspace, config: PipelineConfig, client: MlflowClient, version: str, weight: float,
               reason: str) -> dict[str, Any]:
    """Point ``@canary`` at ``version`` with ``weight`` percent of entities; ledger line after."""
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight {weight} outside 0-100")
    name = config.model_name
    client.set_registered_model_alias(name, CANARY, version)
    client.set_registered_model_tag(name, TAG_CANARY_WEIGHT, f"{weight:g}")
    return deploy_event(ws, config, client, reason)


def promote(ws: Workspace, config: PipelineConfig, client: MlflowClient, version: str,
            reason: str) -> dict[str, Any]:
    """``@champion`` -> ``version``; the old champion keeps ``@previous_champion``; ``@canary`` removed."""
    from mlflywheel.services.registry import alias_version

    name = config.model_name
    current = alias_version(client, name, CHAMPION)
    if current is not None and str(current.version) != str(version):
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_tag(name, TAG_CANARY_WEIGHT, "0")
    if alias_version(client, name, CANARY) is not None:
        client.delete_registered_model_alias(name, CANARY)
    client.set_model_version_tag(name, version, TAG_PROMOTED_BY, "rollout")
    return deploy_event(ws, config, client, reason)


def rollback(ws: Workspace, config: PipelineConfig, client: MlflowClient, reason: str) -> dict[str, Any]:
    """Weight to 0 and ``@canary`` removed; the champion never changed."""
    from mlflywheel.services.registry import alias_version

    name = config.model_name
    client.set_registered_model_tag(name, TAG_CANARY_WEIGHT, "0")
    canary = alias_version(client, name, CANARY)
    if canary is not None:
        client.delete_registered_model_alias(name, CANARY)
        client.set_model_version_tag(name, canary.version, "flywheel.rollout.result", "rolled_back")
    return deploy_event(ws, config, client, reason)


def restore_previous(ws: Workspace, config: PipelineConfig, client: MlflowClient, reason: str,
                     to_version: str | None = None) -> dict[str, Any]:
    """Manual rollback: ``@champion`` back to ``@previous_champion`` (or ``to_version``) in one step."""
    from mlflow.exceptions import MlflowException

    from mlflywheel.services.registry import alias_version

    name = config.model_name
    target = to_version or getattr(alias_version(client, name, PREVIOUS_CHAMPION), "version", None)
    if target is None:
        raise RegistryError(f"{name} has no @{PREVIOUS_CHAMPION} to return to; name a version")
    try:
        tags = client.get_model_version(name, str(target)).tags
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {target!r}; nothing moved") from exc
    if tags.get(f"{TAG_ONNX}.fp32.published") != "true":
        raise RegistryError(f"{name} v{target} has no published ONNX variant, so the server could not load it; "
                            f"nothing moved")
    current = alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(target))
    if current is not None and str(current.version) != str(target):
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
    rollback(ws, config, client, reason)
    return deploy_event(ws, config, client, reason)
