"""``flywheel up`` / ``flywheel down``: the local stack on 127.0.0.1, one process per service.

Airflow 3 as separate processes (``api-server`` with the UI and the Execution API,
``scheduler`` with the LocalExecutor, ``dag-processor``, ``triggerer``), the MLflow UI on the
workspace's tracking store and the model server (``flywheel serve``). Everything lives in the
workspace: secrets (Fernet key, JWT secret, API secret key, the admin password; files of mode
0600) under ``$FLYWHEEL_HOME/secrets/``, logs under ``$FLYWHEEL_HOME/run/logs/`` and what was
started in ``$FLYWHEEL_HOME/run/stack.json`` (pid, start time, command line, port per
service), so ``down`` stops exactly those processes and nothing that reused their pids.

The Airflow database is whatever ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` names (SQLite under
the workspace by default; Postgres for a real scheduler with parallel tasks).

No Airflow import here: Airflow runs as subprocesses on ``Workspace.airflow_env()``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets as _secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlflywheel.services.errors import FlywheelError

if TYPE_CHECKING:
    from mlflywheel.services.settings import Workspace

HOST = "127.0.0.1"
DEFAULT_PORTS = {"airflow": 8080, "mlflow": 5000, "serve": 8000}
PORT_ENV = {"airflow": "AIRFLOW_PORT", "mlflow": "MLFLOW_PORT", "serve": "SERVE_PORT"}
ADMIN_USER = "admin"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: the order ``up`` starts services in; ``down`` stops them in reverse
SERVICE_ORDER = ("mlflow", "serve", *AIRFLOW_COMPONENTS)
#: components the Airflow health endpoint reports, by the service that heartbeats for them
HEALTH_COMPONENTS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


class StackError(FlywheelError):
    """The stack could not be started or stopped; the message says which service and why."""


@dataclass(frozen=True)
class Ports:
    airflow: int = DEFAULT_PORTS["airflow"]
    mlflow: int = DEFAULT_PORTS["mlflow"]
    serve: int = DEFAULT_PORTS["serve"]

    @classmethod
    def resolve(cls, flags: dict[str, int | None] | None = None,
                environ: Mapping[str, str] | None = None) -> Ports:
        """Flag, else ``AIRFLOW_PORT`` / ``MLFLOW_PORT`` / ``SERVE_PORT``, else the default."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        flags = flags or {}
        values = {}
        for key, default in DEFAULT_PORTS.items():
            raw: int | str | None = flags.get(key)
            source = f"--{key}-port"
            if raw is None and env.get(PORT_ENV[key]):
                raw, source = env[PORT_ENV[key]], PORT_ENV[key]
            if raw is None:
                values[key] = default
                continue
            try:
                port = int(raw)
            except ValueError:
                raise StackError(f"{source}: expected a port number 1-65535, found {raw!r}") from None
            if not 0 < port < 65536:
                raise StackError(f"{source}: expected a port number 1-65535, found {port}")
            values[key] = port
        if len(set(values.values())) != len(values):
            raise StackError(f"ports must differ, found {values}")
        return cls(**values)


@dataclass(frozen=True)
class Service:
    """One process of the stack: how to start it and how to tell it is up."""

    name: str
    argv: list[str]
    port: int | None = None
    #: answered with 200 once the service is ready (``None``: being alive is enough)
    health_url: str | None = None
    #: what people open (printed by ``up``)
    url: str | None = None


@dataclass
class Record:
    """What ``up`` wrote for a started process; ``down`` checks it is still that process."""

    name: str
    pid: int
    create_time: float
    cmdline: list[str]
    port: int | None
    log: str
    url: str | None = None
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


# --- workspace files ----------------------------------------------------------------------
def run_dir(ws: Workspace) -> Path:
    return ws.home / "run"


def log_dir(ws: Workspace) -> Path:
    return run_dir(ws) / "logs"


def state_path(ws: Workspace) -> Path:
    return run_dir(ws) / "stack.json"


def secrets_dir(ws: Workspace) -> Path:
    return ws.home / "secrets"


def passwords_path(ws: Workspace) -> Path:
    """The simple auth manager's passwords file (``{"admin": "..."}``)."""
    return secrets_dir(ws) / "simple_auth_manager_passwords.json"


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def load_secrets(ws: Workspace) -> dict[str, str]:
    """The stack's secrets, generated on first use and kept in the workspace (mode 0600).

    ``fernet_key`` encrypts connections and variables in the Airflow DB, ``jwt_secret`` signs
    the tokens of the API and the Execution API, ``api_secret_key`` the UI session, and
    ``admin_password`` is the Airflow login of user ``admin``.
    """
    path = secrets_dir(ws) / "stack.json"
    found: dict[str, str] = {}
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StackError(f"{path}: expected a JSON object of secrets, found unreadable JSON ({exc})") from exc
        if not isinstance(found, dict):
            raise StackError(f"{path}: expected a JSON object of secrets, found {type(found).__name__}")
    wanted: dict[str, Callable[[], str]] = {
        "fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "jwt_secret": lambda: _secrets.token_urlsafe(48),
        "api_secret_key": lambda: _secrets.token_urlsafe(32),
        "admin_password": lambda: _secrets.token_urlsafe(12),
    }
    missing = {key: make() for key, make in wanted.items() if not found.get(key)}
    if missing:
        found.update(missing)
        _write_private(path, json.dumps(found, indent=2) + "\n")
    pw_path = passwords_path(ws)
    want_pw = {ADMIN_USER: found["admin_password"]}
    if not pw_path.is_file() or json.loads(pw_path.read_text() or "{}") != want_pw:
        _write_private(pw_path, json.dumps(want_pw) + "\n")
    return found


# --- environment and command lines --------------------------------------------------------
def urls(ports: Ports, host: str = HOST) -> dict[str, str]:
    return {"airflow": f"http://{host}:{ports.airflow}", "mlflow": f"http://{host}:{ports.mlflow}",
            "serve": f"http://{host}:{ports.serve}"}


def stack_env(ws: Workspace, ports: Ports, secrets: dict[str, str], *, host: str = HOST,
              environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every stack process: the workspace's Airflow env plus the stack's
    settings. Values already in ``environ`` win (the database, parallelism, an executor)."""
    environ = dict(os.environ if environ is None else environ)
    url = urls(ports, host)
    defaults = {
        **ws.airflow_env(),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor worker processes (Airflow's default 32 is a lot of idle forks on a laptop)
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__FERNET_KEY": secrets["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": secrets["api_secret_key"],
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(ports.airflow),
        "AIRFLOW__API__BASE_URL": url["airflow"],
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url['airflow']}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_path(ws)),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # MLflow: tasks keep writing to the workspace's store (no host: the embedded default);
        # the connection only says where people open the UI, for the extra links.
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "extra": {"ui_url": url["mlflow"]}}),
        "AIRFLOW_CONN_MODEL_SERVER_DEFAULT": json.dumps(
            {"conn_type": "modelserver", "host": host, "port": ports.serve, "schema": "http"}),
        "FLYWHEEL_MLFLOW_UI_URL": url["mlflow"],
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    stack_keys = {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                  "AIRFLOW__API__HOST", "AIRFLOW__API__PORT", "AIRFLOW__API__BASE_URL",
                  "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
                  "AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "FLYWHEEL_MLFLOW_UI_URL"}
    env = {**defaults, **environ}
    # what ties the processes together is the stack's, whatever the caller's shell had
    env.update({key: defaults[key] for key in stack_keys})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def services(ws: Workspace, ports: Ports, *, pipeline: str = "fraud", host: str = HOST) -> list[Service]:
    """Every service of the stack with its command line, in start order."""
    url = urls(ports, host)
    airflow = _bin("airflow")
    return [
        Service("mlflow", [_bin("mlflow"), "server", "--backend-store-uri", ws.tracking_uri,
                           "--default-artifact-root", ws.artifact_root, "--host", host,
                           "--port", str(ports.mlflow), "--workers", "1"],
                port=ports.mlflow, health_url=f"{url['mlflow']}/health", url=url["mlflow"]),
        Service("serve", [_bin("flywheel"), "serve", "--pipeline", pipeline, "--host", host,
                          "--port", str(ports.serve)],
                port=ports.serve, health_url=f"{url['serve']}/v2/health/live", url=url["serve"]),
        Service("api-server", [airflow, "api-server", "--host", host, "--port", str(ports.airflow),
                               "--workers", "1"],
                port=ports.airflow, health_url=f"{url['airflow']}/api/v2/monitor/health", url=url["airflow"]),
        # the log servers of the scheduler and triggerer bind every interface ([::]): tasks run on
        # this machine, so the API server reads their log files directly
        Service("scheduler", [airflow, "scheduler", "--skip-serve-logs"]),
        Service("dag-processor", [airflow, "dag-processor"]),
        Service("triggerer", [airflow, "triggerer", "--skip-serve-logs"]),
    ]


# --- the pid file and process identity ----------------------------------------------------
def read_state(ws: Workspace) -> dict[str, Record]:
    path = state_path(ws)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: Record(**rec) for name, rec in raw.get("services", {}).items()}
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise StackError(f"{path}: expected {{'services': {{name: {{pid, create_time, cmdline, port, log}}}}}}, "
                         f"found unreadable content ({exc}); stop the processes by hand and delete it") from exc


def write_state(ws: Workspace, records: dict[str, Record]) -> None:
    path = state_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".stack.json.tmp")
    tmp.write_text(json.dumps({"services": {n: asdict(r) for n, r in records.items()}}, indent=2) + "\n")
    os.replace(tmp, path)


def is_same_process(record: Record) -> bool:
    """``record``'s process is alive and is the one ``up`` started, not a later process that got
    the same pid: same pid and same start time. (The command line is recorded for people, not
    compared: Airflow rewrites its process titles.)"""
    import psutil

    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created: float = proc.create_time()
        return abs(created - record.create_time) < 0.05
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def group_members(sid: int) -> list[int]:
    """Live (non-zombie) pids of the session ``sid`` that ``up`` started the service in.

    Each service is started in a session of its own (its pid is the session id). The session,
    not the process group, is what holds everything a service started: Airflow's task
    supervisor puts each task process (and a Spark job's JVM) in a process group of its own.
    """
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.info["pid"]) == sid:
                members.append(proc.info["pid"])
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop_records(records: list[Record], *, timeout: float = 30.0) -> dict[str, str]:
    """SIGTERM the process group of each record that is still the process ``up`` started (the
    scheduler forwards it to its task processes), wait up to ``timeout`` seconds for all of
    their sessions to empty, then SIGKILL every process left in them.

    Returns what happened per service. A record whose leader is gone but whose session still
    has processes (orphaned children) gets those killed.
    """
    outcome: dict[str, str] = {}
    waiting: dict[str, int] = {}
    for rec in records:
        if is_same_process(rec):
            _signal_group(rec.pid, signal.SIGTERM)
            waiting[rec.name] = rec.pid
        elif leftovers := group_members(rec.pid):
            _kill_all(leftovers)
            outcome[rec.name] = f"leader gone; killed {len(leftovers)} leftover process(es)"
        else:
            outcome[rec.name] = "not running"
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for name, pid in list(waiting.items()):
            _reap(pid)
            if not group_members(pid):
                outcome[name] = "stopped"
                del waiting[name]
        time.sleep(0.2)
    for pid in waiting.values():
        _signal_group(pid, signal.SIGKILL)
        _kill_all(group_members(pid))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(group_members(pid) for pid in waiting.values()):
        for pid in waiting.values():
            _reap(pid)
        time.sleep(0.1)
    outcome.update({name: f"killed (still running {timeout:.0f} s after SIGTERM)" for name in waiting})
    return {rec.name: outcome[rec.name] for rec in records}


def stop_record(record: Record, *, timeout: float = 30.0) -> str:
    """:func:`stop_records` for one record."""
    return stop_records([record], timeout=timeout)[record.name]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is our own child (``up`` and ``down`` in one process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --- ports and health ---------------------------------------------------------------------
def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, as servers bind: a
    connection of a stopped server left in TIME_WAIT does not hold the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """``(answered 200, body)``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http on localhost)
            return resp.status == 200, resp.read(100_000).decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(exc)


def airflow_components_healthy(body: str, components: Iterable[str]) -> bool:
    """The metadatabase and each of ``components`` (``scheduler``, ``triggerer``,
    ``dag_processor``) are ``healthy`` in an ``/api/v2/monitor/health`` answer."""
    try:
        health = json.loads(body)
    except json.JSONDecodeError:
        return False
    return all((health.get(name) or {}).get("status") == "healthy" for name in ("metadatabase", *components))


def tail(path: Path | str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# --- up / down ----------------------------------------------------------------------------
def _start(service: Service, env: dict[str, str], log: Path) -> Record:
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        fh.write(f"\n=== {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
                 f"flywheel up: {' '.join(service.argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(service.argv, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=env["FLYWHEEL_PROJECT_ROOT"])
    ps = psutil.Process(proc.pid)
    return Record(name=service.name, pid=proc.pid, create_time=ps.create_time(), cmdline=list(service.argv),
                  port=service.port, log=str(log), url=service.url)


#: ``feast apply`` of the repo (idempotent): the model server looks its feature service up at start
FEAST_APPLY = ("from mlflywheel.services.features import apply_repo, load_store; "
               "from mlflywheel.services.settings import Workspace; "
               "ws = Workspace.from_env(); print('applied views:', apply_repo(load_store(ws), ws))")


def _prepare(ws: Workspace, env: dict[str, str], pipeline: str, say: Callable[[str], None]) -> None:
    """Sample data when the pipeline's landing zone is empty, ``feast apply`` (the model server
    needs the feature service in the registry before any training run) and ``airflow db migrate``."""
    log = log_dir(ws) / "prepare.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.io import landing_dir

    landing = landing_dir(load_pipeline(ws.pipelines_dir / f"{pipeline}.yaml"), ws)
    steps = []
    if not any(landing.glob("ds=*/*.parquet")):
        steps.append(("sample data", [_bin("flywheel"), "data", "generate", "--pipeline", pipeline]))
    steps.append(("feast apply", [sys.executable, "-c", FEAST_APPLY]))
    steps.append(("airflow db migrate", [_bin("airflow"), "db", "migrate"]))
    for label, argv in steps:
        say(f"{label} ...")
        with log.open("ab") as fh:
            fh.write(f"\n=== {' '.join(argv)}\n".encode())
            fh.flush()
            result = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=env["FLYWHEEL_PROJECT_ROOT"])
        if result.returncode != 0:
            raise StackError(f"{label} failed (exit {result.returncode}); log {log}:\n{tail(log)}")


def _wait_ready(service: Service, record: Record, *, timeout: float, components: tuple[str, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not is_same_process(record):
            raise StackError(f"{service.name} exited while starting; log {record.log}:\n{tail(record.log)}")
        if service.health_url is None:
            return
        ok, last = http_ok(service.health_url)
        if ok and (not components or airflow_components_healthy(last, components)):
            return
        time.sleep(1.0)
    raise StackError(f"{service.name}: {service.health_url} not healthy after {timeout:.0f} s "
                     f"(last answer: {last[:500]}); log {record.log}:\n{tail(record.log)}")


def up(ws: Workspace, ports: Ports, *, pipeline: str = "fraud", host: str = HOST, timeout: float = 300.0,
       say: Callable[[str], None] = print) -> dict[str, Record]:
    """Start every service that is not already running, wait until each is healthy, return the records.

    On a failure, what this call started is stopped again and the error carries the tail of
    the failing service's log.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise StackError(f"host: expected a loopback address (127.0.0.1), found {host!r}: the stack's "
                         "simple auth manager and open MLflow UI are for this machine only")
    ws.ensure()
    records = read_state(ws)
    running = {name: rec for name, rec in records.items() if is_same_process(rec)}
    wanted = services(ws, ports, pipeline=pipeline, host=host)
    to_start = [svc for svc in wanted if svc.name not in running]
    for name, rec in running.items():
        say(f"{name}: already running (pid {rec.pid})")
    if not to_start:
        return running
    for svc in to_start:
        if svc.port is not None and not port_free(svc.port, host):
            raise StackError(f"{svc.name}: port {svc.port} on {host} is in use; stop what holds it or choose "
                             f"another ({PORT_ENV[_port_key(svc.name)]}=...)")
    env = stack_env(ws, ports, load_secrets(ws), host=host)
    _prepare(ws, env, pipeline, say)
    started: dict[str, Record] = {}
    try:
        for svc in to_start:
            rec = _start(svc, env, log_dir(ws) / f"{svc.name}.log")
            started[svc.name] = rec
            write_state(ws, {**running, **started})
            say(f"{svc.name}: started (pid {rec.pid}, log {rec.log})")
        for svc in to_start:
            components: tuple[str, ...] = ()
            if svc.name == "api-server":
                components = tuple(HEALTH_COMPONENTS[n] for n in HEALTH_COMPONENTS if n in started or n in running)
            _wait_ready(svc, started[svc.name], timeout=timeout, components=components)
            say(f"{svc.name}: ready" + (f" ({svc.health_url})" if svc.health_url else ""))
    except BaseException:
        stop_records([started[name] for name in reversed(list(started))])
        write_state(ws, running)
        raise
    return {**running, **started}


def _port_key(service: str) -> str:
    return {"api-server": "airflow", "mlflow": "mlflow", "serve": "serve"}[service]


def down(ws: Workspace, *, timeout: float = 30.0, say: Callable[[str], None] = print) -> dict[str, str]:
    """Stop what ``up`` recorded, in reverse start order; returns each service's outcome."""
    records = read_state(ws)
    if not records:
        say(f"nothing running (no {state_path(ws)})")
        return {}
    order = [n for n in reversed(SERVICE_ORDER) if n in records] + [n for n in records if n not in SERVICE_ORDER]
    outcome = stop_records([records[name] for name in order], timeout=timeout)
    for name in order:
        say(f"{name}: {outcome[name]} (pid {records[name].pid})")
    state_path(ws).unlink(missing_ok=True)
    if all(v == "not running" for v in outcome.values()):
        say("nothing was running")
    return outcome


def login(ws: Workspace) -> tuple[str, str]:
    """The Airflow login of the stack."""
    return ADMIN_USER, load_secrets(ws)["admin_password"]
