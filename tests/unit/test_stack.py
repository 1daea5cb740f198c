"""``flywheel up`` / ``down`` without Airflow: ports, secrets, environment, command lines, the
pid file and stopping exactly the recorded process group (real throwaway processes)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from mlflywheel.services.settings import Workspace
from mlflywheel.tools import stack
from mlflywheel.tools.cli import main

pytestmark = pytest.mark.unit


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    return Workspace.from_env()


def test_ports_flag_beats_env_beats_default():
    ports = stack.Ports.resolve({"airflow": 9001, "mlflow": None, "serve": None},
                                {"MLFLOW_PORT": "9002", "AIRFLOW_PORT": "7777"})
    assert ports == stack.Ports(airflow=9001, mlflow=9002, serve=8000)
    assert stack.Ports.resolve({}, {}) == stack.Ports(8080, 5000, 8000)


@pytest.mark.parametrize(("flags", "environ", "message"), [
    ({}, {"SERVE_PORT": "http"}, "SERVE_PORT: expected a port number 1-65535, found 'http'"),
    ({"airflow": 70000}, {}, "--airflow-port: expected a port number 1-65535, found 70000"),
    ({"airflow": 5000}, {}, "ports must differ"),
])
def test_bad_ports_are_clear_errors(flags, environ, message):
    with pytest.raises(stack.StackError, match=message):
        stack.Ports.resolve(flags, environ)


def test_secrets_are_generated_once_private_and_kept(ws):
    first = stack.load_secrets(ws)
    assert set(first) == {"fernet_key", "jwt_secret", "api_secret_key", "admin_password"}
    import base64

    assert len(base64.urlsafe_b64decode(first["fernet_key"])) == 32  # what Fernet accepts
    for path in (stack.secrets_dir(ws) / "stack.json", stack.passwords_path(ws)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(stack.secrets_dir(ws).stat().st_mode) == 0o700
    assert stack.load_secrets(ws) == first
    assert json.loads(stack.passwords_path(ws).read_text()) == {"admin": first["admin_password"]}
    assert stack.login(ws) == ("admin", first["admin_password"])


def test_unreadable_secrets_name_the_file(ws):
    path = stack.secrets_dir(ws) / "stack.json"
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(stack.StackError, match=r"stack\.json: expected a JSON object of secrets, found list"):
        stack.load_secrets(ws)


def test_env_ties_the_processes_to_the_stack_ports(ws):
    ports = stack.Ports(18080, 15000, 18000)
    secrets = stack.load_secrets(ws)
    env = stack.stack_env(ws, ports, secrets, environ={
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://root@127.0.0.1/x",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://elsewhere:1/execution/",
        "FLYWHEEL_MLFLOW_UI_URL": "http://stale:5000",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__API__PORT"] == "18080" and env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["FLYWHEEL_MLFLOW_UI_URL"] == "http://127.0.0.1:15000"
    # the caller's database and parallelism win: the same stack on Postgres
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert stack.stack_env(ws, ports, secrets, environ={})["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["fernet_key"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["jwt_secret"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(stack.passwords_path(ws))
    assert env["AIRFLOW_HOME"] == str(ws.home / "airflow")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    server = json.loads(env["AIRFLOW_CONN_MODEL_SERVER_DEFAULT"])
    assert (server["host"], server["port"]) == ("127.0.0.1", 18000)
    mlflow = json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    # no host: tasks keep the workspace's store; the UI address is for the extra links
    assert "host" not in mlflow and mlflow["extra"]["ui_url"] == "http://127.0.0.1:15000"


def test_command_lines_bind_loopback_and_skip_log_servers(ws):
    svcs = {s.name: s for s in stack.services(ws, stack.Ports(18080, 15000, 18000), pipeline="ctr")}
    assert list(svcs) == list(stack.SERVICE_ORDER)
    api = svcs["api-server"].argv
    assert api[1:] == ["api-server", "--host", "127.0.0.1", "--port", "18080", "--workers", "1"]
    assert svcs["api-server"].health_url == "http://127.0.0.1:18080/api/v2/monitor/health"
    assert svcs["scheduler"].argv[1:] == ["scheduler", "--skip-serve-logs"]
    assert svcs["triggerer"].argv[1:] == ["triggerer", "--skip-serve-logs"]
    assert svcs["dag-processor"].argv[1:] == ["dag-processor"]
    assert svcs["serve"].argv[1:] == ["serve", "--pipeline", "ctr", "--host", "127.0.0.1", "--port", "18000"]
    assert svcs["serve"].health_url == "http://127.0.0.1:18000/v2/health/live"
    ml = svcs["mlflow"].argv
    assert ml[ml.index("--backend-store-uri") + 1] == ws.tracking_uri
    assert ml[ml.index("--host") + 1] == "127.0.0.1" and ml[ml.index("--port") + 1] == "15000"
    assert svcs["mlflow"].health_url == "http://127.0.0.1:15000/health"


def test_health_needs_every_component_healthy():
    body = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"},
            "triggerer": {"status": "unhealthy"}, "dag_processor": {"status": "healthy"}}
    assert stack.airflow_components_healthy(json.dumps(body), ["scheduler", "dag_processor"])
    assert not stack.airflow_components_healthy(json.dumps(body), ["scheduler", "triggerer"])
    assert not stack.airflow_components_healthy("<html>", ["scheduler"])
    assert not stack.airflow_components_healthy(json.dumps({"scheduler": {"status": "healthy"}}), ["scheduler"])


def _spawn(ws, name: str, code: str) -> stack.Record:
    """A real process group: a Python leader that starts a child, as the stack's services do."""
    svc = stack.Service(name, [sys.executable, "-c", code])
    env = {**os.environ, "FLYWHEEL_PROJECT_ROOT": str(ws.home)}
    ws.home.mkdir(parents=True, exist_ok=True)
    return stack._start(svc, env, stack.log_dir(ws) / f"{name}.log")


CHILD_AND_WAIT = ("import subprocess, sys, time; "
                  "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
IGNORE_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('ready', flush=True); time.sleep(60)")


def _wait_members(pgid: int, n: int) -> None:
    deadline = time.monotonic() + 20
    while len(stack.group_members(pgid)) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_state_round_trip_and_down_stops_the_whole_group(ws, capsys):
    rec = _spawn(ws, "scheduler", CHILD_AND_WAIT)
    _wait_members(rec.pid, 2)
    members = stack.group_members(rec.pid)
    assert len(members) == 2 and rec.pid in members
    stack.write_state(ws, {"scheduler": rec})
    assert stack.read_state(ws) == {"scheduler": rec}
    assert stack.is_same_process(rec)

    assert stack.down(ws, timeout=10) == {"scheduler": "stopped"}
    assert stack.group_members(rec.pid) == []
    assert not stack.state_path(ws).exists()
    assert "scheduler: stopped" in capsys.readouterr().out


def test_a_process_that_ignores_sigterm_is_killed(ws):
    rec = _spawn(ws, "triggerer", IGNORE_TERM)
    deadline = time.monotonic() + 20
    while "ready" not in stack.tail(rec.log).splitlines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.stop_record(rec, timeout=1) == "killed (still running 1 s after SIGTERM)"
    assert stack.group_members(rec.pid) == []


def test_a_reused_pid_is_never_signalled(ws):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        # the pid is alive but started at another time than recorded: not ours
        stale = stack.Record(name="api-server", pid=other.pid, create_time=1.0, cmdline=["airflow"],
                             port=8080, log="x")
        assert not stack.is_same_process(stale)
        # (its group holds a process, so stop_record would kill "leftovers"; down must check first)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    gone = stack.Record(name="mlflow", pid=other.pid, create_time=1.0, cmdline=["mlflow"], port=5000, log="x")
    assert stack.stop_record(gone) == "not running"


def test_down_with_nothing_running_says_so(ws, capsys):
    assert main(["down"]) == 0
    assert "nothing running" in capsys.readouterr().out


def test_unreadable_state_is_a_clear_error(ws):
    stack.state_path(ws).parent.mkdir(parents=True)
    stack.state_path(ws).write_text("{not json")
    with pytest.raises(stack.StackError, match=r"stack\.json: expected .*pid.*found unreadable content"):
        stack.read_state(ws)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_refuses_a_busy_port_and_a_public_host(ws):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not stack.port_free(port)
        ports = stack.Ports(airflow=port, mlflow=_free_port(), serve=_free_port())
        with pytest.raises(stack.StackError, match=rf"port {port} on 127.0.0.1 is in use.*AIRFLOW_PORT"):
            stack.up(ws, ports, say=lambda _: None)
    with pytest.raises(stack.StackError, match="expected a loopback address"):
        stack.up(ws, stack.Ports(), host="0.0.0.0", say=lambda _: None)
    assert stack.read_state(ws) == {}


CHILD_IN_OWN_GROUP = ("import subprocess, sys, time; "
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], process_group=0); "
                      "time.sleep(60)")


def test_a_child_in_its_own_process_group_is_stopped_too(ws):
    """Airflow's task supervisor moves each task process to a group of its own: the service's
    session still holds it, and down does not leave it running."""
    rec = _spawn(ws, "scheduler", CHILD_IN_OWN_GROUP)
    _wait_members(rec.pid, 2)
    members = stack.group_members(rec.pid)
    assert len(members) == 2
    child = next(pid for pid in members if pid != rec.pid)
    assert os.getpgid(child) == child != rec.pid  # not in the leader's process group
    assert stack.stop_record(rec, timeout=1) == "killed (still running 1 s after SIGTERM)"
    assert stack.group_members(rec.pid) == []
