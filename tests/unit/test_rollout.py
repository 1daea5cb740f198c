"""Rollout analysis core: plan, traffic from /metrics, statistics, verdicts, ledger, registry, KServe."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import yaml

from mlflywheel.services import deployments, kserve, tracking
from mlflywheel.services.config import RolloutSpec
from mlflywheel.services.errors import GateMisconfigured, RegistryError
from mlflywheel.services.settings import Workspace
from mlflywheel.serving.metrics import ServerMetrics
from mlflywheel.stages.deploy_canary import analysis as rollout
from tests import helpers

pytestmark = pytest.mark.unit
SPEC = RolloutSpec(min_requests=100, min_labels=100)
STEP = rollout.Step(1, "canary", 20.0, 600.0, 100)
RNG = np.random.default_rng(0)
SCORES = RNG.beta(1, 20, 5000)


def scrape(served: dict[str, tuple[int, int, float]]) -> str:
    """/metrics text of a server that answered (ok, errors, latency s) per version."""
    metrics = ServerMetrics()
    for version, (ok, errors, latency) in served.items():
        role = "champion" if version == "1" else "canary"
        metrics.requests.labels("/predict", version, role, "200").inc(ok)
        metrics.requests.labels("/predict", version, role, "500").inc(errors)
        for _ in range(ok):
            metrics.latency.labels("/predict", version, role).observe(latency)
    metrics.requests.labels("/predict", "none", "none", "422").inc(50)  # refused input: nobody's fault
    return metrics.render().decode()


def analyse(traffic, canary_scores=SCORES[:2500], labels=None, step=STEP):
    return rollout.analyse_step(step, SPEC, model="fraud_detector", canary_version="2", champion_version="1",
                                traffic=traffic, canary_scores=canary_scores, champion_scores=SCORES[2500:],
                                labels=labels)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("canary", [("canary", 5.0), ("canary", 20.0), ("canary", 50.0), ("canary", 100.0)]),
    ("blue_green", [("canary", 100.0)]),
    ("shadow_first", [("shadow", 0.0), ("canary", 5.0), ("canary", 20.0), ("canary", 50.0), ("canary", 100.0)]),
])
def test_plan(strategy, expected):
    steps = rollout.plan(RolloutSpec(strategy=strategy))
    assert [(s.mode, s.weight) for s in steps] == expected
    assert [s.index for s in steps] == list(range(len(expected))) and steps[-1].last


def test_steps_must_rise_to_100():
    with pytest.raises(ValueError, match="steps must increase strictly and end at 100"):
        RolloutSpec(steps=[5, 50])
    with pytest.raises(ValueError, match="steps must increase strictly"):
        RolloutSpec(steps=[20, 5, 100])


def test_traffic_between_two_scrapes():
    before = scrape({"1": (100, 0, 0.002), "2": (10, 0, 0.002)})
    after = scrape({"1": (1100, 2, 0.002), "2": (310, 30, 0.04)})
    traffic = rollout.traffic_between(before, after)
    assert set(traffic) == {"1", "2"}
    assert (traffic["2"].requests, traffic["2"].errors) == (330, 30)
    assert traffic["2"].error_rate == pytest.approx(30 / 330)
    assert traffic["1"].p99_ms() == pytest.approx(2.0) and traffic["2"].p99_ms() == pytest.approx(50.0)
    with pytest.raises(GateMisconfigured, match="counter went down"):
        rollout.traffic_between(after, before)


def test_a_healthy_canary_passes_and_a_broken_one_fails_with_reasons():
    healthy = analyse(rollout.parse_metrics(scrape({"1": (2000, 2, 0.002), "2": (500, 0, 0.002)})))
    assert healthy.decision == "pass" and healthy.reasons == []
    errors = analyse(rollout.parse_metrics(scrape({"1": (2000, 2, 0.002), "2": (450, 50, 0.002)})))
    assert errors.decision == "fail"
    assert errors.reasons[:2] == ["error_rate 0.1 > 0.01", "error_rate_increase 0.099 > 0.005"]
    slow = analyse(rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (500, 0, 0.2)})))
    assert slow.decision == "fail" and slow.reasons == ["p99_ms 250 > 50", "p99_ratio 125 > 1.5"]
    shifted = analyse(rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (500, 0, 0.002)})),
                      canary_scores=np.clip(SCORES[:2500] + 0.2, 0, 1))
    assert shifted.decision == "fail" and shifted.reasons[0].startswith("score_psi ")


def test_too_little_traffic_is_inconclusive_and_never_promotes():
    verdict = analyse(rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (20, 0, 0.002)})))
    assert verdict.decision == "inconclusive"
    assert verdict.reasons[0] == "canary_requests: not enough data (canary requests in the window)"
    assert rollout.decide(verdict, STEP, baked_s=600) == "wait"
    assert rollout.decide(verdict, STEP, baked_s=1200) == "rollback"


def test_distributions_are_judged_only_from_min_requests_but_errors_at_once():
    """Six slow, shifted canary answers in the first seconds of a step are noise, not a verdict
    (found by the replayer's end-to-end run); an error among them is a verdict."""
    few = analyse(rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (6, 0, 0.2)})),
                  canary_scores=np.clip(SCORES[:6] + 0.5, 0, 1))
    assert few.decision == "inconclusive"
    checks = {c.name: c for c in few.checks}
    assert checks["p99_ms"].passed is None and checks["p99_ms"].value == pytest.approx(250)
    assert checks["score_psi"].passed is None and checks["score_psi"].value > 1
    failing = analyse(rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (5, 1, 0.002)})))
    assert failing.decision == "fail" and failing.reasons[0] == "error_rate 0.1667 > 0.01"


@pytest.mark.parametrize(("decision", "baked", "step", "action"), [
    ("fail", 1, STEP, "rollback"),
    ("pass", 10, STEP, "wait"),
    ("pass", 600, STEP, "advance"),
    ("pass", 600, rollout.Step(3, "canary", 100.0, 600.0, 100), "promote"),
])
def test_decide(decision, baked, step, action):
    verdict = rollout.StepVerdict("m", "2", "1", {}, [], decision, [])
    assert rollout.decide(verdict, step, baked) == action


def test_label_test_spends_alpha_over_the_looks():
    traffic = rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (500, 0, 0.002)}))
    same = analyse(traffic, labels=rollout.LabelCounts(900, 1000, 448, 500))
    assert same.decision == "pass" and "alpha 0.0125" in same.checks[-1].detail
    worse = analyse(traffic, labels=rollout.LabelCounts(900, 1000, 400, 500))
    assert worse.decision == "fail" and worse.reasons[-1].startswith("labels: canary significantly worse")
    test = rollout.two_proportion_test(900, 1000, 400, 500, 0.05)
    assert test.diff == pytest.approx(-0.1) and test.ci_low < -0.1 < test.ci_high < 0 and test.worse


def test_false_alarm_rate_over_all_looks_stays_below_alpha():
    rng = np.random.default_rng(1)
    looks, alarms, trials = 4, 0, 2000
    for _ in range(trials):
        hits = rng.binomial(500, 0.9, size=(looks, 2))
        alarms += any(rollout.two_proportion_test(a, 500, b, 500, rollout.look_alpha(0.05, looks)).p_value
                      < rollout.look_alpha(0.05, looks) for a, b in hits)
    assert alarms / trials < 0.05


def test_psi():
    assert rollout.psi(SCORES, SCORES) == pytest.approx(0.0, abs=1e-9)
    assert rollout.psi(SCORES, np.clip(SCORES * 3, 0, 1)) > 0.2
    assert rollout.psi([], [0.1]) is None


def aliases(client, name):
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


@pytest.fixture
def workspace(tmp_path, monkeypatch, ctr_onnx):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    ws = Workspace.from_env().ensure()
    versions = [helpers.publish_onnx_version(ws, ctr_onnx.config, ctr_onnx.files[v]) for v in ("1", "2", "2")]
    tracking.client(ws).set_registered_model_alias(ctr_onnx.config.model_name, "champion", versions[0])
    return ws, ctr_onnx.config, versions


def test_verdict_is_recorded_before_acting_and_the_ledger_answers_what_served_when(workspace):
    ws, config, (v1, v2, v3) = workspace
    client = tracking.client(ws)
    name = config.model_name
    deployments.set_canary(ws, config, client, v2, 5, "step 0")
    verdict = analyse(rollout.parse_metrics(scrape({"1": (2000, 2, 0.002), "2": (450, 50, 0.002)})))
    path = rollout.record(ws, config, verdict, rollout.decide(verdict, STEP, 30))
    saved = json.loads(path.read_text())
    assert saved["action"] == "rollback" and saved["decision"] == "fail" and saved["checks"][1]["passed"] is False
    mid = dt.datetime.now(dt.UTC)
    deployments.rollback(ws, config, client, "error rate")
    assert aliases(client, name) == {"champion": v1}
    assert client.get_model_version(name, v2).tags["flywheel.rollout.result"] == "rolled_back"
    deployments.set_canary(ws, config, client, v3, 100, "step 3")
    deployments.promote(ws, config, client, v3, "all steps passed")
    assert aliases(client, name) == {"champion": v3, "previous_champion": v1}
    assert client.get_registered_model(name).tags["flywheel.canary_weight"] == "0"
    ledger = deployments.ledger_path(ws, config)
    events = [json.loads(line)["event"] for line in ledger.read_text().splitlines()]
    assert events == ["deploy", "analysis:rollback", "deploy", "deploy", "deploy"]
    assert deployments.serving_at(ledger, mid) == {**deployments.serving_at(ledger, mid), "champion": v1, "canary": v2,
                                               "canary_weight": 5.0}
    assert deployments.serving_at(ledger, dt.datetime.now(dt.UTC))["champion"] == v3
    deployments.restore_previous(ws, config, client, "manual")
    assert aliases(client, name) == {"champion": v1, "previous_champion": v3}
    client.delete_registered_model_alias(name, "previous_champion")
    with pytest.raises(RegistryError, match="has no @previous_champion"):
        deployments.restore_previous(ws, config, client, "manual")


def test_kserve_manifests_per_step(tmp_path, pipeline_config):
    config = pipeline_config("fraud")
    step = kserve.kserve_manifest(config, storage_uri="s3://models/fraud/v7", canary_percent=20)
    assert step["apiVersion"] == "serving.kserve.io/v1beta1" and step["kind"] == "InferenceService"
    assert step["metadata"]["name"] == "fraud-detector"
    assert step["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert step["spec"]["predictor"]["model"]["storageUri"] == "s3://models/fraud/v7"
    full = kserve.kserve_manifest(config, storage_uri="s3://models/fraud/v7", canary_percent=100)
    assert "canaryTrafficPercent" not in full["spec"]["predictor"]
    written = kserve.write_manifest(step, tmp_path / "isvc.yaml")
    assert yaml.safe_load(written.read_text()) == step
    with pytest.raises(ValueError, match="outside 0-100"):
        kserve.kserve_manifest(config, storage_uri="s3://x", canary_percent=120)


def test_step_window_and_label_counts_from_the_prediction_log(tmp_path):
    import pandas as pd

    from mlflywheel.services.predlog import Prediction, PredictionLog

    start = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    log = PredictionLog(tmp_path / "p.db")

    def row(i, role, version, score, seconds):
        return Prediction(f"r{i}", 0, role, start.timestamp() + seconds, str(i), f"t{i}", "m", version, "/predict",
                          {}, score, 1.0)

    log.append([row(1, "champion", "1", 0.9, 1), row(2, "champion", "1", 0.1, 2), row(3, "canary", "2", 0.8, 3),
                row(4, "canary", "2", 0.2, 4), row(5, "canary", "2", 0.7, 3600), row(1, "shadow", "2", 0.2, 1)])
    canary, champion = rollout.window(tmp_path / "p.db", start, start + dt.timedelta(minutes=10),
                                      canary_version="2", champion_version="1")
    assert canary["request_id"].tolist() == ["r3", "r4"] and champion["request_id"].tolist() == ["r1", "r2"]
    shadow, _ = rollout.window(tmp_path / "p.db", start, start + dt.timedelta(minutes=10), canary_version="2",
                               champion_version="1", shadow=True)
    assert shadow["request_id"].tolist() == ["r1"]
    labels = pd.DataFrame({"transaction_id": ["t1", "t2", "t3"], "is_fraud": [1, 1, 0]})  # t4 not labelled yet
    counts = rollout.label_counts(canary, champion, labels, id_column="transaction_id", label="is_fraud",
                                  threshold=0.5)
    assert counts == rollout.LabelCounts(champion_hits=1, champion_n=2, canary_hits=0, canary_n=1)


def test_at_100_percent_the_champion_reference_is_carried_from_the_last_step_it_served():
    """At 100 % the champion serves (almost) nothing: its error rate and p99 come from the step
    before, not from a handful of stragglers (found by the replayer's end-to-end run)."""
    last = rollout.Step(1, "canary", 100.0, 600.0, 100)
    earlier = rollout.parse_metrics(scrape({"1": (2000, 0, 0.002), "2": (500, 0, 0.002)}))
    carried = rollout.champion_reference(earlier, "1", STEP)
    assert carried["p99_ms"] == pytest.approx(2.0) and carried["error_rate"] == 0.0
    stragglers = rollout.parse_metrics(scrape({"1": (3, 1, 0.2), "2": (800, 0, 0.002)}))
    assert rollout.champion_reference(stragglers, "1", last, carried) == carried
    verdict = rollout.analyse_step(last, SPEC, model="fraud_detector", canary_version="2", champion_version="1",
                                   traffic=stragglers, canary_scores=SCORES[:2500], champion_scores=SCORES[2500:],
                                   reference=rollout.champion_reference(stragglers, "1", last, carried))
    assert verdict.decision == "pass", verdict.reasons
    checks = {c.name: c for c in verdict.checks}
    assert checks["p99_ratio"].value == pytest.approx(1.0) and checks["error_rate_increase"].value == 0.0
