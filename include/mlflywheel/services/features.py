"""Feast: feature tables from landing data, apply, materialize, point-in-time training frames.

The Feast repo (``feature_repo/``) declares entities, sources, views and one versioned
feature service per model. This module does the imperative part:

1. :func:`build_feature_tables` computes each view's rolling aggregates from the landing
   zone, one Parquet file per day, stamped at the end of that day (a transaction on day D+1
   sees aggregates up to day D: no leakage), and writes them atomically to the view's
   offline source.
2. :func:`apply_repo` registers the repo's objects (idempotent: Feast diffs and updates).
3. :func:`materialize` loads the online store up to the interval end.
4. :func:`training_frame` joins the window's rows to the features point in time with
   ``get_historical_features``.

The ``feature_materialize`` stage (:mod:`mlflywheel.stages.feature_materialize`) runs these
in order and writes the snapshot; the drift monitor, batch scoring and the model server's
online lookup use the same store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import logging
import os
import string
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.data.io import (
    available_days,
    days_between,
    read_days,
    write_parquet_atomic,
)
from mlflywheel.services.errors import ConfigError, FeatureError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from mlflywheel.services.config import FeatureViewSpec, PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)
FEAST_TS = "event_timestamp"


def load_store(ws: Workspace) -> FeatureStore:
    """A ``FeatureStore`` from the repo's ``feature_store.yaml`` (``${FLYWHEEL_HOME}`` filled in)."""
    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    path = ws.feature_repo / "feature_store.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: feature_store.yaml not found (FLYWHEEL_FEATURE_REPO={ws.feature_repo})")
    env = {**os.environ, "FLYWHEEL_HOME": str(ws.home)}
    raw = yaml.safe_load(string.Template(path.read_text()).safe_substitute(env))
    if ws.feast_online_store:
        raw["online_store"] = online_store_config(ws.feast_online_store)
    if ws.feast_project:
        raw["project"] = ws.feast_project
    (ws.feast_dir).mkdir(parents=True, exist_ok=True)
    config = RepoConfig(**raw)
    config.repo_path = ws.feature_repo
    return FeatureStore(config=config)


def online_store_config(url: str) -> dict[str, Any]:
    """The ``online_store`` section for ``FLYWHEEL_FEAST_ONLINE_STORE``.

    ``redis://[:password@]host[:port][/db]`` (``rediss://`` for TLS) becomes Feast's Redis
    store, ``{"type": "redis", "connection_string": "host:port,db=N[,password=...][,ssl=true]"}``;
    the rest of ``feature_store.yaml`` is kept.

    Raises:
        ConfigError: the URL is not a Redis URL, or its database is not a number.
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(f"FLYWHEEL_FEAST_ONLINE_STORE: expected redis://[:password@]host[:port][/db], "
                          f"found {url!r}")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"FLYWHEEL_FEAST_ONLINE_STORE: the database after the port must be a number, "
                          f"found {db!r} in {url!r}")
    params = [f"{parts.hostname}:{parts.port or 6379}", f"db={int(db)}"]
    for key, value in (("username", parts.username), ("password", parts.password)):
        if value:
            if "," in unquote(value):
                raise ConfigError(f"FLYWHEEL_FEAST_ONLINE_STORE: Feast's connection string cannot carry "
                                  f"a {key} with a comma")
            params.append(f"{key}={unquote(value)}")
    if parts.scheme == "rediss":
        params.append("ssl=true")
    return {"type": "redis", "connection_string": ",".join(params)}


def repo_objects(ws: Workspace) -> list[Any]:
    """Every Feast object declared in the repo's Python files (without changing the cwd)."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    kinds = (Entity, FeatureView, FeatureService, DataSource)
    objects: list[Any] = []
    repo = ws.feature_repo
    sys.path.insert(0, str(repo))
    try:
        for file in sorted(repo.glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"_flywheel_feature_repo.{file.stem}", file)
            if spec is None or spec.loader is None:
                raise ImportError(f"{file}: not loadable as a Python module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            for value in vars(module).values():
                if isinstance(value, kinds) and not any(value is o for o in objects):
                    objects.append(value)
    finally:
        sys.path.remove(str(repo))
    return objects


def apply_repo(store: FeatureStore, ws: Workspace) -> list[str]:
    """``feast apply`` for the repo's objects; returns the feature view names."""
    from feast import FeatureView

    objects = repo_objects(ws)
    store.apply(objects, partial=True)
    return sorted(o.name for o in objects if isinstance(o, FeatureView))


def check_views(store: FeatureStore, config: PipelineConfig) -> None:
    """The registry's views and service match what the pipeline config computes."""
    try:
        service = store.get_feature_service(config.features.feature_service)
    except Exception as exc:
        raise FeatureError(f"feature service {config.features.feature_service!r} (features.feature_service "
                           f"in {config.name}.yaml) is not declared in the Feast repo: {exc}") from exc
    _match_service(config, service, lambda name: store.get_feature_view(name))


def check_repo(objects: list[Any], config: PipelineConfig) -> None:
    """:func:`check_views` on the repo's declared objects (:func:`repo_objects`), before any
    ``feast apply``: the service exists, serves the config's views, and each view declares
    exactly the features the config computes, keyed by the config's entity column."""
    from feast import Entity, FeatureService, FeatureView

    services = {o.name: o for o in objects if isinstance(o, FeatureService)}
    entities = {o.name: o.join_key for o in objects if isinstance(o, Entity)}
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    name = config.features.feature_service
    if name not in services:
        raise FeatureError(f"feature service {name!r} (features.feature_service in {config.name}.yaml) is not "
                           f"declared in the Feast repo; it declares {sorted(services)}")
    _match_service(config, services[name], views.__getitem__)
    for spec in config.features.views:
        keys = [entities.get(e, e) for e in views[spec.name].entities]
        if keys != [spec.entity]:
            raise FeatureError(f"feature view {spec.name!r}: joined on {keys} in the Feast repo but "
                               f"{config.name}.yaml says entity {spec.entity!r}")


def _match_service(config: PipelineConfig, service: Any, get_view: Any) -> None:
    served = {p.name for p in service.feature_view_projections}
    for view in config.features.views:
        if view.name not in served:
            raise FeatureError(f"feature view {view.name!r} is not part of feature service "
                               f"{service.name!r} (serves {sorted(served)})")
        declared = {f.name for f in get_view(view.name).features}
        computed = set(view.feature_names())
        if declared != computed:
            raise FeatureError(
                f"feature view {view.name!r}: the repo declares {sorted(declared)} but "
                f"{config.name}.yaml computes {sorted(computed)}; missing in repo: "
                f"{sorted(computed - declared)}, not computed: {sorted(declared - computed)}")


# --- feature tables --------------------------------------------------------------------
def rolling_features(frame: pd.DataFrame, view: FeatureViewSpec, *, timestamp: str,
                     days: list[dt.date]) -> pd.DataFrame:
    """Rolling aggregates per entity for each day in ``days``, stamped at the day's end.

    Args:
        frame: landing rows covering ``days`` and the longest window before them.
        view: the view's aggregation spec.
        timestamp: the event timestamp column of ``frame``.
        days: the days to emit rows for.
    """
    import numpy as np
    import pandas as pd

    entity = view.entity
    max_window = max(w for a in view.aggregations for w in a.windows_days)
    first = days[0] - dt.timedelta(days=max_window - 1)
    grid = pd.DatetimeIndex(pd.date_range(first, days[-1], freq="D"))
    day_col = frame[timestamp].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    out: dict[str, pd.DataFrame] = {}
    entities = np.sort(frame[entity].unique())
    activity = None
    for agg in view.aggregations:
        grouped = frame.assign(_day=day_col).groupby([entity, "_day"])[agg.column]
        stats = {"count": grouped.count(), "sum": grouped.sum(), "min": grouped.min(), "max": grouped.max()}
        wide = {k: v.unstack("_day").reindex(index=entities, columns=grid) for k, v in stats.items()}
        wide["count"] = wide["count"].fillna(0)
        wide["sum"] = wide["sum"].fillna(0.0)
        for window in agg.windows_days:
            roll = {k: wide[k].T.rolling(window, min_periods=1) for k in wide}
            count = roll["count"].sum().T
            if activity is None or window == max_window:
                activity = count if activity is None else np.maximum(activity, count)
            for name in agg.aggs:
                if name == "count":
                    value = count
                elif name == "sum":
                    value = roll["sum"].sum().T
                elif name == "mean":
                    value = roll["sum"].sum().T / count.where(count > 0)
                else:
                    value = getattr(roll[name], name)().T
                out[f"{agg.column}_{name}_{window}d"] = value
    if activity is None:  # unreachable: max() above already refused a view without windows
        raise FeatureError(f"feature view {view.name!r}: no aggregation windows")
    emit = pd.DatetimeIndex(pd.to_datetime(days))
    frames = {k: v.loc[:, emit].stack(future_stack=True) for k, v in out.items()}
    table = pd.DataFrame(frames)
    active = activity.loc[:, emit].stack(future_stack=True) > 0
    table = table[active.reindex(table.index).fillna(False).to_numpy()]
    table.index.names = [entity, "_day"]
    table = table.reset_index()
    for name in table.columns:
        if "_count_" in name:
            table[name] = table[name].fillna(0).astype("int64")
    # Microseconds, not pandas' nanoseconds: Spark cannot read TIMESTAMP(NANOS) Parquet columns.
    stamps = (table.pop("_day") + pd.Timedelta(days=1)).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    table.insert(1, FEAST_TS, stamps)
    return table.sort_values([FEAST_TS, entity], kind="stable").reset_index(drop=True)


def offline_source_dir(store: FeatureStore, view_name: str) -> Path:
    from feast import FileSource

    source = store.get_feature_view(view_name).batch_source
    if not isinstance(source, FileSource):
        raise FeatureError(f"feature view {view_name!r}: batch source {source!r} is not a FileSource")
    return Path(source.path)


def build_feature_tables(config: PipelineConfig, ws: Workspace, store: FeatureStore,
                         days: list[dt.date]) -> dict[str, int]:
    """Write each view's daily feature files for ``days`` (atomic, idempotent per day)."""
    import pandas as pd

    rows: dict[str, int] = {}
    landing = set(available_days(config, ws))
    for view in config.features.views:
        max_window = max(w for a in view.aggregations for w in a.windows_days)
        needed = days_between(days[0] - dt.timedelta(days=max_window - 1), days[-1] + dt.timedelta(days=1))
        present = [d for d in needed if d in landing]
        if not present:
            raise FeatureError(f"feature view {view.name!r}: no landing data between {needed[0]} and {needed[-1]}")
        cols = sorted({view.entity, config.data.timestamp, *(a.column for a in view.aggregations)})
        frame = read_days(config, ws, present)
        missing = sorted(set(cols) - set(frame.columns))
        if missing:
            raise FeatureError(f"feature view {view.name!r}: landing data lacks column(s) {missing}")
        table = rolling_features(frame[cols], view, timestamp=config.data.timestamp, days=days)
        target = offline_source_dir(store, view.name)
        for day in days:
            stamp = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")
            write_parquet_atomic(table[table[FEAST_TS] == stamp], target / f"{day.isoformat()}.parquet")
        rows[view.name] = len(table)
        log.info("feature view %s: %d rows for %s..%s -> %s", view.name, len(table), days[0], days[-1], target)
    return rows


def materialize(store: FeatureStore, config: PipelineConfig, end: dt.datetime) -> None:
    """Load the online store with each view's latest values up to ``end``."""
    names = [v.name for v in config.features.views]
    ttls = [store.get_feature_view(n).ttl for n in names]
    known = [t for t in ttls if t is not None]
    if len(known) != len(ttls):
        raise TypeError(f"feature views {names}: a view without a ttl cannot be materialized")
    ttl = max(known)
    store.materialize(start_date=end - ttl, end_date=end, feature_views=names)


# --- training frame --------------------------------------------------------------------
def frame_digest(frame: pd.DataFrame) -> str:
    """A content digest of a frame: column names, dtypes and values, independent of file format."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:20]


def training_frame(config: PipelineConfig, ws: Workspace, store: FeatureStore,
                   days: list[dt.date]) -> pd.DataFrame:
    """Landing rows of ``days`` joined point-in-time to the pipeline's feature service."""
    data = config.data
    sensitive = config.gate.fairness.sensitive_attribute
    keep = list(dict.fromkeys([data.id_column, data.timestamp, data.entity, *config.features.request_features,
                               sensitive, data.label]))
    entity_df = read_days(config, ws, days)
    missing = sorted(set(keep) - set(entity_df.columns))
    if missing:
        raise FeatureError(f"landing data of {config.name!r} lacks column(s) {missing} needed for training")
    entity_df = entity_df[keep].rename(columns={data.timestamp: FEAST_TS})
    service = store.get_feature_service(config.features.feature_service)
    frame = store.get_historical_features(entity_df=entity_df, features=service,
                                          full_feature_names=False).to_df()
    frame = frame.rename(columns={FEAST_TS: data.timestamp})
    ordered = keep + sorted(c for c in frame.columns if c not in keep)
    return frame[ordered].sort_values([data.timestamp, data.id_column], kind="stable").reset_index(drop=True)
