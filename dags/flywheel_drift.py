"""
# `<pipeline>__drift`: is the champion still looking at the data it was trained on?

One DAG per pipeline config in `include/pipelines/*.yaml` (with `drift.enabled`), built by
the same factory. It closes the loop: drift emits `flywheel://<pipeline>/drift` and
`<pipeline>__train` (nightly cron OR that asset) retrains on the recent window.

| task | what it does | on failure |
|---|---|---|
| `drift_check` | newest landing partitions (joined to Feast as in training) vs the `@champion`'s training snapshot: PSI/KS/Wasserstein per numeric input, PSI/chi-square/JS and unseen categories per categorical input, score drift, live ROC AUC/PR AUC/calibration on matured delayed labels vs the champion's gate baseline; Evidently report; history + chart; verdict JSON and an MLflow run | a missing reference, column or label file fails without retries, naming it |
| `emit_trigger` | emits the asset event with the findings (drifted features and scores, report URI, reason) when the verdict is `retrain`; alerts through the configured notifiers | skipped for `no_drift`, `suppressed` (cooldown, duplicate) and `skipped` (empty, stale or small window) |

**Schedule**: `drift.schedule` (default hourly). **Manual runs**: set the window (days) and
the reference (`champion` or a snapshot digest) in the trigger form.
**Verdicts** live under `$FLYWHEEL_HOME/reports/<pipeline>/drift/`; the Evidently report is
one click away (the task's *Drift report* link).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param

from mlflywheel_airflow.factory import pipeline_dags
from mlflywheel_airflow.operators import DriftCheckOperator, DriftTriggerOperator

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig

MLFLOW_CONN_ID = "mlflow_default"
FEAST_CONN_ID = "feast_default"
SMTP_CONN_ID = "smtp_default"

TASK_DOCS = {
    "drift_check": "Compares the newest landing partitions with the `@champion`'s training snapshot and judges "
                   "live metrics on matured labels. Writes the verdict (decision and reasons) before anything "
                   "is emitted; the Evidently report is linked from this task.",
    "emit_trigger": "Emits `flywheel://<pipeline>/drift` with the findings when the verdict is `retrain`, which "
                    "starts `<pipeline>__train` on the recent window. Skipped otherwise.",
}


def _notifiers(config: PipelineConfig) -> list:
    """SMTP notifiers for ``drift.alert_emails`` (none: the alert is the task log)."""
    if not config.drift.alert_emails:
        return []
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    subject = f"[mlflywheel] {config.name}: drift -> retrain requested"
    body = ("Drift monitor {{ dag.dag_id }}, run {{ run_id }}: a retrain was requested or the check failed. "
            "Reasons and the Evidently report: the drift_check task of this run.")
    return [SmtpNotifier(smtp_conn_id=SMTP_CONN_ID, to=config.drift.alert_emails, subject=subject,
                         html_content=body)]


def build_drift_dag(config: PipelineConfig) -> DAG:
    """The drift-monitoring DAG of one pipeline."""
    tz = config.schedule.timezone
    notifiers = _notifiers(config)
    with DAG(
        dag_id=config.drift_dag_id,
        description=f"{config.name}: drift monitor and retrain trigger"[:200],
        doc_md=__doc__,
        schedule=CronTriggerTimetable(config.drift.schedule, timezone=tz),
        start_date=pendulum.parse(config.schedule.start_date, tz=tz),
        catchup=False,
        max_active_runs=1,
        tags=sorted({"mlflywheel", "drift", *config.tags}),
        default_args={"owner": config.owner, "retries": config.retries,
                      "retry_delay": dt.timedelta(minutes=2), "on_failure_callback": notifiers or None},
        params={
            "window_days": Param(config.drift.window_days, type="integer", minimum=1, maximum=60,
                                 title="Current window (days)",
                                 description="The newest landing partitions before the check to compare."),
            "reference": Param("champion", type="string", minLength=1, maxLength=64, title="Reference",
                               description="'champion' (its training snapshot) or a snapshot digest."),
        },
    ) as dag:
        common = {"pipeline": config.name}
        check = DriftCheckOperator(task_id="drift_check", doc_md=TASK_DOCS["drift_check"],
                                   window_days="{{ params.window_days }}", reference="{{ params.reference }}",
                                   mlflow_conn_id=MLFLOW_CONN_ID, feast_conn_id=FEAST_CONN_ID, **common)
        DriftTriggerOperator(task_id="emit_trigger", doc_md=TASK_DOCS["emit_trigger"], verdict=check.output,
                             outlets=[Asset(name=f"{config.name}_drift", uri=config.drift_asset_uri)],
                             notifiers=notifiers, retries=0, **common)
    return dag


globals().update(pipeline_dags("drift", lambda config: build_drift_dag(config) if config.drift.enabled else None))
