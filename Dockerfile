# mlflywheel image: the locked stack, the project, and Java for Spark.
# Minimal for now; the container issue completes it (non-root user, health checks, entrypoints).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless git make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mlflywheel
COPY requirements/ requirements/
RUN pip install --no-cache-dir "uv==0.13.8" \
 && uv pip install --system --no-cache --extra-index-url https://download.pytorch.org/whl/cpu \
      --index-strategy unsafe-best-match -r requirements/lock.txt
COPY . .
RUN uv pip install --system --no-deps -e . && python -m compileall -q /usr/local/lib/python3.11

ENV FLYWHEEL_HOME=/var/lib/flywheel \
    FLYWHEEL_PROJECT_ROOT=/opt/mlflywheel \
    AIRFLOW_HOME=/var/lib/flywheel/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/mlflywheel/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
CMD ["airflow", "standalone"]
