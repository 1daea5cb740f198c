"""Sample data: deterministic, realistic rates, drift that moves what it says, named defects."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlflywheel.services.data.generate import (
    BAD_DATA_KINDS,
    generate_ctr_day,
    generate_fraud_day,
    inject_bad_data,
)

pytestmark = pytest.mark.unit
DAYS = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(20)]


def test_fraud_is_deterministic_and_unique():
    a, b = generate_fraud_day(DAYS[0]), generate_fraud_day(DAYS[0])
    pd.testing.assert_frame_equal(a, b)
    assert a["transaction_id"].is_unique
    assert str(a["event_timestamp"].dtype) == "datetime64[ms, UTC]"
    assert (a["event_timestamp"].dt.date == DAYS[0]).all()
    assert not generate_fraud_day(DAYS[1])["transaction_id"].isin(a["transaction_id"]).any()


def test_fraud_rate_is_one_to_three_percent():
    frame = pd.concat([generate_fraud_day(d) for d in DAYS])
    assert 0.01 <= frame["is_fraud"].mean() <= 0.03


def test_fraud_is_learnable_from_amount_relative_to_user_history():
    frame = pd.concat([generate_fraud_day(d) for d in DAYS])
    typical = frame[frame.is_fraud == 0].groupby("user_id")["amount"].median()
    ratio = frame["amount"] / frame["user_id"].map(typical)
    assert ratio[frame.is_fraud == 1].median() > 3 * ratio[frame.is_fraud == 0].median()


def test_holiday_scenario_shifts_amounts_and_categories():
    base = pd.concat([generate_fraud_day(d) for d in DAYS[:7]])
    holiday = pd.concat([generate_fraud_day(d, scenario="holiday") for d in DAYS[:7]])
    assert holiday["amount"].median() > 1.4 * base["amount"].median()
    share = lambda f, c: (f["merchant_category"] == c).mean()  # noqa: E731
    assert share(holiday, "electronics") > 1.5 * share(base, "electronics")


def test_ctr_rates_and_signal():
    frame = pd.concat([generate_ctr_day(d) for d in DAYS[:10]])
    assert 0.02 <= frame["clicked"].mean() <= 0.1
    by_position = frame.groupby("position")["clicked"].mean()
    assert by_position.loc[1] > 2 * by_position.loc[10]


@pytest.mark.parametrize("kind", BAD_DATA_KINDS)
def test_each_defect_changes_the_frame(fraud_day, kind):
    broken = inject_bad_data(fraud_day, kind, id_column="transaction_id", timestamp="event_timestamp")
    assert not broken.equals(fraud_day)
    assert len(fraud_day) > 0 and fraud_day["amount"].notna().all()  # the input is untouched


def test_unknown_defect_is_refused(fraud_day):
    with pytest.raises(ValueError, match="unknown bad-data kind 'typo'"):
        inject_bad_data(fraud_day, "typo", id_column="transaction_id", timestamp="event_timestamp")
    assert np.isfinite(fraud_day["amount"]).all()
