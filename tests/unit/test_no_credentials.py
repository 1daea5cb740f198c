"""No credentials in the files git tracks.

The scanner flags private keys, AWS access key ids, URLs with ``user:password@``, and
password/secret/token/key names assigned a literal value in YAML, INI, env files, shell and
Python. Allowed values: placeholders that say so (``change-me``, ``<...>``, empty), references
(``${VAR}``, ``$VAR``, ``{var}`` templates, ``os.environ``...), and test fixtures that are
obviously fake (see ``PLACEHOLDERS``). Every finding is printed as ``file:line: rule``.
A line that must hold a fake credential (a test double) says why with
``# credential-scan: ok (<reason>)``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 2_000_000
SKIP_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".ico", ".parquet", ".onnx", ".db", ".whl", ".gz", ".zip",
                 ".pkl", ".npy", ".pdf"}
#: values that are clearly not secrets (case-insensitive, whole value)
PLACEHOLDERS = re.compile(
    r"(change-?me|changeme|replace-?me|placeholder|example|dummy|redacted|x+|\*+|<[^>]*>|none|null|true|false|"
    r"your[-_a-z]*|test(ing)?|fake[-_a-z0-9]*|secret|password|token|\.\.\.|-)", re.IGNORECASE)
#: values that refer to a secret kept elsewhere
REFERENCE = re.compile(r"(\$\{[^}]*\}|\$[A-Za-z_]\w*|\{\{[^}]*\}\}|\{[a-z_][\w.]*\}|%\([a-z_]+\)s|"
                       r"(os\.)?environ|getenv|secrets\.|conf\.get|env\(|Variable\.get)", re.IGNORECASE)
SECRET_WORD = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|fernet[_-]?key|" \
              r"secret[_-]?key|credentials?)"
RULES = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[0-9A-Z]{16}\b"),
    "URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://(?P<user>[^\s:/@'\"`]*):(?P<value>[^\s@/'\"`]+)@"),
    # KEY=value / key: value / key = value (YAML, INI, env, shell, TOML)
    "secret assigned a literal": re.compile(
        rf"^\s*(?:export\s+|-\s+)?[\"']?(?P<name>[\w.-]*{SECRET_WORD}[\w.-]*)[\"']?\s*[:=]\s*(?P<value>[^#\n]*)",
        re.IGNORECASE),
    # YAML flow mappings: {user: app, password: literal}
    "secret in a flow mapping": re.compile(
        rf"[{{,]\s*[\"']?(?P<name>[\w.-]*{SECRET_WORD}[\w.-]*)[\"']?\s*:\s+(?P<value>(?:\$\{{[^}}]*\}}|[^,}}\n#])*)",
        re.IGNORECASE),
    # Python / JSON: name = "literal", "name": "literal", name="literal" (keyword argument)
    "secret string literal": re.compile(
        rf"[\"']?(?P<name>\b[\w.-]*{SECRET_WORD}[\w-]*)[\"']?\s*(?::|=|==)\s*[rbf]?(?P<q>[\"'])(?P<value>[^\"'\n]*)(?P=q)",
        re.IGNORECASE),
}
SUPPRESS = re.compile(r"credential-scan: ok \(.+\)")
#: fake credentials that other tests need as data: (file, regex of the line) -> why it is not a secret
FIXTURES = {
    ("tests/integration/test_stack_up.py", r'"username": "admin", "pass'): "asserts that admin:admin is refused",
    ("tests/unit/test_feast_online_store.py", r'\("redis://[^"]*@cache[:/]'): "Redis URL parser cases",
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text.strip()[:120]}"


def _clean(value: str) -> str:
    value = value.strip().rstrip(",;)").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.strip()


def _allowed(value: str, name: str = "") -> bool:
    value = _clean(value)
    if not value or PLACEHOLDERS.fullmatch(value) or REFERENCE.search(value):
        return True
    # a name, not a value: key: "{{ var }}", a type annotation, a path or an option name
    if value.startswith(("/", "./", "~", "-", "[", "{", "(")) or re.fullmatch(r"[A-Za-z_][\w.]*\(.*", value):
        return True
    if name and re.search(r"(_file|_path|_dir|_env|_var|_name|_id|_field|_attr|_url|_uri|_type)$", name, re.I):
        return True
    # the name of another variable that holds the secret: PASSWORD :'mlflow_password' (psql)
    return bool(re.fullmatch(rf"[A-Za-z_]*{SECRET_WORD}[A-Za-z_]*", value, re.IGNORECASE))


def scan_text(path: str, text: str) -> list[Finding]:
    findings = []
    for number, line in enumerate(text.splitlines(), 1):
        if SUPPRESS.search(line) or any(path == f and re.search(r, line) for f, r in FIXTURES):
            continue
        for rule, pattern in RULES.items():
            for match in pattern.finditer(line):
                groups = match.groupdict()
                value = groups.get("value")
                if value is not None and _allowed(value, groups.get("name") or ""):
                    continue
                if rule in ("secret assigned a literal", "secret in a flow mapping") and path.endswith(".py"):
                    continue  # Python gets the string-literal rule (expressions are not values)
                findings.append(Finding(path, number, rule, line))
                break
    return findings


def scan(root: Path, files: list[str]) -> list[Finding]:
    findings = []
    for name in files:
        path = root / name
        if path.suffix.lower() in SKIP_SUFFIXES or not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        findings.extend(scan_text(name, data.decode("utf-8", errors="replace")))
    return findings


def tracked_files(root: Path) -> list[str]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    return [f for f in result.stdout.decode().split("\0") if f]


def test_tracked_files_hold_no_credentials():
    files = tracked_files(ROOT)
    assert len(files) > 50
    findings = scan(ROOT, files)
    assert not findings, "credentials in tracked files:\n" + "\n".join(map(str, findings))


# The planted secrets are assembled at run time, so this file holds none of them.
AWS_ID = "AKIA" + "Q3EXAMPLEREALKEY1"[:16]
KEY_HEADER = "-----BEGIN " + "RSA PRIVATE KEY-----"
PLANTED = {
    "config/app.yaml": f"db:\n  host: x\n  password: {'s3cr' + 'etPass!'}\n",
    "conf/airflow.cfg": "[core]\nfernet" + "_key = " + "Zm9vYmFyYmF6" * 3 + "\n",
    "deploy/.env": "REDIS_PASS" + "WORD=" + "hunter" + "22\n",
    "pkg/settings.py": 'API_TOKEN = "' + "tok_" + '9f8e7d6c5b"\nclient(password="' + "pa55" + 'word1")\n',
    "pkg/urls.py": 'URI = "postgresql://app:' + "hunter" + '22@db:5432/app"\n',
    "pkg/broker.py": 'BROKER = "redis://:' + "hunter" + '22@redis:6379/0"\n',
    "keys/id_rsa": KEY_HEADER + "\nMIIEow\n",
    "aws.txt": "key " + AWS_ID + "\n",
    "compose.json": '{"conn": {"password": "' + "hunter" + '22"}}\n',
    "run.sh": "export " + "SECRET" + "_KEY=" + "abc123def\n",
    "old/docker-compose.yml": "environment: {POSTGRES_USER: airflow, POSTGRES_" + "PASSWORD: airflow}\n",
    "old/settings.py": 'connect(user="app", password="' + 'airflow")\n',
}
CLEAN = {
    "ok/app.yaml": "password: ${DB_PASSWORD:?set it}\ntoken: change-me\nsecret_file: /run/secrets/x\n",
    "ok/.env.example": "AIRFLOW_FERNET_KEY=change-me\nMINIO_ROOT_PASSWORD=change-me\n",
    "ok/code.py": ('password = os.environ["DB_PASSWORD"]\ntoken: str | None = None\n'
                   'url = f"redis://:{password}@redis:6379/0"\nhook.get_connection(conn_id).password\n'
                   'PASSWORDS_FILE = "simple_auth_manager_passwords.json"\n'),
    "ok/compose.yml": 'AIRFLOW_CONN_AWS: \'{"login": "${U:?x}", "password": "${P:?x}"}\'\n'
                      "BROKER: redis://:${REDIS_PASSWORD:?x}@redis:6379/0\n",
    "ok/double.py": 'fake = {"password": "pa55word1"}  # credential-scan: ok (a test double)\n',
}


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    for name, text in {**PLANTED, **CLEAN}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_scanner_finds_every_planted_secret_and_names_file_and_line(planted):
    findings = scan(planted, sorted([*PLANTED, *CLEAN]))
    found = {f.path for f in findings}
    assert found == set(PLANTED), "\n".join(map(str, findings))
    by_path = {f.path: f for f in findings}
    assert str(by_path["config/app.yaml"]).startswith("config/app.yaml:3: secret assigned a literal")
    assert by_path["pkg/urls.py"].rule in ("URL with a password", "secret string literal")
    assert by_path["aws.txt"].rule == "AWS access key id" and by_path["keys/id_rsa"].line == 1
    assert sum(f.path == "pkg/settings.py" for f in findings) == 2  # both lines


def test_scanner_reads_what_git_tracks(planted):
    subprocess.run(["git", "init", "-q"], cwd=planted, check=True)
    subprocess.run(["git", "add", "config/app.yaml", "ok/app.yaml"], cwd=planted, check=True)
    files = tracked_files(planted)
    assert sorted(files) == ["config/app.yaml", "ok/app.yaml"]
    assert [f.path for f in scan(planted, files)] == ["config/app.yaml"]


#: what running the project writes; none of it belongs in git (it may hold run ids, paths, data)
RUN_TIME_STATE = re.compile(r"(^|/)(mlruns|\.flywheel|\.mypy_cache|test-artifacts)/|\.(db|db-wal|db-shm)$")


def test_no_run_time_state_is_tracked():
    """A SQLite store or a workspace committed by accident: stale runs, paths of someone's machine."""
    tracked = [f for f in tracked_files(ROOT) if RUN_TIME_STATE.search(f)]
    assert tracked == []
    assert RUN_TIME_STATE.search("mlflow.db") and RUN_TIME_STATE.search("x/.flywheel/mlflow/mlflow.db")
