"""``flywheel pipeline validate``: the YAML, the Feast repo, the suite and the landing data agree.

Each test works on a copy of the shipped pipelines, suites and Feast repo, breaks one thing
the way a person adding a pipeline would, and checks the one line that names it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlflywheel.services.settings import Workspace, project_root
from mlflywheel.tools.cli import main
from mlflywheel.tools.pipeline_check import validate_pipeline

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = project_root()
    for name, env in (("include/pipelines", "FLYWHEEL_PIPELINES_DIR"), ("expectations", "FLYWHEEL_EXPECTATIONS_DIR"),
                      ("feature_repo", "FLYWHEEL_FEATURE_REPO")):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setenv(env, str(tmp_path / name))
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    return tmp_path


def _checks(name: str = "fraud") -> dict[str, tuple[str, str]]:
    _, checks = validate_pipeline(Workspace.from_env(), name)
    return {c.name: (c.status, c.detail) for c in checks}


def test_shipped_pipelines_pass_and_data_is_checked_once_it_lands(project, capsys):
    checks = _checks()
    assert {k: v[0] for k, v in checks.items()} == {
        "config": "ok", "suite": "ok", "features": "ok", "registry": "ok", "trainer": "ok", "data": "skip"}
    assert main(["data", "generate", "--pipeline", "fraud", "--days", "1", "--end", "2026-05-02"]) == 0
    assert _checks()["data"][0] == "ok"
    assert main(["pipeline", "validate"]) == 0
    out = capsys.readouterr().out
    assert "fraud:" in out and "ctr:" in out and "FAIL" not in out


def test_suite_without_a_column_the_pipeline_reads(project):
    path = project / "expectations" / "fraud_transactions.json"
    suite = json.loads(path.read_text())
    suite["expectations"][0]["kwargs"]["column_set"].remove("age_band")
    path.write_text(json.dumps(suite))
    status, detail = _checks()["suite"]
    assert status == "FAIL"
    assert str(path) in detail
    assert "'age_band' (gate.fairness.sensitive_attribute)" in detail


def test_suite_expectation_on_a_misspelt_column(project):
    path = project / "expectations" / "fraud_transactions.json"
    suite = json.loads(path.read_text())
    suite["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ammount"}})
    path.write_text(json.dumps(suite))
    status, detail = _checks()["suite"]
    assert status == "FAIL" and "['ammount']" in detail


def test_feature_view_missing_a_computed_feature(project):
    path = project / "feature_repo" / "fraud.py"
    text = path.read_text()
    line = next(x for x in text.splitlines() if '"amount_max_30d"' in x)
    path.write_text(text.replace(line + "\n", ""))
    status, detail = _checks()["features"]
    assert status == "FAIL"
    assert "user_txn_stats" in detail and "missing in repo: ['amount_max_30d']" in detail


def test_view_joined_on_another_entity(project):
    path = project / "include" / "pipelines" / "fraud.yaml"
    path.write_text(path.read_text().replace("      entity: user_id", "      entity: merchant_id"))
    status, detail = _checks()["features"]
    assert status == "FAIL"
    assert "joined on ['user_id']" in detail and "entity 'merchant_id'" in detail


def test_unknown_feature_service(project):
    path = project / "include" / "pipelines" / "fraud.yaml"
    path.write_text(path.read_text().replace("feature_service: fraud_model_v1", "feature_service: fraud_model_v2"))
    status, detail = _checks()["features"]
    assert status == "FAIL" and "'fraud_model_v2'" in detail and "'fraud_model_v1'" in detail


def test_two_pipelines_registering_one_model(project):
    pipelines = project / "include" / "pipelines"
    (pipelines / "fraud_eu.yaml").write_text((pipelines / "fraud.yaml").read_text().replace(
        "name: fraud\n", "name: fraud_eu\n"))
    status, detail = _checks("fraud_eu")["registry"]
    assert status == "FAIL" and "'fraud_detector'" in detail and "fraud.yaml" in detail


def test_landing_partition_without_a_column(project):
    assert main(["data", "generate", "--pipeline", "fraud", "--days", "1", "--end", "2026-05-02"]) == 0
    part = next((project / "home" / "landing" / "fraud" / "transactions").glob("ds=*/*.parquet"))
    pd.read_parquet(part).drop(columns=["channel"]).to_parquet(part)
    status, detail = _checks()["data"]
    assert status == "FAIL"
    assert str(part) in detail and "'channel' (features.request_features)" in detail


def test_bad_yaml_stops_at_config_and_the_cli_fails(project, capsys):
    path = project / "include" / "pipelines" / "fraud.yaml"
    path.write_text(path.read_text().replace("  holdout_days: 5", "  holdout_days: 50"))
    assert list(_checks()) == ["config"]
    assert main(["pipeline", "validate", "fraud"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  config" in out and "holdout_days" in out


def test_a_trainer_whose_model_cannot_be_exported_is_refused_before_any_run(project, tmp_path, monkeypatch):
    (tmp_path / "odd_models.py").write_text(
        "import numpy as np\n"
        "class Constant:\n"
        "    def predict_proba(self, x):\n"
        "        return np.tile([0.9, 0.1], (len(x), 1))\n"
        "def train(data):\n"
        "    return Constant()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = project / "include" / "pipelines" / "fraud.yaml"
    path.write_text(path.read_text().replace("trainer: sklearn_hgb", "trainer: odd_models:train"))
    status, detail = _checks()["trainer"]
    assert status == "FAIL"
    assert detail.startswith("pipeline fraud: trainer 'odd_models:train' returned a Constant that cannot be exported")


def test_a_trainer_that_does_not_exist_is_named(project):
    path = project / "include" / "pipelines" / "fraud.yaml"
    path.write_text(path.read_text().replace("trainer: sklearn_hgb", "trainer: churn_team.models:train"))
    status, detail = _checks()["trainer"]
    assert status == "FAIL" and "module 'churn_team.models' cannot be imported" in detail
