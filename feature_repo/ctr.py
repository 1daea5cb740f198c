"""Features of the click-through-rate pipeline: an ad's recent delivery and click rate."""

from __future__ import annotations

from datetime import timedelta

from _paths import offline_source
from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

ad = Entity(name="ad", join_keys=["ad_id"], value_type=ValueType.INT64, description="An ad creative.")

ad_stats_source = FileSource(
    name="ad_stats_source",
    path=offline_source("ctr", "ad_stats"),
    timestamp_field="event_timestamp",
    description="Daily rolling aggregates of an ad's impressions, stamped at the end of the day.",
)

ad_stats = FeatureView(
    name="ad_stats",
    entities=[ad],
    ttl=timedelta(days=2),
    schema=[
        Field(name="clicked_count_1d", dtype=Int64, description="Impressions on the previous day."),
        Field(name="clicked_count_7d", dtype=Int64, description="Impressions over the last 7 days."),
        Field(name="clicked_mean_7d", dtype=Float64, description="Click rate over the last 7 days."),
        Field(name="bid_price_mean_7d", dtype=Float64, description="Mean bid over the last 7 days."),
    ],
    online=True,
    source=ad_stats_source,
    tags={"pipeline": "ctr", "owner": "growth"},
)

ctr_model_v1 = FeatureService(
    name="ctr_model_v1",
    features=[ad_stats],
    tags={"pipeline": "ctr"},
    description="Features the CTR model reads.",
)
