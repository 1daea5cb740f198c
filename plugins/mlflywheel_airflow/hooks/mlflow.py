"""MlflowHook: the tracking/registry server of a connection, or the embedded SQLite store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflywheel_airflow.hooks.base import FlywheelHook

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.settings import Workspace


class MlflowHook(FlywheelHook):
    """Connection to an MLflow tracking server.

    Connection ``mlflow_default`` (type ``mlflow``): ``host`` (with scheme) and ``port`` give
    the tracking URI, for example ``http://mlflow:5000``; extra ``{"ui_url": ...}`` sets the
    address used for links when it differs. Without the connection the workspace's URI is
    used (``MLFLOW_TRACKING_URI`` or SQLite under ``FLYWHEEL_HOME``).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow (mlflywheel)"

    def tracking_uri(self) -> str | None:
        return self.http_url()

    def ui_url(self) -> str:
        """Where people open MLflow: the connection's ``ui_url`` extra, else the workspace's."""
        conn = self.connection()
        extra = (conn.extra_dejson or {}) if conn is not None else {}
        return (extra.get("ui_url") or self.workspace().mlflow_ui_url).rstrip("/")

    def workspace(self) -> Workspace:
        """The workspace with this connection's tracking URI applied."""
        import dataclasses

        from mlflywheel.services.settings import Workspace

        ws = Workspace.from_env()
        uri = self.tracking_uri()
        return dataclasses.replace(ws, mlflow_tracking_uri=uri) if uri else ws

    def get_conn(self) -> MlflowClient:
        from mlflywheel.services import tracking

        return tracking.client(self.workspace())

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn().search_experiments(max_results=1)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"MLflow reachable at {self.workspace().tracking_uri}"
