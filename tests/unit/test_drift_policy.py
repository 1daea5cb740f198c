"""The retrain decision: triggers, cooldown, deduplication, delayed labels and live degradation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlflywheel.stages.drift_check import policy
from mlflywheel.stages.drift_check.live import expected_calibration_error, judge_live
from mlflywheel.stages.drift_check.stats import ColumnDrift

pytestmark = pytest.mark.unit
NOW = dt.datetime(2026, 6, 4, 1, tzinfo=dt.UTC)
BASELINE = {"roc_auc": 0.95, "pr_auc": 0.70}


def _column(name: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(column=name, kind="numeric", drifted=drifted, statistic="wasserstein",
                       score=0.4 if drifted else 0.01, psi=0.3 if drifted else 0.0, p_value=0.0, rows_reference=1000,
                       rows_current=1000, null_share_reference=0.0, null_share_current=0.0,
                       reasons=["wasserstein 0.400 >= 0.1"] if drifted else [])


def _entry(check_id: str, hours_ago: float, signature: list[str], version: str = "1") -> dict:
    return {"check_id": check_id, "emitted_at": (NOW - dt.timedelta(hours=hours_ago)).isoformat(),
            "signature": signature, "champion_version": version}


def test_share_of_drifted_inputs_and_key_features_trigger(pipeline_config):
    config = pipeline_config("fraud")
    few = [_column("amount", True)] + [_column(f"x{i}", False) for i in range(9)]
    assert policy.find_triggers(config, few, None, None) == ([], [])  # 10 % < 30 %
    keyed = config.model_copy(update={"drift": config.drift.model_copy(update={"key_features": ["amount"]})})
    reasons, kinds = policy.find_triggers(keyed, few, None, None)
    assert kinds == ["key_feature:amount"] and "key feature 'amount' drifted" in reasons[0]
    many = [_column(f"x{i}", i < 3) for i in range(10)]
    reasons, kinds = policy.find_triggers(config, many, None, None)
    assert kinds == ["data_drift"] and reasons[0].startswith("data drift: 3/10 inputs drifted (30% >= 30%)")


def test_cooldown_suppresses_a_second_trigger(pipeline_config):
    config = pipeline_config("fraud")  # cooldown_hours 12, dedup_hours 72
    args = {"reasons": ["prediction drift: score PSI 0.300 >= 0.2"], "signature": ["prediction_drift"],
            "now": NOW, "champion_version": "1"}
    first = policy.decide(config, ledger=[], check_id="fraud/a", **args)
    assert first.decision == policy.RETRAIN
    second = policy.decide(config, ledger=[_entry("fraud/a", 3, ["data_drift"])], check_id="fraud/b", **args)
    assert second.decision == policy.SUPPRESSED
    assert second.detail.startswith("cooldown: the last retrain trigger (fraud/a) was 3.0 h ago")
    # a retry of the same check is not its own cooldown: it re-emits its decision
    again = policy.decide(config, ledger=[_entry("fraud/a", 0, ["prediction_drift"])], check_id="fraud/a", **args)
    assert again.decision == policy.RETRAIN


def test_the_same_trigger_for_the_same_champion_is_deduplicated(pipeline_config):
    config = pipeline_config("fraud")
    args = {"reasons": ["data drift ..."], "signature": ["data_drift"], "now": NOW, "check_id": "fraud/c"}
    ledger = [_entry("fraud/a", 30, ["data_drift"])]
    duplicate = policy.decide(config, ledger=ledger, champion_version="1", **args)
    assert duplicate.decision == policy.SUPPRESSED and duplicate.detail.startswith("duplicate: fraud/a")
    assert policy.decide(config, ledger=ledger, champion_version="2", **args).decision == policy.RETRAIN
    old = [_entry("fraud/a", 100, ["data_drift"])]
    assert policy.decide(config, ledger=old, champion_version="1", **args).decision == policy.RETRAIN
    assert policy.decide(config, ledger=[], champion_version="1", reasons=[], signature=[], now=NOW,
                         check_id="x").decision == policy.NO_DRIFT


def test_ledger_is_append_only_per_check(tmp_path):
    path = policy.ledger_path(tmp_path, "fraud")
    policy.record_trigger(path, _entry("fraud/a", 5, ["data_drift"]))
    policy.record_trigger(path, _entry("fraud/b", 1, ["data_drift"]))
    policy.record_trigger(path, _entry("fraud/b", 0, ["prediction_drift"]))  # a retried check replaces its line
    assert [(e["check_id"], e["signature"]) for e in policy.read_ledger(path)] == [
        ("fraud/a", ["data_drift"]), ("fraud/b", ["prediction_drift"])]


def _live_rows(rng, n, informative: bool):
    y = (rng.random(n) < 0.05).astype(int)
    score = np.clip(0.05 + (0.5 * y if informative else 0) + rng.normal(0, 0.1, n), 0.001, 0.999)
    ids = [f"tx-{i}" for i in range(n)]
    rows = pd.DataFrame({"transaction_id": ids})
    labels = pd.DataFrame({"transaction_id": ids, "is_fraud": y})
    return rows, score, labels


@pytest.mark.parametrize(("informative", "triggers"), [(True, False), (False, True)])
def test_delayed_label_degradation_triggers(pipeline_config, informative, triggers):
    config = pipeline_config("fraud")
    rng = np.random.default_rng(0)
    rows, scores, labels = _live_rows(rng, 5000, informative)
    live = judge_live(config, rows=rows, scores=scores, labels=labels, days=[dt.date(2026, 6, 2)],
                      coverage={"2026-06-02": 1.0}, baseline=BASELINE, baseline_source="test",
                      reference_label_rate=float(labels["is_fraud"].mean()))
    assert live["status"] == "evaluated"
    degraded = [r for r in live["reasons"] if r.startswith("live roc_auc")]
    assert bool(degraded) is triggers
    reasons, kinds = policy.find_triggers(config, [], None, live)
    assert ("live:roc_auc" in kinds) is triggers
    if triggers:
        assert "below the champion's gate baseline 0.9500 (limit 0.05)" in degraded[0]
        assert policy.decide(config, reasons=reasons, signature=kinds, ledger=[], now=NOW, champion_version="1",
                             check_id="fraud/x").decision == policy.RETRAIN


def test_too_few_matured_labels_is_reported_not_judged(pipeline_config):
    config = pipeline_config("fraud")
    rows, scores, labels = _live_rows(np.random.default_rng(1), 300, informative=False)
    live = judge_live(config, rows=rows, scores=scores, labels=labels, days=[dt.date(2026, 6, 2)],
                      coverage={"2026-06-02": 1.0}, baseline=BASELINE, baseline_source="test",
                      reference_label_rate=0.05)
    assert live["status"] == "insufficient_labels" and live["reasons"] == []
    assert "need >= 1000 rows" in live["detail"]
    none = judge_live(config, rows=rows.iloc[:0], scores=scores[:0], labels=labels, days=[], coverage={},
                      baseline=BASELINE, baseline_source="test", reference_label_rate=0.05)
    assert none["status"] == "insufficient_labels" and "label delay 3 d" in none["detail"]


def test_expected_calibration_error():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 0.99, 0.99])) == pytest.approx(0.005)
    assert expected_calibration_error(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.0)


def test_labels_land_after_their_delay(tmp_path, monkeypatch, pipeline_config):
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.data.labels import read_labels, write_labels
    from mlflywheel.services.settings import Workspace
    from mlflywheel.stages.drift_check.live import label_coverage

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    ws = Workspace.from_env().ensure()
    config = pipeline_config("fraud")
    start, end = dt.date(2026, 6, 1), dt.date(2026, 6, 5)
    write_landing(config, ws, start=start, end=end)
    write_labels(config, ws, start=start, end=end, delay_days=2, jitter_days=1)
    early = read_labels(config, ws, since=start, as_of=dt.datetime(2026, 6, 3, 0, tzinfo=dt.UTC))
    assert early.empty  # nothing arrives within two days
    as_of = dt.datetime(2026, 6, 5, 12, tzinfo=dt.UTC)
    days, coverage, labels = label_coverage(config, ws, as_of, after=dt.date(2026, 5, 31))
    # events of day D land between D + 2 days and D + 4 days
    assert coverage["2026-06-01"] == 1.0
    assert 0.5 < coverage["2026-06-02"] < 1.0 and 0 < coverage["2026-06-03"] < 0.5
    assert coverage["2026-06-04"] == 0.0
    assert days == [dt.date(2026, 6, 1)]  # the only day with >= 95 % of its labels
    assert (labels["label_timestamp"] <= pd.Timestamp(as_of)).all()
    landed = pd.read_parquet(next((tmp_path / "labels").rglob("events-2026-06-01.parquet")))
    assert set(landed.columns) == {"transaction_id", "is_fraud", "label_timestamp"}


def test_a_metric_without_baseline_is_a_note_never_a_trigger(pipeline_config):
    config = pipeline_config("fraud")
    rows, scores, labels = _live_rows(np.random.default_rng(2), 5000, informative=False)
    live = judge_live(config, rows=rows, scores=scores, labels=labels, days=[dt.date(2026, 6, 2)],
                      coverage={"2026-06-02": 1.0}, baseline={"roc_auc": 0.5}, baseline_source="v.json",
                      reference_label_rate=float(labels["is_fraud"].mean()))
    assert live["notes"] == ["pr_auc: the champion's gate verdict has no baseline (v.json)"]
    assert policy.find_triggers(config, [], None, live) == ([], [])


def test_drift_config_is_strict_and_consistent(tmp_path):
    import yaml

    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.errors import ConfigError
    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "fraud.yaml").read_text())
    assert load_pipeline(ROOT / "include" / "pipelines" / "fraud.yaml").drift.schedule == "0 * * * *"
    for drift, message in [({"cooldown": 3}, "key 'drift.cooldown': unknown key"),
                           ({"key_features": ["age_band"]}, "drift.key_features ['age_band'] are not model inputs"),
                           ({"schedule": "hourly"}, "expected a 5-field cron expression"),
                           ({"live": {"max_drop": {"f1": 0.1}}}, "unknown live metric(s) ['f1']"),
                           ({"retrain_window_days": 4}, "drift.retrain_window_days (4) must exceed")]:
        path = tmp_path / "fraud.yaml"
        path.write_text(yaml.safe_dump({**raw, "drift": drift}))
        with pytest.raises(ConfigError) as err:
            load_pipeline(path)
        assert message in str(err.value), (drift, str(err.value))
