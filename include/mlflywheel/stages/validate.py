"""The data-quality gate: a Great Expectations suite run on the interval's landing data.

Suites live as JSON in ``expectations/<suite>.json`` (GX 1.x ``ExpectationSuite`` form:
``{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}]}``). One expectation is
added at run time because it depends on the clock: no event timestamp later than *now*
plus the configured tolerance.

The full result is written as JSON before the decision; a failure raises
:class:`DataValidationError` naming that file and listing each failed expectation with
its column, what was expected and what was observed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.data.io import write_text_atomic
from mlflywheel.services.errors import ConfigError, DataValidationError
from mlflywheel.services.names import TAG_PIPELINE, tag_value
from mlflywheel.services.suites import load_suite

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)

_KWARGS_NOT_EXPECTED = frozenset({"batch_id", "column", "result_format", "catch_exceptions", "meta"})


@dataclass
class Failure:
    """One failed expectation, in words a data engineer can act on."""

    expectation: str
    column: str | None
    expected: dict[str, Any]
    observed: Any

    def describe(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        return f"{self.expectation} on {where}: expected {self.expected}, observed {self.observed}"


@dataclass
class ValidationReport:
    suite: str
    rows: int
    evaluated: int
    passed: int
    failures: list[Failure] = field(default_factory=list)
    result_path: str | None = None

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe summary for XCom and logs."""
        return {"suite": self.suite, "rows": self.rows, "evaluated": self.evaluated,
                "passed": self.passed, "success": self.success, "result_path": self.result_path,
                "failures": [f.describe() for f in self.failures[:20]]}


def freshness_expectation(timestamp_column: str, now: dt.datetime, tolerance_minutes: int) -> dict[str, Any]:
    """No event later than ``now + tolerance`` (clock skew allowed, the future is not)."""
    limit = now.astimezone(dt.UTC) + dt.timedelta(minutes=tolerance_minutes)
    return {"type": "expect_column_max_to_be_between",
            "kwargs": {"column": timestamp_column, "max_value": limit.isoformat()},
            "meta": {"notes": "added at run time: event timestamps must not be in the future"}}


def validate_frame(frame: pd.DataFrame, suite: dict[str, Any], *,
                   extra_expectations: Sequence[dict[str, Any]] = (), result_path: Path | None = None
                   ) -> ValidationReport:
    """Run ``suite`` (plus ``extra_expectations``) on ``frame`` with an ephemeral GX context.

    Args:
        frame: the data to check.
        suite: a suite as returned by :func:`load_suite`.
        extra_expectations: run-time expectations appended to the suite.
        result_path: where to write the full GX result and our summary as JSON.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    expectations = [*suite["expectations"], *extra_expectations]
    try:
        gx_suite = context.suites.add(gx.ExpectationSuite(name=suite["name"], expectations=expectations))
    except Exception as exc:  # GX raises several types for an unknown expectation or bad kwargs
        raise ConfigError(f"expectation suite {suite['name']!r}: GX rejected it: {exc}") from exc
    batch = (context.data_sources.add_pandas("landing").add_dataframe_asset("interval")
             .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame}))
    result = batch.validate(gx_suite, result_format="SUMMARY")
    failures = [_failure(r.to_json_dict(), frame) for r in result.results if not r.success]
    report = ValidationReport(suite=suite["name"], rows=len(frame), evaluated=len(result.results),
                              passed=len(result.results) - len(failures), failures=failures)
    if result_path is not None:
        payload = {"summary": report.summary(), "failures": [asdict(f) for f in failures],
                   "gx_result": result.to_json_dict()}  # type: ignore[no-untyped-call]  # GX leaves it unannotated
        payload["summary"]["result_path"] = str(result_path)
        write_text_atomic(json.dumps(payload, indent=2, default=str), result_path)
        report.result_path = str(result_path)
    return report


def validate_or_raise(frame: pd.DataFrame, suite: dict[str, Any], *, source: str,
                      extra_expectations: Sequence[dict[str, Any]] = (), result_path: Path) -> ValidationReport:
    """:func:`validate_frame`, then raise :class:`DataValidationError` on any failure."""
    report = validate_frame(frame, suite, extra_expectations=extra_expectations, result_path=result_path)
    raise_on_failure(report, source=source)
    return report


def raise_on_failure(report: ValidationReport, *, source: str, run: dict[str, str] | None = None) -> None:
    """Raise :class:`DataValidationError` listing each failed expectation; log a pass."""
    if report.success:
        log.info("suite %s passed: %d rows, %d expectations", report.suite, report.rows, report.evaluated)
        return
    lines = "\n".join(f"  - {f.describe()}" for f in report.failures[:15])
    more = f"\n  ... and {len(report.failures) - 15} more" if len(report.failures) > 15 else ""
    raise DataValidationError(
        f"{source}: {len(report.failures)} of {report.evaluated} expectations in suite "
        f"{report.suite!r} failed on {report.rows} rows:\n{lines}{more}\nfull result: {report.result_path}",
        result_path=report.result_path, failures=[asdict(f) for f in report.failures], run=run)


def record_result(config: PipelineConfig, ws: Workspace, report: ValidationReport, *, days: list[dt.date],
                  source: str) -> dict[str, str]:
    """One MLflow run per validation in ``flywheel/<pipeline>/validation``: tags, metrics, the
    full result (``validation/result.json``) and a page a person reads (``validation/report.html``).

    Returns ``{"run_id", "experiment_id"}`` for the task's extra link.
    """
    import tempfile

    from mlflywheel.services import tracking

    client = tracking.client(ws)
    experiment = tracking.experiment_id(client, ws, config, suffix="validation")
    run_id = client.create_run(experiment, run_name=f"validate-{days[0]}_{days[-1]}", tags={
        TAG_PIPELINE: config.name, "flywheel.validation.suite": report.suite,
        "flywheel.validation.days": f"{days[0]}..{days[-1]}", "flywheel.validation.success": str(report.success),
        "flywheel.validation.source": tag_value(source)}).info.run_id
    for name, value in (("rows", report.rows), ("evaluated", report.evaluated), ("passed", report.passed),
                        ("failed", len(report.failures))):
        client.log_metric(run_id, f"validation.{name}", float(value))
    payload = json.loads(Path(report.result_path).read_text()) if report.result_path else {}
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(result_html(payload, title=f"{config.name}: {source}"))
        client.log_artifact(run_id, str(page), "validation")
        if report.result_path:
            client.log_artifact(run_id, report.result_path, "validation")
    client.set_terminated(run_id, "FINISHED" if report.success else "FAILED")
    return {"run_id": run_id, "experiment_id": experiment}


def result_html(payload: dict[str, Any], *, title: str) -> str:
    """The validation result as one self-contained HTML page: a row per expectation."""
    from html import escape

    summary = payload.get("summary", {})
    rows = []
    for result in (payload.get("gx_result") or {}).get("results", []):
        config = result.get("expectation_config", {})
        kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k not in ("batch_id", "result_format")}
        body = result.get("result") or {}
        observed = body.get("observed_value", body.get("unexpected_count", ""))
        mark = "pass" if result.get("success") else "FAIL"
        rows.append(f"<tr class={mark}><td>{mark}</td><td>{escape(config.get('type', ''))}</td>"
                    f"<td>{escape(str(kwargs.pop('column', '')))}</td>"
                    f"<td><code>{escape(json.dumps(kwargs, default=str)[:400])}</code></td>"
                    f"<td><code>{escape(json.dumps(observed, default=str)[:400])}</code></td></tr>")
    status = "passed" if summary.get("success") else "FAILED"
    return (f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>"
            "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
            "tr.FAIL{background:#fdecea}tr.pass td:first-child{color:#1e7e34}</style>"
            f"<h1>{escape(title)}</h1><p>Suite <b>{escape(str(summary.get('suite', '')))}</b> {status}: "
            f"{summary.get('passed', 0)} of {summary.get('evaluated', 0)} expectations on "
            f"{summary.get('rows', 0)} rows.</p>"
            "<table><tr><th></th><th>expectation</th><th>column</th><th>expected</th><th>observed</th></tr>"
            + "".join(rows) + "</table>")


def _failure(result: dict[str, Any], frame: pd.DataFrame) -> Failure:
    config = result["expectation_config"]
    kwargs = config.get("kwargs", {})
    column = kwargs.get("column") or (",".join(kwargs["column_list"]) if "column_list" in kwargs else None)
    expected = {k: v for k, v in kwargs.items() if k not in _KWARGS_NOT_EXPECTED}
    observed = _observed(result, frame, kwargs)
    return Failure(expectation=config["type"], column=column, expected=expected, observed=observed)


def _observed(result: dict[str, Any], frame: pd.DataFrame, kwargs: dict[str, Any]) -> Any:
    for col in [kwargs.get("column"), *kwargs.get("column_list", [])]:
        if col and col not in frame.columns:
            return f"column {col!r} is missing"
    body = result.get("result") or {}
    if "details" in body and "mismatched" in body["details"]:
        return body["details"]["mismatched"]
    if "observed_value" in body:
        return body["observed_value"]
    if "unexpected_count" in body:
        return {"unexpected_count": body["unexpected_count"],
                "unexpected_percent": round(body.get("unexpected_percent") or 0.0, 4),
                "examples": body.get("partial_unexpected_list", [])[:5]}
    info = result.get("exception_info") or {}
    messages = ([v.get("exception_message") for v in info.values() if isinstance(v, dict)]
                or [info.get("exception_message")])
    messages = [m for m in messages if m]
    return f"error: {messages[0]}" if messages else "no result"


def validate_landing(config: PipelineConfig, ws: Workspace, *, start: dt.datetime, end: dt.datetime,
                     now: dt.datetime | None = None) -> dict[str, Any]:
    """The ``validate`` step: the suite on the landing partitions of days in ``[start, end)``.

    At least one day is validated (:func:`~mlflywheel.services.data.io.interval_days`).
    The result is written to ``reports/<pipeline>/validation/<first>_<last>.json`` and recorded
    as an MLflow run (:func:`record_result`), pass or fail, before the decision.

    Raises:
        DataValidationError: with every failed expectation; nothing downstream should run.
        DataNotFound: a partition of the interval is not in the landing zone.
    """
    from mlflywheel.services.data.io import interval_days, landing_dir, read_days

    days = interval_days(start, end)
    suite = load_suite(ws.expectations_dir, config.validation.suite)
    frame = read_days(config, ws, days)
    now = now or dt.datetime.now(dt.UTC)
    path = ws.reports_dir / config.name / "validation" / f"{days[0]}_{days[-1]}.json"
    source = f"{landing_dir(config, ws)} ds={days[0]}..{days[-1]}"
    extra = [freshness_expectation(config.data.timestamp, now, config.validation.future_tolerance_minutes)]
    report = validate_frame(frame, suite, extra_expectations=extra, result_path=path)
    run = record_result(config, ws, report, days=days, source=source)
    raise_on_failure(report, source=source, run=run)
    return {**report.summary(), "days": [d.isoformat() for d in days], **run}
