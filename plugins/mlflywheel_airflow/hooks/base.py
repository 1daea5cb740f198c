"""Shared connection lookup: a missing connection means "use the embedded default"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow.sdk import Connection


class FlywheelHook(BaseHook):
    """Base for mlflywheel hooks: ``connection()`` is ``None`` when the conn id is not defined."""

    #: set by each hook (``mlflow_default``, ...): the conn id used when none is given
    default_conn_name: str

    def __init__(self, conn_id: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id or self.default_conn_name

    def connection(self) -> Connection | None:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            self.log.debug("connection %r not defined: using the embedded default", self.conn_id)
            return None

    def http_url(self) -> str | None:
        """``scheme://host[:port]`` of an HTTP connection (``schema`` is the scheme, default http);
        ``None`` when the connection or its host is missing."""
        conn = self.connection()
        if conn is None or not conn.host:
            return None
        host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
        return (f"{host}:{conn.port}" if conn.port else host).rstrip("/")

