"""``flywheel up`` on a temp workspace with free ports, for the stack, scheduler and browser tests.

:func:`running_stack` runs the real CLI (``flywheel up`` / ``flywheel down``) as subprocesses
and yields what a test needs to talk to the stack: URLs, the Airflow login, a JWT-authorised
REST client. Only the standard library is imported at the top (collection time).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))
#: variables of the test session that must not leak into the stack (conftest points them at its own home)
SESSION_ONLY = ("AIRFLOW_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FLYWHEEL_ARTIFACT_ROOT",
                "FLYWHEEL_LANDING_ROOT", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "PYTHONDONTWRITEBYTECODE")


def port_bound(port: int) -> bool:
    """Something listens on 127.0.0.1:``port`` (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    ports: dict[str, int]
    user: str
    password: str
    up_output: str

    @property
    def airflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['airflow']}"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def serve(self) -> str:
        return f"http://127.0.0.1:{self.ports['serve']}"

    def state(self) -> dict:
        return json.loads((self.home / "run" / "stack.json").read_text())["services"]

    def flywheel(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([FLYWHEEL, *argv], env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)

    def token(self) -> str:
        body = json.dumps({"username": self.user, "password": self.password}).encode()
        req = urllib.request.Request(f"{self.airflow}/auth/token", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 201, resp.status
            return json.load(resp)["access_token"]

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        """``/api/v2`` call with a JWT; returns the JSON answer (raises on an HTTP error, with its body)."""
        req = urllib.request.Request(
            f"{self.airflow}/api/v2{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token or self.token()}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc

    def wait_run(self, dag_id: str, run_id: str, *, timeout: float, token: str | None = None) -> dict:
        """Poll a DAG run until it is ``success`` or ``failed``; returns the run with its task instances.

        On a failed or stuck run the message carries each task's state and the tail of the
        scheduler's log.
        """
        quoted = urllib.parse.quote(run_id, safe="")
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            token = token or self.token()
            try:
                run = self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}", token=token)
            except AssertionError as exc:
                if "HTTP 401" not in str(exc):
                    raise
                token = None  # the JWT expired: fetch a new one
                continue
            if run["state"] in ("success", "failed"):
                break
            time.sleep(5)
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances", token=token)["task_instances"]
        run["task_instances"] = tis
        if run.get("state") != "success":
            states = {ti["task_id"]: ti["state"] for ti in tis}
            raise AssertionError(f"{dag_id} {run_id}: state {run.get('state')}, tasks {states}\n"
                                 f"scheduler log:\n{self.log_tail('scheduler')}")
        return run

    def log_tail(self, service: str, lines: int = 60) -> str:
        path = self.home / "run" / "logs" / f"{service}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def stack_env(home: Path, ports: dict[str, int], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
    env.update({"FLYWHEEL_HOME": str(home), "FLYWHEEL_PROJECT_ROOT": str(ROOT),
                "AIRFLOW_PORT": str(ports["airflow"]), "MLFLOW_PORT": str(ports["mlflow"]),
                "SERVE_PORT": str(ports["serve"]), **(extra or {})})
    return env


@contextlib.contextmanager
def running_stack(home: Path, extra_env: dict[str, str] | None = None, *,
                  before_up: list[list[str]] | None = None) -> Iterator[Stack]:
    """``flywheel up`` on ``home`` with free ports (``before_up``: flywheel commands to run
    first, e.g. sample data), and ``flywheel down`` afterwards whatever happened."""
    ports = {"airflow": free_port(), "mlflow": free_port(), "serve": free_port()}
    env = stack_env(home, ports, extra_env)
    for argv in before_up or []:
        done = subprocess.run([FLYWHEEL, *argv], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
    up = subprocess.run([FLYWHEEL, "up"], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    try:
        assert up.returncode == 0, f"flywheel up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
        secrets = json.loads((home / "secrets" / "stack.json").read_text())
        yield Stack(home=home, env=env, ports=ports, user="admin", password=secrets["admin_password"],
                    up_output=up.stdout)
    finally:
        subprocess.run([FLYWHEEL, "down"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
