"""Seeded sample datasets for the shipped pipelines, written to the landing zone by day.

``fraud``: card transactions. Fraud comes mostly from compromised accounts: bursts of
online, high-amount purchases in risky categories, often abroad, so it is learnable from
the user's history (Feast aggregates) together with the request itself. 1-3 % positives.

``ctr``: ad impressions. Clicks depend on the ad's latent quality (learnable from its past
click rate), the slot position, placement and device. About 5-8 % positives.

Scenarios inject named drift (``holiday``: amounts up, category mix towards electronics,
fashion and travel, fraud moves to domestic digital goods). :func:`inject_bad_data` breaks
a frame in one named way for the validation tests and demos.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

MERCHANT_CATEGORIES = ["grocery", "restaurants", "fuel", "electronics", "travel", "fashion",
                       "digital_goods", "health"]
CHANNELS = ["pos", "online", "mobile"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "MX"]
AGE_BANDS = ["18-25", "26-40", "41-60", "60+"]
SCENARIOS = ("none", "holiday")
BAD_DATA_KINDS = ("missing_column", "wrong_dtype", "null_required", "out_of_range",
                  "duplicate_ids", "empty", "future_timestamps", "unknown_category")


def day_rng(seed: int, name: str, day: dt.date) -> np.random.Generator:
    """A generator for one (seed, stream, day): the same day always draws the same numbers."""
    import numpy as np

    digest = hashlib.sha256(f"{seed}:{name}:{day.isoformat()}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _timestamps(rng: np.random.Generator, day: dt.date, n: int, night_share: np.ndarray) -> pd.Series:
    import pandas as pd

    day_seconds = rng.uniform(7 * 3600, 23 * 3600, n)
    night = rng.random(n) < night_share
    day_seconds[night] = rng.uniform(0, 6 * 3600, night.sum())
    base = pd.Timestamp(day)
    return pd.Series(base + pd.to_timedelta(day_seconds.round(3), unit="s")).astype("datetime64[ms]")


class _FraudUsers:
    """Per-user traits, fixed by the seed (independent of the day)."""

    def __init__(self, seed: int, n_users: int) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.n = n_users
        self.ids = np.arange(100_000, 100_000 + n_users, dtype="int64")
        self.home = rng.choice(len(COUNTRIES), n_users, p=[.4, .12, .1, .08, .07, .06, .05, .05, .04, .03])
        self.log_mean = rng.normal(3.6, 0.6, n_users)          # typical amount ~ e^3.6 = 37
        self.rate = rng.gamma(2.0, 0.25, n_users)              # txns per day, mean 0.5
        self.age = rng.choice(len(AGE_BANDS), n_users, p=[.2, .35, .3, .15])
        self.fav_cat = rng.choice(len(MERCHANT_CATEGORIES), n_users)


def generate_fraud_day(day: dt.date, *, seed: int = 7, n_users: int = 3000,
                       scenario: str = "none") -> pd.DataFrame:
    """One day of card transactions (deterministic for ``seed``, ``day`` and ``scenario``)."""
    import numpy as np
    import pandas as pd

    users = _FraudUsers(seed, n_users)
    rng = day_rng(seed, f"fraud:{scenario}", day)
    holiday = scenario == "holiday"

    # Normal traffic.
    counts = rng.poisson(users.rate * (1.3 if holiday else 1.0))
    uidx = np.repeat(np.arange(users.n), counts)
    n = len(uidx)
    cat_p = np.array([.25, .18, .12, .08, .07, .12, .08, .10])
    if holiday:
        cat_p = np.array([.15, .15, .07, .20, .15, .18, .05, .05])
    cats = np.where(rng.random(n) < 0.4, users.fav_cat[uidx], rng.choice(len(cat_p), n, p=cat_p))
    amounts = np.exp(users.log_mean[uidx] + rng.normal(0, 0.5, n)) * (1.6 if holiday else 1.0)
    channels = rng.choice(3, n, p=[.55, .3, .15])
    abroad = rng.random(n) < 0.04
    countries = np.where(abroad, rng.choice(len(COUNTRIES), n), users.home[uidx])
    fraud = rng.random(n) < 0.002                              # background card-testing noise
    amounts[fraud] *= rng.uniform(1.5, 4, fraud.sum())
    night = np.full(n, 0.08)

    # Compromised accounts: a burst of fraudulent purchases.
    compromised = np.flatnonzero(rng.random(users.n) < 0.0015)
    burst = rng.integers(3, 9, len(compromised))
    cidx = np.repeat(compromised, burst)
    m = len(cidx)
    risky = [MERCHANT_CATEGORIES.index(c) for c in
             (["digital_goods", "electronics"] if holiday else ["electronics", "digital_goods", "travel"])]
    c_cats = rng.choice(risky, m)
    c_amounts = np.exp(users.log_mean[cidx] + rng.normal(0, 0.4, m)) * rng.uniform(3, 10, m)
    c_channels = rng.choice(3, m, p=[.05, .8, .15])
    c_abroad = rng.random(m) < (0.25 if holiday else 0.65)
    c_countries = np.where(c_abroad, rng.choice(len(COUNTRIES), m), users.home[cidx])

    uidx = np.concatenate([uidx, cidx])
    frame = pd.DataFrame({
        "user_id": users.ids[uidx],
        "merchant_id": np.concatenate([
            rng.integers(1, 4000, n), rng.integers(3500, 4000, m)]).astype("int64"),
        "merchant_category": np.array(MERCHANT_CATEGORIES)[np.concatenate([cats, c_cats])],
        "amount": np.round(np.clip(np.concatenate([amounts, c_amounts]), 0.5, 25_000), 2),
        "channel": np.array(CHANNELS)[np.concatenate([channels, c_channels])],
        "country": np.array(COUNTRIES)[np.concatenate([countries, c_countries])],
        "age_band": np.array(AGE_BANDS)[users.age[uidx]],
        "is_fraud": np.concatenate([fraud, np.ones(m, bool)]).astype("int64"),
    })
    night = np.concatenate([night, np.full(m, 0.45)])
    order = rng.permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.insert(0, "event_timestamp", _timestamps(rng, day, len(frame), night[order]).to_numpy())
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize("UTC")
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    frame.insert(0, "transaction_id", [f"tx-{day:%Y%m%d}-{i:06d}" for i in range(len(frame))])
    return frame


def generate_ctr_day(day: dt.date, *, seed: int = 11, n_ads: int = 400,
                     scenario: str = "none") -> pd.DataFrame:
    """One day of ad impressions with a ``clicked`` label."""
    import numpy as np
    import pandas as pd

    base = np.random.default_rng(seed)
    quality = base.normal(-3.0, 0.7, n_ads)                     # latent log-odds per ad
    ad_bid = base.gamma(3.0, 0.4, n_ads)
    rng = day_rng(seed, f"ctr:{scenario}", day)
    n = int(rng.integers(2200, 2800))
    ad = rng.integers(0, n_ads, n)
    placement = rng.choice(3, n, p=[.5, .3, .2])                # feed, search, sidebar
    device = rng.choice(3, n, p=[.45, .35, .2])                 # android, ios, desktop
    position = rng.integers(1, 11, n)
    age = rng.choice(len(AGE_BANDS), n, p=[.25, .35, .25, .15])
    logit = (quality[ad] + np.array([0.0, 0.8, -0.6])[placement] + np.array([0.1, 0.2, -0.2])[device]
             - 0.18 * (position - 1) + (0.5 if scenario == "holiday" else 0.0))
    clicked = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({
        "ad_id": (5000 + ad).astype("int64"),
        "placement": np.array(["feed", "search", "sidebar"])[placement],
        "device": np.array(["android", "ios", "desktop"])[device],
        "position": position.astype("int64"),
        "bid_price": np.round(ad_bid[ad] * rng.uniform(0.8, 1.2, n), 4),
        "user_age_band": np.array(AGE_BANDS)[age],
        "clicked": clicked.astype("int64"),
    })
    frame.insert(0, "event_timestamp", _timestamps(rng, day, n, np.full(n, 0.1)).to_numpy())
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize("UTC")
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    frame.insert(0, "impression_id", [f"imp-{day:%Y%m%d}-{i:06d}" for i in range(n)])
    return frame


GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "fraud": generate_fraud_day,
    "ctr": generate_ctr_day,
}


def inject_bad_data(frame: pd.DataFrame, kind: str, *, id_column: str, timestamp: str,
                    seed: int = 0) -> pd.DataFrame:
    """Return a copy of ``frame`` broken in one named way (see ``BAD_DATA_KINDS``).

    The column used for the numeric and category defects is the first float and the first
    string column that is not the id, so the same kinds apply to every dataset.
    """
    import numpy as np
    import pandas as pd

    if kind not in BAD_DATA_KINDS:
        raise ValueError(f"unknown bad-data kind {kind!r}; expected one of {BAD_DATA_KINDS}")
    out = frame.copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(out), size=max(1, len(out) // 100), replace=False)
    floats = [c for c in out.columns if pd.api.types.is_float_dtype(out[c])]
    strings = [c for c in out.columns if pd.api.types.is_object_dtype(out[c]) and c != id_column]
    if kind == "missing_column":
        return out.drop(columns=[floats[0]])
    if kind == "wrong_dtype":
        out[floats[0]] = out[floats[0]].astype(str)
    elif kind == "null_required":
        out.loc[rows, floats[0]] = np.nan
    elif kind == "out_of_range":
        out.loc[rows, floats[0]] = -abs(out.loc[rows, floats[0]]) - 1.0
    elif kind == "duplicate_ids":
        out.loc[rows, id_column] = out[id_column].iloc[0]
    elif kind == "empty":
        return out.iloc[0:0]
    elif kind == "future_timestamps":
        out.loc[rows, timestamp] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)
    elif kind == "unknown_category":
        out.loc[rows, strings[0]] = "__not_a_category__"
    return out


def write_landing(config: PipelineConfig, ws: Workspace, *, start: dt.date, end: dt.date, scenario: str = "none",
                  scenario_start: dt.date | None = None, seed: int | None = None) -> list[str]:
    """Generate and write ``config``'s sample data for days ``start <= d < end``.

    Days on or after ``scenario_start`` (default ``start``) use ``scenario``. Each day is a
    separate atomic partition, so re-running overwrites the same files with the same rows.

    Returns:
        The partition paths written.
    """
    from mlflywheel.services.data.io import days_between, partition_path, write_parquet_atomic
    from mlflywheel.services.errors import ConfigError

    name = config.data.generator
    if name not in GENERATORS:
        raise ConfigError(f"pipeline {config.name!r}: data.generator is {name!r}; "
                          f"expected one of {sorted(GENERATORS)}")
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    generator = GENERATORS[name]
    kwargs = {} if seed is None else {"seed": seed}
    written = []
    for day in days_between(start, end):
        drifting = scenario != "none" and day >= (scenario_start or start)
        frame = generator(day, scenario=scenario if drifting else "none", **kwargs)
        written.append(str(write_parquet_atomic(frame, partition_path(config, ws, day))))
    return written
