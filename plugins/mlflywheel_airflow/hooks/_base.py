"""Shared connection lookup: a missing connection means "use the embedded default"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow.sdk import Connection


class FlywheelHook(BaseHook):
    """Base for mlflywheel hooks: ``connection()`` is ``None`` when the conn id is not defined."""

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
