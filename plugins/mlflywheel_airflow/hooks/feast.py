"""FeastHook: the Feast repo (``feature_store.yaml``) a pipeline reads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflywheel_airflow.hooks.base import FlywheelHook

if TYPE_CHECKING:
    from feast import FeatureStore

    from mlflywheel.services.settings import Workspace


class FeastHook(FlywheelHook):
    """Connection to a Feast repo.

    Connection ``feast_default`` (type ``feast``), extra ``{"repo_path": "/path/to/repo"}``:
    a repo whose ``feature_store.yaml`` names the real registry and online store (Redis,
    Postgres...). Without it: ``FLYWHEEL_FEATURE_REPO`` or the project's ``feature_repo/``.
    """

    conn_name_attr = "feast_conn_id"
    default_conn_name = "feast_default"
    conn_type = "feast"
    hook_name = "Feast repo (mlflywheel)"


    def workspace(self) -> Workspace:
        import dataclasses

        from mlflywheel.services.settings import Workspace

        ws = Workspace.from_env()
        conn = self.connection()
        repo = (conn.extra_dejson or {}).get("repo_path") if conn is not None else None
        return dataclasses.replace(ws, feature_repo_path=repo) if repo else ws

    def get_conn(self) -> FeatureStore:
        from mlflywheel.services.features import load_store

        return load_store(self.workspace())

    def test_connection(self) -> tuple[bool, str]:
        try:
            store = self.get_conn()
            store.list_feature_views()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Feast repo {self.workspace().feature_repo} (project {store.project})"
