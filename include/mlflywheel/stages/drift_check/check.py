"""One drift check: statistics, report, verdict, history, MLflow run, trigger decision.

:func:`run_drift_check` is the single core call of the ``drift_check`` task and of
``flywheel drift check``. Its order is fixed: compute, decide, write the verdict JSON
(MLflow and the workspace), record an emitted trigger in the ledger, and only then return the
decision, from which the Airflow layer emits (or not) the ``flywheel://<pipeline>/drift``
asset event. A check that cannot judge (an empty or stale window, too few rows) is
*skipped* with its reason in the verdict; bad inputs (missing reference, column or label
file) raise :class:`~mlflywheel.services.errors.DriftInputError` naming what is wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from mlflywheel.services import tracking
from mlflywheel.services.config import safe_key
from mlflywheel.services.data.io import write_text_atomic
from mlflywheel.services.names import (
    TAG_CHECK,
    TAG_DIGEST,
    TAG_DRIFT_DECISION,
    TAG_DRIFT_REASONS,
    TAG_PIPELINE,
    tag_value,
)
from mlflywheel.stages.drift_check import policy
from mlflywheel.stages.drift_check.inputs import (
    CurrentSource,
    LandingSource,
    find_reference,
    load_model,
    load_reference,
    score,
    window_days,
)

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace
    from mlflywheel.stages.drift_check.inputs import Reference
    from mlflywheel.stages.drift_check.stats import ColumnDrift

log = logging.getLogger(__name__)
PREDICTION = "prediction"
#: seeds the report's row samples (the same check gives the same report)
REPORT_SEED = 0


def drift_dir(ws: Workspace, config: PipelineConfig) -> Path:
    """``$FLYWHEEL_HOME/reports/<pipeline>/drift``: verdicts, reports, history, ledger."""
    return ws.reports_dir / config.name / "drift"


def run_drift_check(config: PipelineConfig, ws: Workspace, *, as_of: dt.datetime, window: int | None = None,
                    reference: str = "champion", check_id: str | None = None, source: CurrentSource | None = None,
                    with_report: bool = True) -> dict[str, Any]:
    """Compare the newest data with the champion's training snapshot and decide on a retrain.

    Args:
        config: the pipeline.
        ws: the workspace.
        as_of: the check time; the window is the newest partitions before its day, labels count
            when they arrived by then, cooldowns are measured from it.
        window: current window in days (default ``drift.window_days``).
        reference: ``champion`` (its training snapshot) or a snapshot digest.
        check_id: identity of this check (default ``<pipeline>/<as_of>``); a re-run with the same
            id rewrites its own files and never counts as an earlier trigger.
        source: where current rows come from (default :class:`LandingSource`).
        with_report: render the Evidently HTML report.

    Returns:
        The JSON-safe verdict summary (see ``DriftCheckOperator`` for the contract).

    Raises:
        DriftInputError: no champion, a missing snapshot, column or labels file.
    """
    import pandas as pd

    from mlflywheel.stages.drift_check import live as live_mod
    from mlflywheel.stages.drift_check.stats import compare_frames, numeric_drift

    drift = config.drift
    as_of = as_of.astimezone(dt.UTC)
    check_id = check_id or f"{config.name}/{as_of:%Y%m%dT%H%MZ}"
    key = safe_key(check_id.replace("/", "_"))
    ref = find_reference(config, ws, reference)
    days, why_not = window_days(config, ws, as_of, window or drift.window_days)
    data = config.data
    verdict: dict[str, Any] = {
        "pipeline": config.name, "check_id": check_id, "as_of": as_of.isoformat(),
        "reference": {"digest": ref.digest, "path": str(ref.path), "model_name": ref.model_name,
                      "version": ref.version, "serve_variant": ref.serve_variant},
        "window": {"days": [d.isoformat() for d in days], "rows": 0},
        "policy": drift.model_dump(mode="json"), "retrain_window_days": drift.retrain_window_days,
    }
    if not days:
        return _finish(config, ws, verdict, policy.Decision(policy.SKIPPED, detail=why_not), key=key, as_of=as_of)

    reference_frame = load_reference(ref, [*config.feature_columns, data.timestamp, data.label])
    trained_until = pd.to_datetime(reference_frame[data.timestamp], utc=True).max().date()
    source = source or LandingSource(config, ws)
    eval_days, coverage, labels = live_mod.label_coverage(config, ws, as_of, after=trained_until)
    rows = source.rows(sorted(set(days) | set(eval_days)))
    row_day = pd.to_datetime(rows[data.timestamp], utc=True).dt.date
    current = rows[row_day.isin(days).to_numpy()].reset_index(drop=True)
    verdict["window"].update(source=source.name, rows=len(current))
    if len(current) < drift.min_rows:
        detail = (f"current window {days[0]}..{days[-1]} has {len(current)} rows < drift.min_rows="
                  f"{drift.min_rows}: too few to judge")
        return _finish(config, ws, verdict, policy.Decision(policy.SKIPPED, detail=detail), key=key, as_of=as_of)

    numeric, categorical = list(config.training.numeric), list(config.training.categorical)
    columns = compare_frames(reference_frame, current, numeric=numeric, categorical=categorical,
                             limits=drift.limits, bins=drift.psi_bins, where=f"current window {days[0]}..{days[-1]}")

    model = load_model(config, ws, ref)
    holdout = _holdout(reference_frame, config)
    current_scores = score(model, current)
    prediction = numeric_drift(PREDICTION, score(model, holdout), current_scores, drift.limits, bins=drift.psi_bins)

    evaluated = rows[row_day.isin(eval_days).to_numpy()].reset_index(drop=True)
    baseline, baseline_source = live_mod.champion_baseline(config, ws, _champion_run_id(ws, ref))
    live = live_mod.judge_live(config, rows=evaluated, scores=score(model, evaluated), labels=labels,
                               days=eval_days, coverage=coverage, baseline=baseline, baseline_source=baseline_source,
                               reference_label_rate=float(reference_frame[data.label].mean()))

    reasons, signature = policy.find_triggers(config, columns, prediction, live)
    ledger_file = policy.ledger_path(ws.reports_dir, config.name)
    decision = policy.decide(config, reasons=reasons, signature=signature, ledger=policy.read_ledger(ledger_file),
                             now=as_of, champion_version=ref.version, check_id=check_id)
    verdict.update(_statistics(columns, prediction, drift.prediction_psi), live=live)
    if with_report:
        verdict["evidently"] = _evidently(config, ws, reference_frame, current, numeric, categorical, key, columns)
    from mlflywheel.stages.drift_check.report import plot_history, read_history, write_history

    write_history(ws.reports_dir, config.name, check_key=key, as_of=as_of, columns=columns, prediction=prediction,
                  champion_version=ref.version)
    verdict["history_png"] = str(plot_history(read_history(ws.reports_dir, config.name),
                                              drift_dir(ws, config) / "history.png",
                                              title=f"{config.name}: top drifting inputs vs v{ref.version}'s snapshot"))
    return _finish(config, ws, verdict, decision, key=key, as_of=as_of)


def _holdout(frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """The snapshot's holdout days: scores the champion never trained on (the prediction reference)."""
    import pandas as pd

    ts = pd.to_datetime(frame[config.data.timestamp], utc=True)
    cutoff = ts.max().normalize() - pd.Timedelta(days=config.training.holdout_days - 1)
    return frame[(ts >= cutoff).to_numpy()]


def _champion_run_id(ws: Workspace, ref: Reference) -> str | None:
    return tracking.client(ws).get_model_version(ref.model_name, ref.version).run_id


def _statistics(columns: list[ColumnDrift], prediction: ColumnDrift, prediction_psi: float) -> dict[str, Any]:
    drifted = [c for c in columns if c.drifted]
    return {
        "columns": [c.to_dict() for c in columns],
        "drifted_features": {c.column: {"statistic": c.statistic, "score": round(c.score, 4),
                                        "psi": round(c.psi, 4), "reasons": c.reasons} for c in drifted},
        "drifted_share": round(len(drifted) / len(columns), 4) if columns else 0.0,
        "prediction_drift": {**{k: v for k, v in prediction.to_dict().items()
                                if k in ("psi", "ks", "wasserstein", "p_value", "rows_reference", "rows_current")},
                             "limit_psi": prediction_psi},
    }


def _evidently(config: PipelineConfig, ws: Workspace, reference: pd.DataFrame, current: pd.DataFrame,
               numeric: list[str], categorical: list[str], key: str, columns: list[ColumnDrift]) -> dict[str, Any]:
    from mlflywheel.stages.drift_check.report import evidently_report, sample

    rows = config.drift.report_max_rows
    result = evidently_report(sample(reference, rows, REPORT_SEED), sample(current, rows, REPORT_SEED),
                              numeric=numeric, categorical=categorical,
                              html_path=drift_dir(ws, config) / "reports" / f"{key}.html",
                              title=f"{config.name} drift {key}", thresholds=evidently_thresholds(config, columns))
    ours = sorted(c.column for c in columns if c.drifted)
    result["ours"] = ours
    result["agree"] = ours == result["drifted"]
    return result


def evidently_thresholds(config: PipelineConfig, columns: list[ColumnDrift]) -> dict[str, Any]:
    """``DataDriftPreset`` arguments that judge with the pipeline's limits (same methods as ours)."""
    limits = config.drift.limits
    return {"num_threshold": limits.wasserstein, "cat_threshold": limits.jensen_shannon,
            "drift_share": config.drift.max_drifted_share,
            "per_column_threshold": {c.column: limits.jensen_shannon for c in columns if c.kind == "discrete"}}


def _finish(config: PipelineConfig, ws: Workspace, verdict: dict[str, Any], decision: policy.Decision, *, key: str,
            as_of: dt.datetime) -> dict[str, Any]:
    """Verdict JSON first (MLflow run, then the workspace copy), the trigger ledger next, the summary last."""
    verdict.update(decision.to_dict())
    verdict_path = drift_dir(ws, config) / "verdicts" / f"{key}.json"
    verdict["verdict_path"] = str(verdict_path)
    run_id, experiment_id = _log_to_mlflow(config, ws, verdict, key=key)
    verdict.update(run_id=run_id, experiment_id=experiment_id,
                   verdict_uri=f"runs:/{run_id}/drift/verdict.json",
                   report_uri=f"runs:/{run_id}/drift/report.html" if verdict.get("evidently") else None)
    write_text_atomic(json.dumps(verdict, indent=2, default=str), verdict_path)
    if decision.decision == policy.RETRAIN:
        policy.record_trigger(policy.ledger_path(ws.reports_dir, config.name), {
            "check_id": verdict["check_id"], "emitted_at": as_of.isoformat(), "signature": decision.signature,
            "champion_version": verdict["reference"]["version"], "reasons": decision.reasons, "run_id": run_id})
    log.info("drift check %s: %s %s %s", verdict["check_id"], decision.decision.upper(), decision.detail,
             decision.reasons)
    return summary(verdict)


def summary(verdict: dict[str, Any]) -> dict[str, Any]:
    """The small JSON-safe result of a check (the task's XCom and the asset event's source)."""
    keys = ("pipeline", "check_id", "as_of", "decision", "reasons", "detail", "signature", "drifted_features",
            "drifted_share", "prediction_drift", "verdict_path", "verdict_uri", "report_uri", "run_id",
            "experiment_id", "retrain_window_days", "history_png")
    out = {k: verdict.get(k) for k in keys}
    live = verdict.get("live") or {}
    out["live"] = {k: live.get(k) for k in ("status", "detail", "metrics", "baseline", "drops", "days", "label_rate",
                                            "notes")
                   if live.get(k) is not None}
    out["reference"] = {k: verdict["reference"][k] for k in ("digest", "model_name", "version")}
    out["window"] = verdict["window"]
    if verdict.get("evidently"):
        out["evidently"] = {k: verdict["evidently"][k] for k in ("drifted", "ours", "agree", "html")}
    safe: dict[str, Any] = json.loads(json.dumps(out, default=str))
    return safe


def _log_to_mlflow(config: PipelineConfig, ws: Workspace, verdict: dict[str, Any], *, key: str) -> tuple[str, str]:
    """One run per check in ``flywheel/<pipeline>/drift`` (found again by its check id)."""
    client = tracking.client(ws)
    experiment = tracking.experiment_id(client, ws, config, suffix="drift")
    found = client.search_runs([experiment], f"tags.`{TAG_CHECK}` = '{verdict['check_id']}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(experiment, run_name=f"drift-{key}").info.run_id
    tags = {TAG_CHECK: verdict["check_id"], TAG_PIPELINE: config.name,
            TAG_DRIFT_DECISION: verdict["decision"],
            TAG_DRIFT_REASONS: tag_value("; ".join(verdict["reasons"]) or verdict["detail"]),
            TAG_DIGEST: verdict["reference"]["digest"],
            "flywheel.champion_version": str(verdict["reference"]["version"])}
    for name, value in tags.items():
        client.set_tag(run_id, name, value)
    metrics = {"drifted_share": verdict.get("drifted_share") or 0.0, "rows_current": verdict["window"]["rows"]}
    for column in verdict.get("columns", []):
        metrics[f"drift.{column['column']}.score"] = column["score"]
        metrics[f"drift.{column['column']}.psi"] = column["psi"]
    if verdict.get("prediction_drift"):
        metrics["drift.prediction.psi"] = verdict["prediction_drift"]["psi"]
    for name, value in ((verdict.get("live") or {}).get("metrics") or {}).items():
        metrics[f"live.{name}"] = value
    for name, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, name, float(value))
    client.log_text(run_id, json.dumps({**verdict, "run_id": run_id}, indent=2, default=str), "drift/verdict.json")
    html = (verdict.get("evidently") or {}).get("html")
    if html:
        import shutil
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(html, Path(tmp) / "report.html")
            client.log_artifact(run_id, str(Path(tmp) / "report.html"), artifact_path="drift")
    if verdict.get("history_png"):
        client.log_artifact(run_id, verdict["history_png"], artifact_path="drift")
    client.set_terminated(run_id, "FINISHED")
    return run_id, experiment
