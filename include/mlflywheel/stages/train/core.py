"""Train on a feature snapshot and track everything in MLflow.

One MLflow run per (pipeline, data interval, window): the run key. With ``if_exists="skip"``
a finished run with the same key and dataset digest is returned instead of training again,
so a cleared task gives the same outputs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlflywheel.services import tracking
from mlflywheel.services.dataset import holdout_split, load_snapshot, model_inputs
from mlflywheel.services.errors import FlywheelError
from mlflywheel.services.names import (
    TAG_DIGEST,
    TAG_GIT,
    TAG_MODEL_URI,
    TAG_NOTE,
    TAG_PIPELINE,
    TAG_RUN_KEY,
    TAG_TRIGGER,
)
from mlflywheel.services.native import record_digest
from mlflywheel.services.onnx_export import check_exportable

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)
IfExists = Literal["skip", "replace", "fail"]
MODEL_ARTIFACT = "model"




def find_run(mlflow_client: MlflowClient, experiment: str, key: str, digest: str) -> Run | None:
    """A finished run with this run key and dataset digest, or ``None``."""
    runs = mlflow_client.search_runs(
        [experiment],
        filter_string=(f"tags.`{TAG_RUN_KEY}` = '{key}' and tags.`{TAG_DIGEST}` = '{digest}' "
                       "and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def train(config: PipelineConfig, ws: Workspace, *, snapshot: dict[str, Any], run_key: str,
          trigger: str = "manual", note: str = "", if_exists: IfExists = "skip") -> dict[str, Any]:
    """Fit the configured model on the snapshot's training part, log it, return the run's refs.

    Args:
        config: the pipeline.
        ws: the workspace.
        snapshot: the ``feature_materialize`` summary's ``snapshot`` (uri, digest, rows).
        run_key: identity of this training (see :func:`mlflywheel.services.tracking.run_key`).
        trigger: why it runs (schedule, drift event, manual); recorded as a tag.
        note: free text from a manual trigger; recorded as a tag.
        if_exists: when a finished run with the same key and digest exists: ``skip``
            returns it, ``replace`` trains a new one, ``fail`` raises.

    Returns:
        ``run_id``, ``model_uri``, ``experiment_id``, ``metrics``, ``reused``.
    """
    import mlflow
    import numpy as np
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    from mlflywheel.services.model_metrics import classification_metrics
    from mlflywheel.stages.train.contract import TrainingData
    from mlflywheel.stages.train.plugins import fit

    mlflow_client = tracking.client(ws)
    experiment = tracking.experiment_id(mlflow_client, ws, config)
    digest = snapshot["digest"]
    existing = find_run(mlflow_client, experiment, run_key, digest)
    if existing is not None and if_exists != "replace":
        if if_exists == "fail":
            raise FlywheelError(f"run {existing.info.run_id} already trained {run_key} on {digest} (if_exists='fail')")
        log.info("reusing finished run %s for %s (if_exists='skip')", existing.info.run_id, run_key)
        return _summary(existing, reused=True)

    frame = load_snapshot(snapshot["uri"], digest)
    train_part, holdout = holdout_split(frame, config)
    features, label = config.feature_columns, config.data.label
    x_train, y_train = model_inputs(train_part, config), train_part[label].to_numpy()
    x_holdout = model_inputs(holdout, config)
    # the pipeline's trainer (built-in, import path or entry point); any failure is one TrainerError
    # naming the pipeline and the trainer, raised before an MLflow run exists
    estimator = fit(config, TrainingData(
        pipeline=config.name, x=x_train, y=y_train, x_val=x_holdout, y_val=holdout[label].to_numpy(),
        categorical=tuple(config.training.categorical), numeric=tuple(config.training.numeric),
        seed=config.training.seed, params=dict(config.training.params)))
    # serving and batch scoring run ONNX only: a model that cannot be converted stops here, before
    # a run, a version or an alias exists
    check_exportable(estimator, config, config.training.trainer)
    proba = estimator.predict_proba(x_holdout)[:, 1]
    metrics = classification_metrics(holdout[label].to_numpy(), proba, config.gate.decision_threshold)

    tags = {TAG_RUN_KEY: run_key, TAG_PIPELINE: config.name, TAG_DIGEST: digest,
            TAG_TRIGGER: trigger, TAG_GIT: tracking.git_commit()}
    if note:
        tags[TAG_NOTE] = note[:500]
    with tracking.active(ws), mlflow.start_run(experiment_id=experiment, run_name=f"train {run_key}",
                                               tags=tags) as run:
        mlflow.log_params({"trainer": config.training.trainer, "seed": config.training.seed,
                           "window_days": snapshot.get("window_days", config.training.window_days),
                           "holdout_days": config.training.holdout_days,
                           "features": ",".join(features), "label": label,
                           **{f"model.{k}": v for k, v in config.training.params.items()}})
        mlflow.log_metrics({**{f"holdout_{k}": v for k, v in metrics.items()},
                            "n_train_rows": len(train_part), "n_holdout_rows": len(holdout),
                            "train_positive_rate": float(np.mean(y_train))})
        dataset = from_pandas(frame, source=snapshot["uri"], targets=label,
                              name=f"{config.name}-snapshot", digest=digest)
        mlflow.log_input(dataset, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            env = Path(tmp) / "environment.json"
            env.write_text(json.dumps({"packages": tracking.package_versions(), "snapshot": snapshot}, indent=2))
            mlflow.log_artifact(str(env))
        signature = infer_signature(x_train.head(200), estimator.predict_proba(x_train.head(200)))
        model_info = mlflow.sklearn.log_model(
            estimator, name=MODEL_ARTIFACT, signature=signature,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=_requirements(config), pyfunc_predict_fn="predict_proba")
        mlflow.set_tag(TAG_MODEL_URI, model_info.model_uri)
        record_digest(ws, run.info.run_id, model_info.model_uri)  # what load_native checks before unpickling
    log.info("trained %s: run %s, holdout %s", run_key, run.info.run_id,
             {k: round(v, 4) for k, v in metrics.items()})
    finished = mlflow_client.get_run(run.info.run_id)
    return _summary(finished, reused=False)


def _summary(run: Run, *, reused: bool) -> dict[str, Any]:
    metrics = {k[len("holdout_"):]: v for k, v in run.data.metrics.items() if k.startswith("holdout_")}
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
            "model_uri": run.data.tags.get(TAG_MODEL_URI, f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}"),
            "metrics": metrics, "dataset_digest": run.data.tags.get(TAG_DIGEST),
            "run_key": run.data.tags.get(TAG_RUN_KEY), "reused": reused}


def _requirements(config: PipelineConfig) -> list[str]:
    """Explicit pins (inferring requirements costs ~16 s and lists whatever is importable)."""
    from importlib.metadata import version

    names = ["scikit-learn", "numpy", "pandas", "cloudpickle"]
    names += {"torch_mlp": ["torch", "mlflywheel"], "xgboost": ["xgboost-cpu"],
              "lightgbm": ["lightgbm"]}.get(config.training.trainer, [])
    return [f"{name}=={version(name)}" for name in names]
