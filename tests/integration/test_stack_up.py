"""``flywheel up`` / ``flywheel down`` for real: every process of the stack on a temp workspace
with free ports, healthy, bound to 127.0.0.1 only, not started twice, and all gone after ``down``."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.local_stack import port_bound, running_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"mlflow", "serve", "api-server", "scheduler", "dag-processor", "triggerer"}


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
        return resp.status, resp.read()


def _listening(pids: list[int]) -> list[tuple[int, str, int]]:
    import psutil

    out = []
    for pid in pids:
        try:
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((pid, conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return out


def test_up_health_loopback_idempotent_and_down(tmp_path):
    import psutil

    from mlflywheel.tools import stack as core

    home = tmp_path / "home"
    with running_stack(home) as st:
        state = st.state()
        assert set(state) == SERVICES
        for url in (f"{st.mlflow}/health", f"{st.serve}/v2/health/live"):
            assert _get(url)[0] == 200, url
        status, body = _get(f"{st.airflow}/api/v2/monitor/health")
        health = json.loads(body)
        assert status == 200
        assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == \
            dict.fromkeys(("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")
        # the output names each URL and the login
        assert st.airflow in st.up_output and st.mlflow in st.up_output and st.serve in st.up_output
        assert f"login admin / {st.password}" in st.up_output

        # the login works and the REST API sees the project's DAGs (parsed by the dag-processor)
        token = st.token()
        dags = st.api("GET", "/dags?limit=100", token=token)["dags"]
        assert {"fraud__train", "ctr__train"} <= {d["dag_id"] for d in dags}
        with pytest.raises(urllib.error.HTTPError) as denied:
            _get(f"{st.airflow}/api/v2/dags", headers={"Authorization": "Bearer nope"})
        assert denied.value.code in (401, 403)
        wrong = urllib.request.Request(f"{st.airflow}/auth/token", method="POST",
                                       data=json.dumps({"username": "admin", "password": "admin"}).encode(),
                                       headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(wrong, timeout=30)
        assert denied.value.code == 401  # the default admin:admin of Airflow's docs does not get in
        # the task side (scheduler -> task processes) gets the connections and the Execution API
        env = psutil.Process(state["scheduler"]["pid"]).environ()
        assert json.loads(env["AIRFLOW_CONN_MODEL_SERVER_DEFAULT"])["port"] == st.ports["serve"]
        assert json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])["extra"]["ui_url"] == st.mlflow
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{st.airflow}/execution/"

        # first run: sample data, secrets (mode 0600), migrated DB, examples off
        assert any((home / "landing" / "fraud").rglob("*.parquet"))
        for name in ("stack.json", "simple_auth_manager_passwords.json"):
            assert stat.S_IMODE((home / "secrets" / name).stat().st_mode) == 0o600
        # LOAD_EXAMPLES off: every DAG comes from the project's dags/ folder
        assert {str(Path(d["fileloc"]).parent) for d in dags} == {str(ROOT / "dags")}

        # every process of every service's group listens on 127.0.0.1 only
        groups = {name: core.group_members(rec["pid"]) for name, rec in state.items()}
        assert all(groups.values()), groups
        listening = _listening([pid for pids in groups.values() for pid in pids])
        assert {port for _, _, port in listening} >= set(st.ports.values()), listening
        assert {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening

        # `up` again starts nothing
        again = st.flywheel("up")
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already running") == len(SERVICES)
        assert st.state() == state
        pids = [pid for members in groups.values() for pid in members]

        down = st.flywheel("down")
        assert down.returncode == 0, down.stderr
        # every service is stopped, by SIGTERM or, past the timeout, by SIGKILL: on a loaded machine the
        # scheduler can take longer than that to end its executor; nothing may be left either way
        outcomes = dict(line.split(": ", 1) for line in down.stdout.splitlines())
        assert set(outcomes) == SERVICES, down.stdout
        assert all(o.startswith(("stopped (pid", "killed (still running")) for o in outcomes.values()), down.stdout
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for pid in pids)
        assert not any(port_bound(port) for port in st.ports.values())
        assert not (home / "run" / "stack.json").exists()
        again = st.flywheel("down")
        assert "nothing running" in again.stdout
