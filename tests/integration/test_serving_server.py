"""``flywheel serve`` as a real process on a loopback port, following a real (SQLite) MLflow registry.

Each test starts the server with the CLI, drives it over HTTP from threads, and signals it
the way an orchestrator does: SIGTERM under load must drain, kill -9 must lose no
acknowledged prediction, and moving ``@champion`` must reload without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlflywheel.services import tracking
from mlflywheel.services.predlog import read_predictions
from mlflywheel.services.settings import Workspace
from tests import helpers
from tests.helpers import ctr_record
from tests.integration.stack import free_port

pytestmark = pytest.mark.integration
FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory, ctr_onnx):
    """A workspace whose registry holds ``ctr`` v1 (@champion), and the files for more versions."""
    home = tmp_path_factory.mktemp("serving-ws")
    saved = os.environ.get("FLYWHEEL_HOME")
    os.environ["FLYWHEEL_HOME"] = str(home)
    try:
        ws = Workspace.from_env().ensure()
        helpers.publish_onnx_version(ws, ctr_onnx.config, ctr_onnx.files["1"], aliases=("champion",))
    finally:
        if saved is None:
            os.environ.pop("FLYWHEEL_HOME", None)
        else:
            os.environ["FLYWHEEL_HOME"] = saved
    return ws, ctr_onnx.config, ctr_onnx.files


class Server:
    """``flywheel serve --pipeline ctr`` on a free port of 127.0.0.1."""

    def __init__(self, ws: Workspace, log: Path, *settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [FLYWHEEL, "serve", "--pipeline", "ctr", "--port", str(self.port), "--no-feast", "--set",
                "poll_interval_s=0.2", "--set", "drain_grace_s=1.0", "--set", "retry_refused_s=600"]
        for setting in settings:
            args += ["--set", setting]
        env = {**os.environ, "FLYWHEEL_HOME": str(ws.home)}
        self.output = log.with_suffix(".out")
        self.proc = subprocess.Popen(args, env=env, stdout=self.output.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"server not ready in 90 s: {self.output.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Load:
    """Threads sending single-record /predict requests with unique ids until stopped."""

    def __init__(self, url: str, threads: int = 6, prefix: str = "r") -> None:
        self.url, self.prefix = url, prefix
        self.results: list[tuple[str, int | str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, t: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                request_id = f"{self.prefix}-{t}-{n}"
                n += 1
                try:
                    status: int | str = client.post(f"{self.url}/predict", json={"records": [ctr_record(n % 500 + 1)]},
                                                    headers={"x-request-id": request_id}).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                    time.sleep(0.01)
                with self._lock:
                    self.results.append((request_id, status))

    def stop(self) -> list[tuple[str, int | str]]:
        self._stop.set()
        for thread in self.threads:
            thread.join(30)
        return self.results

    def count(self, status: int) -> int:
        with self._lock:
            return sum(s == status for _, s in self.results)


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_under_load_drains_and_flushes(registry, tmp_path):
    ws, _, _ = registry
    log = tmp_path / "predictions.db"
    server = Server(ws, log, f"log_path={log}")
    try:
        load = Load(server.url)
        wait_for(lambda: load.count(200) >= 50)
        readiness: list[int] = []
        with httpx.Client(timeout=5) as probe:
            server.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            while time.monotonic() - sent < 0.8:
                readiness.append(probe.get(f"{server.url}/v2/health/ready").status_code)
                time.sleep(0.05)
        during_grace = load.count(200)
        assert server.proc.wait(60) == 0, server.output.read_text()[-3000:]
        results = load.stop()
    finally:
        server.stop()
    assert readiness and set(readiness) == {503}  # readiness false at once, the process still serving
    assert load.count(200) >= during_grace > 50
    statuses = {s for _, s in results}
    assert statuses <= {200, 503, "ConnectError", "RemoteProtocolError", "ReadError"}, statuses
    acknowledged = {rid for rid, s in results if s == 200}
    logged = read_predictions(log)
    assert acknowledged <= set(logged["request_id"])
    assert not (log.parent / f"{log.name}-wal").exists() or (log.parent / f"{log.name}-wal").stat().st_size == 0
    assert "log flushed" in server.output.read_text()


def test_every_acknowledged_request_survives_kill_9(registry, tmp_path):
    ws, _, _ = registry
    log = tmp_path / "predictions.db"
    server = Server(ws, log, f"log_path={log}")
    try:
        load = Load(server.url, prefix="k")
        wait_for(lambda: load.count(200) >= 200)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        acknowledged = {rid for rid, s in load.stop() if s == 200}
        restarted = Server(ws, log, f"log_path={log}")
        try:
            after = httpx.post(f"{restarted.url}/predict", json={"records": [ctr_record()]},
                               headers={"x-request-id": "after-restart"})
        finally:
            restarted.proc.send_signal(signal.SIGTERM)
            restarted.proc.wait(30)
    finally:
        server.stop()
    assert after.status_code == 200
    logged = set(read_predictions(log)["request_id"])
    assert len(acknowledged) >= 200 and acknowledged - logged == set()
    assert "after-restart" in logged


def test_moving_champion_reloads_without_restart_and_a_bad_hash_is_refused(registry, tmp_path):
    ws, config, files = registry
    server = Server(ws, tmp_path / "predictions.db", f"log_path={tmp_path / 'predictions.db'}")
    client = tracking.client(ws)

    def served() -> str:
        return httpx.post(f"{server.url}/predict", json={"records": [ctr_record()]}).json()["predictions"][0][
            "model_version"]

    try:
        assert served() == "1"
        v2 = helpers.publish_onnx_version(ws, config, files["2"])
        client.set_registered_model_alias(config.model_name, "champion", v2)
        wait_for(lambda: served() == v2)
        tampered = helpers.publish_onnx_version(ws, config, files["1"], sha256="0" * 64)
        client.set_registered_model_alias(config.model_name, "champion", tampered)
        wait_for(lambda: tampered in httpx.get(f"{server.url}/v2/models/ctr").json()["parameters"]["refused"])
        assert served() == v2
        meta = httpx.get(f"{server.url}/v2/models/ctr").json()
        assert server.proc.poll() is None  # the same process throughout
    finally:
        client.set_registered_model_alias(config.model_name, "champion", "1")
        server.stop()
    assert meta["parameters"]["roles"]["champion"]["version"] == v2
    assert "refusing to load an altered file" in meta["parameters"]["refused"][tampered]["reason"]


def test_an_oversized_body_is_refused_before_it_is_read(registry, tmp_path):
    ws, _, _ = registry
    server = Server(ws, tmp_path / "p.db", f"log_path={tmp_path / 'p.db'}")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 10000000000\r\n\r\n{\"records\": [")
            chunks = []
            while chunk := sock.recv(65536):  # the server closes the connection after a 413
                chunks.append(chunk)
            answer = b"".join(chunks).decode()
    finally:
        server.stop()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert json.loads(body)["code"] == "payload_too_large"
