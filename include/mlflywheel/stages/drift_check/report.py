"""What people read: the Evidently HTML report, the drift history and its chart.

* :func:`evidently_report`: an Evidently 0.7 ``Report`` with ``DataDriftPreset`` and
  ``DataSummaryPreset`` on seeded samples of both sides, saved as HTML; also returns the
  columns Evidently judged drifted, so the verdict shows both opinions side by side.
  Evidently is imported here only (it takes seconds to import).
* :func:`write_history` / :func:`read_history`: one Parquet file per check under
  ``reports/<pipeline>/drift/history/``, a row per column (and one for the score), written
  whether or not anything drifted.
* :func:`plot_history`: a PNG of the top drifting columns over time (matplotlib, Agg).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.data.io import write_parquet_atomic

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.stages.drift_check.stats import ColumnDrift


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most ``rows`` rows of ``frame`` (seeded, order kept)."""
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed).sort_index()


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: list[str], categorical: list[str],
                     html_path: Path | None = None, title: str = "", thresholds: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Run Evidently's drift and summary presets; save the HTML; return its per-column drift.

    ``thresholds`` (``num_threshold``, ``cat_threshold``, ``per_column_threshold``,
    ``drift_share``) are passed to ``DataDriftPreset``, so the report judges with the
    pipeline's limits; without them Evidently's defaults apply.

    Returns:
        ``{"drifted": [...], "scores": {column: value}, "methods": {column: method},
        "drift_share": float, "html": path or None}``.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    columns = [*categorical, *numeric]
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    drift_preset = DataDriftPreset(**(thresholds or {}))
    presets = [drift_preset] if html_path is None else [drift_preset, DataSummaryPreset()]
    snapshot = Report(presets, metadata={"title": title} if title else {}).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition))
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = html_path.with_suffix(".tmp.html")
        snapshot.save_html(str(tmp))
        tmp.replace(html_path)
    return {**evidently_drift(snapshot.dict()), "html": str(html_path) if html_path else None}


def evidently_drift(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Per-column drift from an Evidently 0.7 snapshot dict (``ValueDrift`` metrics)."""
    scores, methods, drifted, share = {}, {}, [], None
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        kind = config.get("type", "")
        if kind.endswith(":ValueDrift"):
            column, value = config["column"], float(metric["value"])
            scores[column], methods[column] = value, config.get("method", "")
            threshold = float(config.get("threshold", 0.1))
            # distance methods drift at >= threshold; p-value methods below it
            is_p_value = "p_value" in methods[column] or "test" in methods[column].lower()
            if (value < threshold) if is_p_value else (value >= threshold):
                drifted.append(column)
        elif kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return {"drifted": sorted(drifted), "scores": scores, "methods": methods, "drift_share": share}


# --- history ---------------------------------------------------------------------------
def history_dir(reports_dir: Path, pipeline: str) -> Path:
    return reports_dir / pipeline / "drift" / "history"


def write_history(reports_dir: Path, pipeline: str, *, check_key: str, as_of: dt.datetime,
                  columns: list[ColumnDrift], prediction: ColumnDrift | None, champion_version: str) -> Path:
    """One row per column for this check (re-running the check overwrites its own file)."""
    import pandas as pd

    rows = [{"check": check_key, "as_of": pd.Timestamp(as_of), "column": c.column, "kind": c.kind,
             "statistic": c.statistic, "score": c.score, "psi": c.psi, "ks": c.ks, "wasserstein": c.wasserstein,
             "jensen_shannon": c.jensen_shannon, "chi2": c.chi2, "p_value": c.p_value,
             "unseen_share": c.unseen_share, "null_share_current": c.null_share_current, "drifted": c.drifted,
             "rows_current": c.rows_current, "champion_version": champion_version}
            for c in [*columns, *([prediction] if prediction else [])]]
    return write_parquet_atomic(pd.DataFrame(rows), history_dir(reports_dir, pipeline) / f"{check_key}.parquet")


def read_history(reports_dir: Path, pipeline: str) -> pd.DataFrame:
    """Every check's rows, oldest first (empty frame when there is no history)."""
    import pandas as pd

    files = sorted(history_dir(reports_dir, pipeline).glob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=["check", "as_of", "column", "score", "psi", "drifted"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values("as_of", kind="stable")


def plot_history(history: pd.DataFrame, path: Path, *, top: int = 6, title: str = "") -> Path:
    """PSI over time of the ``top`` columns of the latest check (drifted ones first, then by PSI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latest = history[history["as_of"] == history["as_of"].max()]
    columns = latest.sort_values(["drifted", "psi"], ascending=False)["column"].head(top).tolist()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for column in columns:
        series = history[history["column"] == column]
        ax.plot(series["as_of"], series["psi"], marker="o", label=column)
        hits = series[series["drifted"]]
        ax.scatter(hits["as_of"], hits["psi"], s=60, facecolors="none", edgecolors="red")
    ax.set_ylabel("PSI vs reference")
    ax.set_title(title or "Top drifting columns (red rings: drifted)")
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
