"""``flywheel``: sample data, config checks, the demo, and workspace helpers.

The CLI never imports Airflow: the demo runs Airflow as a subprocess on the workspace.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import FlywheelError
from mlflywheel.services.settings import Workspace

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _pipelines(ws: Workspace, names: list[str] | None) -> list[PipelineConfig]:
    from mlflywheel.services.config import load_pipeline, load_pipelines

    if not names or names == ["all"]:
        return load_pipelines(ws.pipelines_dir)
    return [load_pipeline(ws.pipelines_dir / f"{n}.yaml") for n in names]


def cmd_generate(args: argparse.Namespace) -> int:
    from mlflywheel.services.data.generate import inject_bad_data, write_landing
    from mlflywheel.services.data.io import partition_path, write_parquet_atomic

    ws = Workspace.from_env().ensure()
    end = dt.date.fromisoformat(args.end) if args.end else _today()
    start = end - dt.timedelta(days=args.days)
    for config in _pipelines(ws, args.pipeline):
        if not config.data.generator:
            print(f"{config.name}: no data.generator configured; skipped")
            continue
        paths = write_landing(config, ws, start=start, end=end, scenario=args.scenario,
                              scenario_start=(dt.date.fromisoformat(args.scenario_start)
                                              if args.scenario_start else None))
        print(f"{config.name}: {len(paths)} daily partitions {start}..{end - dt.timedelta(days=1)} "
              f"(scenario {args.scenario}) under {Path(paths[0]).parents[1]}")
        if getattr(args, "label_delay_days", None) is not None:
            from mlflywheel.services.data.labels import labels_dir, write_labels

            write_labels(config, ws, start=start, end=end, delay_days=args.label_delay_days)
            print(f"{config.name}: labels landing {args.label_delay_days}-{args.label_delay_days + 1} days after "
                  f"their rows under {labels_dir(config, ws)}")
        if args.bad:
            import pandas as pd

            day = dt.date.fromisoformat(args.bad_day) if args.bad_day else end - dt.timedelta(days=1)
            path = partition_path(config, ws, day)
            broken = inject_bad_data(pd.read_parquet(path), args.bad, id_column=config.data.id_column,
                                     timestamp=config.data.timestamp)
            write_parquet_atomic(broken, path)
            print(f"{config.name}: injected bad data {args.bad!r} into {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``flywheel pipeline validate`` (and its older name ``flywheel config check``)."""
    from mlflywheel.tools.pipeline_check import format_checks, validate_pipeline

    ws = Workspace.from_env()
    names = list(args.paths) or [p.stem for p in sorted(ws.pipelines_dir.glob("*.yaml"))]
    failed = 0
    for name in names:
        path, checks = validate_pipeline(ws, name)
        print(format_checks(path.stem, checks))
        failed += any(c.failed for c in checks)
    if failed:
        print(f"\n{failed} of {len(names)} pipeline(s) failed validation", file=sys.stderr)
    return 1 if failed else 0


def cmd_env(args: argparse.Namespace) -> int:
    ws = Workspace.from_env()
    for key, value in ws.airflow_env().items():
        print(f"export {key}={value}")
    return 0


def _airflow(ws: Workspace, *argv: str, log_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ws.airflow_env()}
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe) if exe.exists() else "airflow", *argv]
    if log_path is None:
        return subprocess.run(cmd, env=env, capture_output=True, text=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as fh:
        return subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)


_TASK_LINE = re.compile(r"^(\S+)\s.*\[DAG TEST\] (starting|end task) task_id=(\w+)")
_RUN_STATE = re.compile(r"DagRun Finished: dag_id=(\S+),.*?state=(\w+)")


def task_timings(log_text: str) -> tuple[dict[str, float], str | None]:
    """Per-task seconds and the final run state, from an ``airflow dags test`` log."""
    starts: dict[str, dt.datetime] = {}
    out: dict[str, float] = {}
    state = None
    for line in log_text.splitlines():
        if m := _TASK_LINE.match(line):
            stamp = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            if m.group(2) == "starting":
                starts[m.group(3)] = stamp
            elif m.group(3) in starts:
                out[m.group(3)] = round((stamp - starts[m.group(3)]).total_seconds(), 2)
        elif m := _RUN_STATE.search(line):
            state = m.group(2)
    return out, state


def cmd_demo(args: argparse.Namespace) -> int:
    if getattr(args, "loop", "train") == "drift":
        return cmd_demo_drift(args)
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.io import partition_path
    from mlflywheel.tools.summary import format_summary, run_summary

    ws = Workspace.from_env().ensure()
    timings: dict[str, float] = {}
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    end = _today()
    start = end - dt.timedelta(days=1)

    t0 = time.perf_counter()
    if not (ws.airflow_home / "airflow.db").is_file() or args.fresh:
        result = _airflow(ws, "db", "migrate")
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
            return result.returncode
    timings["airflow_db"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    needed = [end - dt.timedelta(days=i) for i in range(1, args.days + 1)]
    if args.fresh or not all(partition_path(config, ws, d).is_file() for d in needed):
        cmd_generate(argparse.Namespace(pipeline=[config.name], days=args.days, end=end.isoformat(),
                                        scenario="none", scenario_start=None, bad=None, bad_day=None))
    else:
        print(f"{config.name}: sample data for {needed[-1]}..{needed[0]} already in the landing zone")
    timings["sample_data"] = time.perf_counter() - t0

    logical = dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)
    log_path = ws.reports_dir / "demo" / f"{config.train_dag_id}-{logical:%Y%m%d}.log"
    print(f"running {config.train_dag_id} for {start}..{end} through Airflow (airflow dags test); log: {log_path}")
    t0 = time.perf_counter()
    result = _airflow(ws, "dags", "test", config.train_dag_id, logical.isoformat(), log_path=log_path)
    timings["airflow_dags_test"] = time.perf_counter() - t0
    per_task, state = task_timings(log_path.read_text())
    timings.update({f"task.{k}": v for k, v in per_task.items()})

    summary = run_summary(config, ws, start=dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC), end=logical)
    print()
    print(format_summary(summary, ws))
    print(f"  airflow        run {state or 'unknown'}; log {log_path}")
    print("  timings (s)    " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    (ws.reports_dir / "demo").mkdir(parents=True, exist_ok=True)
    (ws.reports_dir / "demo" / "timings.json").write_text(json.dumps(timings, indent=2))
    if result.returncode != 0 or state != "success":
        print(f"\nthe DAG run did not succeed (state {state}, exit {result.returncode}); "
              f"see {log_path}", file=sys.stderr)
        return 1
    return 0


def cmd_demo_drift(args: argparse.Namespace) -> int:
    """The loop through Airflow: holiday drift -> verdict -> asset event -> retraining -> gate.

    Without a scheduler (``airflow dags test``) nothing starts the queued asset-triggered run,
    so the demo runs ``<pipeline>__train`` itself with the event's window and reason as the
    manual-trigger params; a deployment's scheduler starts it from the event.
    """
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.data.generate import write_landing
    from mlflywheel.services.data.labels import write_labels
    from mlflywheel.services.registry import champion_version
    from mlflywheel.services.tracking import client
    from mlflywheel.tools.summary import format_summary, run_summary

    ws = Workspace.from_env().ensure()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    today = _today()
    trained_until = today - dt.timedelta(days=3)
    logs = ws.reports_dir / "demo"
    if not (ws.airflow_home / "airflow.db").is_file() or args.fresh:
        result = _airflow(ws, "db", "migrate")
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
            return result.returncode
    history = max(args.days, config.training.window_days + 31)
    print(f"1. data: {history} normal days until {trained_until}, the holiday scenario from {trained_until} to "
          f"{today - dt.timedelta(days=1)}, labels {config.drift.live.label_delay_days} days late")
    write_landing(config, ws, start=trained_until - dt.timedelta(days=history), end=trained_until)
    write_landing(config, ws, start=trained_until, end=today, scenario="holiday")
    write_labels(config, ws, start=trained_until - dt.timedelta(days=history), end=today,
                 delay_days=config.drift.live.label_delay_days)

    def dag_test(dag_id: str, when: dt.datetime, conf: dict[str, Any] | None = None) -> str | None:
        log_path = logs / f"{dag_id}-{when:%Y%m%dT%H%M}.log"
        argv = ["dags", "test", dag_id, when.isoformat(), *(["-c", json.dumps(conf)] if conf else [])]
        _airflow(ws, *argv, log_path=log_path)
        state = task_timings(log_path.read_text())[1]
        print(f"   {dag_id} @ {when:%Y-%m-%d %H:%M}: {state or 'unknown'} (log {log_path})")
        return state

    if champion_version(client(ws), config.model_name) is None:
        print(f"2. the champion: {config.train_dag_id} on the normal days")
        if dag_test(config.train_dag_id, dt.datetime.combine(trained_until, dt.time(), tzinfo=dt.UTC)) != "success":
            return 1
    else:
        print(f"2. the champion: {config.model_name}@champion exists")
    check_at = dt.datetime.combine(today, dt.time(0, 30), tzinfo=dt.UTC)
    print(f"3. drift check: {config.drift_dag_id} on the newest partition ({today - dt.timedelta(days=1)})")
    if dag_test(config.drift_dag_id, check_at) != "success":
        return 1
    from mlflywheel.stages.drift_check.check import drift_dir

    verdict = json.loads((drift_dir(ws, config) / "verdicts" / f"{config.name}_{check_at:%Y%m%dT%H%MZ}.json")
                         .read_text())
    print(f"   decision {verdict['decision'].upper()}: {verdict['detail']}")
    for reason in verdict["reasons"]:
        print(f"   - {reason}")
    print(f"   report {verdict.get('evidently', {}).get('html')}\n   verdict {verdict['verdict_path']}")
    if verdict["decision"] != "retrain":
        print("   no asset event: nothing to retrain")
        return 0
    window = verdict["retrain_window_days"]
    print(f"4. asset event {config.drift_asset_uri} emitted; retraining on the last {window} days")
    end = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
    note = ("drift: " + "; ".join(verdict["reasons"]))[:500]
    state = dag_test(config.train_dag_id, end, {"training_window_days": window, "note": note})
    print()
    print(format_summary(run_summary(config, ws, start=end - dt.timedelta(days=1), end=end, window_days=window), ws))
    return 0 if state == "success" else 1


def cmd_drift(args: argparse.Namespace) -> int:
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.stages.drift_check.check import run_drift_check

    ws = Workspace.from_env()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    as_of = dt.datetime.fromisoformat(args.as_of) if args.as_of else dt.datetime.now(dt.UTC)
    as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)
    result = run_drift_check(config, ws, as_of=as_of, window=args.window, reference=args.reference,
                             with_report=not args.no_report)
    print(json.dumps(result, indent=2))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.tools.summary import format_summary, run_summary

    ws = Workspace.from_env()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    end = dt.datetime.fromisoformat(args.end) if args.end else dt.datetime.combine(_today(), dt.time(), tzinfo=dt.UTC)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    print(format_summary(run_summary(config, ws, start=end - dt.timedelta(days=1), end=end), ws))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.infer import GPU_FIRST, score_parquet

    ws = Workspace.from_env()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    providers = ("CPUExecutionProvider",) if args.cpu else GPU_FIRST
    summary = score_parquet(config, ws, alias=args.alias, input_path=args.input, output_path=args.output,
                            batch_size=args.batch_size, providers=providers)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import yaml

    from mlflywheel.services.config import load_pipeline
    from mlflywheel.serving.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ws = Workspace.from_env().ensure()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set expects KEY=VALUE, found {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = yaml.safe_load(value)
    if args.no_feast:
        overrides["feast_lookup"] = False
    if args.log_path:
        overrides["log_path"] = args.log_path
    return serve(config, ws, host=args.host, port=args.port, **overrides)


def cmd_replay(args: argparse.Namespace) -> int:
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.tools.replay import replay

    ws = Workspace.from_env()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    print(f"replaying {config.name} rows to {args.url} at {args.rate:g} req/s"
          + (f", labels {args.label_delay:g} s after each answer" if args.label_delay is not None else ""))
    report = replay(config, ws, args.url, rate=args.rate, duration_s=args.duration, limit=args.limit,
                    label_delay_s=args.label_delay, feast=not args.no_feast, source=args.source)
    print(json.dumps(report.summary(), indent=2))
    return 0 if report.statuses.get(200) else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.errors import RegistryError
    from mlflywheel.stages.rollback import rollback

    ws = Workspace.from_env().ensure()
    config = load_pipeline(ws.pipelines_dir / f"{args.pipeline}.yaml")
    reason = args.reason or f"manual rollback ({'to v' + args.to if args.to else 'to @previous_champion'})"
    try:
        event = rollback(config, ws, reason=reason, to_version=args.to)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(event, indent=2))
    return 0


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    ws = Workspace.from_env().ensure()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    os.execv(exe, [exe, "ui", "--backend-store-uri", ws.tracking_uri, "--host", args.host, "--port", str(args.port)])


def cmd_up(args: argparse.Namespace) -> int:
    from mlflywheel.tools import stack

    ws = Workspace.from_env()
    ports = stack.Ports.resolve({"airflow": args.airflow_port, "mlflow": args.mlflow_port, "serve": args.serve_port})
    try:
        records = stack.up(ws, ports, pipeline=args.pipeline, timeout=args.timeout)
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    user, password = stack.login(ws)
    by_name = {name: rec for name, rec in records.items() if rec.url}
    print()
    print(f"  Airflow UI     {by_name['api-server'].url}  (login {user} / {password})")
    print(f"  MLflow UI      {by_name['mlflow'].url}")
    print(f"  model server   {by_name['serve'].url}  ({args.pipeline}; /v2/health/ready once a champion is live)")
    print(f"  logs           {stack.log_dir(ws)}/")
    print("  stop with      flywheel down  (make down)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from mlflywheel.tools import stack

    stack.down(Workspace.from_env(), timeout=args.timeout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="sample data").add_subparsers(dest="data_command", required=True)
    gen = data.add_parser("generate", help="write seeded sample data to the landing zone, one partition a day")
    gen.add_argument("--pipeline", action="append", help="pipeline name (repeatable; default: all)")
    gen.add_argument("--days", type=int, default=45, help="number of days (default 45)")
    gen.add_argument("--end", help="first day NOT generated, YYYY-MM-DD (default: today, UTC)")
    gen.add_argument("--scenario", default="none", help="drift scenario: none or holiday")
    gen.add_argument("--scenario-start", help="first day of the scenario (default: the first day)")
    gen.add_argument("--bad", help="break the last day's partition: missing_column, wrong_dtype, null_required, "
                                   "out_of_range, duplicate_ids, empty, future_timestamps, unknown_category")
    gen.add_argument("--bad-day", help="the day to break (default: the last day)")
    gen.add_argument("--label-delay-days", type=float,
                     help="also publish the labels to the labels zone, landing this many days (+0-1) late")
    gen.set_defaults(func=cmd_generate)

    config = sub.add_parser("config", help="pipeline configs").add_subparsers(dest="config_command", required=True)
    check = config.add_parser("check", help="same as `flywheel pipeline validate`")
    check.add_argument("paths", nargs="*")
    check.set_defaults(func=cmd_check)

    pipeline = sub.add_parser("pipeline", help="pipelines").add_subparsers(dest="pipeline_command", required=True)
    pvalidate = pipeline.add_parser(
        "validate", help="check a pipeline's YAML, Feast objects, expectation suite and landing data agree "
                         "(without Airflow; writes nothing)")
    pvalidate.add_argument("paths", nargs="*", metavar="NAME",
                           help="pipeline names or YAML paths (default: every pipeline)")
    pvalidate.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="workspace, sample data, and the training DAG end to end through Airflow")
    demo.add_argument("loop", nargs="?", choices=["train", "drift"], default="train",
                      help="train (default) or drift: holiday drift -> asset event -> retraining -> gate")
    demo.add_argument("--pipeline", default="fraud")
    demo.add_argument("--days", type=int, default=45)
    demo.add_argument("--fresh", action="store_true", help="regenerate data and re-migrate the Airflow DB")
    demo.set_defaults(func=cmd_demo)

    drift = sub.add_parser("drift", help="drift monitoring").add_subparsers(dest="drift_command", required=True)
    dcheck = drift.add_parser("check", help="one drift check without Airflow (verdict, report, MLflow run)")
    dcheck.add_argument("--pipeline", default="fraud")
    dcheck.add_argument("--as-of", help="check time, ISO 8601 (default: now, UTC)")
    dcheck.add_argument("--window", type=int, help="current window in days (default: drift.window_days)")
    dcheck.add_argument("--reference", default="champion", help="champion or a snapshot digest")
    dcheck.add_argument("--no-report", action="store_true", help="skip the Evidently HTML report")
    dcheck.set_defaults(func=cmd_drift)

    summary = sub.add_parser("summary", help="what the training run of an interval produced")
    summary.add_argument("--pipeline", default="fraud")
    summary.add_argument("--end", help="interval end (default: today 00:00 UTC)")
    summary.set_defaults(func=cmd_summary)

    infer = sub.add_parser("infer", help="score a Parquet file with a registered alias (GPU when present)")
    infer.add_argument("--pipeline", default="fraud")
    infer.add_argument("--alias", default="champion")
    infer.add_argument("--input", required=True)
    infer.add_argument("--output", required=True)
    infer.add_argument("--batch-size", type=int, default=65536)
    infer.add_argument("--cpu", action="store_true", help="do not try a GPU")
    infer.set_defaults(func=cmd_infer)

    srv = sub.add_parser("serve", help="the online model server: @champion/@canary from the registry, ONNX only")
    srv.add_argument("--pipeline", default="fraud")
    srv.add_argument("--host", help="bind address (default: serving.host, 127.0.0.1)")
    srv.add_argument("--port", type=int, help="port (default: serving.port, 8000)")
    srv.add_argument("--no-feast", action="store_true", help="records carry every model input (no online lookup)")
    srv.add_argument("--log-path", help="prediction log (default: $FLYWHEEL_HOME/serving/<pipeline>/predictions.db)")
    srv.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a serving setting of the pipeline config (repeatable), e.g. max_batch_size=32")
    srv.set_defaults(func=cmd_serve)

    rp = sub.add_parser("replay", help="send held-out rows to the model server at a set rate; publish their "
                                       "labels after a delay (the rollout demo's users and chargebacks)")
    rp.add_argument("--pipeline", default="fraud")
    rp.add_argument("--url", default="http://127.0.0.1:8000", help="the model server")
    rp.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    rp.add_argument("--duration", type=float, default=60.0, help="seconds to send for")
    rp.add_argument("--limit", type=int, help="at most this many rows")
    rp.add_argument("--label-delay", type=float, default=30.0,
                    help="seconds from an answer to its label's arrival in the labels zone")
    rp.add_argument("--no-labels", dest="label_delay", action="store_const", const=None)
    rp.add_argument("--no-feast", action="store_true", help="the server runs --no-feast: send every model input")
    rp.add_argument("--source", help="Parquet rows to send (default: the holdout of @champion's snapshot)")
    rp.set_defaults(func=cmd_replay)

    rb = sub.add_parser("rollback", help="@champion back to @previous_champion (or --to VERSION) in one step; "
                                         "any canary is taken off")
    rb.add_argument("pipeline")
    rb.add_argument("--to", metavar="VERSION", help="the version to make @champion (default: @previous_champion)")
    rb.add_argument("--reason", default="", help="recorded in the deployment ledger")
    rb.set_defaults(func=cmd_rollback)

    env = sub.add_parser("env", help="print the environment for running airflow/mlflow on this workspace")
    env.set_defaults(func=cmd_env)

    ui = sub.add_parser("mlflow-ui", help="start the MLflow UI on the workspace's tracking store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_mlflow_ui)

    stack_up = sub.add_parser("up", help="start Airflow (api-server, scheduler, dag-processor, triggerer), the "
                                         "MLflow UI and the model server on 127.0.0.1 in the background")
    stack_up.add_argument("--pipeline", default="fraud", help="the model server's pipeline (default fraud)")
    stack_up.add_argument("--airflow-port", type=int, help="default $AIRFLOW_PORT or 8080")
    stack_up.add_argument("--mlflow-port", type=int, help="default $MLFLOW_PORT or 5000")
    stack_up.add_argument("--serve-port", type=int, help="default $SERVE_PORT or 8000")
    stack_up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each service")
    stack_up.set_defaults(func=cmd_up)

    stack_down = sub.add_parser("down", help="stop what flywheel up started")
    stack_down.add_argument("--timeout", type=float, default=60.0, help="seconds between SIGTERM and SIGKILL")
    stack_down.set_defaults(func=cmd_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except FlywheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
