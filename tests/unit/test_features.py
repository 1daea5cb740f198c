"""Feature tables are point-in-time correct; snapshot digests identify content."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mlflywheel.services.config import Aggregation, FeatureViewSpec
from mlflywheel.services.features import frame_digest, rolling_features

pytestmark = pytest.mark.unit
VIEW = FeatureViewSpec(name="v", entity="user_id", aggregations=[
    Aggregation(column="amount", aggs=["count", "mean", "max"], windows_days=[1, 3])])


def _rows(*rows):
    frame = pd.DataFrame(rows, columns=["user_id", "ts", "amount"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def test_rolling_features_use_only_the_past():
    frame = _rows((1, "2026-05-01 10:00", 10.0), (1, "2026-05-02 09:00", 30.0), (1, "2026-05-02 18:00", 50.0),
                  (2, "2026-05-03 12:00", 7.0))
    days = [dt.date(2026, 5, 1), dt.date(2026, 5, 2), dt.date(2026, 5, 3), dt.date(2026, 5, 4)]
    table = rolling_features(frame, VIEW, timestamp="ts", days=days).set_index(["user_id", "event_timestamp"])
    u1_may3 = table.loc[(1, pd.Timestamp("2026-05-03", tz="UTC"))]  # stamped end of May 2: sees May 1-2 only
    assert u1_may3["amount_count_1d"] == 2 and u1_may3["amount_count_3d"] == 3
    assert u1_may3["amount_mean_1d"] == pytest.approx(40.0)
    assert u1_may3["amount_mean_3d"] == pytest.approx(30.0)
    assert u1_may3["amount_max_3d"] == 50.0
    u1_may4 = table.loc[(1, pd.Timestamp("2026-05-04", tz="UTC"))]  # quiet May 3: 1-day window empty
    assert u1_may4["amount_count_1d"] == 0 and pd.isna(u1_may4["amount_mean_1d"])
    assert u1_may4["amount_count_3d"] == 3
    assert (2, pd.Timestamp("2026-05-03", tz="UTC")) not in table.index  # no activity yet: no row
    assert table.loc[(2, pd.Timestamp("2026-05-04", tz="UTC")), "amount_max_1d"] == 7.0
    assert str(table["amount_count_3d"].dtype) == "int64"


def test_window_drops_days_that_left_it():
    frame = _rows((1, "2026-05-01 10:00", 100.0), (1, "2026-05-04 10:00", 1.0))
    days = [dt.date(2026, 5, 4)]
    row = rolling_features(frame, VIEW, timestamp="ts", days=days).iloc[0]
    assert row["amount_count_3d"] == 1 and row["amount_max_3d"] == 1.0  # May 1 is outside May 2-4


def test_digest_changes_with_content_not_with_copies():
    a = _rows((1, "2026-05-01", 1.0), (2, "2026-05-01", 2.0))
    assert frame_digest(a) == frame_digest(a.copy())
    b = a.copy()
    b.loc[1, "amount"] = 2.5
    assert frame_digest(a) != frame_digest(b)
    assert frame_digest(a) != frame_digest(a.astype({"amount": "float32"}))
