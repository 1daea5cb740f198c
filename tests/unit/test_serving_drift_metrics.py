"""The model server's ``flywheel_drift_*`` gauges, read from verdicts the real drift check writes."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlflywheel.services.data.generate import generate_fraud_day
from mlflywheel.services.settings import Workspace
from mlflywheel.serving.metrics import ServerMetrics, drift_verdicts_dir
from mlflywheel.stages.drift_check import check, policy
from mlflywheel.stages.drift_check.stats import compare_frames, numeric_drift

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit
DAYS = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(4)]
NUMERIC, CATEGORICAL = ["amount"], ["merchant_category", "channel", "country"]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(home=tmp_path / "home")


@pytest.fixture
def write_check(ws, pipeline_config, monkeypatch):
    """``write_check(as_of, scenario)``: one drift check's verdict file, written by the drift
    module's own statistics, policy and ``_finish`` (only its MLflow logging is left out)."""
    config = pipeline_config("fraud")
    monkeypatch.setattr(check, "_log_to_mlflow", lambda config, ws, verdict, key: ("run-0", "exp-0"))
    reference = pd.concat([generate_fraud_day(d) for d in DAYS], ignore_index=True)

    def write(as_of: dt.datetime, scenario: str = "none", *, skipped: bool = False) -> dict:
        check_id = f"fraud/{as_of:%Y%m%dT%H%MZ}"
        key = check_id.replace("/", "_")
        verdict = {"pipeline": "fraud", "check_id": check_id, "as_of": as_of.isoformat(),
                   "reference": {"digest": "d1", "path": "/snap", "model_name": config.model_name, "version": "3",
                                 "serve_variant": "fp32"}, "window": {"days": [], "rows": 0}}
        if skipped:
            decision = policy.Decision(policy.SKIPPED, detail="too few rows")
            return check._finish(config, ws, verdict, decision, key=key, as_of=as_of)
        current = generate_fraud_day(DAYS[-1] + dt.timedelta(days=1), scenario=scenario)
        columns = compare_frames(reference, current, numeric=NUMERIC, categorical=CATEGORICAL,
                                 limits=config.drift.limits)
        rng = np.random.default_rng(0)
        prediction = numeric_drift("prediction", rng.beta(1, 30, 4000), rng.beta(1, 30, 4000), config.drift.limits)
        reasons, signature = policy.find_triggers(config, columns, prediction, None)
        decision = policy.decide(config, reasons=reasons, signature=signature, ledger=[], now=as_of,
                                 champion_version="3", check_id=check_id)
        verdict.update(check._statistics(columns, prediction, config.drift.prediction_psi))
        return check._finish(config, ws, verdict, decision, key=key, as_of=as_of)

    return write


def _samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name.startswith("flywheel_drift"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted({"pipeline": "fraud", **labels}.items()))))


def test_verdicts_dir_is_where_the_drift_check_writes(ws, pipeline_config):
    config = pipeline_config("fraud")
    assert drift_verdicts_dir(ws.reports_dir, "fraud") == check.drift_dir(ws, config) / "verdicts"


def test_latest_holiday_check_is_exported(ws, write_check):
    metrics = ServerMetrics()
    metrics.watch_drift("fraud", drift_verdicts_dir(ws.reports_dir, "fraud"))
    assert _samples(metrics) == {("flywheel_drift_verdict_read_errors_total", (("pipeline", "fraud"),)): 0.0}

    as_of = dt.datetime(2026, 5, 6, 3, 0, tzinfo=dt.UTC)
    summary = write_check(as_of, "holiday")
    verdict = json.loads(open(summary["verdict_path"]).read())
    assert verdict["decision"] == "retrain"
    s = _samples(metrics)
    by_column = {c["column"]: c for c in verdict["columns"]}
    assert set(by_column) == {*NUMERIC, *CATEGORICAL}
    for name, column in by_column.items():
        assert _get(s, "flywheel_drift_score", feature=name, stat="psi") == pytest.approx(column["psi"])
        assert _get(s, "flywheel_drift_score", feature=name, stat="score") == pytest.approx(column["score"])
        assert _get(s, "flywheel_drift_feature_drifted", feature=name) == float(column["drifted"])
    assert _get(s, "flywheel_drift_feature_drifted", feature="amount") == 1.0
    assert _get(s, "flywheel_drift_score", feature="amount", stat="wasserstein") == pytest.approx(
        by_column["amount"]["wasserstein"])
    assert _get(s, "flywheel_drift_score", feature="amount", stat="jensen_shannon") is None  # null: not exported
    assert _get(s, "flywheel_drift_score", feature="prediction", stat="psi") == pytest.approx(
        verdict["prediction_drift"]["psi"])
    assert _get(s, "flywheel_drift_score", feature="prediction", stat="rows_current") is None
    assert _get(s, "flywheel_drift_detected") == 1.0
    assert _get(s, "flywheel_drift_drifted_share") == pytest.approx(verdict["drifted_share"])
    assert _get(s, "flywheel_drift_check_timestamp_seconds") == as_of.timestamp()
    assert _get(s, "flywheel_drift_check_info", check_id="fraud/20260506T0300Z", decision="retrain",
                champion_version="3") == 1.0


def test_newest_check_wins_and_unchanged_files_are_not_reread(ws, write_check):
    metrics = ServerMetrics()
    gauges = metrics.watch_drift("fraud", drift_verdicts_dir(ws.reports_dir, "fraud"))
    write_check(dt.datetime(2026, 5, 6, tzinfo=dt.UTC), "holiday")
    assert _get(_samples(metrics), "flywheel_drift_detected") == 1.0
    reads = gauges.reads
    for _ in range(3):
        _samples(metrics)
    assert gauges.reads == reads  # nothing changed: stat only

    write_check(dt.datetime(2026, 5, 7, tzinfo=dt.UTC), "none")  # a newer, quiet check
    s = _samples(metrics)
    assert _get(s, "flywheel_drift_detected") == 0.0
    assert _get(s, "flywheel_drift_feature_drifted", feature="amount") == 0.0
    assert gauges.reads == reads + 1  # only the new file was parsed

    write_check(dt.datetime(2026, 5, 5, tzinfo=dt.UTC), "holiday")  # a backfilled, older check
    s = _samples(metrics)
    assert _get(s, "flywheel_drift_check_info", check_id="fraud/20260507T0000Z", decision="no_drift",
                champion_version="3") == 1.0
    assert _get(s, "flywheel_drift_detected") == 0.0


def test_skipped_check_has_no_detected_value(ws, write_check):
    metrics = ServerMetrics()
    metrics.watch_drift("fraud", drift_verdicts_dir(ws.reports_dir, "fraud"))
    write_check(dt.datetime(2026, 5, 6, tzinfo=dt.UTC), skipped=True)
    s = _samples(metrics)
    assert _get(s, "flywheel_drift_detected") is None  # could not judge: neither 0 nor 1
    assert _get(s, "flywheel_drift_check_info", check_id="fraud/20260506T0000Z", decision="skipped",
                champion_version="3") == 1.0


def test_unreadable_verdict_is_counted_and_skipped(ws, write_check):
    metrics = ServerMetrics()
    folder = drift_verdicts_dir(ws.reports_dir, "fraud")
    metrics.watch_drift("fraud", folder)
    write_check(dt.datetime(2026, 5, 6, tzinfo=dt.UTC), "holiday")
    (folder / "fraud_20260509T0000Z.json").write_text('{"as_of": "2026-05-09T00:00:00+00:00"')  # cut short
    (folder / "fraud_20260510T0000Z.json").write_text('{"as_of": "yesterday", "decision": "retrain"}')
    s = _samples(metrics)
    assert _get(s, "flywheel_drift_verdict_read_errors_total") == 2.0
    assert _get(s, "flywheel_drift_check_info", check_id="fraud/20260506T0000Z", decision="retrain",
                champion_version="3") == 1.0
    s = _samples(metrics)  # not reread, not counted again
    assert _get(s, "flywheel_drift_verdict_read_errors_total") == 2.0


def test_served_app_exports_drift_gauges(ws, write_check, serve_ctr):
    write_check(dt.datetime(2026, 5, 6, tzinfo=dt.UTC), "holiday")
    with serve_ctr() as served:
        served.server.metrics.watch_drift("fraud", drift_verdicts_dir(ws.reports_dir, "fraud"))
        body = served.client.get("/metrics").text
    assert 'flywheel_drift_detected{pipeline="fraud"} 1.0' in body
    assert 'flywheel_drift_feature_drifted{feature="amount",pipeline="fraud"} 1.0' in body
