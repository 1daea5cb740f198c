"""The PyTorch trainer: deterministic, early-stopped, exported with the lookup inside the graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlflywheel.services.config import ExportSpec, ParityLimits
from mlflywheel.services.runtime import OnnxModel
from mlflywheel.stages.export_quantize import export_variants

pytestmark = pytest.mark.unit
LOOSE = ParityLimits(max_abs_diff=1.0, min_decision_agreement=0.0, max_metric_delta=1.0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], n),
                          "size": rng.normal(0, 1, n).astype("float32"),
                          "weight": np.where(rng.random(n) < 0.05, np.nan, rng.normal(5, 2, n)).astype("float32")})
    logit = 1.5 * frame["size"] + (frame["colour"] == "red") * 1.0 - 1.0
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame.iloc[:2400], frame.iloc[2400:]


def _fit(train, holdout, seed=1):
    from mlflywheel.stages.train.torch_mlp import TorchTabularClassifier

    model = TorchTabularClassifier(categorical=("colour",), numeric=("size", "weight"), hidden="16", max_epochs=15,
                                   patience=3, seed=seed)
    return model.fit(train.drop(columns="label"), train["label"], X_val=holdout.drop(columns="label"),
                     y_val=holdout["label"])


def test_same_seed_same_model_and_it_learns(data):
    from sklearn.metrics import roc_auc_score

    train, holdout = data
    a, b = _fit(train, holdout), _fit(train, holdout)
    x = holdout.drop(columns="label")
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    assert roc_auc_score(holdout["label"], a.predict_proba(x)[:, 1]) > 0.75
    assert 1 <= a.epochs_ <= 15 and len(a.history_) == a.epochs_
    unseen = x.assign(colour="purple")  # index 0, not an error
    assert np.isfinite(a.predict_proba(unseen)).all()


@pytest.fixture(scope="module")
def fitted(data):
    """A fitted MLP and a pipeline config describing its columns (INT8 limits loose)."""
    from mlflywheel.services.config import load_pipeline
    from mlflywheel.services.settings import project_root

    base = load_pipeline(project_root() / "include" / "pipelines" / "ctr.yaml")
    config = base.model_copy(update={
        "training": base.training.model_copy(update={"trainer": "torch_mlp", "categorical": ["colour"],
                                                     "numeric": ["size", "weight"]}),
        "data": base.data.model_copy(update={"label": "label"}),
        "export": ExportSpec(int8=LOOSE)})
    return _fit(*data), config


def test_onnx_graph_takes_raw_columns_and_matches_torch(data, fitted, tmp_path):
    _, holdout = data
    model, config = fitted
    manifest = export_variants(model, holdout, config, tmp_path)
    assert manifest["input_schema"] == {"colour": "tensor(string)", "size": "tensor(float)", "weight": "tensor(float)"}
    assert manifest["variants"]["fp32"]["parity"]["max_abs_diff"] < 1e-5
    assert manifest["variants"]["int8"]["published"]  # an MLP has MatMul/Gemm: INT8 is tried and kept here
    onnx_model = OnnxModel(manifest["variants"]["fp32"]["path"])
    x = holdout.drop(columns="label").assign(colour=["purple"] * 3 + holdout["colour"].tolist()[3:])
    np.testing.assert_allclose(onnx_model.predict_proba(x), model.predict_proba(x)[:, 1], atol=1e-5)
    assert onnx_model.last_unseen == {"colour": 3}


def test_static_int8_from_calibration_rows_is_batch_independent(data, fitted, tmp_path):
    train, holdout = data
    model, config = fitted
    int8 = export_variants(model, holdout, config, tmp_path, calibration=train)["variants"]["int8"]
    assert int8["published"] and int8["method"] == "static-qdq (2400 calibration rows)"
    onnx_model = OnnxModel(int8["path"])
    x = holdout.drop(columns="label").head(50)
    one_by_one = np.array([onnx_model.predict_proba(x.iloc[[i]])[0] for i in range(len(x))])
    np.testing.assert_array_equal(one_by_one, onnx_model.predict_proba(x))  # fixed scales: no batch effect
