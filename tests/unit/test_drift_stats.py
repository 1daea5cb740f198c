"""Drift statistics: exact against SciPy, quiet on one distribution, loud on the holiday scenario,
in agreement with Evidently on the shipped scenarios, and explicit about bad input."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from mlflywheel.services.config import FeatureDriftLimits
from mlflywheel.services.data.generate import generate_ctr_day, generate_fraud_day
from mlflywheel.services.errors import DriftInputError
from mlflywheel.stages.drift_check.stats import (
    categorical_drift,
    compare_frames,
    jensen_shannon,
    ks_wasserstein,
    numeric_drift,
)

pytestmark = pytest.mark.unit
LIMITS = FeatureDriftLimits()
DAYS = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(4)]
#: request features of the shipped pipelines: (numeric, categorical)
SCENARIO_COLUMNS = {"fraud": (["amount"], ["merchant_category", "channel", "country"]),
                    "ctr": (["position", "bid_price"], ["placement", "device"])}
GENERATORS = {"fraud": generate_fraud_day, "ctr": generate_ctr_day}


@pytest.mark.parametrize("shift", [0.0, 0.3])
@pytest.mark.parametrize("ties", [False, True])
def test_ks_and_wasserstein_are_exact(shift, ties):
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 5000), rng.normal(shift, 1.2, 3000)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    ks, w = ks_wasserstein(np.sort(a), np.sort(b))
    assert ks == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert w == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)


def test_jensen_shannon_matches_scipy():
    p, q = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.1, 0.3, 0.3, 0.3])
    assert jensen_shannon(p, q) == pytest.approx(distance.jensenshannon(p, q), abs=1e-12)


def _frames(rng, n):
    return pd.DataFrame({
        "amount": rng.lognormal(3.6, 0.7, n),
        "count": rng.poisson(0.6, n).astype(float),              # discrete: at most a handful of values
        "mean": np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2, 10, n)),
        "category": rng.choice(list("abcdefgh"), n, p=[.25, .18, .12, .08, .07, .12, .08, .10]),
        "channel": rng.choice(["pos", "online", "mobile"], n, p=[.55, .3, .15]),
    })


def test_false_positive_rate_on_one_distribution_is_at_most_alpha():
    """Two samples of one distribution, 60 seeds x 5 columns: flagged share <= drift.limits.alpha."""
    flagged, total = 0, 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        columns = compare_frames(_frames(rng, 8000), _frames(rng, 600), numeric=["amount", "count", "mean"],
                                 categorical=["category", "channel"], limits=LIMITS)
        flagged += sum(c.drifted for c in columns)
        total += len(columns)
    assert flagged / total <= LIMITS.alpha


@pytest.mark.parametrize("pipeline", ["fraud"])
def test_holiday_scenario_shifted_columns_are_detected(pipeline):
    numeric, categorical = SCENARIO_COLUMNS[pipeline]
    reference = pd.concat([GENERATORS[pipeline](d) for d in DAYS], ignore_index=True)
    holiday = GENERATORS[pipeline](DAYS[-1] + dt.timedelta(days=1), scenario="holiday")
    normal = GENERATORS[pipeline](DAYS[-1] + dt.timedelta(days=1))
    drifted = {c.column: c for c in compare_frames(reference, holiday, numeric=numeric, categorical=categorical,
                                                   limits=LIMITS)}
    assert {name for name, c in drifted.items() if c.drifted} == {"amount", "merchant_category"}
    assert drifted["amount"].psi > LIMITS.psi and drifted["amount"].wasserstein > LIMITS.wasserstein
    quiet = compare_frames(reference, normal, numeric=numeric, categorical=categorical, limits=LIMITS)
    assert [c.column for c in quiet if c.drifted] == []


@pytest.mark.parametrize("pipeline", ["fraud", "ctr"])
@pytest.mark.parametrize("scenario", ["none", "holiday"])
def test_drifted_columns_agree_with_evidently(pipeline, scenario):
    from mlflywheel.services.config import DriftSpec
    from mlflywheel.stages.drift_check.report import evidently_report

    numeric, categorical = SCENARIO_COLUMNS[pipeline]
    reference = pd.concat([GENERATORS[pipeline](d) for d in DAYS], ignore_index=True)
    current = GENERATORS[pipeline](DAYS[-1] + dt.timedelta(days=1), scenario=scenario)
    ours = compare_frames(reference, current, numeric=numeric, categorical=categorical, limits=LIMITS)
    spec = DriftSpec()
    thresholds = {"num_threshold": LIMITS.wasserstein, "cat_threshold": LIMITS.jensen_shannon,
                  "drift_share": spec.max_drifted_share,
                  "per_column_threshold": {c.column: LIMITS.jensen_shannon for c in ours if c.kind == "discrete"}}
    theirs = evidently_report(reference, current, numeric=numeric, categorical=categorical, thresholds=thresholds)
    assert sorted(c.column for c in ours if c.drifted) == theirs["drifted"]
    for column in ours:  # the same numbers, not only the same verdicts
        assert column.score == pytest.approx(theirs["scores"][column.column], rel=1e-6, abs=1e-9)


def test_a_new_category_is_counted_and_named():
    ref = pd.Series(["a", "b", "c"] * 1000)
    cur = pd.Series(["a", "b", "c"] * 300 + ["zz"] * 60)
    result = categorical_drift("merchant_category", ref, cur, LIMITS)
    assert result.unseen_count == 60 and result.unseen_examples == ["zz"]
    assert result.drifted and any("never saw" in r for r in result.reasons)


def test_null_share_increase_is_drift_and_an_all_null_column_is_an_error():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=4000)
    cur = rng.normal(size=1000)
    cur[:300] = np.nan
    assert numeric_drift("amount", ref, cur, LIMITS).reasons == ["null share 0.0% -> 30.0%"]
    with pytest.raises(DriftInputError, match=r"column 'amount' is entirely null in the current window \(1000 rows"):
        numeric_drift("amount", ref, np.full(1000, np.nan), LIMITS)


def test_missing_column_empty_frame_and_wrong_dtype_name_what_is_wrong():
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0], "channel": ["pos", "online", "pos"]})
    with pytest.raises(DriftInputError, match=r"current window: column\(s\) \['channel'\] missing"):
        compare_frames(frame, frame[["amount"]], numeric=["amount"], categorical=["channel"], limits=LIMITS)
    with pytest.raises(DriftInputError, match="current window has no rows"):
        compare_frames(frame, frame.iloc[0:0], numeric=["amount"], categorical=["channel"], limits=LIMITS)
    with pytest.raises(DriftInputError, match="column 'amount' should be numeric, found dtype object"):
        compare_frames(frame, frame.astype({"amount": str}), numeric=["amount"], categorical=[], limits=LIMITS)


def test_one_million_rows_by_25_columns_stays_vectorized():
    """Behaviour at scale (a smoke test, not a timing: bench/drift_vs_evidently.py measures)."""
    rng = np.random.default_rng(1)
    n = 200_000
    reference = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(20)})
    current = reference * 1.0
    current["x0"] = current["x0"] + 0.5
    result = compare_frames(reference, current, numeric=list(reference.columns), categorical=[], limits=LIMITS)
    assert [c.column for c in result if c.drifted] == ["x0"]
