"""Features of the fraud pipeline: a user's recent card activity."""

from __future__ import annotations

from datetime import timedelta

from _paths import offline_source
from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
              description="A card holder.")

user_txn_stats_source = FileSource(
    name="user_txn_stats_source",
    path=offline_source("fraud", "user_txn_stats"),
    timestamp_field="event_timestamp",
    description="Daily rolling aggregates of a user's transactions, stamped at the end of the day.",
)

user_txn_stats = FeatureView(
    name="user_txn_stats",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="amount_count_1d", dtype=Int64, description="Transactions on the previous day."),
        Field(name="amount_count_7d", dtype=Int64, description="Transactions over the last 7 days."),
        Field(name="amount_count_30d", dtype=Int64, description="Transactions over the last 30 days."),
        Field(name="amount_mean_7d", dtype=Float64, description="Mean amount over the last 7 days."),
        Field(name="amount_mean_30d", dtype=Float64, description="Mean amount over the last 30 days."),
        Field(name="amount_max_30d", dtype=Float64, description="Largest amount over the last 30 days."),
    ],
    online=True,
    source=user_txn_stats_source,
    tags={"pipeline": "fraud", "owner": "ml-platform"},
)

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[user_txn_stats],
    tags={"pipeline": "fraud"},
    description="Features the fraud model reads, in training (point in time) and serving (online).",
)
