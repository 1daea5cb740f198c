#!/usr/bin/env bash
# airflow-init (one-shot, before every other Airflow component): migrate the metadata DB,
# set the admin's password for the simple auth manager from the environment, and check that
# the stack's connections (AIRFLOW_CONN_* in docker-compose.yml) resolve.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set (see .env.example)}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?the passwords file location is not set}"

# A malformed Fernet key makes every connection lookup fail later with "not found": say it now.
python - <<'PY'
import os, sys
from cryptography.fernet import Fernet
try:
    Fernet(os.environ.get("AIRFLOW__CORE__FERNET_KEY", ""))
except ValueError as exc:
    sys.exit("AIRFLOW_FERNET_KEY is not a Fernet key (32 url-safe base64-encoded bytes): "
             f"{exc}. Generate one: python -c 'from cryptography.fernet import Fernet; "
             "print(Fernet.generate_key().decode())'")
PY

airflow db migrate

# The simple auth manager reads {"user": "password"} from this file and only generates a
# password for users missing from it: write ours (mode 0600, replaced atomically).
passwords="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
mkdir -p "$(dirname "$passwords")"
umask 077
python - "$passwords" <<'PY'
import json, os, sys
users = [u.split(":")[0] for u in os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin").split(",")]
if "admin" not in users:
    sys.exit(f"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS={users} has no 'admin' user")
path = sys.argv[1]
tmp = f"{path}.tmp"
with open(tmp, "w") as fh:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
os.replace(tmp, path)
print(f"admin password written to {path}")
PY

for conn in mlflow_default model_server_default spark_default aws_default; do
  airflow connections get "$conn" -o plain >/dev/null || { echo "connection $conn is not defined" >&2; exit 1; }
done
echo "airflow-init done"
