"""BakeTrigger: the wait between two canary analyses of ``deploy_canary``."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class BakeTrigger(BaseTrigger):
    """Sleep ``wait_s`` seconds, then fire once; read-only (it can run twice).

    With ``ready_url`` the server's readiness is polled every ``poll_s`` during the wait; the
    event's ``ready`` says whether the last poll answered 200, so a server that went away is
    noticed by the next analysis without waiting for a scrape to time out.

    :param state: the rollout state (JSON-safe dict) handed back in the event unchanged
    :param wait_s: seconds to wait (the analysis interval)
    :param ready_url: ``<server>/v2/health/ready``, or ``None`` not to poll
    :param poll_s: seconds between readiness polls
    """

    def __init__(self, *, state: dict[str, Any], wait_s: float, ready_url: str | None = None,
                 poll_s: float = 10.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow's BaseTrigger.__init__ is unannotated
        self.state = state
        self.wait_s = wait_s
        self.ready_url = ready_url
        self.poll_s = poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"state": self.state, "wait_s": self.wait_s, "ready_url": self.ready_url, "poll_s": self.poll_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.wait_s
        ready = None
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.poll_s) if self.ready_url else left)
            if self.ready_url:
                ready = await asyncio.to_thread(_ready, self.ready_url)
        # Airflow's TriggerEvent.__init__ is unannotated
        yield TriggerEvent({"status": "success", "state": self.state, "ready": ready})  # type: ignore[no-untyped-call]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (configured server URL)
            status: int = response.status
            return status == 200
    except OSError:
        return False
