"""The data-quality gate: each kind of bad landing data fails exactly the right expectations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mlflywheel.services.data.generate import inject_bad_data
from mlflywheel.services.data.io import partition_path, write_parquet_atomic
from mlflywheel.services.errors import ConfigError, DataNotFound, DataValidationError
from mlflywheel.services.settings import Workspace
from mlflywheel.services.suites import load_suite
from mlflywheel.stages.validate import freshness_expectation, validate_frame, validate_landing

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 5, 11, 12, tzinfo=dt.UTC)
pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def suite():
    return load_suite(ROOT / "expectations", "fraud_transactions")


def _check(frame, suite):
    return validate_frame(frame, suite, extra_expectations=[freshness_expectation("event_timestamp", NOW, 10)])


def test_clean_day_passes_every_expectation(fraud_day, suite):
    report = _check(fraud_day, suite)
    assert report.success
    assert report.evaluated == len(suite["expectations"]) + 1 == report.passed


@pytest.mark.parametrize(("kind", "expected"), [
    ("missing_column", {("expect_table_columns_to_match_set", None),
                        ("expect_column_values_to_be_of_type", "amount"),
                        ("expect_column_values_to_not_be_null", "amount"),
                        ("expect_column_values_to_be_between", "amount")}),
    ("wrong_dtype", {("expect_column_values_to_be_of_type", "amount"),
                     ("expect_column_values_to_be_between", "amount")}),
    ("null_required", {("expect_column_values_to_not_be_null", "amount")}),
    ("out_of_range", {("expect_column_values_to_be_between", "amount")}),
    ("duplicate_ids", {("expect_column_values_to_be_unique", "transaction_id")}),
    ("empty", {("expect_table_row_count_to_be_between", None), ("expect_column_max_to_be_between", "event_timestamp")}),
    ("future_timestamps", {("expect_column_max_to_be_between", "event_timestamp")}),
    ("unknown_category", {("expect_column_values_to_be_in_set", "merchant_category")}),
])
def test_each_defect_fails_exactly_its_expectations(fraud_day, suite, kind, expected):
    broken = inject_bad_data(fraud_day, kind, id_column="transaction_id", timestamp="event_timestamp")
    report = _check(broken, suite)
    assert not report.success
    assert {(f.expectation, f.column) for f in report.failures} == expected


def test_failure_says_what_was_expected_and_observed(fraud_day, suite):
    broken = inject_bad_data(fraud_day, "unknown_category", id_column="transaction_id", timestamp="event_timestamp")
    (failure,) = _check(broken, suite).failures
    assert "grocery" in failure.expected["value_set"]
    assert failure.observed["examples"][0] == "__not_a_category__"
    assert failure.observed["unexpected_count"] == len(fraud_day) // 100
    missing = inject_bad_data(fraud_day, "missing_column", id_column="transaction_id", timestamp="event_timestamp")
    observed = {f.expectation: f.observed for f in _check(missing, suite).failures}
    assert observed["expect_table_columns_to_match_set"] == {"missing": ["amount"]}
    assert observed["expect_column_values_to_be_between"] == "column 'amount' is missing"


@pytest.fixture
def workspace(tmp_path, monkeypatch, pipeline_config):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    return Workspace.from_env().ensure(), pipeline_config("fraud")


def test_validate_landing_raises_with_result_file_and_causes(workspace, fraud_day):
    ws, config = workspace
    day = dt.date(2026, 5, 10)
    broken = inject_bad_data(fraud_day, "duplicate_ids", id_column="transaction_id", timestamp="event_timestamp")
    write_parquet_atomic(broken, partition_path(config, ws, day))
    with pytest.raises(DataValidationError) as err:
        validate_landing(config, ws, start=dt.datetime(2026, 5, 10, tzinfo=dt.UTC),
                         end=dt.datetime(2026, 5, 11, tzinfo=dt.UTC), now=NOW)
    message = str(err.value)
    assert "ds=2026-05-10" in message
    assert "expect_column_values_to_be_unique on column 'transaction_id'" in message
    result = json.loads(Path(err.value.result_path).read_text())
    assert result["summary"]["success"] is False
    assert result["failures"][0]["column"] == "transaction_id"
    assert err.value.result_path in message
    # the failed result is an MLflow run too, with the page the task's link opens
    run = _mlflow_run(ws, err.value.run)
    assert run.info.status == "FAILED" and run.data.tags["flywheel.validation.success"] == "False"
    assert run.data.metrics["validation.failed"] == len(result["failures"])
    page = _artifact_text(ws, err.value.run["run_id"], "validation/report.html")
    assert "<tr class=FAIL><td>FAIL</td><td>expect_column_values_to_be_unique</td><td>transaction_id</td>" in page


def test_validate_landing_passes_clean_day(workspace, fraud_day):
    ws, config = workspace
    write_parquet_atomic(fraud_day, partition_path(config, ws, dt.date(2026, 5, 10)))
    summary = validate_landing(config, ws, start=dt.datetime(2026, 5, 10, tzinfo=dt.UTC),
                               end=dt.datetime(2026, 5, 11, tzinfo=dt.UTC), now=NOW)
    assert summary["success"] and summary["rows"] == len(fraud_day) and summary["days"] == ["2026-05-10"]
    run = _mlflow_run(ws, summary)
    assert run.info.status == "FINISHED" and run.data.metrics["validation.failed"] == 0
    result = _artifact_text(ws, summary["run_id"], f"validation/{Path(summary['result_path']).name}")
    assert json.loads(result)["summary"]["success"] is True


def _mlflow_run(ws, ids):
    from mlflywheel.services import tracking

    client = tracking.client(ws)
    run = client.get_run(ids["run_id"])
    assert run.info.experiment_id == ids["experiment_id"]
    assert client.get_experiment(ids["experiment_id"]).name == "flywheel/fraud/validation"
    return run


def _artifact_text(ws, run_id, path):
    from mlflywheel.services import tracking

    return Path(tracking.client(ws).download_artifacts(run_id, path)).read_text()


def test_missing_partition_is_retryable_and_named(workspace):
    ws, config = workspace
    with pytest.raises(DataNotFound, match=r"ds=2026-05-10/part-00000.parquet: landing partition") as err:
        validate_landing(config, ws, start=dt.datetime(2026, 5, 10, tzinfo=dt.UTC),
                         end=dt.datetime(2026, 5, 11, tzinfo=dt.UTC), now=NOW)
    assert err.value.deterministic is False


def test_missing_suite_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.json: expectation suite 'nope' not found"):
        load_suite(tmp_path, "nope")


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "not valid JSON"),
    ('{"name": "x", "expectations": []}', "non-empty 'expectations' list"),
    ('{"expectations": [{"kwargs": {}}]}', r"expectations\[0\] needs a 'type'"),
])
def test_malformed_suite(tmp_path, content, expected):
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_suite(tmp_path, "s")
