"""The HTTP client side of our model server: readiness and the ``/metrics`` scrape.

The ``deploy_canary`` controller, its deferred waits and the ``model_server`` hook read the
server through these two calls; the server itself lives in :mod:`mlflywheel.serving`.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from mlflywheel.services.errors import FlywheelError


class ServerUnavailable(FlywheelError):
    """The model server could not be reached or read (transient: retried by Airflow)."""

    deterministic = False


def scrape(base_url: str, timeout_s: float = 5.0) -> str:
    """The server's ``/metrics`` text; :class:`ServerUnavailable` with the URL when it cannot be read."""
    url = f"{base_url.rstrip('/')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (configured URL)
            body: bytes = response.read()
            return body.decode()
    except (OSError, urllib.error.URLError) as exc:
        raise ServerUnavailable(f"model server metrics at {url} unreadable: {exc}") from exc


def ready(base_url: str, timeout_s: float = 2.0) -> bool:
    """``GET /v2/health/ready`` answered 200."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/v2/health/ready", timeout=timeout_s) as response:  # noqa: S310
            status: int = response.status
            return status == 200
    except (OSError, urllib.error.URLError):
        return False
