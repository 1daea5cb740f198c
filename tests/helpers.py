"""Small models for tests: a CTR HistGradientBoosting fitted in a second, exported to ONNX and
registered with the same version tags ``export_quantize`` writes, without a training run."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from mlflywheel.services.data.generate import generate_ctr_day


def ctr_frame(days: int = 3) -> pd.DataFrame:
    """A few days of CTR impressions with made-up values of the ``ad_stats`` view's features."""
    frame = pd.concat([generate_ctr_day(dt.date(2026, 5, 1) + dt.timedelta(days=i)) for i in range(days)],
                      ignore_index=True)
    rng = np.random.default_rng(0)
    frame["clicked_count_1d"] = rng.integers(0, 20, len(frame))
    frame["clicked_count_7d"] = rng.integers(0, 100, len(frame))
    frame["clicked_mean_7d"] = np.where(rng.random(len(frame)) < 0.1, np.nan, rng.random(len(frame)) * 0.1)
    frame["bid_price_mean_7d"] = frame["bid_price"] * 1.1
    return frame


def ctr_hgb(frame: pd.DataFrame, max_iter: int = 30) -> tuple[Any, Any]:
    """The ``ctr`` pipeline config switched to HistGradientBoosting, and the model fitted on ``frame``."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.dataset import model_inputs
    from mlflywheel.services.settings import project_root
    from mlflywheel.stages.train.sklearn import build

    config = load_pipeline(project_root() / "include" / "pipelines" / "ctr.yaml")
    config = config.model_copy(update={"training": config.training.model_copy(
        update={"trainer": "sklearn_hgb", "params": {"max_iter": max_iter}})})
    estimator = build(config.training).fit(model_inputs(frame, config), frame["clicked"])
    return config, estimator


def save_onnx(estimator: Any, config: Any, path: Path) -> Path:
    """``estimator`` exported as the pipeline's ONNX graph at ``path``."""
    import onnx

    from mlflywheel.services.onnx_export import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(export_onnx(estimator, config), str(path))
    return path


def publish_onnx_version(ws: Any, config: Any, onnx_path: Path, *, sha256: str | None = None,
                         aliases: tuple[str, ...] = ()) -> str:
    """Register a version whose logged model holds ``onnx_path`` as ``onnx/model-fp32.onnx``.

    Tags are the ones ``export_version`` writes; ``sha256`` overrides the recorded hash (to
    make a version whose file does not match its record). Returns the version number.
    """
    from mlflow.exceptions import MlflowException

    from mlflywheel.services import tracking
    from mlflywheel.services.runtime import sha256_file

    client = tracking.client(ws)
    name = config.model_name
    with tracking.active(ws):
        experiment = tracking.experiment_id(client, ws, config)
        logged = client.create_logged_model(experiment_id=experiment, name="model")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "onnx").mkdir()
            shutil.copy(onnx_path, Path(tmp) / "onnx" / "model-fp32.onnx")
            client.log_model_artifacts(logged.model_id, tmp)
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {"flywheel.onnx.fp32.published": "true", "flywheel.onnx.fp32.path": "onnx/model-fp32.onnx",
                "flywheel.onnx.fp32.sha256": sha256 or sha256_file(onnx_path),
                "flywheel.serve_variant": "onnx-fp32@CPU"}
        version = client.create_model_version(name, source=f"models:/{logged.model_id}", tags=tags,
                                              model_id=logged.model_id).version
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version)
    return str(version)


class StaticSource:
    """A registry in memory: aliases and tags set by the test, versions served from ONNX files.

    Loading goes through the real :class:`OnnxModel` with the recorded hash, as the MLflow
    source does; only the registry round trip is left out.
    """

    def __init__(self, model_name: str, files: dict[str, Path], hashes: dict[str, str] | None = None) -> None:
        self.model_name, self.files, self.hashes = model_name, dict(files), dict(hashes or {})
        self.aliases: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.loads: list[str] = []

    def state(self) -> tuple[dict[str, str], dict[str, str]]:
        return dict(self.aliases), dict(self.tags)

    def load(self, version: str) -> Any:
        from mlflywheel.services.runtime import OnnxModel, sha256_file
        from mlflywheel.serving.models import Loaded

        self.loads.append(version)
        path = self.files[version]
        model = OnnxModel(path, expected_sha256=self.hashes.get(version, sha256_file(path)),
                          providers=["CPUExecutionProvider"])
        return Loaded(version=version, model=model, variant="onnx-fp32@CPU")


@contextmanager
def running_server(ctr: SimpleNamespace, log_path: Path, *, aliases: dict[str, str] | None = None,
                   tags: dict[str, str] | None = None, online: Any = None, **spec: Any) -> Iterator[SimpleNamespace]:
    """A :class:`ModelServer` on a :class:`StaticSource`, started through Starlette's TestClient."""
    from starlette.testclient import TestClient

    from mlflywheel.services.predlog import PredictionLog
    from mlflywheel.services.settings import Workspace
    from mlflywheel.services.suites import load_suite
    from mlflywheel.serving.app import ModelServer
    from mlflywheel.serving.contract import build_contract

    config = ctr.config
    serving = config.serving.model_copy(update={"feast_lookup": online is not None, "poll_interval_s": 3600, **spec})
    suite = load_suite(Workspace.from_env().expectations_dir, config.validation.suite)
    contract = build_contract(config, suite, feast_lookup=serving.feast_lookup, max_rows=serving.max_rows)
    source = StaticSource(config.model_name, ctr.files)
    source.aliases = dict(aliases or {"champion": "1"})
    source.tags = dict(tags or {})
    server = ModelServer(config.model_name, source, contract, PredictionLog(log_path), serving, online=online)
    with TestClient(server.app()) as client:
        yield SimpleNamespace(server=server, source=source, client=client, log_path=log_path)


def ctr_record(ad_id: int = 7, **changes: Any) -> dict[str, Any]:
    """A valid /predict record of the CTR pipeline with the Feast lookup off (every input given)."""
    record = {"ad_id": ad_id, "placement": "feed", "device": "ios", "position": 2, "bid_price": 1.5,
              "clicked_count_1d": 3, "clicked_count_7d": 10, "clicked_mean_7d": 0.05, "bid_price_mean_7d": None}
    record.update(changes)
    return record


def train_champion(ws: Any, config: Any, until: dt.date) -> dict[str, Any]:
    """The training DAG's core steps on ``ws`` without Airflow: the window ending the day before
    ``until`` is materialized, trained, gated, registered (the first version becomes
    ``@champion``) and exported. Returns the snapshot and the version."""
    from mlflywheel.services import tracking
    from mlflywheel.stages.evaluate_gate import evaluate_gate
    from mlflywheel.stages.export_quantize import export_version
    from mlflywheel.stages.feature_materialize import materialize_and_snapshot
    from mlflywheel.stages.register import register
    from mlflywheel.stages.train import train

    end = dt.datetime.combine(until, dt.time(), tzinfo=dt.UTC)
    features = materialize_and_snapshot(config, ws, interval_end=end, window_days=config.training.window_days)
    key = tracking.run_key(config, end - dt.timedelta(days=1), end, config.training.window_days)
    trained = train(config, ws, snapshot=features["snapshot"], run_key=key)
    verdict = evaluate_gate(config, ws, run_id=trained["run_id"], model_uri=trained["model_uri"],
                            snapshot=features["snapshot"])
    assert verdict["decision"] == "approved", verdict["reasons"]
    version = str(register(config, ws, run_id=trained["run_id"], model_uri=trained["model_uri"],
                           run_key=key)["version"])
    export_version(config, ws, version=version)
    return {"snapshot": features["snapshot"], "version": version}


def run_dag(dag_file: str, builder: str, config: Any, logical: dt.datetime,
            conf: dict | None = None) -> tuple[str, dict[str, str], str]:
    """Build ``config``'s DAG with ``dags/<dag_file>``'s factory and run it once with ``dag.test()``.

    Retries are set to 0: a failure fails the test at once instead of waiting out a retry
    delay. Returns the run's state, each task's state and the run id.
    """
    import importlib.util

    from mlflywheel.services.settings import project_root

    path = project_root() / "dags" / dag_file
    spec = importlib.util.spec_from_file_location(f"_{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return run_dag_once(getattr(module, builder)(config), logical, conf)


def run_dag_once(dag: Any, logical: dt.datetime, conf: dict | None = None) -> tuple[str, dict[str, str], str]:
    """``dag.test()`` once with retries off; the run's state, each task's state, the run id."""
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(logical_date=logical, run_conf=conf)
    states = {ti.task_id: str(ti.state).split(".")[-1].lower() for ti in run.get_task_instances()}
    return str(run.state).split(".")[-1].lower(), states, run.run_id



def slow_onnx(src: Path, dst: Path, *, size: int = 2048, matmuls: int = 60) -> Path:
    """``src`` with the same inputs and the same scores, made slow: ``matmuls`` input-dependent
    ``size`` x ``size`` MatMuls per row whose result is added times zero (ONNX Runtime cannot
    fold them away). A canary that is correct but slow, for the latency rollback."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    x = next(i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT)
    out = next(o.name for o in graph.output if o.name == "probabilities")
    for node in graph.node:
        node.output[:] = [f"{out}__fast" if o == out else o for o in node.output]
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    graph.initializer.extend([
        numpy_helper.from_array(w, "slow_w"),
        numpy_helper.from_array(np.array([1, size], dtype=np.int64), "slow_shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "slow_axes"),
        numpy_helper.from_array(np.array(-1.0, dtype=np.float32), "slow_lo"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "slow_hi"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "slow_zero")])
    nodes = [helper.make_node("Expand", [x, "slow_shape"], ["slow_0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_{i + 1}"]))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    reduce = (helper.make_node("ReduceSum", [f"slow_{matmuls}", "slow_axes"], ["slow_sum"], keepdims=1)
              if opset >= 13
              else helper.make_node("ReduceSum", [f"slow_{matmuls}"], ["slow_sum"], axes=[1], keepdims=1))
    nodes += [reduce,
              helper.make_node("Clip", ["slow_sum", "slow_lo", "slow_hi"], ["slow_clip"]),
              helper.make_node("Mul", ["slow_clip", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", [f"{out}__fast", "slow_nothing"], [out])]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
