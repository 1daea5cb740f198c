"""The evaluation gate's checks: thresholds, fairness, outputs, champion; it fails closed."""

from __future__ import annotations

import numpy as np
import pytest

from mlflywheel.services.config import FairnessSpec, GateSpec, MetricLimit
from mlflywheel.services.errors import GateMisconfigured
from mlflywheel.services.model_metrics import classification_metrics
from mlflywheel.stages.evaluate_gate import (
    Check,
    Verdict,
    champion_checks,
    fairness_checks,
    fairness_gaps,
    output_checks,
    threshold_checks,
)

pytestmark = pytest.mark.unit
FAIR = FairnessSpec(sensitive_attribute="g", max_demographic_parity_difference=0.1,
                    max_equal_opportunity_difference=0.2, min_group_size=2, min_group_positives=1)


def _gate(**thresholds):
    return GateSpec(thresholds={k: MetricLimit(**v) for k, v in thresholds.items()}, fairness=FAIR)


def test_metrics_of_a_perfect_and_a_useless_ranker():
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0 and perfect["recall"] == 1.0
    useless = classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]), 0.5)
    assert useless["roc_auc"] == 0.0 and useless["recall"] == 0.0


@pytest.mark.parametrize(("metrics", "passed"), [
    ({"roc_auc": 0.90, "brier": 0.04}, [True, True]),
    ({"roc_auc": 0.79, "brier": 0.04}, [False, True]),
    ({"roc_auc": 0.90, "brier": 0.06}, [True, False]),
    ({"roc_auc": float("nan"), "brier": 0.04}, [False, True]),
    ({"brier": 0.04}, [False, True]),  # a metric that could not be computed fails
])
def test_threshold_checks(metrics, passed):
    checks = threshold_checks(metrics, _gate(roc_auc={"min": 0.8}, brier={"max": 0.05}))
    assert [c.name for c in checks] == ["threshold.brier.max", "threshold.roc_auc.min"]
    assert [c.passed for c in checks] == passed[::-1]


def test_no_thresholds_is_an_error_not_a_pass():
    gate = GateSpec.model_construct(thresholds={}, fairness=FAIR, decision_threshold=0.5, champion_tolerance={})
    with pytest.raises(GateMisconfigured, match="without thresholds"):
        threshold_checks({"roc_auc": 1.0}, gate)


def test_a_verdict_without_checks_rejects():
    verdict = Verdict(pipeline="p", model_name="m", challenger={}, champion=None, holdout={})
    assert verdict.decision == "rejected" and verdict.reasons == ["no checks were evaluated"]


def test_fairness_gaps_by_group():
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    proba = np.array([.9, .9, .1, .1, .9, .1, .9, .1])
    groups = np.array(["a"] * 4 + ["b"] * 4)
    gaps = fairness_gaps(y, proba, groups, 0.5, min_group_size=2)
    assert gaps["positive_rate"] == {"a": 0.5, "b": 0.5}
    assert gaps["true_positive_rate"] == {"a": 1.0, "b": 0.5}
    assert gaps["demographic_parity_difference"] == 0.0
    assert gaps["equal_opportunity_difference"] == 0.5
    checks = {c.name: c.passed for c in fairness_checks(gaps, FAIR)}
    assert checks == {"fairness.demographic_parity_difference": True, "fairness.equal_opportunity_difference": False}


def test_small_groups_are_left_out_and_too_few_groups_fail_closed():
    y = np.array([1, 0, 1, 0, 1])
    proba = np.array([.9, .1, .9, .1, .9])
    groups = np.array(["a", "a", "a", "a", "b"])
    gaps = fairness_gaps(y, proba, groups, 0.5, min_group_size=2)
    assert gaps["groups_below_min_size"] == ["b"]
    assert gaps["demographic_parity_difference"] is None
    checks = fairness_checks(gaps, FAIR)
    assert not any(c.passed for c in checks)
    assert "cannot judge" in checks[0].detail


def test_groups_with_too_few_positives_do_not_decide_equal_opportunity():
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    proba = np.array([.9, .9, .9, .1, .1, .1, .1, .1])
    groups = np.array(["a"] * 4 + ["b"] * 4)
    gaps = fairness_gaps(y, proba, groups, 0.5, min_group_size=2, min_group_positives=2)
    assert gaps["groups_below_min_positives"] == ["b"]
    assert gaps["equal_opportunity_difference"] is None


@pytest.mark.parametrize(("proba", "failed"), [
    (np.array([0.1, 0.5, 0.9]), set()),
    (np.array([0.1, np.nan, 0.9]), {"output.no_nan", "output.in_unit_interval"}),
    (np.array([0.1, 1.5, 0.9]), {"output.in_unit_interval"}),
    (np.array([0.1, 0.5]), {"output.shape"}),
    (np.array([[0.1, 0.9]] * 3), {"output.shape"}),
])
def test_output_checks(proba, failed):
    assert {c.name for c in output_checks(proba, 3) if not c.passed} == failed


@pytest.mark.parametrize(("challenger", "passed"), [
    ({"roc_auc": 0.90, "log_loss": 0.20}, {"champion.roc_auc": True, "champion.log_loss": True}),
    ({"roc_auc": 0.885, "log_loss": 0.20}, {"champion.roc_auc": False, "champion.log_loss": True}),
    ({"roc_auc": 0.90, "log_loss": 0.26}, {"champion.roc_auc": True, "champion.log_loss": False}),
    ({"log_loss": 0.2}, {"champion.roc_auc": False, "champion.log_loss": True}),
])
def test_champion_checks_with_tolerance(challenger, passed):
    champion = {"roc_auc": 0.90, "log_loss": 0.20}
    checks = champion_checks(challenger, champion, {"roc_auc": 0.01, "log_loss": 0.05})
    assert {c.name: c.passed for c in checks} == passed


def test_no_champion_yet_is_recorded_not_compared():
    (check,) = champion_checks({"roc_auc": 0.5}, None, {"roc_auc": 0.01})
    assert check.passed and check.name == "champion.none"


def test_verdict_reasons_name_the_failed_checks():
    verdict = Verdict(pipeline="p", model_name="m", challenger={}, champion=None, holdout={}, checks=[
        Check("threshold.roc_auc.min", 0.7, 0.8, ">=", False), Check("output.no_nan", 0.0, 0.0, "==", True)])
    assert verdict.decision == "rejected"
    assert verdict.reasons == ["threshold.roc_auc.min: 0.7 >= 0.8 is false"]
    assert verdict.to_dict()["checks"][0]["limit"] == 0.8
