"""MLflow plumbing shared by training, the gate and the registry: client, experiment, run keys."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mlflywheel.services.names import (
    TAG_PIPELINE,
    TAG_RUN_KEY,
)
from mlflywheel.services.settings import project_root

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace



def client(ws: Workspace) -> MlflowClient:
    """An ``MlflowClient`` on the workspace's tracking and registry URIs."""
    from mlflow import MlflowClient

    if ws.tracking_uri.startswith("sqlite:"):
        ws.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.registry_uri)


@contextmanager
def active(ws: Workspace) -> Iterator[None]:
    """Point MLflow's fluent API at ``ws`` for the block, then put everything back.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the process
    environment (for subprocesses), so without this one workspace's URI would leak into
    every later step in the same process.
    """
    import mlflow

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(ws.tracking_uri)
    mlflow.set_registry_uri(ws.registry_uri)
    try:
        yield
    finally:
        # None (nothing was set) resets MLflow's URIs: it handles None but annotates ``str``
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_id(mlflow_client: MlflowClient, ws: Workspace, config: PipelineConfig, suffix: str = "") -> str:
    """The pipeline's experiment (``flywheel/<pipeline>``, or ``flywheel/<pipeline>/<suffix>``), created on first use.

    With the embedded store the artifact location is set under the workspace, never the
    current directory; a tracking server keeps its own default unless
    ``FLYWHEEL_ARTIFACT_ROOT`` says otherwise.
    """

    name = f"flywheel/{config.name}" + (f"/{suffix}" if suffix else "")
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if ws.tracking_uri.startswith(("sqlite:", "file:")) or os.environ.get("FLYWHEEL_ARTIFACT_ROOT"):
        location = f"{ws.artifact_root.rstrip('/')}/{config.name}" + (f"/{suffix}" if suffix else "")
    try:
        return mlflow_client.create_experiment(name, artifact_location=location,
                                               tags={TAG_PIPELINE: config.name})
    except Exception:  # created concurrently by another task
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def run_key(config: PipelineConfig, start: dt.datetime, end: dt.datetime, window_days: int) -> str:
    """The identity of one training for one data interval: the same key means the same work."""
    fmt = "%Y%m%dT%H%MZ"
    return f"{config.name}/{start.astimezone(dt.UTC):{fmt}}-{end.astimezone(dt.UTC):{fmt}}/w{window_days}"


def git_commit() -> str:
    """The checkout's commit (``+dirty`` when it has changes), or ``unknown`` outside git."""
    root = project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a model computes."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflywheel", "scikit-learn", "numpy", "pandas", "pyarrow", "mlflow", "feast",
             "great-expectations", "apache-airflow", "torch", "onnx", "onnxruntime-gpu", "skl2onnx"]
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def kill_running(ws: Workspace, config: PipelineConfig, key: str) -> list[str]:
    """Mark this run key's RUNNING MLflow runs as KILLED (a task was stopped); returns their ids."""
    mlflow_client = client(ws)
    found = mlflow_client.get_experiment_by_name(f"flywheel/{config.name}")
    if found is None:
        return []
    runs = mlflow_client.search_runs(
        [found.experiment_id], f"tags.`{TAG_RUN_KEY}` = '{key}' and attributes.status = 'RUNNING'")
    for run in runs:
        mlflow_client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in runs]
