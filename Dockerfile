# syntax=docker/dockerfile:1
# mlflywheel image: Airflow 3 (every component), MLflow, the model server and Spark, all from
# requirements/runtime.txt (the lock's pins without the test tools) and nothing else. One image,
# many roles: docker-compose.yml picks the command (airflow api-server / scheduler / ...,
# mlflow server, flywheel serve, spark-class).
#
#   docker build -t mlflywheel .
#
# Stage 1 builds the virtualenv (compilers and uv stay there); stage 2 is the runtime.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
# torch is pinned as 2.13.0+cpu in the lock: its wheel comes from PyTorch's CPU index
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    PYTHONDONTWRITEBYTECODE=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
 && uv venv --python /usr/local/bin/python3.11 /opt/venv
# Runtime dependencies first (this layer changes only with the lock); no pytest, ruff or moto
COPY requirements/runtime.txt /tmp/runtime.txt
RUN uv pip sync --python /opt/venv/bin/python --extra-index-url "${TORCH_INDEX}" \
      --index-strategy unsafe-best-match /tmp/runtime.txt
# The project itself, editable at its final path (dags and pipeline YAMLs are read from there)
WORKDIR /opt/mlflywheel
COPY pyproject.toml README.md ./
COPY include/ include/
COPY plugins/ plugins/
RUN uv pip install --python /opt/venv/bin/python --no-deps -e . \
 && /opt/venv/bin/python -c "import mlflywheel, mlflywheel_airflow, pyspark, torch; print('torch', torch.__version__)" \
 # .pyc for every module: without them imports are 2-3x slower (DAG parsing, task start-up).
 # unchecked-hash: valid whatever mtimes the COPY into the next stage leaves.
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib >/dev/null


FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mlflywheel" \
      org.opencontainers.image.description="Airflow 3 MLOps pipelines: Airflow, MLflow, model server, Spark"
# Java 17 for Spark (master, worker and the drivers that tasks start); tini reaps zombies; libgomp1
# for LightGBM (XGBoost bundles its own OpenMP).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps libgomp1 \
 && rm -rf /var/lib/apt/lists/*

ARG UID=50000
RUN useradd --uid "${UID}" --gid 0 --create-home --home-dir /home/flywheel --shell /bin/bash flywheel \
 && mkdir -p /var/lib/flywheel/airflow /var/lib/mlflow-auth /tmp/spark \
 && chown -R flywheel:0 /var/lib/flywheel /var/lib/mlflow-auth /tmp/spark \
 && chmod -R g+rwX /var/lib/flywheel /var/lib/mlflow-auth /tmp/spark

COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/mlflywheel
COPY . .
RUN /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash include plugins >/dev/null

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLYWHEEL_HOME=/var/lib/flywheel \
    FLYWHEEL_PROJECT_ROOT=/opt/mlflywheel \
    AIRFLOW_HOME=/var/lib/flywheel/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/mlflywheel/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    SPARK_WORKER_DIR=/tmp/spark/work \
    SPARK_LOG_DIR=/tmp/spark/logs

USER flywheel
EXPOSE 8080 5000 8000
# The default role is the Airflow API server; docker-compose.yml gives each role its own check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
  CMD ["python", "/opt/mlflywheel/deploy/docker/healthcheck.py", "http://127.0.0.1:8080/api/v2/monitor/health"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "api-server"]
