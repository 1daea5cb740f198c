"""The workspace (``FLYWHEEL_HOME``) and every location the pipelines use.

Embedded defaults need no service: SQLite for Airflow and MLflow, local files for artifacts,
the landing zone and Feast. Each location can be replaced by configuration alone:

==============================  ===============================================
variable                        default
==============================  ===============================================
``FLYWHEEL_HOME``               ``<project root>/.flywheel``
``FLYWHEEL_PROJECT_ROOT``       the checkout that holds ``include/mlflywheel``
``FLYWHEEL_PIPELINES_DIR``      ``<project root>/include/pipelines``
``FLYWHEEL_EXPECTATIONS_DIR``   ``<project root>/expectations``
``FLYWHEEL_FEATURE_REPO``       ``<project root>/feature_repo``
``FLYWHEEL_LANDING_ROOT``       ``$FLYWHEEL_HOME/landing``
``MLFLOW_TRACKING_URI``         ``sqlite:///$FLYWHEEL_HOME/mlflow/mlflow.db``
``MLFLOW_REGISTRY_URI``         the tracking URI
``FLYWHEEL_ARTIFACT_ROOT``      ``$FLYWHEEL_HOME/mlflow/artifacts``
``AIRFLOW_HOME``                ``$FLYWHEEL_HOME/airflow``
``FLYWHEEL_FEAST_ONLINE_STORE`` the repo's ``online_store`` (SQLite); a
                                ``redis://[:password@]host:port/db`` URL
                                replaces it with Feast's Redis store
``FLYWHEEL_FEAST_PROJECT``      the repo's ``project`` (``flywheel``)
``FLYWHEEL_LANDING_URI``        none; ``s3://bucket/prefix`` mirrors landing
                                partitions from there (Airflow operators)
``FLYWHEEL_PREDICTIONS_URI``    none; ``s3://bucket/prefix`` receives each
                                published predictions partition
``FLYWHEEL_AWS_CONN_ID``        ``aws_default`` (the Airflow connection for S3)
==============================  ===============================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


def project_root() -> Path:
    """The checkout root: ``FLYWHEEL_PROJECT_ROOT`` or the folder above ``include/``."""
    env = os.environ.get("FLYWHEEL_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[3]  # include/mlflywheel/services/settings.py -> the checkout


@dataclass(frozen=True)
class Workspace:
    """Every path and URI a pipeline touches, resolved once from the environment."""

    home: Path
    #: set by an Airflow connection (``mlflow_default``); wins over ``MLFLOW_TRACKING_URI``
    mlflow_tracking_uri: str | None = None
    #: set by an Airflow connection (``feast_default``); wins over ``FLYWHEEL_FEATURE_REPO``
    feature_repo_path: str | None = None

    @classmethod
    def from_env(cls) -> Workspace:
        """The workspace named by ``FLYWHEEL_HOME`` (default ``<project root>/.flywheel``)."""
        home = os.environ.get("FLYWHEEL_HOME") or str(project_root() / ".flywheel")
        return cls(home=Path(home).resolve())

    # --- project files (shipped in the checkout) ---------------------------------------
    @cached_property
    def pipelines_dir(self) -> Path:
        return _env_path("FLYWHEEL_PIPELINES_DIR", project_root() / "include" / "pipelines")

    @cached_property
    def expectations_dir(self) -> Path:
        return _env_path("FLYWHEEL_EXPECTATIONS_DIR", project_root() / "expectations")

    @cached_property
    def feature_repo(self) -> Path:
        if self.feature_repo_path:
            return Path(self.feature_repo_path).resolve()
        return _env_path("FLYWHEEL_FEATURE_REPO", project_root() / "feature_repo")

    @cached_property
    def dags_dir(self) -> Path:
        return project_root() / "dags"

    # --- workspace state ---------------------------------------------------------------
    @cached_property
    def landing_root(self) -> Path:
        return _env_path("FLYWHEEL_LANDING_ROOT", self.home / "landing")

    @cached_property
    def feast_dir(self) -> Path:
        """Feast registry, SQLite online store and Parquet offline sources."""
        return self.home / "feast"

    @cached_property
    def snapshots_dir(self) -> Path:
        """Point-in-time training frames, one folder per dataset digest."""
        return self.home / "snapshots"

    @cached_property
    def reports_dir(self) -> Path:
        """Validation results and gate verdicts, by pipeline and run."""
        return self.home / "reports"

    @cached_property
    def predictions_root(self) -> Path:
        """Batch predictions: ``<pipeline>/ds=YYYY-MM-DD/`` partitions, each with a ``_manifest.json``."""
        return _env_path("FLYWHEEL_PREDICTIONS_ROOT", self.home / "predictions")

    @cached_property
    def quarantine_root(self) -> Path:
        """Rows batch scoring refused, by pipeline and day, with the reason per row."""
        return self.home / "quarantine"

    @cached_property
    def feast_online_store(self) -> str | None:
        """``FLYWHEEL_FEAST_ONLINE_STORE``: a ``redis://`` URL that replaces the repo's online store."""
        return os.environ.get("FLYWHEEL_FEAST_ONLINE_STORE") or None

    @cached_property
    def feast_project(self) -> str | None:
        """``FLYWHEEL_FEAST_PROJECT``: the Feast project (registry namespace and online-store keys)."""
        return os.environ.get("FLYWHEEL_FEAST_PROJECT") or None

    @cached_property
    def landing_uri(self) -> str | None:
        """``FLYWHEEL_LANDING_URI``: a remote landing zone (``s3://bucket/prefix``) mirrored into
        :attr:`landing_root` before a step reads it; ``None``: the local landing zone is the source."""
        return (os.environ.get("FLYWHEEL_LANDING_URI") or "").rstrip("/") or None

    @cached_property
    def predictions_uri(self) -> str | None:
        """``FLYWHEEL_PREDICTIONS_URI``: where published prediction partitions are uploaded
        (``s3://bucket/prefix``); ``None``: they stay under :attr:`predictions_root` only."""
        return (os.environ.get("FLYWHEEL_PREDICTIONS_URI") or "").rstrip("/") or None

    @cached_property
    def airflow_home(self) -> Path:
        return _env_path("AIRFLOW_HOME", self.home / "airflow")

    @cached_property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @cached_property
    def tracking_uri(self) -> str:
        return (self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}")

    @cached_property
    def registry_uri(self) -> str:
        return (None if self.mlflow_tracking_uri else os.environ.get("MLFLOW_REGISTRY_URI")) or self.tracking_uri

    @cached_property
    def mlflow_ui_url(self) -> str:
        """Where people open MLflow (links from Airflow): the tracking server or ``flywheel mlflow-ui``."""
        uri = self.tracking_uri
        default = uri if uri.startswith("http") else "http://127.0.0.1:5000"
        return os.environ.get("FLYWHEEL_MLFLOW_UI_URL", default).rstrip("/")

    @cached_property
    def artifact_root(self) -> str:
        return os.environ.get("FLYWHEEL_ARTIFACT_ROOT") or (self.mlflow_dir / "artifacts").as_uri()

    def ensure(self) -> Workspace:
        """Create the local folders of the embedded defaults (idempotent)."""
        for path in (self.home, self.landing_root, self.feast_dir, self.snapshots_dir,
                     self.reports_dir, self.airflow_home, self.mlflow_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def airflow_env(self) -> dict[str, str]:
        """Environment for an Airflow process on this workspace (user values win)."""
        defaults = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "FLYWHEEL_HOME": str(self.home),
            "FLYWHEEL_PROJECT_ROOT": str(project_root()),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
        }
        return {key: os.environ.get(key, value) for key, value in defaults.items()}


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).resolve() if value else default
