"""Test setup: one throwaway Airflow home and workspace per session, set before Airflow loads.

Every test carries exactly one layer marker (unit, operators, dags, integration); an
unmarked test is an error, so a new test has to say what it needs.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION_DIR = Path(tempfile.mkdtemp(prefix="flywheel-tests-"))
LAYERS = ("unit", "operators", "dags", "integration")

# Airflow reads its configuration when first imported: set it before anything imports it.
for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FLYWHEEL_PIPELINES_DIR", "FLYWHEEL_FEATURE_REPO",
            "FLYWHEEL_LANDING_ROOT", "FLYWHEEL_ARTIFACT_ROOT", "FLYWHEEL_EXPECTATIONS_DIR"):
    os.environ.pop(key, None)
os.environ.update({
    "FLYWHEEL_PROJECT_ROOT": str(ROOT),
    "FLYWHEEL_HOME": str(SESSION_DIR / "home"),
    "AIRFLOW_HOME": str(SESSION_DIR / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
})


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(m) for m in LAYERS)]
    if unmarked:
        raise pytest.UsageError(f"tests without a layer marker {LAYERS}: {unmarked[:10]}")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's Airflow metadata DB (SQLite), migrated once."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / "airflow.db").exists():
        airflow = Path(sys.executable).with_name("airflow")
        result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ)
        assert result.returncode == 0, result.stderr[-3000:]
    return home


@pytest.fixture
def pipeline_config():
    """Load a shipped pipeline config by name."""
    from mlflywheel.services.config import load_pipeline

    return lambda name: load_pipeline(ROOT / "include" / "pipelines" / f"{name}.yaml")


@pytest.fixture
def fraud_day():
    """One clean day of fraud transactions."""
    from mlflywheel.services.data.generate import generate_fraud_day

    return generate_fraud_day(dt.date(2026, 5, 10))


@pytest.fixture(scope="session")
def ctr_onnx(tmp_path_factory):
    """The CTR frame, its config, the fitted HistGradientBoosting (``estimator``), and two
    different fp32 ONNX models as versions "1" (that estimator) and "2"."""
    from tests import helpers

    frame = helpers.ctr_frame()
    config, v1 = helpers.ctr_hgb(frame, max_iter=30)
    _, v2 = helpers.ctr_hgb(frame, max_iter=3)
    root = tmp_path_factory.mktemp("ctr-onnx")
    files = {"1": helpers.save_onnx(v1, config, root / "v1" / "model.onnx"),
             "2": helpers.save_onnx(v2, config, root / "v2" / "model.onnx")}
    return SimpleNamespace(frame=frame, config=config, estimator=v1, files=files)
