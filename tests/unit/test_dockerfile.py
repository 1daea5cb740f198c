"""The Dockerfile, read instruction by instruction (no engine here can build it).

What must hold: dependencies come from ``requirements/runtime.txt`` (the lock's pins without the
test tools) and nothing else, with the
uv version and the torch index the Makefile uses; the runtime stage runs as a non-root user
with Java for Spark, the workspace environment, a health check whose script exists, and
compiled ``.pyc``; ``.dockerignore`` keeps local state and secrets out of the build context.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = "requirements/runtime.txt"
FULL_LOCK = "requirements/lock.txt"
TEST_ONLY = ("pytest", "pytest-xdist", "pytest-timeout", "ruff", "moto", "playwright")


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        keyword, _, args = current.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by ``FROM`` (the last group is the image that runs)."""
    groups: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append((keyword, args))
    return groups


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def installs(run: str) -> list[list[str]]:
    """Every ``pip install`` / ``uv pip install|sync`` command of one RUN line, as argv."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts, current = [], []
    for token in lexer:
        if token in ("&&", ";", "||", "|", "&"):
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    commands = []
    for words in parts:
        for i in range(len(words)):
            if words[i:i + 2] in (["pip", "install"], ["uv", "pip"]) or words[i:i + 3] == ["-m", "pip", "install"]:
                commands.append(words[i:])
                break
    return commands


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def makefile() -> str:
    return (ROOT / "Makefile").read_text()


def test_parser_joins_continuations():
    parsed = instructions("FROM a AS b\n# c\nRUN x \\\n  && y\nENV A=1 \\\n    B=2\n")
    assert parsed == [("FROM", "a AS b"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]
    assert installs("pip install uv==1 && uv pip sync --python p -r r.txt") == [
        ["pip", "install", "uv==1"], ["uv", "pip", "sync", "--python", "p", "-r", "r.txt"]]


def test_dependencies_come_from_the_lock_only(text, makefile):
    copies = {}  # destination -> source, to follow the lock into the build stage
    requirement_files, packages = [], []
    for keyword, args in instructions(text):
        if keyword == "COPY" and "--from" not in args:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for source in words[:-1]:
                copies[words[-1]] = source
        if keyword != "RUN":
            continue
        for argv in installs(args):
            options_with_value = {"--python", "--extra-index-url", "--index-url", "--index-strategy", "-r",
                                  "--requirement", "--find-links", "-c", "--constraint"}
            words = argv[3:] if argv[:2] == ["uv", "pip"] else argv[2:]
            i = 0
            while i < len(words):
                word = words[i]
                if word in ("-r", "--requirement", "-c", "--constraint"):
                    requirement_files.append(words[i + 1])
                    i += 2
                    continue
                if word in options_with_value:
                    i += 2
                    continue
                if not word.startswith("-"):
                    if argv[:3] == ["uv", "pip", "sync"]:
                        requirement_files.append(word)
                    else:
                        packages.append((word, argv))
                i += 1
    sources = {copies.get(f, f) for f in requirement_files}
    assert sources == {LOCK}, f"requirements installed from {sources}, expected only {LOCK}"
    uv_version = re.search(r"^UV_VERSION := (\S+)", makefile, re.M).group(1)
    for package, argv in packages:
        if package == ".":
            assert "--no-deps" in argv, f"the project is installed with its dependencies: {argv}"
        else:
            assert re.fullmatch(r"uv==(\$\{UV_VERSION\}|[\d.]+)", package), f"{package} installed outside the lock"
    assert re.search(rf"ARG UV_VERSION={re.escape(uv_version)}\b", text), f"uv is not {uv_version} (Makefile)"


def test_torch_comes_from_the_index_the_makefile_uses(text, makefile):
    index = re.search(r"--extra-index-url (https://\S+)", makefile).group(1)
    assert f"ARG TORCH_INDEX={index}" in text
    sync = [a for k, a in instructions(text) if k == "RUN" and "uv pip sync" in a]
    assert len(sync) == 1
    assert '--extra-index-url "${TORCH_INDEX}"' in sync[0] and "--index-strategy unsafe-best-match" in sync[0]
    lock = (ROOT / LOCK).read_text()
    assert re.search(r"^torch==[\d.]+\+cpu$", lock, re.M), "the lock no longer pins a +cpu torch"


def _pins(path: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (ROOT / path).read_text(), re.M))


def test_the_image_lock_is_the_test_lock_without_the_test_tools():
    """``make lock`` writes both; the image gets the same versions ``make test`` tested, minus the tools."""
    runtime, full = _pins(LOCK), _pins(FULL_LOCK)
    assert runtime and {k: full.get(k) for k in runtime} == runtime
    assert [p for p in TEST_ONLY if p in runtime] == []
    assert all(p in full for p in TEST_ONLY)


def test_runtime_runs_as_a_non_root_user(text):
    runtime = stages(text)[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage has no USER: it runs as root"
    assert users[-1] not in ("root", "0", "0:0")
    created = [args for keyword, args in runtime if keyword == "RUN" and "useradd" in args]
    assert created and users[-1] in created[0], f"USER {users[-1]} is not created in the runtime stage"
    uid = re.search(r"ARG UID=(\d+)", text).group(1)
    assert int(uid) != 0
    last = [i for i, (k, _) in enumerate(runtime) if k == "USER"][-1]
    assert all(k != "RUN" for k, _ in runtime[last:]), "RUN after USER would run as the user, by surprise"


def test_runtime_environment(text):
    runtime = stages(text)[-1]
    env = env_of(runtime)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["FLYWHEEL_HOME"] and env["AIRFLOW_HOME"].startswith(env["FLYWHEEL_HOME"])
    workdir = [a for k, a in runtime if k == "WORKDIR"][-1]
    assert env["FLYWHEEL_PROJECT_ROOT"] == workdir
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{workdir}/dags" and (ROOT / "dags").is_dir()
    # SPARK_HOME is pyspark's folder inside the image's virtualenv (the same layout as .venv here)
    import pyspark

    local = Path(pyspark.__file__).parent.relative_to(Path(sys.prefix))
    assert env["SPARK_HOME"] == f"{env['VIRTUAL_ENV']}/{local}"
    assert env["PATH"].startswith(f"{env['VIRTUAL_ENV']}/bin:")
    assert env["PYSPARK_PYTHON"] == f"{env['VIRTUAL_ENV']}/bin/python"
    apt = " ".join(a for k, a in runtime if k == "RUN" and "apt-get install" in a)
    assert "openjdk-17-jre-headless" in apt
    assert env["JAVA_HOME"] == "/usr/lib/jvm/java-17-openjdk-amd64"


def test_both_stages_use_the_python_of_the_project(text):
    base = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+)", text).group(1)
    requires = re.search(r'requires-python = ">=([\d.]+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert base == requires == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert [args.split()[0] for args in (s[0][1] for s in stages(text))] == ["${PYTHON_IMAGE}"] * 2


def test_healthcheck_and_compiled_bytecode(text):
    runtime = stages(text)[-1]
    checks = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert len(checks) == 1
    script = re.search(r"/opt/mlflywheel/(\S+\.py)", checks[0]).group(1)
    assert (ROOT / script).is_file()
    build = " ".join(a for k, a in stages(text)[0] if k == "RUN")
    assert "compileall" in build and "/opt/venv/lib" in build
    assert any(k == "RUN" and "compileall" in a for k, a in runtime)  # the project's own modules


def test_copied_sources_exist(text):
    for keyword, args in instructions(text):
        if keyword == "COPY" and "--from" not in args:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches decides (``!`` re-includes); ``**`` any depth."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        regex = fnmatch.translate(pattern).replace(".*.*/", "(.*/)?")
        if any(re.match(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_state_and_secrets_out():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", ".flywheel/mlflow/mlflow.db", ".git/HEAD", ".env", ".env.production",
                 "mlflow.db", "include/mlflywheel/__pycache__/cli.cpython-311.pyc", "mlflywheel.egg-info/PKG-INFO",
                 ".pytest_cache/v", "bench/results/x.json", "test-results/a.png",
                 "test-artifacts/ui.png"):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    needed = subprocess.run(["git", "ls-files", "include", "plugins", "dags", "deploy", "feature_repo", "expectations",
                             "requirements", "pyproject.toml", "README.md"], cwd=ROOT, capture_output=True, text=True)
    kept_out = [p for p in needed.stdout.split() if dockerignored(p, patterns)]
    assert not kept_out, f"files the image needs are excluded: {kept_out[:10]}"
    assert not dockerignored("Dockerfile", ["!Dockerfile"]) and dockerignored("a/b.pyc", ["**/*.pyc"])
