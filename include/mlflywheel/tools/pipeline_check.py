"""``flywheel pipeline validate NAME``: a new pipeline checked end to end without Airflow.

A pipeline is three files that must agree: the YAML (``include/pipelines/<name>.yaml``), its
Feast objects (``feature_repo/*.py``) and its expectation suite (``expectations/<suite>.json``).
Each disagreement would otherwise surface as a failed task hours into a run; here it is one
line naming the file, the field, what was expected and what was found.

Checks, in order (a failed ``config`` stops the rest, the others are independent):

``config``    the YAML loads against the schema (types, cron, consistent model inputs)
``suite``     the suite loads; its column set (or its expectations) covers every column the
              pipeline reads from the landing zone; no expectation names an unknown column
``features``  the Feast repo declares the feature service, it serves the config's views, each
              view declares exactly the computed features and joins on the config's entity
``registry``  no other pipeline registers the same model name
``trainer``   the trainer resolves (built-in, import path, entry point), fits a synthetic sample
              of the model inputs under the contract, and its model converts to ONNX: a
              model the server could not run is refused here, not after registration
``data``      when the landing zone has a partition: its columns are the ones the suite and
              the pipeline expect (skipped, not failed, before the first data arrives)

Nothing is written: no ``feast apply``, no MLflow run, no Airflow metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import FlywheelError

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

#: expectations that pin the table's full column set
_COLUMN_SET = {"expect_table_columns_to_match_set": "column_set",
               "expect_table_columns_to_match_ordered_list": "column_list"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "FAIL" or "skip"
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def pipeline_path(ws: Workspace, name_or_path: str) -> Path:
    """``fraud`` -> ``<pipelines dir>/fraud.yaml``; a path to a YAML is taken as it is."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return Path(name_or_path)
    return ws.pipelines_dir / f"{name_or_path}.yaml"


def landing_columns(config: PipelineConfig) -> dict[str, str]:
    """Every landing column the pipeline reads, with the config field that names it."""
    needed: dict[str, str] = {}

    def add(column: str, field: str) -> None:
        needed.setdefault(column, field)

    add(config.data.id_column, "data.id_column")
    add(config.data.entity, "data.entity")
    add(config.data.timestamp, "data.timestamp")
    add(config.data.label, "data.label")
    for column in config.features.request_features:
        add(column, "features.request_features")
    for view in config.features.views:
        for agg in view.aggregations:
            add(agg.column, f"features.views[{view.name}].aggregations")
    add(config.gate.fairness.sensitive_attribute, "gate.fairness.sensitive_attribute")
    return needed


def check_suite(config: PipelineConfig, ws: Workspace) -> tuple[Check, set[str] | None]:
    """The suite loads and covers the pipeline's landing columns; returns its column set."""
    from mlflywheel.services.suites import load_suite

    path = ws.expectations_dir / f"{config.validation.suite}.json"
    try:
        suite = load_suite(ws.expectations_dir, config.validation.suite)
    except FlywheelError as exc:
        return Check("suite", "FAIL", str(exc)), None
    needed = landing_columns(config)
    column_set: set[str] | None = None
    mentioned: set[str] = set()
    for exp in suite["expectations"]:
        kwargs = exp.get("kwargs", {})
        if exp["type"] in _COLUMN_SET:
            column_set = set(kwargs.get(_COLUMN_SET[exp["type"]]) or [])
        mentioned.update(c for c in [kwargs.get("column"), *kwargs.get("column_list", [])] if c)
    problems = []
    if column_set is not None:
        missing = {c: f for c, f in needed.items() if c not in column_set}
        if missing:
            problems.append(f"its column set lacks {_named(missing)}, which {config.name}.yaml reads")
        unknown = sorted(mentioned - column_set)
        if unknown:
            problems.append(f"expectations name columns {unknown} that are not in its column set "
                            f"{sorted(column_set)}")
    else:
        unchecked = {c: f for c, f in needed.items() if c not in mentioned}
        if unchecked:
            problems.append(f"no expectation checks {_named(unchecked)}; add "
                            f"expect_table_columns_to_match_set or per-column expectations")
    if problems:
        return Check("suite", "FAIL", f"{path}: " + "; ".join(problems)), column_set
    covered = len(needed)
    return Check("suite", "ok", f"{path}: {len(suite['expectations'])} expectations, covering the "
                                f"{covered} landing columns the pipeline reads"), column_set


def check_features(config: PipelineConfig, ws: Workspace) -> Check:
    from mlflywheel.services.features import check_repo, repo_objects

    try:
        objects = repo_objects(ws)
    except Exception as exc:  # a repo file that does not import: name it
        return Check("features", "FAIL", f"{ws.feature_repo}: the Feast repo does not load: "
                                         f"{type(exc).__name__}: {exc}")
    try:
        check_repo(objects, config)
    except FlywheelError as exc:
        return Check("features", "FAIL", f"{ws.feature_repo}: {exc}")
    views = ", ".join(f"{v.name} ({len(v.feature_names())} features, entity {v.entity})"
                      for v in config.features.views)
    return Check("features", "ok", f"{ws.feature_repo}: service {config.features.feature_service!r}, "
                                   f"views {views}")


def check_registry(config: PipelineConfig, ws: Workspace, path: Path) -> Check:
    from mlflywheel.services.config import load_pipeline

    clashes = []
    for other in sorted(ws.pipelines_dir.glob("*.yaml")):
        if other.resolve() == path.resolve():
            continue
        try:
            if load_pipeline(other).model_name == config.model_name:
                clashes.append(other.name)
        except FlywheelError:
            continue  # that file's own problem; `flywheel pipeline validate` on it says which
    if clashes:
        return Check("registry", "FAIL", f"registry.model_name {config.model_name!r} is also registered by "
                                         f"{clashes}: two pipelines would move each other's aliases")
    return Check("registry", "ok", f"model {config.model_name!r}, DAGs {config.train_dag_id}, "
                                   f"{config.batch_dag_id}, {config.drift_dag_id}, {config.rollback_dag_id}")


def check_data(config: PipelineConfig, ws: Workspace, column_set: set[str] | None) -> Check:
    import pyarrow.parquet as pq

    from mlflywheel.services.data.io import landing_dir

    folder = landing_dir(config, ws)
    partitions = sorted(folder.glob("ds=*/*.parquet")) if folder.is_dir() else []
    if not partitions:
        return Check("data", "skip", f"{folder}: no landing partition yet")
    latest = partitions[-1]
    try:
        columns = set(pq.read_schema(latest).names)
    except Exception as exc:
        return Check("data", "FAIL", f"{latest}: not a readable Parquet file: {exc}")
    problems = []
    missing = {c: f for c, f in landing_columns(config).items() if c not in columns}
    if missing:
        problems.append(f"lacks {_named(missing)}")
    if column_set is not None and columns != column_set:
        problems.append(f"columns differ from the suite's set: extra {sorted(columns - column_set)}, "
                        f"missing {sorted(column_set - columns)}")
    if problems:
        return Check("data", "FAIL", f"{latest}: " + "; ".join(problems))
    return Check("data", "ok", f"{latest}: {len(columns)} columns, as the suite and the pipeline expect")


def check_trainer(config: PipelineConfig, rows: int = 240) -> Check:
    """Fit the trainer on ``rows`` synthetic rows of the model inputs and convert the result to ONNX.

    The sample exercises the code path, not the model's quality: categoricals cycle through a
    few strings, numerics are lognormal, the labels alternate in blocks so both classes occur.
    """
    import numpy as np
    import pandas as pd

    from mlflywheel.services.onnx_export import check_exportable
    from mlflywheel.stages.train.contract import TrainingData
    from mlflywheel.stages.train.plugins import fit

    rng = np.random.default_rng(config.training.seed)
    columns: dict[str, Any] = {c: np.array(["a", "b", "c", "d"])[np.arange(rows) % 4]
                               for c in config.training.categorical}
    columns.update({c: rng.lognormal(1.0, 1.0, rows).astype("float32") for c in config.training.numeric})
    x = pd.DataFrame(columns)[config.feature_columns]
    y = ((np.arange(rows) // 3) % 2).astype("int64")
    split = rows * 3 // 4
    data = TrainingData(pipeline=config.name, x=x.iloc[:split], y=y[:split], x_val=x.iloc[split:],
                        y_val=y[split:], categorical=tuple(config.training.categorical),
                        numeric=tuple(config.training.numeric), seed=config.training.seed,
                        params=dict(config.training.params))
    try:
        model = fit(config, data)
        check_exportable(model, config, config.training.trainer)
    except FlywheelError as exc:
        return Check("trainer", "FAIL", str(exc))
    return Check("trainer", "ok", f"{config.training.trainer}: {type(model).__name__} fits a {rows}-row sample "
                                  "and converts to ONNX")


def validate_pipeline(ws: Workspace, name_or_path: str) -> tuple[Path, list[Check]]:
    """Every check on one pipeline; never raises for what it is checking."""
    from mlflywheel.services.config import load_pipeline

    path = pipeline_path(ws, name_or_path)
    try:
        config = load_pipeline(path)
    except FlywheelError as exc:
        return path, [Check("config", "FAIL", str(exc))]
    inputs = len(config.feature_columns)
    checks = [Check("config", "ok", f"{path}: trainer {config.training.trainer}, {inputs} model inputs")]
    suite, column_set = check_suite(config, ws)
    checks += [suite, check_features(config, ws), check_registry(config, ws, path),
               check_trainer(config), check_data(config, ws, column_set)]
    return path, checks


def format_checks(name: str, checks: list[Check]) -> str:
    lines = [f"{name}:"]
    lines += [f"  {c.status:<5} {c.name:<9} {c.detail}" for c in checks]
    return "\n".join(lines)


def _named(columns: dict[str, Any]) -> str:
    return ", ".join(f"{c!r} ({field})" for c, field in columns.items())
