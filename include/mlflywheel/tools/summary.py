"""What one training run produced, read back from its own records (reports, MLflow, registry).

Used by ``flywheel demo`` and ``flywheel summary`` to print a short account of a run
without reaching into Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from mlflywheel.services import tracking
from mlflywheel.services.dataset import SNAPSHOT_META, snapshot_dir
from mlflywheel.services.names import (
    TAG_DECISION,
    TAG_DIGEST,
    TAG_REASONS,
    TAG_RUN_KEY,
    TAG_SERVE_VARIANT,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace


def run_summary(config: PipelineConfig, ws: Workspace, *, start: dt.datetime, end: dt.datetime,
                window_days: int | None = None) -> dict[str, Any]:
    """Validation, features, training, gate and registry facts for one data interval."""
    from mlflywheel.services.data.io import interval_days
    from mlflywheel.services.registry import find_version
    from mlflywheel.stages.batch_score import publish

    window = window_days or config.training.window_days
    key = tracking.run_key(config, start, end, window)
    out: dict[str, Any] = {"pipeline": config.name, "run_key": key}
    first, last = start.date(), (end - dt.timedelta(days=1)).date()
    vpath = ws.reports_dir / config.name / "validation" / f"{first}_{last}.json"
    if vpath.is_file():
        out["validation"] = json.loads(vpath.read_text())["summary"]
    client = tracking.client(ws)
    experiment = client.get_experiment_by_name(f"flywheel/{config.name}")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_RUN_KEY}` = '{key}'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
    if runs:
        run = runs[0]
        digest = run.data.tags.get(TAG_DIGEST)
        snap = snapshot_dir(ws, config.name, str(digest)) / SNAPSHOT_META
        if snap.is_file():
            out["features"] = json.loads(snap.read_text())
        out["training"] = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                           "metrics": {k: round(v, 4) for k, v in sorted(run.data.metrics.items())
                                       if k.startswith("holdout_")},
                           "dataset_digest": digest}
        out["gate"] = {"decision": run.data.tags.get(TAG_DECISION, "not evaluated"),
                       "reasons": run.data.tags.get(TAG_REASONS, ""),
                       "verdict": str(ws.reports_dir / config.name / "gate" / f"{run.info.run_id}.json")}
    version = find_version(client, config.model_name, key) if _model_exists(client, config.model_name) else None
    if version is not None:
        mv = client.get_model_version(config.model_name, version.version)
        out["registry"] = {"name": config.model_name, "version": mv.version, "aliases": sorted(mv.aliases)}
        tags = mv.tags
        if "flywheel.onnx.fp32.published" in tags:
            out["export"] = {p: (json.loads(tags[f"flywheel.onnx.{p}.parity"])["max_abs_diff"]
                                 if tags.get(f"flywheel.onnx.{p}.published") == "true"
                                 else tags.get(f"flywheel.onnx.{p}.reason", "not exported"))
                             for p in ("fp32", "int8")}
        if "flywheel.benchmark.decision" in tags:
            out["benchmark"] = {"decision": tags["flywheel.benchmark.decision"],
                                "serve_variant": tags.get(TAG_SERVE_VARIANT),
                                "reasons": tags.get("flywheel.benchmark.reasons", ""),
                                "verdict": str(ws.reports_dir / config.name / "benchmark"
                                               / f"{config.model_name}-v{mv.version}.json")}
    days = []
    for day in interval_days(start, end):
        manifest = publish.partition_dir(ws.predictions_root / config.name, day) / publish.MANIFEST
        if manifest.is_file():
            days.append(json.loads(manifest.read_text()))
    if days:
        out["batch"] = {"rows": sum(d["rows"] for d in days), "quarantined": sum(d["quarantined_rows"] for d in days),
                        "model": f"{days[-1]['model_name']} v{days[-1]['model_version']}",
                        "partitions": [str(publish.partition_dir(ws.predictions_root / config.name,
                                                                 dt.date.fromisoformat(d["day"]))) for d in days]}
    return out


def _model_exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def format_summary(summary: dict[str, Any], ws: Workspace) -> str:
    """Human-readable lines for the terminal."""
    lines = [f"pipeline {summary['pipeline']}  (run key {summary['run_key']})"]
    v = summary.get("validation")
    lines.append(f"  validated      {v['rows']} rows, {v['passed']}/{v['evaluated']} expectations passed "
                 f"({v['suite']})" if v else "  validated      no validation result found")
    f = summary.get("features")
    lines.append(f"  features       {f['rows']} rows ({f['positives']} positives) from {', '.join(f['feature_views'])}"
                 f", {f['start']}..{f['end']}, digest {f['digest']}" if f else "  features       no snapshot")
    t = summary.get("training")
    if t:
        metrics = ", ".join(f"{k.removeprefix('holdout_')}={v}" for k, v in t["metrics"].items()
                            if k.removeprefix("holdout_") in ("roc_auc", "pr_auc", "brier", "recall"))
        lines.append(f"  trained        MLflow run {t['run_id']}: {metrics}")
    else:
        lines.append("  trained        no MLflow run for this run key")
    g = summary.get("gate")
    if g:
        lines.append(f"  gate           {g['decision'].upper()}: {g['reasons']}")
        lines.append(f"                 verdict {g['verdict']}")
    r = summary.get("registry")
    lines.append(f"  registered     {r['name']} v{r['version']}  aliases: {', '.join('@' + a for a in r['aliases'])}"
                 if r else "  registered     nothing (no version for this run key)")
    e = summary.get("export")
    if e:
        lines.append("  exported       " + ", ".join(
            f"{p}: max |dp| {v:.1e}" if isinstance(v, float) else f"{p}: not published ({v})" for p, v in e.items()))
    b = summary.get("benchmark")
    if b:
        lines.append(f"  benchmark      {b['decision'].upper()}: serve {b['serve_variant'] or 'nothing'}"
                     f"{'; ' + b['reasons'] if b['reasons'] else ''}  ({b['verdict']})")
    scored = summary.get("batch")
    if scored:
        lines.append(f"  batch scored   {scored['rows']} rows ({scored['quarantined']} quarantined) with "
                     f"{scored['model']} -> {', '.join(scored['partitions'])}")
    lines += ["  look further   make mlflow-ui  (MLflow UI on http://127.0.0.1:5000)",
              f"                 reports: {ws.reports_dir / summary['pipeline']}"]
    return "\n".join(lines)
