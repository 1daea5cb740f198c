"""Operators: templated fields, interval handling, the exact core call, failure paths, skips."""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from types import SimpleNamespace
from unittest import mock

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from mlflywheel.services.errors import DataNotFound, DataValidationError, GateMisconfigured
from mlflywheel_airflow.operators import (
    BenchmarkOperator,
    EvaluateGateOperator,
    ExportQuantizeOperator,
    MaterializeFeaturesOperator,
    OnnxInferenceOperator,
    RegisterModelOperator,
    TrainModelOperator,
    ValidateDataOperator,
)
from mlflywheel_airflow.operators.base import describe_trigger

pytestmark = pytest.mark.operators
START = dt.datetime(2026, 5, 10, tzinfo=dt.UTC)
END = dt.datetime(2026, 5, 11, tzinfo=dt.UTC)
TRAINED = {"run_id": "r1", "experiment_id": "7", "model_uri": "models:/m-1", "run_key": "fraud/k",
           "snapshot": {"uri": "/s.parquet", "digest": "d1", "rows": 10}}
VERDICT = {"decision": "approved", "run_id": "r1", "model_uri": "models:/m-1", "run_key": "fraud/k"}


def _rendered(op, **fields):
    """An operator as after rendering: templated strings replaced by values."""
    for key, value in {"interval_start": START.isoformat(), "interval_end": END.isoformat(), **fields}.items():
        setattr(op, key, value)
    return op


OPERATORS = [
    (ValidateDataOperator, {}),
    (MaterializeFeaturesOperator, {"window_days": "{{ params.training_window_days }}"}),
    (TrainModelOperator, {"features": {"run_key": "k", "snapshot": {}}, "note": "{{ params.note }}"}),
    (EvaluateGateOperator, {"training": TRAINED}),
    (RegisterModelOperator, {"verdict": VERDICT}),
    (ExportQuantizeOperator, {"registered": {"name": "fraud_detector", "version": "1"}}),
    (BenchmarkOperator, {"exported": {"name": "fraud_detector", "version": "1"}}),
    (OnnxInferenceOperator, {"input_path": "{{ ds }}.parquet", "output_path": "out/{{ ds }}.parquet",
                             "alias": "{{ params.alias }}"}),
]


@pytest.mark.parametrize(("cls", "kwargs"), OPERATORS, ids=lambda v: getattr(v, "__name__", ""))
def test_template_fields_are_assigned_verbatim(cls, kwargs):
    op = cls(task_id="t", pipeline="{{ params.p }}", **kwargs)
    assert "pipeline" in cls.template_fields and "interval_end" in cls.template_fields
    for field in cls.template_fields:
        assert hasattr(op, field), field
    assert op.pipeline == "{{ params.p }}"
    for key, value in kwargs.items():
        assert getattr(op, key) == value
    docs = "".join(klass.__doc__ or "" for klass in cls.__mro__)
    for field in cls.template_fields:
        assert f":param {field}:" in docs, f"{field} is not documented"
        described = docs.split(f":param {field}:", 1)[1].split(":param", 1)[0]
        assert "(templated)" in described, f"{field}'s docs do not say (templated)"


@pytest.mark.parametrize(("start", "end", "expected"), [
    ("2026-05-10T00:00:00+00:00", "2026-05-11T00:00:00+00:00", (START, END)),
    ("", "2026-05-11T00:00:00+00:00", (START, END)),  # asset-triggered: one day before run_after
    ("None", "2026-05-11T00:00:00", (START, END)),  # naive means UTC
])
def test_interval(start, end, expected):
    op = ValidateDataOperator(task_id="t", pipeline="fraud")
    op.interval_start, op.interval_end = start, end
    assert op.interval() == expected


@pytest.mark.parametrize(("start", "end", "message"), [
    ("", "yesterday", "interval_end: expected an ISO 8601 datetime, found 'yesterday'"),
    ("2026-05-12T00:00:00+00:00", "2026-05-11T00:00:00+00:00", "is not before"),
    ("", "", "interval_end is empty"),
])
def test_bad_interval(start, end, message):
    op = ValidateDataOperator(task_id="t", pipeline="fraud")
    op.interval_start, op.interval_end = start, end
    with pytest.raises(ValueError, match=message):
        op.interval()


@pytest.mark.parametrize(("cls", "kwargs"), [
    (TrainModelOperator, {"features": {}, "if_exists": "overwrite"}),
    (RegisterModelOperator, {"verdict": {}, "if_exists": "replace"}),
])
def test_if_exists_is_checked_in_init(cls, kwargs):
    with pytest.raises(ValueError, match="if_exists must be"):
        cls(task_id="t", pipeline="fraud", **kwargs)


def test_validate_calls_the_core_with_the_interval():
    op = _rendered(ValidateDataOperator(task_id="validate", pipeline="fraud"))
    with mock.patch("mlflywheel.stages.validate.validate_landing", return_value={"success": True}) as core:
        assert op.execute({"ti": mock.Mock()}) == {"success": True}
    (config, ws), kwargs = core.call_args
    assert config.name == "fraud" and kwargs == {"start": START, "end": END}


def test_validation_failure_fails_without_retry_and_pushes_the_result():
    op = _rendered(ValidateDataOperator(task_id="validate", pipeline="fraud"))
    ti = mock.Mock()
    error = DataValidationError("2 of 33 expectations failed", result_path="/r.json",
                                failures=[{"expectation": "expect_column_values_to_be_unique"}])
    with mock.patch("mlflywheel.stages.validate.validate_landing", side_effect=error), \
            pytest.raises(AirflowFailException, match="DataValidationError: 2 of 33 expectations failed"):
        op.execute({"ti": ti})
    ti.xcom_push.assert_called_once_with(key="validation_result", value={
        "result_path": "/r.json", "failures": [{"expectation": "expect_column_values_to_be_unique"}]})


def test_missing_landing_data_is_left_to_retry():
    op = _rendered(ValidateDataOperator(task_id="validate", pipeline="fraud"))
    with mock.patch("mlflywheel.stages.validate.validate_landing", side_effect=DataNotFound("late")), \
            pytest.raises(DataNotFound):
        op.execute({"ti": mock.Mock()})


@pytest.mark.parametrize(("window", "expected"), [("None", 28), ("", 28), ("14", 14), (21, 21)])
def test_materialize_window(window, expected):
    op = _rendered(MaterializeFeaturesOperator(task_id="f", pipeline="fraud", window_days=window))
    snapshot = {"uri": "/s", "digest": "d", "rows": 1}
    with mock.patch("mlflywheel.stages.feature_materialize.materialize_and_snapshot",
                    return_value={"snapshot": snapshot}) as core:
        result = op.execute({})
    assert core.call_args.kwargs == {"interval_end": END, "window_days": expected}
    assert result["run_key"] == f"fraud/20260510T0000Z-20260511T0000Z/w{expected}"
    assert result["snapshot"]["window_days"] == expected


@pytest.mark.parametrize("window", ["3", "many"])
def test_materialize_rejects_bad_window(window):
    op = _rendered(MaterializeFeaturesOperator(task_id="f", pipeline="fraud", window_days=window))
    with pytest.raises(ValueError, match="window_days"):
        op.execute({})


def test_train_passes_trigger_and_forwards_the_snapshot():
    features = {"run_key": "fraud/k", "snapshot": {"uri": "/s.parquet", "digest": "d1", "rows": 10, "extra": 1}}
    op = _rendered(TrainModelOperator(task_id="train", pipeline="fraud", features=features, note="retrain after fix"))
    context = {"dag_run": SimpleNamespace(run_type="manual")}
    core_result = {"run_id": "r1", "model_uri": "models:/m-1", "run_key": "fraud/k"}
    with mock.patch("mlflywheel.stages.train.train", return_value=core_result) as core:
        result = op.execute(context)
    assert core.call_args.kwargs == {"snapshot": features["snapshot"], "run_key": "fraud/k", "trigger": "manual",
                                     "note": "retrain after fix", "if_exists": "skip"}
    assert result["snapshot"] == {"uri": "/s.parquet", "digest": "d1", "rows": 10}


def test_train_refuses_a_malformed_upstream_result():
    op = _rendered(TrainModelOperator(task_id="train", pipeline="fraud", features="not a dict"))
    with pytest.raises(ValueError, match=r"features: expected a dict with keys \['run_key', 'snapshot'\]"):
        op.execute({"dag_run": SimpleNamespace(run_type="manual")})


def test_describe_trigger_names_the_asset_and_reason():
    asset = namedtuple("Asset", "uri")("flywheel://fraud/drift")
    context = {"dag_run": SimpleNamespace(run_type="DagRunType.ASSET_TRIGGERED"),
               "triggering_asset_events": {asset: [SimpleNamespace(extra={"reason": "amount drifted"})]}}
    assert describe_trigger(context) == "asset_triggered: flywheel://fraud/drift (amount drifted)"
    assert describe_trigger({"dag_run": SimpleNamespace(run_type="scheduled")}) == "scheduled"


def _gate_dag():
    with DAG("g", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        gate = EvaluateGateOperator(task_id="evaluate_gate", pipeline="fraud", training=TRAINED)
        register = RegisterModelOperator(task_id="register", pipeline="fraud", verdict=gate.output)
        after = RegisterModelOperator(task_id="after", pipeline="fraud", verdict={})
        gate >> register >> after
    return dag, _rendered(gate)


@pytest.mark.parametrize(("decision", "skipped"), [("rejected", {"register", "after"}), ("approved", None)])
def test_gate_decision_skips_everything_downstream_only_on_rejection(decision, skipped):
    dag, gate = _gate_dag()
    ti = mock.Mock()
    verdict = {"decision": decision, "reasons": ["threshold.roc_auc.min: 0.7 >= 0.85 is false"],
               "verdict_path": "/v.json", "checks_passed": 8, "checks_total": 9}
    with mock.patch("mlflywheel.stages.evaluate_gate.evaluate_gate", return_value=verdict) as core, \
            mock.patch.object(EvaluateGateOperator, "skip") as skip:
        result = gate.execute({"task": gate, "ti": ti})
    assert core.call_args.kwargs == {"run_id": "r1", "model_uri": "models:/m-1", "snapshot": TRAINED["snapshot"]}
    assert result["decision"] == decision and result["run_key"] == "fraud/k"
    if skipped is None:
        skip.assert_not_called()
    else:
        assert {t.task_id for t in skip.call_args.kwargs["tasks"]} == skipped
        assert skip.call_args.kwargs["ti"] is ti


def test_gate_that_cannot_judge_fails_without_retry():
    _, gate = _gate_dag()
    with mock.patch("mlflywheel.stages.evaluate_gate.evaluate_gate", side_effect=GateMisconfigured("no thresholds")), \
            pytest.raises(AirflowFailException, match="GateMisconfigured: no thresholds"):
        gate.execute({"task": gate, "ti": mock.Mock()})


def test_register_refuses_anything_but_approved():
    op = _rendered(RegisterModelOperator(task_id="register", pipeline="fraud",
                                         verdict={**VERDICT, "decision": "rejected", "reasons": ["x"]}))
    with mock.patch("mlflywheel.stages.register.register") as core, \
            pytest.raises(AirflowFailException, match="rejected"):
        op.execute({})
    core.assert_not_called()


def test_register_passes_the_run_key():
    op = _rendered(RegisterModelOperator(task_id="register", pipeline="fraud", verdict=VERDICT))
    with mock.patch("mlflywheel.stages.register.register", return_value={"version": "3"}) as core:
        op.execute({})
    assert core.call_args.kwargs == {"run_id": "r1", "model_uri": "models:/m-1", "run_key": "fraud/k",
                                     "if_exists": "skip"}


def test_export_calls_the_core_for_the_registered_version():
    op = _rendered(ExportQuantizeOperator(task_id="export_quantize", pipeline="fraud",
                                          registered={"name": "fraud_detector", "version": 3}))
    with mock.patch("mlflywheel.stages.export_quantize.export_version", return_value={"variants": {}}) as core:
        op.execute({})
    assert core.call_args.kwargs == {"version": "3", "if_exists": "skip"}


def test_export_parity_failure_fails_without_retry():
    from mlflywheel.services.errors import ParityError

    op = _rendered(ExportQuantizeOperator(task_id="export_quantize", pipeline="fraud",
                                          registered={"name": "fraud_detector", "version": "3"}))
    with mock.patch("mlflywheel.stages.export_quantize.export_version",
                    side_effect=ParityError("max diff 0.006 > 1e-05")), \
            pytest.raises(AirflowFailException, match="ParityError: max diff 0.006"):
        op.execute({})


@pytest.mark.parametrize(("decision", "skips"), [("rejected", True), ("approved", False)])
def test_benchmark_rejection_skips_downstream(decision, skips):
    with DAG("b", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        bench = BenchmarkOperator(task_id="benchmark", pipeline="fraud", exported={"name": "m", "version": "2"})
        after = ExportQuantizeOperator(task_id="deploy", pipeline="fraud", registered={})
        bench >> after
    _rendered(bench)
    verdict = {"decision": decision, "reasons": ["onnx-fp32@CPU: single-row p99 12 ms > 10 ms"],
               "serve_variant": None if skips else "onnx-fp32@CPU"}
    with mock.patch("mlflywheel.stages.benchmark.benchmark_version", return_value=verdict) as core, \
            mock.patch.object(BenchmarkOperator, "skip") as skip:
        assert bench.execute({"task": bench, "ti": mock.Mock()}) == verdict
    assert core.call_args.kwargs == {"version": "2", "if_exists": "skip"}
    assert skip.called is skips
