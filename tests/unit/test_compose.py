"""docker-compose.yml checked without a Docker engine: services, commands, ports, health, secrets.

Commands are checked against the real thing: ``flywheel ...`` against the CLI's argparse
parser, ``airflow ...`` against Airflow's (with the stack's CeleryExecutor), ``mlflow server``
against MLflow's click command, ``spark-class`` against the classes in pyspark's jars, and
every file a service runs or mounts against the repository.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
#: where the image puts the checkout (Dockerfile: WORKDIR /opt/mlflywheel, COPY . .)
IMAGE_ROOT = "/opt/mlflywheel"
REQUIRED = {"postgres", "redis", "minio", "minio-init", "mlflow", "airflow-init", "airflow-api-server",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "model-server",
            "spark-master", "spark-worker", "prometheus", "grafana"}
#: executables of the third-party images (the first word of their command or health check)
THIRD_PARTY = {"postgres": {"pg_isready"}, "redis": {"redis-server", "redis-cli"}, "minio/minio": {"server", "mc"},
               "prom/prometheus": {"wget", "--config.file=/etc/prometheus/prometheus.yml"},
               "grafana/grafana": {"wget"}}
#: published port of each service (127.0.0.1 only)
PORTS = {"airflow-api-server": 8080, "mlflow": 5000, "model-server": 8000, "grafana": 3000, "prometheus": 9090,
         "minio": 9001}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY$|TOKEN|FERNET|REQUIREPASS|ACCESS_KEY)", re.IGNORECASE)
#: keys that name where a secret is, not the secret
LOCATION = re.compile(r"_(FILE|PATH|DIR)$")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- compose variable interpolation (the subset the file uses, as `docker compose` does it) ---
def interpolate(text: str, env: dict[str, str]) -> str:
    """Fill ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``; ``$$`` stays ``$``."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if value is None:
            raise KeyError(f"{name} is not set and has no default")
        return value

    parts = text.split("$$")
    return "$".join(VAR.sub(one, part) for part in parts)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), read_env_file(ENV_EXAMPLE)))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _ours(service: dict) -> bool:
    return "build" in service


def _argv(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _health_argv(service: dict) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return None
    test = _argv(test)
    if test[0] == "CMD":
        return test[1:]
    if test[0] == "CMD-SHELL":
        return shlex.split(" ".join(test[1:]))
    raise AssertionError(f"healthcheck test {test} starts with neither CMD nor CMD-SHELL")


def _repo_path(image_path: str) -> Path:
    assert image_path.startswith(IMAGE_ROOT + "/"), f"{image_path} is not under {IMAGE_ROOT}"
    return ROOT / image_path[len(IMAGE_ROOT) + 1:]


# --- the tests ----------------------------------------------------------------------------
def test_interpolation_follows_compose_rules():
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}-${B:-x}-${EMPTY:-y}-${EMPTY-z}-$${A}", env) == "1-x-y--${A}"
    with pytest.raises(KeyError, match="B: set B"):
        interpolate("${B:?set B}", env)
    with pytest.raises(KeyError, match="EMPTY"):
        interpolate("${EMPTY:?no}", env)


def test_every_variable_is_in_env_example_and_every_secret_is_required():
    text = COMPOSE.read_text()
    example = read_env_file(ENV_EXAMPLE)
    used = {}
    for name, op, _ in VAR.findall(text.replace("$$", "")):
        used.setdefault(name, set()).add(op)
    missing = sorted(n for n, ops in used.items() if not ops & {":-", "-"} and n not in example)
    assert not missing, f".env.example lacks {missing} (used by docker-compose.yml without a default)"
    for name, ops in used.items():
        if SECRET_NAME.search(name):
            assert ops == {":?"}, f"secret {name} must be ${{{name}:?...}} (required, no default), found {ops}"
            assert example.get(name) == "change-me", f".env.example: {name}={example.get(name)!r}, expected change-me"
    unused = sorted(set(example) - set(used))
    assert not unused, f".env.example has variables docker-compose.yml never uses: {unused}"
    assert "Fernet" in ENV_EXAMPLE.read_text()  # how to generate the key


def test_missing_secret_stops_interpolation():
    env = read_env_file(ENV_EXAMPLE)
    del env["AIRFLOW_FERNET_KEY"]
    with pytest.raises(KeyError, match="AIRFLOW_FERNET_KEY"):
        interpolate(COMPOSE.read_text(), env)


def test_required_services_exist(services):
    assert REQUIRED <= set(services), f"missing services: {sorted(REQUIRED - set(services))}"


def test_ports_are_published_on_localhost_only(services):
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip, host, container = port.get("host_ip"), port.get("published"), port["target"]
            else:
                parts = str(port).split(":")
                assert len(parts) == 3, f"{name}: port {port!r} has no host address (published on 0.0.0.0)"
                host_ip, host, container = parts
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is published on {host_ip!r}, not 127.0.0.1"
            published[name] = (int(host), int(str(container).split("/")[0]))
    assert {n: p[0] for n, p in published.items()} == PORTS


def test_long_running_services_have_health_checks_and_wait_for_healthy_ones(services):
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert _health_argv(service), f"{name}: a long-running service without a healthcheck"
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            wanted = ("service_completed_successfully" if services[dependency].get("restart") == "no"
                      else "service_healthy")
            assert rule == {"condition": wanted}, f"{name} -> {dependency}: {rule}, expected {wanted}"
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker"):
        depends = services[name]["depends_on"]
        assert {"airflow-init", "postgres", "redis"} <= set(depends), f"{name}: {sorted(depends)}"
    assert "minio-init" in services["mlflow"]["depends_on"]


def _commands(services) -> list[tuple[str, str, list[str]]]:
    out = []
    for name, service in services.items():
        for kind, argv in (("command", service.get("command")), ("entrypoint", service.get("entrypoint")),
                           ("healthcheck", _health_argv(service))):
            if argv:
                out.append((name, kind, _argv(argv)))
    return out


def test_commands_of_third_party_images_are_their_own_tools(services):
    for name, kind, argv in _commands(services):
        service = services[name]
        if _ours(service):
            continue
        image = service["image"].split(":")[0]
        assert argv[0] in THIRD_PARTY[image], f"{name} ({image}) {kind}: {argv[0]!r} is not one of its tools"


def test_flywheel_commands_parse(services):
    from mlflywheel.tools.cli import build_parser

    seen = 0
    for _name, _kind, argv in _commands(services):
        if argv[0] == "flywheel":
            args = build_parser().parse_args(argv[1:])
            assert callable(args.func)
            seen += 1
    assert seen
    with pytest.raises(SystemExit):  # the check itself can fail
        build_parser().parse_args(["serve", "--pipline", "fraud"])
    served = _argv(services["model-server"]["command"])
    assert (served[:2] == ["flywheel", "serve"] and "--host" in served
            and served[served.index("--host") + 1] == "0.0.0.0")


def test_airflow_commands_parse_with_the_celery_executor(services, tmp_path):
    commands = [argv[1:] for _, _, argv in _commands(services) if argv[0] == "airflow"]
    init = (ROOT / "deploy" / "airflow" / "init.sh").read_text()
    for line in init.splitlines():
        if line.strip().startswith("airflow "):
            words = shlex.split(line.replace('"$conn"', "mlflow_default"))
            commands.append(list(itertools.takewhile(lambda w: not w.startswith((">", "|", "&")), words))[1:])
    assert ["celery", "worker"] in commands and ["db", "migrate"] in commands
    commands.append(["celery", "wrker"])  # must be refused: proves the check can fail
    script = ("import json, sys\nfrom airflow.cli import cli_parser\nparser = cli_parser.get_parser()\nbad = []\n"
              "for argv in json.loads(sys.argv[1]):\n    try:\n        parser.parse_args(argv)\n"
              "    except SystemExit:\n        bad.append(argv)\nprint(json.dumps(bad))\n")
    env = {**os.environ, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    bad = json.loads(result.stdout.strip().splitlines()[-1])
    assert bad == [["celery", "wrker"]], f"airflow refuses: {bad}"


def test_mlflow_server_command_parses(services):
    from mlflow.cli import cli

    argv = _argv(services["mlflow"]["command"])
    assert argv[:2] == ["mlflow", "server"]
    context = cli.commands["server"].make_context("server", argv[2:])
    assert context.params["app_name"] == "basic-auth"
    assert context.params["artifacts_destination"].startswith("s3://")
    assert "mlflow:*" in context.params["allowed_hosts"].split(",")
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    ini = _repo_path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert "admin_password" not in ini.replace("# admin_password", "")  # from MLFLOW_AUTH_ADMIN_PASSWORD only
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "change-me"  # i.e. ${MLFLOW_ADMIN_PASSWORD} from .env


def test_spark_classes_exist_in_pyspark(services):
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    classes = set()
    for jar in jars.glob("spark-core_*.jar"):
        with zipfile.ZipFile(jar) as archive:
            classes |= {n[:-6].replace("/", ".") for n in archive.namelist() if n.endswith(".class")}
    seen = 0
    for name, _kind, argv in _commands(services):
        if argv[0] == "spark-class":
            assert argv[1] in classes, f"{name}: class {argv[1]} is not in pyspark's spark-core jar"
            seen += 1
    assert seen == 2
    assert "org.apache.spark.deploy.master.Mastr" not in classes


def test_files_run_or_mounted_exist_in_the_repo(services):
    checked = 0
    for name, kind, argv in _commands(services):
        if argv[0] in ("python", "bash"):
            script = _repo_path(argv[1])
            assert script.is_file(), f"{name} {kind}: {argv[1]} is not in the repository"
            check = ([sys.executable, "-m", "py_compile", str(script)] if argv[0] == "python"
                     else ["bash", "-n", str(script)])
            assert subprocess.run(check, capture_output=True).returncode == 0, f"{script} does not compile"
            checked += 1
        elif argv[0] == "celery":
            import importlib.util

            app = argv[argv.index("--app") + 1]
            assert importlib.util.find_spec(app.rsplit(".", 1)[0]), f"{name}: celery app {app} not installed"
        elif _ours(services[name]):
            assert argv[0] in ("flywheel", "airflow", "mlflow", "spark-class"), f"{name} {kind}: {argv[0]}"
            assert (Path(sys.executable).parent / argv[0]).exists(), f"{argv[0]} is not installed by the lock"
    assert checked >= 3
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        for key, value in (service.get("environment") or {}).items():
            if isinstance(value, str) and value.startswith(IMAGE_ROOT + "/"):
                assert _repo_path(value).exists(), f"{name}: {key}={value} does not exist in the repository"


def literal_secrets(raw: dict) -> list[str]:
    """Secrets written into a parsed compose file instead of ``${VAR:?...}`` references."""
    problems = []

    def literal(value: str) -> str:  # what is left once every ${...} is taken out
        return VAR.sub("", value)

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                key = str(key)
                if (isinstance(value, str | int) and SECRET_NAME.search(key) and not LOCATION.search(key)
                        and (literal(str(value)) or not VAR.search(str(value)))):
                    problems.append(f"{where}.{key} = {value!r} (expected ${{VAR:?...}})")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                flag = node[i - 1] if i else None
                if (isinstance(value, str) and isinstance(flag, str) and flag.startswith("-")
                        and SECRET_NAME.search(flag) and literal(value)):
                    problems.append(f"{where}[{i}] = {value!r} follows {flag!r}")
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str):
            text = VAR.sub("__VAR__", node)
            for user, password in re.findall(r"://([^:/@\s'\"]*):([^@\s'\"]+)@", text):
                if password != "__VAR__":
                    problems.append(f"{where}: URL with a literal password for {user}")
            for password in re.findall(r"password=([^,\s'\"]+)", text):
                if password != "__VAR__":
                    problems.append(f"{where}: password={password}")
            for password in re.findall(r'"(?:password|secret)[^"]*":\s*"([^"]*)"', text, re.IGNORECASE):
                if password != "__VAR__":
                    problems.append(f"{where}: JSON password {password!r}")

    walk(raw, "compose")
    return problems


def test_no_literal_secret_in_the_compose_file():
    problems = literal_secrets(yaml.safe_load(COMPOSE.read_text()))
    assert not problems, "\n".join(problems)


def test_literal_secrets_are_found():
    pw = "hunt" + "er2"  # assembled here, so that this file holds no literal secret
    planted = {"services": {"db": {
        "environment": {"POSTGRES_PASSWORD": pw, "API_TOKEN": "${TOKEN:?x}", "DB_PASSWORD_FILE": "/run/s"},
        "command": ["redis-server", "--requirepass", pw],
        "x": [f"postgresql://u:{pw}@db/x", f"redis:6379,password={pw}", json.dumps({"password": pw}),
              "postgresql://u:${P:?x}@db/x", f"redis://:{pw}@redis:6379/0", "redis://:${P:?x}@redis:6379/0"]}}}
    problems = literal_secrets(planted)
    assert len(problems) == 6, problems
    assert all(pw in p or "literal password for" in p for p in problems)


def test_env_file_is_ignored_by_git_and_not_tracked():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env is not git-ignored"
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT)
    assert example.returncode == 1, ".env.example must not be ignored"
    tracked = subprocess.run(["git", "ls-files", ".env", ".env.*"], cwd=ROOT, capture_output=True, text=True)
    assert set(tracked.stdout.split()) <= {".env.example"}


def test_airflow_settings_of_the_stack(services):
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert env[key] == "change-me", key  # i.e. from .env
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:") and "@redis:6379/" in env[
        "AIRFLOW__CELERY__BROKER_URL"]
    for name in ("airflow-api-server", "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-init"):
        assert services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert services["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] == "change-me"


def test_stack_connections_resolve_through_the_real_hooks(services, monkeypatch):
    env = services["airflow-worker"]["environment"]
    conns = {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}
    assert set(conns) == {"AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_MODEL_SERVER_DEFAULT",
                          "AIRFLOW_CONN_SPARK_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT"}
    for key, value in conns.items():
        monkeypatch.setenv(key, value)
    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from mlflywheel_airflow.hooks.feast import FeastHook
    from mlflywheel_airflow.hooks.mlflow import MlflowHook
    from mlflywheel_airflow.hooks.model_server import ModelServerHook

    assert MlflowHook().tracking_uri() == env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert MlflowHook().ui_url() == "http://127.0.0.1:5000"
    assert ModelServerHook().base_url() == "http://model-server:8000"
    assert SparkSubmitHook(conn_id="spark_default")._resolve_connection()["master"] == "spark://spark-master:7077"
    assert FeastHook().workspace().feature_repo == ROOT / "feature_repo"  # no feast_default: the project's repo
    aws = AwsGenericHook(aws_conn_id="aws_default", client_type="s3")
    assert aws.conn_config.endpoint_url == "http://minio:9000"
    assert aws.conn_config.aws_secret_access_key == "change-me"


def test_model_server_port_matches_the_pipeline_and_prometheus(services):
    from mlflywheel.services.config import load_pipeline

    port = load_pipeline(ROOT / "include" / "pipelines" / "fraud.yaml").serving.port
    assert services["model-server"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert f"model-server:{port}" in targets


def test_docker_compose_config_accepts_the_file():
    """``docker compose config`` needs only the client and its compose plugin, no engine."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip(f"the docker client has no compose plugin: {version.stderr.strip()[:200]}")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_feast_online_store_is_the_stack_redis(services, tmp_path, monkeypatch):
    """The project's Feast repo, with FLYWHEEL_FEAST_ONLINE_STORE of the stack, loads on Redis db 1."""
    from mlflywheel.services.features import load_store
    from mlflywheel.services.settings import Workspace

    url = services["airflow-worker"]["environment"]["FLYWHEEL_FEAST_ONLINE_STORE"]
    assert services["model-server"]["environment"]["FLYWHEEL_FEAST_ONLINE_STORE"] == url
    broker = services["airflow-worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    assert broker.rsplit("/", 1)[0] == url.rsplit("/", 1)[0] and broker[-2:] != url[-2:]  # same Redis, other db
    monkeypatch.setenv("FLYWHEEL_FEAST_ONLINE_STORE", url)
    monkeypatch.delenv("FLYWHEEL_FEATURE_REPO", raising=False)
    store = load_store(Workspace(home=tmp_path / "home"))
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string == "redis:6379,db=1,password=change-me"
