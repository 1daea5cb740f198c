"""The rollout on Kubernetes: every deployment change as a KServe ``InferenceService``.

With ``rollout.kserve: manifests`` each change the controller makes (a canary step, a
promotion, a rollback, a manual rollback) also writes the ``InferenceService`` for the new
state to ``reports/<pipeline>/kserve/`` (``<model>-<seq>.yaml`` and ``current.yaml``): the
champion's model, or the canary's with ``canaryTrafficPercent`` while a step runs. With
``rollout.kserve: apply`` the same manifest is sent to the Kubernetes API as a server-side
apply (field manager ``mlflywheel``).

The API is found, in order, from ``FLYWHEEL_K8S_API`` (+ ``FLYWHEEL_K8S_TOKEN``, optional
``FLYWHEEL_K8S_CA``) or, inside a pod, from ``KUBERNETES_SERVICE_HOST``/``_PORT`` and the
service account's token and CA. Nothing else is needed: no kubeconfig, no client library.

KServe reads the model from ``storageUri``: the registered version's artifact folder
(``<download uri>/onnx``), so the registry's artifact store must be one the cluster can
read (S3, GCS, a PVC).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import FlywheelError
from mlflywheel.services.names import CANARY, CHAMPION, TAG_CANARY_WEIGHT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "mlflywheel"


class KServeApplyError(FlywheelError):
    """The Kubernetes API refused or could not be reached (worth a retry)."""


def storage_uri(client: MlflowClient, name: str, version: str) -> str:
    return f"{client.get_model_version_download_uri(name, str(version)).rstrip('/')}/onnx"


def current_manifest(config: PipelineConfig, client: MlflowClient) -> dict[str, Any] | None:
    """The ``InferenceService`` for the registry's state now (``None`` before any champion)."""
    from mlflywheel.services.registry import alias_version

    name = config.model_name
    champion, canary = alias_version(client, name, CHAMPION), alias_version(client, name, CANARY)
    weight = float(client.get_registered_model(name).tags.get(TAG_CANARY_WEIGHT) or 0)
    if canary is not None and 0 < weight < 100:
        return kserve_manifest(config, storage_uri=storage_uri(client, name, canary.version), canary_percent=weight)
    if champion is None:
        return None
    return kserve_manifest(config, storage_uri=storage_uri(client, name, champion.version))


def kserve_manifest(config: PipelineConfig, *, storage_uri: str, canary_percent: float | None = None,
                    namespace: str | None = None, runtime: str = "kserve-onnxruntime") -> dict[str, Any]:
    """An ``InferenceService`` (serving.kserve.io/v1beta1) for one step.

    KServe rolls out by pointing the predictor at the new model with
    ``canaryTrafficPercent``: the last ready revision keeps the rest. ``None`` (or 100) is a
    full rollout; a rollback is the champion's ``storage_uri`` with no canary percent.
    """
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise ValueError(f"canaryTrafficPercent {canary_percent} outside 0-100")
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "onnx"}, "runtime": runtime,
                                           "storageUri": storage_uri, "protocolVersion": "v2"}}
    if canary_percent is not None and canary_percent < 100:
        predictor["canaryTrafficPercent"] = int(round(canary_percent))
    name = config.model_name.replace("_", "-")
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace or config.rollout.kserve_namespace,
                         "labels": {"app.kubernetes.io/managed-by": "mlflywheel", "flywheel/pipeline": config.name}},
            "spec": {"predictor": predictor}}


def write_manifest(manifest: dict[str, Any], path: Path) -> Path:
    """The manifest as YAML, written atomically."""
    import yaml

    from mlflywheel.services.data.io import write_text_atomic

    return write_text_atomic(yaml.safe_dump(manifest, sort_keys=False), path)


def sync(ws: Workspace, config: PipelineConfig, client: MlflowClient) -> Path | None:
    """Write (and with ``apply``, apply) the manifest of the current state; its path."""
    mode = config.rollout.kserve
    if mode == "off":
        return None
    manifest = current_manifest(config, client)
    if manifest is None:
        return None
    folder = ws.reports_dir / config.name / "kserve"
    seq = len(list(folder.glob(f"{config.model_name}-*.yaml"))) + 1 if folder.is_dir() else 1
    path = write_manifest(manifest, folder / f"{config.model_name}-{seq:05d}.yaml")
    write_manifest(manifest, folder / "current.yaml")
    if mode == "apply":
        apply(manifest)
    return path


def api_settings() -> tuple[str, str | None, str | bool]:
    """``(base url, bearer token, TLS verify)`` of the Kubernetes API."""
    url = os.environ.get("FLYWHEEL_K8S_API")
    if url:
        return url.rstrip("/"), os.environ.get("FLYWHEEL_K8S_TOKEN"), os.environ.get("FLYWHEEL_K8S_CA") or True
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host:
        token = (SERVICE_ACCOUNT / "token").read_text().strip() if (SERVICE_ACCOUNT / "token").is_file() else None
        ca = str(SERVICE_ACCOUNT / "ca.crt") if (SERVICE_ACCOUNT / "ca.crt").is_file() else True
        return f"https://{host}:{port}", token, ca
    raise KServeApplyError("rollout.kserve is 'apply' but no Kubernetes API is configured: set FLYWHEEL_K8S_API "
                           "(and FLYWHEEL_K8S_TOKEN), or run inside a pod")


def apply(manifest: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Server-side apply of one ``InferenceService``; the object the API returns."""
    import httpx
    import yaml

    base, token, verify = api_settings()
    meta = manifest["metadata"]
    url = (f"{base}/apis/serving.kserve.io/v1beta1/namespaces/{meta['namespace']}/inferenceservices/"
           f"{meta['name']}")
    headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.patch(url, params={"fieldManager": FIELD_MANAGER, "force": "true"}, headers=headers,
                               content=yaml.safe_dump(manifest, sort_keys=False), timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise KServeApplyError(f"Kubernetes API {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 300:
        raise KServeApplyError(f"Kubernetes API {url} answered {response.status_code}: {response.text[:500]}")
    applied: dict[str, Any] = response.json()
    return applied
