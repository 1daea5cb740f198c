"""ModelServerHook: where the model server (``flywheel serve``) answers."""

from __future__ import annotations

from mlflywheel_airflow.hooks.base import FlywheelHook

DEFAULT_URL = "http://127.0.0.1:8000"


class ModelServerHook(FlywheelHook):
    """Connection to the model server.

    Connection ``model_server_default`` (type ``modelserver``): ``host`` (with or without scheme)
    and ``port``, for example ``http://serving:8000``. Without the connection the server is
    assumed on ``http://127.0.0.1:8000`` (what ``flywheel serve`` binds by default).
    """

    conn_name_attr = "model_server_conn_id"
    default_conn_name = "model_server_default"
    conn_type = "modelserver"
    hook_name = "Model server (mlflywheel)"


    def base_url(self) -> str:
        return self.http_url() or DEFAULT_URL

    def get_conn(self) -> str:
        return self.base_url()

    def test_connection(self) -> tuple[bool, str]:
        from mlflywheel.services.model_server import ready

        url = self.base_url()
        return (True, f"{url} ready") if ready(url) else (False, f"{url}/v2/health/ready did not answer 200")
