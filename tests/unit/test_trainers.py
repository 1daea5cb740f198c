"""Trainers are plug-ins: a built-in name, an import path or an entry point, under one contract."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflywheel.services.errors import ConfigError, TrainerError
from mlflywheel.stages.train.contract import ENTRY_POINT_GROUP, TrainingData
from mlflywheel.stages.train.plugins import BUILTIN, fit, resolve

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(pipeline_config):
    return pipeline_config("fraud")


def _with_trainer(config, trainer, **params):
    training = config.training.model_copy(update={"trainer": trainer, "params": params})
    return config.model_copy(update={"training": training})


@pytest.fixture
def data(config):
    rng = np.random.default_rng(0)
    n = 600
    cats = {c: rng.choice(["a", "b", "c"], n) for c in config.training.categorical}
    nums = {c: rng.lognormal(2, 1, n).astype("float32") for c in config.training.numeric}
    x = pd.DataFrame({**cats, **nums})[config.feature_columns]
    y = ((nums["amount"] > 10) ^ (rng.random(n) < 0.1)).astype(int)
    return TrainingData(pipeline=config.name, x=x.iloc[:500], y=y[:500], x_val=x.iloc[500:], y_val=y[500:],
                        categorical=tuple(config.training.categorical), numeric=tuple(config.training.numeric),
                        seed=7, params={})


@pytest.fixture
def team_module(tmp_path, monkeypatch):
    """``team_trainers.py`` on sys.path: one good trainer and the ways a trainer goes wrong."""
    (tmp_path / "team_trainers.py").write_text('''
from sklearn.linear_model import LogisticRegression
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

def good(data):
    pre = ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), list(data.categorical))],
                            remainder="passthrough")
    model = LogisticRegression(C=float(data.params.get("C", 1.0)), max_iter=2000)
    return Pipeline([("pre", pre), ("m", model)]).fit(data.x, data.y)

def explodes(data):
    raise RuntimeError("singular matrix")

def returns_nothing(data):
    return None

def regressor(data):
    from sklearn.linear_model import LinearRegression
    return LinearRegression().fit(data.x[list(data.numeric)], data.y)

NOT_A_FUNCTION = 3

class Unconvertible:
    """scikit-learn-like enough to score, unknown to skl2onnx."""
    def fit(self, x, y):
        self.rate_ = float(y.mean())
        return self
    def predict_proba(self, x):
        import numpy as np
        p = np.full(len(x), self.rate_)
        return np.column_stack([1 - p, p])

def unconvertible(data):
    return Unconvertible().fit(data.x, data.y)
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "team_trainers"
    sys.modules.pop("team_trainers", None)


def test_every_built_in_resolves_to_a_function():
    for name in BUILTIN:
        assert callable(resolve(name, "fraud"))


def test_a_built_in_fits_under_the_contract(config, data):
    model = fit(_with_trainer(config, "sklearn_logreg", C=0.5), data)
    assert model.predict_proba(data.x_val).shape == (len(data.x_val), 2)


def test_an_import_path_trainer_gets_its_params(config, data, team_module):
    model = fit(_with_trainer(config, f"{team_module}:good"), TrainingData(**{**data.__dict__, "params": {"C": 0.01}}))
    assert model.named_steps["m"].C == 0.01


def test_the_example_team_trainer_outside_the_package_fits(config, data, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    model = fit(_with_trainer(config, "team_models.fraud_gbm:train"),
                TrainingData(**{**data.__dict__, "params": {"n_estimators": 10}}))
    assert model.named_steps["model"].n_estimators == 10


def test_an_entry_point_of_an_installed_package_is_found(config, data, team_module, tmp_path, monkeypatch):
    """A real distribution on sys.path (its dist-info declares the entry point), as pip would install it."""
    dist = tmp_path / "site" / "team_models_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: team-models-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nchurn = {team_module}:good\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = fit(_with_trainer(config, "churn"), data)
    assert model.predict_proba(data.x_val).shape[1] == 2


@pytest.mark.parametrize(("reference", "message"), [
    ("no_such_team.models:train", r"module 'no_such_team.models' cannot be imported \(ModuleNotFoundError"),
    ("team_trainers:missing", r"team_trainers has no attribute 'missing'"),
    ("team_trainers:NOT_A_FUNCTION", r"is a int, not a function taking TrainingData"),
    ("team_trainers:explodes", r"raised while fitting: RuntimeError: singular matrix"),
    ("team_trainers:returns_nothing", r"returned NoneType, expected a fitted estimator with predict_proba"),
    ("team_trainers:regressor", r"returned LinearRegression, expected a fitted estimator with predict_proba"),
    ("churn_model", r"not a built-in .* not an installed mlflywheel.trainers entry point"),
])
def test_a_bad_trainer_is_one_clear_error_naming_pipeline_and_trainer(config, data, team_module, reference,
                                                                       message):
    with pytest.raises(TrainerError, match=message) as caught:
        fit(_with_trainer(config, reference), data)
    assert str(caught.value).startswith(f"pipeline fraud: trainer {reference!r}")


@pytest.mark.parametrize("reference", ["my team:train", "pkg/module:train", "a:b:c", ""])
def test_a_malformed_trainer_reference_is_refused_at_config_load(pipeline_config, tmp_path, reference):
    import yaml

    from mlflywheel.services.config import load_pipeline

    raw = yaml.safe_load((ROOT / "include" / "pipelines" / "fraud.yaml").read_text())
    raw["training"]["trainer"] = reference
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="training.trainer"):
        load_pipeline(tmp_path / "fraud.yaml")


def test_a_model_that_cannot_be_exported_stops_train_before_any_run(config, data, team_module, tmp_path):
    """No MLflow run, no version, no alias: the ONNX conversion is tried right after fitting."""
    from mlflywheel.services import tracking
    from mlflywheel.services.errors import ExportError
    from mlflywheel.services.features import frame_digest
    from mlflywheel.services.settings import Workspace
    from mlflywheel.stages.train.core import train

    ws = Workspace(home=tmp_path / "ws").ensure()
    frame = pd.concat([data.x, data.x_val], ignore_index=True)
    frame[config.data.label] = np.concatenate([data.y, data.y_val])
    frame[config.data.timestamp] = pd.date_range("2026-05-01", periods=len(frame), freq="h", tz="UTC")
    path = tmp_path / "frame.parquet"
    frame.to_parquet(path)
    snapshot = {"uri": str(path), "digest": frame_digest(pd.read_parquet(path)), "rows": len(frame)}
    bad = _with_trainer(config, f"{team_module}:unconvertible")
    with pytest.raises(ExportError, match=rf"pipeline fraud: trainer '{team_module}:unconvertible' returned a "
                                          r"Unconvertible that cannot be exported to ONNX"):
        train(bad, ws, snapshot=snapshot, run_key="fraud/test/w28")
    client = tracking.client(ws)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert client.search_registered_models() == []


@pytest.mark.parametrize("trainer", ["xgboost", "lightgbm"])
def test_boosted_tree_trainers_export_within_parity_with_missing_values(config, data, trainer, tmp_path):
    """XGBoost and LightGBM in one scikit-learn Pipeline, converted by onnxmltools' converters through
    skl2onnx; NaN amounts reach the trees (their own missing-value routing must survive the export)."""
    from mlflywheel.stages.export_quantize import export_variants

    x = data.x.copy()
    x.loc[x.index[::7], "amount"] = np.nan
    data = TrainingData(**{**data.__dict__, "x": x, "params": {"n_estimators": 40, "max_depth": 4}})
    model = fit(_with_trainer(config, trainer), data)
    holdout = data.x_val.copy()
    holdout.loc[holdout.index[::5], "amount"] = np.nan
    holdout[config.data.label] = data.y_val
    manifest = export_variants(model, holdout, config, tmp_path / trainer)
    fp32 = manifest["variants"]["fp32"]
    assert fp32["published"] and fp32["parity"]["max_abs_diff"] < 1e-5
    assert fp32["parity"]["decision_agreement"] == 1.0
    assert type(model.named_steps["model"]).__module__.split(".")[0] == trainer
