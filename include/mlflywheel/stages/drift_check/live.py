"""Concept drift with delayed labels: the champion's live metrics on days whose labels matured.

Labels land days after the rows they label (:mod:`mlflywheel.services.data.labels`). A day is
evaluated only when at least ``drift.live.min_label_coverage`` of its rows has a label as of
the check; the newest ``drift.live.window_days`` such days are joined by id to the
champion's scores and judged against the champion's own baseline: the metrics in its gate
verdict (``gate/verdict.json`` on its training run).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.data.io import available_days, partition_path
from mlflywheel.services.data.labels import read_labels

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)
#: how far back (beyond delay + window) a check looks for days with matured labels
LOOKBACK_SLACK_DAYS = 7


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width score bins (weighted by rows per bin)."""
    import numpy as np

    idx = np.minimum((proba * bins).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=proba, minlength=bins))
    return float(gap.sum() / max(counts.sum(), 1))


def label_coverage(config: PipelineConfig, ws: Workspace, as_of: dt.datetime, *, after: dt.date
                   ) -> tuple[list[dt.date], dict[str, float], pd.DataFrame]:
    """Days whose labels are complete enough to judge, the coverage of every candidate day, the labels.

    Only days after ``after`` (the last day of the champion's training snapshot) count: a
    model judged on the days it was trained on looks better than it is.
    """
    import pyarrow.parquet as pq

    live = config.drift.live
    today = as_of.astimezone(dt.UTC).date()
    first = max(today - dt.timedelta(days=live.label_delay_days + live.window_days + LOOKBACK_SLACK_DAYS),
                after + dt.timedelta(days=1))
    candidates = [d for d in available_days(config, ws) if first <= d < today]
    labels = read_labels(config, ws, since=first, as_of=as_of)
    labeled = labels[config.data.id_column].astype(str).to_numpy()
    coverage: dict[str, float] = {}
    for day in candidates:
        ids = pq.read_table(partition_path(config, ws, day), columns=[config.data.id_column]).column(0)
        ids = ids.to_pandas().astype(str)
        coverage[day.isoformat()] = float(ids.isin(labeled).mean()) if len(ids) else 0.0
    ready = [d for d in candidates if coverage[d.isoformat()] >= live.min_label_coverage]
    return ready[-live.window_days:], coverage, labels


def champion_baseline(config: PipelineConfig, ws: Workspace,
                      run_id: str | None) -> tuple[dict[str, float] | None, str]:
    """The champion's metrics from its gate verdict (MLflow artifact, else the local report), and where."""
    from mlflywheel.services import tracking

    if run_id is None:  # a version registered without a run has no gate verdict
        return None, "no gate verdict: the champion version has no MLflow run"

    try:
        path = Path(tracking.client(ws).download_artifacts(run_id, "gate/verdict.json"))
        where = f"runs:/{run_id}/gate/verdict.json"
    except Exception as exc:  # the tracking server may lack it; the workspace copy is the same JSON
        log.warning("gate verdict of run %s not in MLflow (%s); trying the workspace copy", run_id, exc)
        path = ws.reports_dir / config.name / "gate" / f"{run_id}.json"
        where = str(path)
    if not path.is_file():
        return None, f"no gate verdict for run {run_id} ({where})"
    verdict = json.loads(path.read_text())
    metrics = (verdict.get("challenger") or {}).get("metrics") or None
    return metrics, where


def judge_live(config: PipelineConfig, *, rows: pd.DataFrame, scores: np.ndarray, labels: pd.DataFrame,
               days: list[dt.date], coverage: dict[str, float], baseline: dict[str, float] | None,
               baseline_source: str, reference_label_rate: float) -> dict[str, Any]:
    """Live metrics of the champion on ``days`` and the reasons they call for a retrain.

    Returns a JSON-safe dict: ``status`` (``evaluated``, ``insufficient_labels``,
    ``no_baseline``), ``metrics``, ``baseline``, ``reasons`` (empty when healthy),
    ``notes`` (what could not be judged), ``label_rate`` (reference vs live).
    """

    from mlflywheel.services.model_metrics import classification_metrics

    live = config.drift.live
    data = config.data
    out: dict[str, Any] = {"days": [d.isoformat() for d in days], "coverage": coverage, "reasons": [],
                           "notes": [], "baseline_source": baseline_source, "baseline": baseline, "metrics": {}}
    if not days:
        out.update(status="insufficient_labels",
                   detail=f"no day after the champion's training window and before the check has >= "
                          f"{live.min_label_coverage:.0%} of its labels (label delay {live.label_delay_days} d)")
        return out
    scored = rows[[data.id_column]].assign(_score=scores)
    scored[data.id_column] = scored[data.id_column].astype(str)
    joined = scored.merge(labels.assign(**{data.id_column: labels[data.id_column].astype(str)}),
                          on=data.id_column, how="inner")
    y = joined[data.label].to_numpy().astype(int)
    p = joined["_score"].to_numpy()
    out.update(rows=int(len(joined)), positives=int(y.sum()))
    if len(joined) < live.min_rows or y.sum() < live.min_positives or y.sum() == len(y):
        out.update(status="insufficient_labels",
                   detail=f"{len(joined)} labeled rows with {int(y.sum())} positives; need >= {live.min_rows} "
                          f"rows and >= {live.min_positives} positives (drift.live)")
        return out
    metrics = classification_metrics(y, p, config.gate.decision_threshold)
    metrics["calibration_error"] = expected_calibration_error(y, p)
    out["metrics"] = {k: round(v, 6) for k, v in metrics.items()}
    rate = float(y.mean())
    change = abs(rate - reference_label_rate) / max(reference_label_rate, 1e-9)
    z_p = _two_proportion_p(rate, len(y), reference_label_rate)
    out["label_rate"] = {"reference": round(reference_label_rate, 6), "live": round(rate, 6),
                         "relative_change": round(change, 4), "p_value": z_p}
    if change >= config.drift.label_rate_max_relative_change and z_p < config.drift.limits.alpha:
        out["reasons"].append(f"label rate {reference_label_rate:.4f} -> {rate:.4f} ({change:+.0%} relative, "
                              f"limit {config.drift.label_rate_max_relative_change:.0%})")
    if metrics["calibration_error"] > live.max_calibration_error:
        out["reasons"].append(f"calibration error {metrics['calibration_error']:.4f} > "
                              f"{live.max_calibration_error} on matured labels")
    if baseline is None:
        out["status"] = "no_baseline"
        out["detail"] = f"the champion's gate baseline is unavailable ({baseline_source}): metric drops not judged"
        return out
    out["status"] = "evaluated"
    for name, limit in live.max_drop.items():
        if name not in baseline:  # cannot judge this metric: a note, never a trigger
            out["notes"].append(f"{name}: the champion's gate verdict has no baseline ({baseline_source})")
            continue
        drop = baseline[name] - metrics[name]
        out.setdefault("drops", {})[name] = round(drop, 6)
        if drop > limit:
            out["reasons"].append(f"live {name} {metrics[name]:.4f} is {drop:.4f} below the champion's gate "
                                  f"baseline {baseline[name]:.4f} (limit {limit})")
    return out


def _two_proportion_p(rate: float, n: int, reference: float) -> float:
    """Two-sided p-value of ``rate`` over ``n`` rows against a known reference rate."""
    import math

    from scipy.stats import norm

    se = math.sqrt(max(reference * (1 - reference), 1e-12) / max(n, 1))
    return float(2 * norm.sf(abs(rate - reference) / se))
