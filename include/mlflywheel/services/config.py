"""PipelineConfig: the typed, validated form of ``include/pipelines/<name>.yaml``.

One YAML describes one pipeline: where its landing data lives, its entity/timestamp/label
columns, the expectation suite, the Feast feature views and service, the trainer and the
gate. Unknown keys, wrong types and missing files are errors that name the file and key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlflywheel.services.errors import ConfigError

NAME_RE = r"^[a-z][a-z0-9_]{0,39}$"
APPROVED_TAGS = frozenset({"mlflywheel", "training", "drift", "batch", "serving", "fraud",
                           "ctr", "example", "finance", "marketing"})
GATE_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1", "precision", "recall")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(_Strict):
    """When the training DAG runs: a nightly cron, or a drift event, whichever comes first."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    start_date: str = "2026-01-01"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"expected a 5-field cron expression, found {value!r}")
        return value


class DataSpec(_Strict):
    """The landing zone and the meaning of its columns."""

    landing: str = Field(description="folder of ds=YYYY-MM-DD partitions, relative to the landing root or absolute")
    entity: str
    id_column: str
    timestamp: str
    label: str
    generator: str | None = Field(default=None, description="sample-data generator name (flywheel data generate)")


class ValidationSpec(_Strict):
    suite: str = Field(description="expectation suite name: expectations/<suite>.json")
    future_tolerance_minutes: Annotated[int, Field(ge=0)] = 10


class Aggregation(_Strict):
    """One rolling aggregate: ``<column>_<agg>_<window>d`` over the entity's trailing days."""

    column: str
    aggs: list[Literal["count", "sum", "mean", "min", "max"]]
    windows_days: list[Annotated[int, Field(ge=1, le=365)]]


class FeatureViewSpec(_Strict):
    name: str
    entity: str
    aggregations: list[Aggregation] = Field(min_length=1)

    def feature_names(self) -> list[str]:
        return [f"{a.column}_{agg}_{w}d" for a in self.aggregations for agg in a.aggs
                for w in a.windows_days]


class FeatureSpec(_Strict):
    feature_service: str
    views: list[FeatureViewSpec] = Field(min_length=1)
    request_features: list[str] = Field(min_length=1, description="columns taken from the request row itself")


class TrainingSpec(_Strict):
    #: a built-in (sklearn_hgb, sklearn_logreg, torch_mlp), ``module.path:function``, or the name of an
    #: installed ``mlflywheel.trainers`` entry point (see mlflywheel.stages.train.contract)
    trainer: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")] = "sklearn_hgb"
    window_days: Annotated[int, Field(ge=2, le=365)] = 28
    holdout_days: Annotated[int, Field(ge=1, le=60)] = 5
    seed: int = 42
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    params: dict[str, int | float | str | bool | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _holdout_inside_window(self) -> TrainingSpec:
        if self.holdout_days >= self.window_days:
            raise ValueError(f"holdout_days ({self.holdout_days}) must be smaller than "
                             f"window_days ({self.window_days})")
        if not (self.categorical or self.numeric):
            raise ValueError("list the model inputs under categorical and/or numeric")
        return self


class MetricLimit(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> MetricLimit:
        if self.min is None and self.max is None:
            raise ValueError("give at least one of min or max")
        return self


class FairnessSpec(_Strict):
    sensitive_attribute: str
    max_demographic_parity_difference: Annotated[float, Field(ge=0, le=1)]
    max_equal_opportunity_difference: Annotated[float, Field(ge=0, le=1)]
    min_group_size: Annotated[int, Field(ge=1)] = 30
    min_group_positives: Annotated[int, Field(ge=1)] = 30


class GateSpec(_Strict):
    """What a challenger must pass. Empty thresholds are refused here and again at gate time."""

    decision_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    thresholds: dict[str, MetricLimit]
    champion_tolerance: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    fairness: FairnessSpec

    @field_validator("thresholds", "champion_tolerance")
    @classmethod
    def _known_metrics(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(GATE_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; expected some of {list(GATE_METRICS)}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _not_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("no thresholds configured: a gate without thresholds would bless any model")
        return value


class ParityLimits(_Strict):
    """How closely an exported variant must reproduce the native model on the holdout."""

    max_abs_diff: Annotated[float, Field(ge=0)]
    min_decision_agreement: Annotated[float, Field(ge=0, le=1)]
    max_metric_delta: Annotated[float, Field(ge=0)]


class ExportSpec(_Strict):
    """ONNX export: opset, parity limits per precision, execution-provider preference."""

    opset: Annotated[int, Field(ge=13, le=21)] = 17
    # Models train on float32 inputs (train.core.model_inputs), so fp32 ONNX reproduces them:
    # the shipped fraud HGB differs by 8.2e-7 at most on its holdout (bench/onnx_vs_native.py).
    fp32: ParityLimits = ParityLimits(max_abs_diff=1e-5, min_decision_agreement=0.9999, max_metric_delta=1e-4)
    int8: ParityLimits = ParityLimits(max_abs_diff=0.05, min_decision_agreement=0.99, max_metric_delta=0.005)
    providers: list[str] = Field(default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                          "CPUExecutionProvider"])


class SlaSpec(_Strict):
    """What the serving variant must reach on the serving provider."""

    single_row_p99_ms: Annotated[float, Field(gt=0)]
    min_rows_per_s: dict[int, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="batch size -> throughput floor")


class BenchmarkSpec(_Strict):
    batch_sizes: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(default_factory=lambda: [1, 32, 1024, 65536])
    serving_provider: str = "CPUExecutionProvider"
    seconds_per_point: Annotated[float, Field(gt=0, le=60)] = 1.0
    sla: SlaSpec | None = Field(default=None, description="required: no SLA means the benchmark gate fails closed")

    @model_validator(mode="after")
    def _sla_batches_measured(self) -> BenchmarkSpec:
        if self.sla is not None:
            missing = sorted(set(self.sla.min_rows_per_s) - set(self.batch_sizes))
            if missing:
                raise ValueError(f"sla.min_rows_per_s names batch sizes {missing} that batch_sizes does not measure")
        return self


class BatchSpec(_Strict):
    """Nightly batch scoring (``batch_score``): a spark-submit job over the interval's rows."""

    source: Literal["features", "landing"] = Field(
        default="features", description="features: landing rows joined point-in-time (in Spark) to the Feast "
                                        "offline sources, as in training; landing: the landing columns only")
    alias: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")] = "champion"
    schedule: str | None = Field(
        default=None, description="5-field cron of <pipeline>__batch_score (default: manual and backfill only; "
                                  "the training DAG's batch_score already scores every night)")
    required_columns: list[str] | None = Field(
        default=None, description="rows with a null here are quarantined (default: id, entity, request features)")
    max_bad_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    rows_per_partition: Annotated[int, Field(ge=1_000)] = 250_000
    arrow_batch_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 65_536
    spark_conf: dict[str, str] = Field(default_factory=dict, description="extra spark-submit --conf values")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else Schedule._five_fields(value)


class FeatureDriftLimits(_Strict):
    """Effect sizes at which one feature counts as drifted (p-values are reported, never decisive)."""

    psi: Annotated[float, Field(gt=0)] = 0.25
    wasserstein: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="numeric: Wasserstein distance divided by the reference's standard deviation")
    jensen_shannon: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.05, description="categorical (and numeric with at most 5 distinct values): JS distance "
                                  "(Evidently's default is 0.1; the holiday category mix shift is 0.099)")
    max_unseen_share: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01, description="categorical: share of current rows whose category the reference never saw")
    max_null_share_increase: Annotated[float, Field(ge=0, le=1)] = 0.05
    alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.01, description="significance level: an effect size counts only when its test (KS or "
                                  "chi-square) rejects at this level, so the false-positive rate stays below it")


class LiveMetricSpec(_Strict):
    """Concept drift: the champion's metrics on matured delayed labels vs its gate baseline."""

    label_delay_days: Annotated[int, Field(ge=0, le=120)] = Field(
        default=3, description="how long labels take to land (the generator's delay; the evaluated days end here)")
    window_days: Annotated[int, Field(ge=1, le=90)] = 3
    min_label_coverage: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.95, description="a day is evaluated only when this share of its rows has a label")
    min_rows: Annotated[int, Field(ge=1)] = 1000
    min_positives: Annotated[int, Field(ge=1)] = 20
    max_drop: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"roc_auc": 0.05, "pr_auc": 0.10},
        description="metric -> largest tolerated drop below the champion's gate baseline")
    max_calibration_error: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.05, description="expected calibration error (10 bins) above which the champion is miscalibrated")

    @field_validator("max_drop")
    @classmethod
    def _known_live_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {"roc_auc", "pr_auc"})
        if unknown:
            raise ValueError(f"unknown live metric(s) {unknown}; expected some of ['roc_auc', 'pr_auc']")
        return value


class DriftSpec(_Strict):
    """The drift monitor (``<pipeline>__drift``): windows, limits and the retrain policy."""

    enabled: bool = True
    schedule: str = Field(default="0 * * * *", description="5-field cron of the drift DAG (default hourly)")
    window_days: Annotated[int, Field(ge=1, le=60)] = Field(
        default=1, description="current window: the newest landing partitions before the check")
    max_staleness_days: Annotated[int, Field(ge=1, le=60)] = Field(
        default=2, description="skip (with a reason) when the newest partition is older than this")
    min_rows: Annotated[int, Field(ge=1)] = Field(default=500, description="smaller windows are skipped, not judged")
    psi_bins: Annotated[int, Field(ge=4, le=100)] = 10
    limits: FeatureDriftLimits = Field(default_factory=FeatureDriftLimits)
    key_features: list[str] = Field(default_factory=list, description="drift in any of these alone triggers")
    max_drifted_share: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.3, description="trigger when at least this share of the model inputs drifted")
    prediction_psi: Annotated[float, Field(gt=0)] = Field(default=0.2, description="PSI of the score distribution")
    label_rate_max_relative_change: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="label-rate drift: |current - reference| / reference on matured labels")
    live: LiveMetricSpec = Field(default_factory=LiveMetricSpec)
    cooldown_hours: Annotated[float, Field(ge=0, le=24 * 60)] = Field(
        default=12, description="no second retrain trigger within this many hours of the last one")
    dedup_hours: Annotated[float, Field(ge=0, le=24 * 60)] = Field(
        default=72, description="the same reasons against the same champion version trigger once in this window")
    retrain_window_days: Annotated[int, Field(ge=2, le=365)] = Field(
        default=14, description="training window of a drift-triggered run (a sliding recent window)")
    report_max_rows: Annotated[int, Field(ge=1000)] = Field(
        default=50_000, description="rows per side sampled (seeded) into the Evidently HTML report")
    alert_emails: list[str] = Field(default_factory=list,
                                    description="SMTP notifier recipients (smtp_default); empty: the task log only")

    @field_validator("schedule")
    @classmethod
    def _drift_cron(cls, value: str) -> str:
        return Schedule._five_fields(value)


class ServingSpec(_Strict):
    """The model server (``flywheel serve``): binding, batching, limits, features, prediction log."""

    host: str = Field(default="127.0.0.1", description="bind address (loopback unless said otherwise)")
    port: Annotated[int, Field(ge=1, le=65535)] = 8000  # Airflow's API server has 8080
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retry_refused_s: Annotated[float, Field(ge=0)] = 60.0
    # rows per model call: one call, one log commit and one thread handoff serve the whole batch
    # (32-row requests at concurrency 32 gain about 1.5x going from 64 to 256 on one core)
    max_batch_size: Annotated[int, Field(ge=1, le=8192)] = 256
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    max_queue_rows: Annotated[int, Field(ge=1)] = 1024
    sessions: Annotated[int, Field(ge=1, le=64)] = Field(default=1, description="batches scored at once")
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    max_rows: Annotated[int, Field(ge=1, le=10_000)] = 256
    retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 1
    feast_lookup: bool = Field(default=True, description="off: records carry every model input themselves")
    feature_cache_ttl_s: Annotated[float, Field(ge=0, le=86400)] = 30.0
    unknown_entity: Literal["fallback", "reject"] = "fallback"
    fallback_features: dict[str, float | None] = Field(
        default_factory=dict, description="values for an unknown entity's store features (default null, "
                                          "which is what training saw for an entity without history)")
    log_path: str | None = Field(default=None, description="default $FLYWHEEL_HOME/serving/<pipeline>/predictions.db")
    log_synchronous: Literal["normal", "full"] = "normal"
    drain_grace_s: Annotated[float, Field(ge=0, le=600)] = 1.0
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class RolloutSpec(_Strict):
    """``deploy_canary``: traffic steps, bake times and the limits each step is judged by.

    No limit may be left out: a rollout without limits would promote anything (fail closed).
    """

    strategy: Literal["canary", "blue_green", "shadow_first"] = "canary"
    steps: list[Annotated[float, Field(gt=0, le=100)]] = Field(default_factory=lambda: [5.0, 20.0, 50.0, 100.0])
    bake_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 10.0
    shadow_bake_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 10.0
    analysis_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    min_requests: Annotated[int, Field(ge=1)] = Field(default=200, description="canary requests per step to judge it")
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = Field(default=0.01, description="canary non-2xx share")
    max_error_rate_increase: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.005, description="canary error rate minus champion error rate")
    max_p99_ms: Annotated[float, Field(gt=0)] = 50.0
    max_p99_ratio: Annotated[float, Field(gt=0)] = Field(default=1.5, description="canary p99 / champion p99")
    max_score_psi: Annotated[float, Field(gt=0)] = Field(default=0.2, description="PSI of canary vs champion scores")
    alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.05, description="overall false-alarm rate of the label test, spent across the steps")
    min_labels: Annotated[int, Field(ge=1)] = Field(default=200, description="labelled rows per arm for the label test")
    kserve: Literal["off", "manifests", "apply"] = Field(
        default="off", description="KServe InferenceService per deployment change: off, written to reports/, "
                                   "or also applied through the Kubernetes API (mlflywheel.services.kserve)")
    kserve_namespace: str = "default"

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, value: list[float]) -> list[float]:
        if not value or value[-1] != 100 or any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"steps must increase strictly and end at 100, found {value}")
        return value


class RegistrySpec(_Strict):
    model_name: str | None = Field(default=None, description="registered model name (default: the pipeline name)")


class PipelineConfig(_Strict):
    name: Annotated[str, Field(pattern=NAME_RE)]
    description: str = ""
    owner: str = "mlflywheel"
    tags: list[str] = Field(default_factory=list)
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    schedule: Schedule = Field(default_factory=Schedule)
    data: DataSpec
    validation: ValidationSpec
    features: FeatureSpec
    training: TrainingSpec
    gate: GateSpec
    registry: RegistrySpec = Field(default_factory=RegistrySpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)

    @field_validator("tags")
    @classmethod
    def _approved_tags(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - APPROVED_TAGS)
        if unknown:
            raise ValueError(f"tag(s) {unknown} not in the approved set {sorted(APPROVED_TAGS)}")
        return value

    @model_validator(mode="after")
    def _consistent_columns(self) -> PipelineConfig:
        inputs = set(self.training.categorical) | set(self.training.numeric)
        available = set(self.features.request_features)
        for view in self.features.views:
            available |= set(view.feature_names())
        missing = sorted(inputs - available)
        if missing:
            raise ValueError(f"training inputs {missing} are neither request features nor feature-view outputs")
        if self.data.label in inputs:
            raise ValueError(f"the label {self.data.label!r} cannot be a training input")
        unknown_keys = sorted(set(self.drift.key_features) - inputs)
        if unknown_keys:
            raise ValueError(f"drift.key_features {unknown_keys} are not model inputs ({sorted(inputs)})")
        if self.drift.retrain_window_days <= self.training.holdout_days:
            raise ValueError(f"drift.retrain_window_days ({self.drift.retrain_window_days}) must exceed "
                             f"training.holdout_days ({self.training.holdout_days})")
        return self

    @property
    def batch_required_columns(self) -> list[str]:
        """Columns whose nulls quarantine a row in batch scoring."""
        if self.batch.required_columns is not None:
            return list(self.batch.required_columns)
        return list(dict.fromkeys([self.data.id_column, self.data.entity, *self.features.request_features]))

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def train_dag_id(self) -> str:
        return f"{self.name}__train"

    @property
    def rollback_dag_id(self) -> str:
        return f"{self.name}__rollback"

    @property
    def batch_dag_id(self) -> str:
        return f"{self.name}__batch_score"

    @property
    def drift_asset_uri(self) -> str:
        return f"flywheel://{self.name}/drift"

    @property
    def drift_dag_id(self) -> str:
        return f"{self.name}__drift"

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs in a fixed order: categorical first, then numeric."""
        return [*self.training.categorical, *self.training.numeric]

    @property
    def all_tags(self) -> list[str]:
        return sorted({"mlflywheel", "training", *self.tags})


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate one pipeline YAML.

    Args:
        path: the YAML file.

    Raises:
        ConfigError: naming the file and each bad key, with what was expected and found.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid pipeline config:\n" + _describe(exc)) from exc
    if config.name != path.stem:
        raise ConfigError(f"{path}: key 'name' is {config.name!r} but the file is named {path.stem!r}.yaml; "
                          "they must match")
    return config


def load_pipelines(directory: str | Path) -> list[PipelineConfig]:
    """Every ``*.yaml`` in a folder, sorted by name. A bad file raises ``ConfigError``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: pipelines folder not found")
    return [load_pipeline(p) for p in sorted(directory.glob("*.yaml"))]


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - key '{key}': unknown key (found {err['input']!r})")
        elif err["type"] == "missing":
            lines.append(f"  - key '{key}': required key is missing")
        else:
            found = err.get("input")
            found_s = repr(found) if not isinstance(found, dict) else "a mapping"
            lines.append(f"  - key '{key}': {err['msg']} (found {found_s})")
    return "\n".join(lines)


_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def safe_key(text: str) -> str:
    """A filesystem- and tag-safe form of a run key or id."""
    return _SAFE.sub("_", text)
