"""One ONNX graph from a fitted model: raw feature columns in, ``probabilities`` out.

The conversion every stage relies on: ``train`` converts a freshly fitted model before it logs
anything (a model that cannot be exported never reaches the registry), ``export_quantize``
publishes the converted graph as the version's fp32 variant, ``flywheel pipeline validate``
converts a trainer's model fitted on a sample. A model converts through its own
``to_onnx(opset)`` when it has one (the PyTorch trainer), else through skl2onnx (a
scikit-learn estimator or pipeline, preprocessing included). Exact graph rewrites that make
ONNX Runtime faster on the same numbers are applied here and recorded in the model's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ExportError
from mlflywheel.services.names import META_CATEGORIES, META_FEATURES, META_REWRITES, PROBABILITIES

if TYPE_CHECKING:
    import onnx

    from mlflywheel.services.config import PipelineConfig


@contextmanager
def _hgb_missing_flag_fix() -> Iterator[None]:
    """skl2onnx 1.20 passes HistGradientBoosting's boolean ``missing_go_to_left`` where onnx
    1.23 wants an int (``Expected an int, got a boolean``); cast it for the conversion."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def _categories(estimator: Any) -> dict[str, list[str]]:
    """Categories each one-hot encoder of the pipeline was fitted on, by input column."""
    if hasattr(estimator, "categories_") and isinstance(estimator.categories_, dict):
        return {k: [str(c) for c in v] for k, v in estimator.categories_.items()}
    out: dict[str, list[str]] = {}
    preprocess = getattr(estimator, "named_steps", {}).get("preprocess")
    for _, transformer, columns in getattr(preprocess, "transformers_", []):
        categories = getattr(transformer, "categories_", None)
        if categories is not None:
            out.update({col: [str(c) for c in cats] for col, cats in zip(columns, categories, strict=True)})
    return out


_SHAPE_ONLY = frozenset({"Concat", "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})


def _nan_free(graph: onnx.GraphProto, tensor: str) -> bool:
    """Whether no NaN can reach ``tensor``, whatever the graph's inputs hold.

    Conservative: only one-hot outputs, NaN-replacing imputers, scalers with finite
    non-zero parameters over NaN-free inputs, and layout ops over NaN-free inputs qualify.
    """
    import math

    import onnx

    node = next((n for n in graph.node if tensor in n.output), None)
    if node is None:  # a graph input (or an initializer): anything may come in
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "OneHotEncoder":
        return True
    if node.op_type == "Imputer":
        return (math.isnan(attrs.get("replaced_value_float", 0.0))
                and all(math.isfinite(v) for v in attrs.get("imputed_value_floats", [math.nan])))
    if node.op_type == "Scaler":
        finite = all(math.isfinite(v) for v in [*attrs.get("offset", []), *attrs.get("scale", [])])
        return finite and 0.0 not in attrs.get("scale", [0.0]) and _nan_free(graph, node.input[0])
    if node.op_type in _SHAPE_ONLY:
        data = node.input if node.op_type == "Concat" else node.input[:1]
        return all(_nan_free(graph, name) for name in data)
    return False


def _binary_tree_classifiers(model: onnx.ModelProto) -> list[str]:
    """Exact rewrites of binary tree-ensemble classifiers onto ONNX Runtime's faster paths.

    skl2onnx writes a binary gradient-boosting model as ``TreeEnsembleClassifier`` with
    two classes and one logit; ONNX Runtime then keeps two sparse scores per row. The same
    logit from ``TreeEnsembleRegressor`` (one target) followed by ``Sigmoid([-s, s])`` gives
    the same probabilities (ORT's classifier computes ``p0 = logistic(-s)``, ``p1 =
    logistic(s)``) and ``ArgMax([-s, s])`` the same label (1 iff ``s > 0``); tree time 5-9% lower
    at batch 32, 1024 and 65536 (fraud model). When no NaN can reach the trees (an imputer in front),
    the missing-value tracks are dropped too, which lets ORT use its branch without NaN
    checks. Classifiers of any other shape are left as they are.

    Returns:
        what was rewritten, one line per node (also stored as model metadata).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    names = {t for n in graph.node for t in (*n.input, *n.output)} | {i.name for i in graph.initializer}
    done = []
    for node in list(graph.node):
        if node.op_type != "TreeEnsembleClassifier" or node.domain != "ai.onnx.ml" or len(node.output) != 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weights = list(attrs.get("class_weights", []))
        if (attrs.get("post_transform") != b"LOGISTIC" or len(attrs.get("classlabels_int64s", [])) != 2
                or "classlabels_strings" in attrs or set(attrs.get("class_ids", [])) != {0}
                or len(attrs.get("base_values", [])) > 1 or min(weights, default=0.0) >= 0
                or any(name.endswith("_as_tensor") for name in attrs)):
            continue
        trees = {k: v for k, v in attrs.items() if k.startswith("nodes_")}
        tracks = "kept"
        if any(trees.get("nodes_missing_value_tracks_true", [])) and _nan_free(graph, node.input[0]):
            del trees["nodes_missing_value_tracks_true"]
            tracks = "dropped (no NaN reaches the trees)"
        base, suffix = f"{node.name or 'trees'}_binary", 0
        stem = base
        while any(t.startswith(stem) for t in names):  # new tensor names must not clash
            suffix += 1
            stem = f"{base}{suffix}"
        score, signs, signed = f"{stem}_logit", f"{stem}_signs", f"{stem}_signed_logit"
        label, probabilities = node.output
        rewritten = [
            helper.make_node("TreeEnsembleRegressor", [node.input[0]], [score], name=f"{stem}_trees",
                             domain="ai.onnx.ml", n_targets=1, aggregate_function="SUM", post_transform="NONE",
                             target_ids=attrs["class_ids"], target_nodeids=attrs["class_nodeids"],
                             target_treeids=attrs["class_treeids"], target_weights=weights,
                             **({"base_values": attrs["base_values"]} if "base_values" in attrs else {}), **trees),
            helper.make_node("Mul", [score, signs], [signed], name=f"{stem}_sign"),
            helper.make_node("Sigmoid", [signed], [probabilities], name=f"{stem}_sigmoid"),
            helper.make_node("ArgMax", [signed], [label], name=f"{stem}_label", axis=1, keepdims=0),
        ]
        names |= {score, signs, signed}
        graph.initializer.append(numpy_helper.from_array(np.array([-1.0, 1.0], np.float32), signs))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(rewritten):
            graph.node.insert(position + offset, new)
        done.append(f"{node.name or node.op_type}: binary classifier -> TreeEnsembleRegressor + "
                    f"Sigmoid; missing-value tracks {tracks}")
    if done:
        onnx.checker.check_model(model)
    return done


_BOOSTERS_REGISTERED = False


def register_boosted_trees() -> None:
    """Teach skl2onnx XGBoost's and LightGBM's classifiers (onnxmltools' converters), once.

    A scikit-learn ``Pipeline`` ending in ``XGBClassifier`` or ``LGBMClassifier`` then converts as
    one graph like any other, preprocessing included.
    """
    global _BOOSTERS_REGISTERED
    import sys

    if _BOOSTERS_REGISTERED or not {"xgboost", "lightgbm"} & set(sys.modules):
        return  # a model of either library imported it first (to fit or unpickle): otherwise nothing to teach
    from lightgbm import LGBMClassifier
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from xgboost import XGBClassifier

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options=options)
    update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                convert_lightgbm, options=options)
    _BOOSTERS_REGISTERED = True


def _sklearn_graph(estimator: Any, config: PipelineConfig) -> onnx.ModelProto:
    """skl2onnx's graph of a fitted pipeline, as it writes it (no zipmap)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    register_boosted_trees()

    types = [(c, StringTensorType([None, 1])) for c in config.training.categorical]
    types += [(c, FloatTensorType([None, 1])) for c in config.training.numeric]
    with _hgb_missing_flag_fix():
        # ai.onnx.ml 3: the TreeEnsemble* operators every ONNX Runtime build runs (XGBoost's converter would pick 5)
        model: onnx.ModelProto = convert_sklearn(estimator, initial_types=types,
                                                 target_opset={"": config.export.opset, "ai.onnx.ml": 3},
                                                 options={id(estimator): {"zipmap": False}})
    return model


def export_onnx(estimator: Any, config: PipelineConfig) -> onnx.ModelProto:
    """The fitted model as one ONNX graph: raw columns in, ``probabilities`` [N, 2] out.

    scikit-learn pipelines go through skl2onnx; the PyTorch trainer through its ``to_onnx``.
    """
    import onnx

    model = (estimator.to_onnx(config.export.opset) if hasattr(estimator, "to_onnx")
             else _sklearn_graph(estimator, config))
    outputs = [o.name for o in model.graph.output]
    if PROBABILITIES not in outputs:
        raise ExportError(f"{config.name}: the ONNX graph has outputs {outputs}, expected {PROBABILITIES!r}")
    rewrites = _binary_tree_classifiers(model)
    onnx.helper.set_model_props(model, {META_CATEGORIES: json.dumps(_categories(estimator)),
                                        META_FEATURES: json.dumps(config.feature_columns),
                                        META_REWRITES: json.dumps(rewrites),
                                        "flywheel.pipeline": config.name})
    return model


def check_exportable(estimator: Any, config: PipelineConfig, reference: str) -> None:
    """Convert ``estimator`` once; an :class:`ExportError` naming the trainer when it cannot be."""
    try:
        export_onnx(estimator, config)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"pipeline {config.name}: trainer {reference!r} returned a {type(estimator).__name__} that "
                          f"cannot be exported to ONNX ({type(exc).__name__}: {exc}); the model server and batch "
                          "scoring run ONNX only. Use estimators skl2onnx converts, or give the model a "
                          "to_onnx(opset) method") from exc
