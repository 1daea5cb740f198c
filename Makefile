# mlflywheel: every target installs what it needs from requirements/lock.txt first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
# The CPU build of torch: a local wheel folder where the machine has one, else PyTorch's CPU index.
TORCH_WHEELS ?= /opt/wheels
TORCH_SOURCE := $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
STAMP := $(VENV)/.installed
export FLYWHEEL_PROJECT_ROOT := $(CURDIR)
# The machine sets PYTHONDONTWRITEBYTECODE=1; without .pyc files every import is 2-3x slower.
export PYTHONDONTWRITEBYTECODE :=
unexport PYTHONDONTWRITEBYTECODE

# Debian's Chromium for the UI browser test (Playwright drives it; it never downloads a browser).
CHROMIUM := /usr/bin/chromium

.PHONY: install browser demo test test-fast lint typecheck bench lock clean-workspace mlflow-ui up down

install: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --python $(BIN)/python $(TORCH_SOURCE) requirements/lock.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	@touch $@

# lock.txt: everything `make test` installs; runtime.txt: the same pins without the test extra
# (what the container image installs).
lock:
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
	  --excludes requirements/excludes.txt -o requirements/lock.txt
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
	  --excludes requirements/excludes.txt -c requirements/lock.txt -o requirements/runtime.txt

demo: install
	$(BIN)/flywheel demo

mlflow-ui: install
	$(BIN)/flywheel mlflow-ui

# The local stack on 127.0.0.1 (Airflow api-server/scheduler/dag-processor/triggerer, MLflow UI,
# model server), in the background; ports from AIRFLOW_PORT, MLFLOW_PORT, SERVE_PORT.
up: install
	$(BIN)/flywheel up

down: install
	$(BIN)/flywheel down

browser:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && SUDO= || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

test: install browser
	$(BIN)/ruff check include plugins dags tests bench feature_repo examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "unit or dags or operators" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check include plugins dags tests bench feature_repo examples
	$(BIN)/mypy

# mypy, strict, on include/mlflywheel and plugins/mlflywheel_airflow ([tool.mypy] in pyproject.toml)
typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/dag_parse.py
	$(BIN)/python bench/demo_stages.py
	$(BIN)/python bench/onnx_vs_native.py
	$(BIN)/python bench/boosted_onnx_vs_native.py
	$(BIN)/python bench/serving_vs_mlflow.py
	$(BIN)/python bench/drift_vs_evidently.py
	$(BIN)/python bench/batch_vs_spark_udf.py

clean-workspace:
	rm -rf .flywheel
