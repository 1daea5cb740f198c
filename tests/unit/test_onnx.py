"""ONNX export, INT8, parity and the one runtime, on small models trained here."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest

from mlflywheel.services.config import ExportSpec, ParityLimits
from mlflywheel.services.dataset import model_inputs
from mlflywheel.services.errors import ConfigError, ModelIntegrityError, ParityError, SchemaMismatch
from mlflywheel.services.onnx_export import export_onnx
from mlflywheel.services.runtime import OnnxModel, resolve_providers
from mlflywheel.stages.export_quantize import export_variants, parity
from mlflywheel.stages.train.sklearn import build

pytestmark = pytest.mark.unit
LOOSE = ParityLimits(max_abs_diff=1.0, min_decision_agreement=0.0, max_metric_delta=1.0)
IMPOSSIBLE = ParityLimits(max_abs_diff=0.0, min_decision_agreement=1.0, max_metric_delta=0.0)


@pytest.fixture(scope="module")
def ctr_frame(ctr_onnx):
    return ctr_onnx.frame


@pytest.fixture(scope="module")
def hgb(ctr_onnx):
    return ctr_onnx.config, ctr_onnx.estimator


def _mlp(config, frame):
    from sklearn.neural_network import MLPClassifier

    estimator = build(config.training)
    estimator.steps[-1] = ("model", MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0))
    return estimator.fit(model_inputs(frame, config), frame["clicked"])


def test_fp32_export_takes_raw_columns_and_matches_scikit_learn(hgb, ctr_frame, tmp_path):
    config, estimator = hgb
    manifest = export_variants(estimator, ctr_frame, config, tmp_path)
    fp32 = manifest["variants"]["fp32"]
    assert fp32["published"] and fp32["parity"]["max_abs_diff"] < 1e-5
    assert manifest["input_schema"] == {**dict.fromkeys(config.training.categorical, "tensor(string)"),
                                        **dict.fromkeys(config.training.numeric, "tensor(float)")}
    assert manifest["variants"]["int8"] == {"published": False, "reason": manifest["variants"]["int8"]["reason"]}
    assert "TreeEnsembleRegressor" in manifest["variants"]["int8"]["reason"]
    assert json.loads((tmp_path / "export.json").read_text())["variants"]["fp32"]["sha256"] == fp32["sha256"]
    model = OnnxModel(fp32["path"], expected_sha256=fp32["sha256"])
    x = model_inputs(ctr_frame, config)
    np.testing.assert_allclose(model.predict_proba(x), estimator.predict_proba(x)[:, 1], atol=1e-5)
    assert model.provider == "CPUExecutionProvider"  # no GPU here: we report what we got


def _outputs(model: onnx.ModelProto, feed: dict) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def _feed(model: onnx.ModelProto, x: pd.DataFrame) -> dict[str, np.ndarray]:
    strings = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.STRING}
    return {i.name: x[i.name].to_numpy().astype(object if i.name in strings else np.float32).reshape(-1, 1)
            for i in model.graph.input}


def _with_nans_and_unseen(x: pd.DataFrame, config) -> pd.DataFrame:
    x = x.copy()
    for i, column in enumerate(config.training.numeric):
        x.loc[x.index[i::5], column] = np.nan
    x.loc[x.index[::11], config.training.categorical[0]] = "never-seen"
    return x


def test_binary_tree_rewrite_reproduces_the_classifier_graph(hgb, ctr_frame):
    from mlflywheel.services.names import META_REWRITES
    from mlflywheel.services.onnx_export import _binary_tree_classifiers, _sklearn_graph

    config, estimator = hgb
    classifier = _sklearn_graph(estimator, config)
    rewritten = export_onnx(estimator, config)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "TreeEnsembleClassifier" in [n.op_type for n in classifier.graph.node]
    assert "TreeEnsembleClassifier" not in ops and ops[-4:] == ["TreeEnsembleRegressor", "Mul", "Sigmoid", "ArgMax"]
    tracks = next(a for a in next(n for n in classifier.graph.node if n.op_type == "TreeEnsembleClassifier").attribute
                  if a.name == "nodes_missing_value_tracks_true")
    assert any(tracks.ints)  # the imputer in front is what makes dropping them exact
    trees = next(n for n in rewritten.graph.node if n.op_type == "TreeEnsembleRegressor")
    assert "nodes_missing_value_tracks_true" not in [a.name for a in trees.attribute]
    meta = {p.key: p.value for p in rewritten.metadata_props}
    assert json.loads(meta[META_REWRITES]) == [
        "TreeEnsembleClassifier: binary classifier -> TreeEnsembleRegressor + Sigmoid; "
        "missing-value tracks dropped (no NaN reaches the trees)"]
    x = _with_nans_and_unseen(model_inputs(ctr_frame, config), config)
    feed = _feed(rewritten, x)
    before, after = _outputs(classifier, feed), _outputs(rewritten, feed)
    np.testing.assert_array_equal(after["label"], before["label"])
    np.testing.assert_allclose(after["probabilities"], before["probabilities"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(after["probabilities"][:, 1], estimator.predict_proba(x)[:, 1], rtol=0, atol=1e-5)
    assert _binary_tree_classifiers(rewritten) == []  # nothing left to rewrite


def test_missing_value_tracks_stay_when_nan_reaches_the_trees(ctr_frame, hgb):
    """HistGradientBoosting without an imputer routes NaN itself; the tracks must stay."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    config, _ = hgb
    x = _with_nans_and_unseen(model_inputs(ctr_frame, config), config)
    estimator = Pipeline([("preprocess", ColumnTransformer([
        ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(config.training.categorical)),
        ("numeric", "passthrough", list(config.training.numeric))])),
        ("model", HistGradientBoostingClassifier(max_iter=20, random_state=0))]).fit(x, ctr_frame["clicked"])
    model = export_onnx(estimator, config)
    trees = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
    assert any(next(a for a in trees.attribute if a.name == "nodes_missing_value_tracks_true").ints)
    probabilities = _outputs(model, _feed(model, x))["probabilities"][:, 1]
    np.testing.assert_allclose(probabilities, estimator.predict_proba(x)[:, 1], rtol=0, atol=1e-5)


def test_int8_published_only_within_parity(hgb, ctr_frame, tmp_path):
    config, _ = hgb
    mlp = _mlp(config, ctr_frame)
    loose = config.model_copy(update={"export": ExportSpec(int8=LOOSE)})
    published = export_variants(mlp, ctr_frame, loose, tmp_path / "loose")["variants"]["int8"]
    assert published["published"] and (tmp_path / "loose" / "model-int8.onnx").is_file()
    strict = config.model_copy(update={"export": ExportSpec(int8=IMPOSSIBLE)})
    refused = export_variants(mlp, ctr_frame, strict, tmp_path / "strict")["variants"]["int8"]
    assert not refused["published"] and refused["reason"].startswith("parity (")
    assert not (tmp_path / "strict" / "model-int8.onnx").exists()  # a variant that broke parity is not kept


def test_fp32_that_breaks_parity_fails_with_numbers_and_leaves_nothing(hgb, ctr_frame, tmp_path):
    config, estimator = hgb
    strict = config.model_copy(update={"export": ExportSpec(fp32=IMPOSSIBLE)})
    with pytest.raises(ParityError, match=r"max \|p_native - p_onnx\| = .* > 0"):
        export_variants(estimator, ctr_frame, strict, tmp_path)
    assert not (tmp_path / "model-fp32.onnx").exists()


def test_parity_numbers():
    y = np.array([0, 1, 0, 1])
    native = np.array([0.1, 0.9, 0.2, 0.8])
    result = parity(native, native + np.array([0, 0, 0.4, 0]), y, 0.5, ParityLimits(
        max_abs_diff=0.1, min_decision_agreement=1.0, max_metric_delta=0.5))
    assert result.max_abs_diff == pytest.approx(0.4) and result.decision_agreement == 0.75
    assert [f.split()[0] for f in result.failures] == ["max", "decision"]


@pytest.fixture
def exported(hgb, tmp_path):
    config, estimator = hgb
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir()
    onnx.save(export_onnx(estimator, config), str(path))
    return path


def test_hash_mismatch_and_truncation_are_refused(exported, tmp_path):
    with pytest.raises(ModelIntegrityError, match="SHA-256 is .* records 00ff"):
        OnnxModel(exported, expected_sha256="00ff")
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(exported.read_bytes()[:1000])
    with pytest.raises(ModelIntegrityError, match="t.onnx"):
        OnnxModel(truncated)
    with pytest.raises(ModelIntegrityError, match="missing or empty"):
        OnnxModel(tmp_path / "nope.onnx")


def test_external_data_outside_the_model_folder_is_refused(exported):
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(exported))
    weights = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "../escape.bin"
    weights.ClearField("raw_data")
    model.graph.initializer.append(weights)
    evil = exported.parent / "evil.onnx"
    evil.write_bytes(model.SerializeToString())
    with pytest.raises(ModelIntegrityError, match="reads external data from '../escape.bin', outside the model folder"):
        OnnxModel(evil)


def test_unknown_provider_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown execution provider\(s\) \['CUDAProvider'\]"):
        resolve_providers(["CUDAProvider", "CPUExecutionProvider"])
    assert resolve_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])[-1] == "CPUExecutionProvider"


def test_bad_batches_name_the_column(exported, hgb, ctr_frame):
    config, _ = hgb
    model = OnnxModel(exported)
    x = model_inputs(ctr_frame, config)
    with pytest.raises(SchemaMismatch, match=r"batch lacks column\(s\) \['position'\]"):
        model.predict_proba(x.drop(columns=["position"]))
    with pytest.raises(SchemaMismatch, match="column 'position': expected a number, found dtype object"):
        model.predict_proba(x.assign(position=x["position"].astype(str)))
    with pytest.raises(SchemaMismatch, match="column 'device': expected strings, found dtype int64"):
        model.predict_proba(x.assign(device=1))
    with pytest.raises(SchemaMismatch, match="column 'device': expected strings, found floating values"):
        model.predict_proba(x.assign(device=pd.Series([1.5] * len(x), dtype=object)))


def test_duplicate_input_columns_are_refused(exported, hgb, ctr_frame):
    config, _ = hgb
    x = model_inputs(ctr_frame, config)
    doubled = pd.concat([x, x[["position"]]], axis=1)
    with pytest.raises(SchemaMismatch, match=r"batch has column\(s\) \['position'\] more than once"):
        OnnxModel(exported).predict_proba(doubled)


def test_the_feed_reads_each_frame_by_its_own_columns(exported, hgb, ctr_frame):
    """The numeric columns are read by position, kept per columns object: other orders, other
    frames, a column replaced in place and nullable dtypes all score as a fresh model would."""
    config, _ = hgb
    model = OnnxModel(exported)
    x = model_inputs(ctr_frame, config).head(200).reset_index(drop=True)
    expected = OnnxModel(exported).predict_proba(x)
    np.testing.assert_array_equal(model.predict_proba(x), expected)
    np.testing.assert_array_equal(model.predict_proba(x[list(reversed(x.columns))]), expected)
    numeric = config.training.numeric[0]
    model.predict_proba(x)
    x[numeric] = x[numeric] * 3 + 1  # the same frame and columns object, new values
    assert model._layout[0] is x.columns  # the kept positions are what reads it
    np.testing.assert_array_equal(model.predict_proba(x), OnnxModel(exported).predict_proba(x))
    assert not np.array_equal(model.predict_proba(x), expected)
    nullable = x.astype({numeric: "Float64"})
    nullable.loc[0, numeric] = pd.NA
    with_nan = x.astype({numeric: "float32"})
    with_nan.loc[0, numeric] = np.nan
    np.testing.assert_array_equal(model.predict_proba(nullable), OnnxModel(exported).predict_proba(with_nan))


def test_unseen_categories_are_counted(exported, hgb, ctr_frame):
    config, _ = hgb
    model = OnnxModel(exported)
    x = model_inputs(ctr_frame.head(10), config).assign(device=["smart-tv"] * 3 + ["ios"] * 7)
    proba = model.predict_proba(x)
    assert model.last_unseen == {"device": 3}
    assert np.isfinite(proba).all()
    model.predict_proba(model_inputs(ctr_frame.head(10), config))
    assert model.last_unseen == {}
    big = model_inputs(ctr_frame, config)
    big.loc[big.index[::500], "device"] = "smart-tv"
    model.predict_proba(big)
    assert len(big) > 1000 and model.last_unseen == {"device": len(big.index[::500])}


def test_arrow_batches_and_io_binding_give_the_same_scores(tmp_path, ctr_frame):
    import pyarrow as pa
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    columns = ["position", "bid_price"]  # numeric only: ORT cannot IO-bind string inputs
    x = ctr_frame[columns].astype("float32")
    pipe = Pipeline([("preprocess", ColumnTransformer([("n", "passthrough", columns)])),
                     ("model", LogisticRegression())]).fit(x, ctr_frame["clicked"])
    onx = to_onnx(pipe, initial_types=[(c, FloatTensorType([None, 1])) for c in columns],
                  options={id(pipe): {"zipmap": False}})
    path = tmp_path / "lr.onnx"
    onnx.save(onx, str(path))
    plain = OnnxModel(path)
    assert plain.io_binding_min_rows is None  # CPU: off by default
    bound = OnnxModel(path, io_binding_min_rows=1)
    assert bound.io_binding_min_rows == 1
    np.testing.assert_allclose(bound.predict_proba(pa.Table.from_pandas(x)), plain.predict_proba(x), rtol=1e-6)
    np.testing.assert_allclose(plain.predict_proba(x), pipe.predict_proba(x)[:, 1], atol=1e-6)


def test_a_graph_with_other_inputs_than_the_pipeline_is_refused(exported, pipeline_config):
    from mlflywheel.services.served import check_inputs

    model = OnnxModel(exported)
    check_inputs(model, list(reversed(list(model.inputs))), "ctr v1")  # same set: fine
    with pytest.raises(SchemaMismatch, match=r"ctr v1 \(fp32\): the ONNX graph takes .*\(missing \['amount'"):
        check_inputs(model, pipeline_config("fraud").feature_columns, "ctr v1 (fp32)")
