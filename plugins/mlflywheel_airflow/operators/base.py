"""What every mlflywheel operator shares: its pipeline config, its data interval, its errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel_airflow.hooks.mlflow import MlflowHook

T = TypeVar("T")
#: Data interval of the run; an asset-triggered run has none and falls back to run_after.
INTERVAL_START = "{{ data_interval_start or '' }}"
INTERVAL_END = "{{ data_interval_end or dag_run.run_after }}"


class PipelineOperator(BaseOperator):
    """Base for operators that run one step of a pipeline for one data interval.

    :param pipeline: pipeline name: ``include/pipelines/<pipeline>.yaml`` (templated)
    :param interval_start: start of the data interval, ISO 8601; empty means one day
        before the end (templated)
    :param interval_end: end of the data interval, ISO 8601 (templated)
    """

    template_fields: Sequence[str] = ("pipeline", "interval_start", "interval_end")
    #: which landing partitions the step reads, for the S3 mirror (``FLYWHEEL_LANDING_URI``):
    #: ``"interval"`` (the interval's days must exist), ``"history"`` (recent days, none
    #: required), ``None`` (no landing data)
    reads_landing: str | None = None

    def __init__(self, *, pipeline: str, interval_start: str = INTERVAL_START,
                 interval_end: str = INTERVAL_END, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.interval_start = interval_start
        self.interval_end = interval_end

    @cached_property
    def config(self) -> PipelineConfig:
        from mlflywheel.services.config import load_pipeline
        from mlflywheel.services.settings import Workspace

        return load_pipeline(Workspace.from_env().pipelines_dir / f"{self.pipeline}.yaml")

    def interval(self) -> tuple[dt.datetime, dt.datetime]:
        """The rendered interval as aware datetimes."""
        end = parse_time(self.interval_end, "interval_end")
        start = parse_time(self.interval_start, "interval_start") if given(self.interval_start) \
            else end - dt.timedelta(days=1)
        if start >= end:
            raise ValueError(f"interval_start {start} is not before interval_end {end}")
        return start, end

    def pre_execute(self, context: Context) -> None:
        """Mirror the landing partitions this step reads from ``FLYWHEEL_LANDING_URI`` (when set)."""
        if not self.reads_landing:
            return
        from mlflywheel.services.settings import Workspace

        ws = Workspace.from_env()
        if not ws.landing_uri:  # local landing zone: nothing to mirror, nothing to compute
            return
        from mlflywheel_airflow.hooks.storage import mirror_landing

        if self.reads_landing == "interval":
            start, end = self.interval()
        else:  # "history": a check at one instant (the drift DAG's runs have no interval)
            end = parse_time(self.interval_end, "interval_end")
            start = end - dt.timedelta(days=1)
        self.call_core(mirror_landing, self.config, ws, start=start, end=end,
                       require_interval=self.reads_landing == "interval")

    def call_core(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the core; deterministic failures (bad data, bad config) fail without retries."""
        from airflow.sdk.exceptions import AirflowFailException

        from mlflywheel.services.errors import FlywheelError

        try:
            return func(*args, **kwargs)
        except FlywheelError as exc:
            if exc.deterministic:
                raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
            raise


def check_if_exists(value: str, allowed: Sequence[str]) -> str:
    """Validate an ``if_exists`` argument in ``__init__`` (a DAG with a typo fails to parse)."""
    if value not in allowed:
        raise ValueError(f"if_exists must be one of {tuple(allowed)}, got {value!r}")
    return value


def skip_downstream(operator: Any, context: Context) -> list[str]:
    """Skip the tasks after ``operator`` in this run (a gate said no); returns their ids.

    A task whose trigger rule tolerates skipped upstreams (``batch_score`` runs with
    ``none_failed``: the champion still scores the day when a challenger is rejected) is
    left to the scheduler, and so is everything after it.
    """
    relatives = context["task"].get_flat_relatives(upstream=False)
    tolerant = [t for t in relatives if getattr(t.trigger_rule, "value", t.trigger_rule) != "all_success"]
    spared = {t.task_id for t in tolerant} | {r.task_id for t in tolerant
                                              for r in t.get_flat_relatives(upstream=False)}
    downstream = [t for t in relatives if not t.is_teardown and t.task_id not in spared]
    if downstream:
        operator.skip(ti=context["ti"], tasks=downstream)
    return [t.task_id for t in downstream]


def describe_trigger(context: Context) -> str:
    """Why this run exists: ``scheduled``, ``manual``, or the asset events (with their extras)."""
    dag_run = context["dag_run"]
    run_type = str(getattr(dag_run, "run_type", "unknown")).split(".")[-1].lower()
    if "asset" not in run_type:
        return run_type
    parts = []
    for asset, events in (context.get("triggering_asset_events") or {}).items():
        for event in events:
            reason = (event.extra or {}).get("reason", "")
            parts.append(f"{getattr(asset, 'uri', asset)}{f' ({reason})' if reason else ''}")
    return f"asset_triggered: {', '.join(parts) or 'unknown asset'}"


def given(value: Any) -> bool:
    """A templated argument was set (not ``None``, empty, or the string ``"None"``)."""
    return value not in (None, "", "None")


def parse_time(value: Any, field: str) -> dt.datetime:
    """A templated time field as an aware datetime (UTC when naive); a clear error naming ``field``."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif given(value):
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise ValueError(f"{field}: expected an ISO 8601 datetime, found {value!r}") from exc
    else:
        raise ValueError(f"{field} is empty: the run has no data interval and no run_after")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


IF_EXISTS = ("skip", "replace", "fail")


class MlflowOperator(PipelineOperator):
    """A pipeline operator that talks to MLflow through :class:`~mlflywheel_airflow.hooks.mlflow.MlflowHook`.

    :param mlflow_conn_id: MLflow connection (absent means the embedded store)
    """

    def __init__(self, *, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        from mlflywheel_airflow.hooks.mlflow import MlflowHook

        return MlflowHook(self.mlflow_conn_id)


def require_result(value: Any, keys: Sequence[str], field: str) -> dict[str, Any]:
    """The upstream task's result as a dict holding ``keys``; a clear error naming ``field`` otherwise."""
    if not isinstance(value, dict) or any(k not in value for k in keys):
        raise ValueError(f"{field}: expected a dict with keys {list(keys)} (the upstream task's result), "
                         f"found {value!r:.200}")
    return value


def drift_trigger_extras(context: Context, uri: str) -> list[dict[str, Any]]:
    """Extras of the drift events (asset ``uri``) that triggered this run, oldest first (empty otherwise)."""
    found = []
    for asset, events in (context.get("triggering_asset_events") or {}).items():
        if getattr(asset, "uri", None) != uri:
            continue
        found += [dict(event.extra or {}) for event in events]
    return found
