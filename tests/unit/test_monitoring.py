"""Prometheus and Grafana files of the compose stack: every query reads a series the model server exports.

The exported names and labels come from the real server: an in-process ``ModelServer`` (the
CTR test models, champion plus a shadow challenger) answers requests, good and bad, with a
real drift verdict in its folder; its ``/metrics`` text is parsed, never a hard-coded list.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlflywheel.serving.metrics import drift_verdicts_dir
from tests.helpers import ctr_record
from tests.unit.test_serving_drift_metrics import write_check, ws  # noqa: F401 (fixtures)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mlflywheel.json"
#: sample-name suffixes Prometheus stores for each metric type
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "untyped": ("",)}
#: labels Prometheus adds to every scraped series (the target's labels in prometheus.yml)
TARGET_LABELS = {"job", "instance", "pipeline"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan"}


def _walk_panels(panels):
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in _walk_panels(board["panels"])
            for target in panel.get("targets", []) if target.get("expr")]


def parse_promql(expr: str) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """Metric names, grouping labels, and the matcher labels of each metric, of one PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors ([5m], [$__rate_interval])
    matchers: dict[str, set[str]] = {}
    for name, body in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", text):
        matchers.setdefault(name, set()).update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", "", text)
    grouping: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping.update(label.strip() for label in clause.split(",") if label.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = {m for m in re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", text) if m.lower() not in KEYWORDS}
    return names, grouping, matchers


@pytest.fixture
def exported(serve_ctr, ws, write_check):  # noqa: F811 (fixtures imported above)
    """``{sample name: label names}`` of what the real server's ``/metrics`` emits after traffic."""
    write_check(dt.datetime(2026, 5, 6, tzinfo=dt.UTC), "holiday")
    with serve_ctr(aliases={"champion": "1", "challenger": "2"}, tags={"flywheel.serving_mode": "shadow"}) as s:
        s.server.metrics.watch_drift("fraud", drift_verdicts_dir(ws.reports_dir, "fraud"))
        for i in range(1, 11):
            assert s.client.post("/predict", json={"records": [ctr_record(i)]}).status_code == 200
        assert s.client.post("/predict", json={"records": [ctr_record(1, placement=None)]}).status_code == 422
        assert s.client.get("/nowhere").status_code == 404
        shadow_ok = s.server.metrics.shadow.labels("2", "ok")
        for _ in range(200):  # the shadow copies finish after the answers
            if shadow_ok._value.get() == 10:
                break
            s.client.get("/v2/health/live")
        body = s.client.get("/metrics").text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for suffix in SUFFIXES[family.type]:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_promql_parser_finds_names_and_labels():
    names, grouping, matchers = parse_promql(
        'histogram_quantile(0.99, sum by (le, role) (rate(a_bucket{role!="none", x=~"a|b"}[$__rate_interval]))) '
        '/ ignoring(version) group_left clamp_min(sum(rate(b_total[5m] offset 1h)), 1e-9) and time() - c')
    assert names == {"a_bucket", "b_total", "c"}
    assert grouping == {"le", "role", "version"}
    assert matchers == {"a_bucket": {"role", "x"}}


def test_dashboard_reads_only_series_the_server_exports(exported):
    queries = dashboard_queries()
    assert len(queries) >= 20
    problems, used = [], set()
    for title, expr in queries:
        names, grouping, matchers = parse_promql(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        used |= names
        for name in sorted(names - set(exported)):
            problems.append(f"panel {title!r}: {name} is not exported by the model server ({expr})")
        labels = set().union(*(exported.get(n, set()) for n in names)) | TARGET_LABELS
        for label in sorted(grouping - labels):
            problems.append(f"panel {title!r}: label {label!r} is on none of {sorted(names)} ({expr})")
        for name, wanted in matchers.items():
            for label in sorted(wanted - exported.get(name, set()) - TARGET_LABELS):
                problems.append(f"panel {title!r}: {name} has no label {label!r} ({expr})")
    assert not problems, "\n".join(problems)
    # what the brief asks the board to show, by the series it reads
    for needed in ("flywheel_serving_requests_total", "flywheel_serving_errors_total",
                   "flywheel_serving_request_latency_seconds_bucket", "flywheel_serving_predictions_total",
                   "flywheel_serving_score_bucket", "flywheel_serving_queue_depth", "flywheel_serving_rejected_total",
                   "flywheel_drift_score", "flywheel_drift_detected"):
        assert needed in used, f"no panel reads {needed}"
    quantiles = [expr for _, expr in queries if "histogram_quantile(0.5," in expr or "histogram_quantile(0.99," in expr]
    assert any("request_latency_seconds_bucket" in q and "0.5," in q for q in quantiles)
    assert any("request_latency_seconds_bucket" in q and "0.99," in q for q in quantiles)


def test_a_misspelt_metric_would_be_caught(exported):
    names, _, _ = parse_promql("sum(rate(flywheel_serving_request_total[5m]))")
    assert names - set(exported) == {"flywheel_serving_request_total"}


def test_dashboard_panels_use_the_provisioned_datasource():
    board = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in _walk_panels(board["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
    ids = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in _walk_panels(board["panels"])]
    assert len(ids) == len(set(ids)), "two panels at the same grid position"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "mlflywheel.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_scrapes_the_model_server_metrics_endpoint():
    from mlflywheel.services.config import load_pipeline

    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    server = jobs["model-server"]
    assert server.get("metrics_path", "/metrics") == "/metrics"
    (targets,) = server["static_configs"]
    port = load_pipeline(ROOT / "include" / "pipelines" / "fraud.yaml").serving.port
    assert targets["targets"] == [f"model-server:{port}"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "model-server" in compose["services"]
