"""The ``export_quantize`` stage: ONNX variants (fp32, INT8), the parity check, publication on the version.

The conversion itself (one graph from the raw feature columns, preprocessing included) is
:mod:`mlflywheel.services.onnx_export`, which ``train`` also uses to refuse a model that
cannot be exported before anything is logged. A variant is published only when it reproduces the
native model on the holdout within the pipeline's parity limits; fp32 breaking parity is
an error with the numbers, an INT8 variant breaking it is left out with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ParityError
from mlflywheel.services.names import (
    TAG_DIGEST,
    TAG_ONNX,
    tag_value,
)
from mlflywheel.services.onnx_export import export_onnx
from mlflywheel.services.runtime import OnnxModel

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import pandas as pd

    from mlflywheel.services.config import ParityLimits, PipelineConfig

log = logging.getLogger(__name__)
QUANTIZABLE_OPS = frozenset({"MatMul", "Gemm"})


@dataclass
class Parity:
    """How an exported variant compares with the native model on the same rows."""

    max_abs_diff: float
    decision_agreement: float
    metric_delta: float
    limits: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def parity(native: np.ndarray, exported: np.ndarray, y: np.ndarray, threshold: float,
           limits: ParityLimits) -> Parity:
    """Max absolute difference, decision agreement at ``threshold`` and ROC AUC delta."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    diff = float(np.max(np.abs(native - exported))) if len(native) else 0.0
    if not np.isfinite(exported).all():
        diff = float("inf")
    agreement = float(np.mean((native >= threshold) == (exported >= threshold))) if len(native) else 1.0
    delta = abs(float(roc_auc_score(y, native)) - float(roc_auc_score(y, np.nan_to_num(exported))))
    result = Parity(diff, agreement, delta, limits.model_dump())
    if not diff <= limits.max_abs_diff:
        result.failures.append(f"max |p_native - p_onnx| = {diff:.3g} > {limits.max_abs_diff:g}")
    if agreement < limits.min_decision_agreement:
        result.failures.append(f"decision agreement {agreement:.6f} < {limits.min_decision_agreement:g}")
    if delta > limits.max_metric_delta:
        result.failures.append(f"ROC AUC delta {delta:.3g} > {limits.max_metric_delta:g}")
    return result


def quantizable(model: onnx.ModelProto) -> bool:
    """Whether dynamic INT8 quantization has anything to work on (MatMul/Gemm)."""
    return any(node.op_type in QUANTIZABLE_OPS for node in model.graph.node)


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: pd.DataFrame | None = None) -> str:
    """INT8 quantization of MatMul/Gemm; returns the method used.

    With calibration rows: static QDQ (activation scales fixed from the rows, so a row's
    score does not depend on the batch it arrives in). Without: dynamic (activation scales
    computed per call, which makes scores batch-dependent).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if calibration is None or calibration.empty:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
        return "dynamic"
    fp32 = OnnxModel(fp32_path, providers=["CPUExecutionProvider"])
    feeds = [fp32.feed(calibration.iloc[i:i + 256]) for i in range(0, len(calibration), 256)]

    class Rows(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(fp32_path), str(int8_path), Rows(), quant_format=QuantFormat.QDQ,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    op_types_to_quantize=sorted(QUANTIZABLE_OPS))
    return f"static-qdq ({len(calibration)} calibration rows)"


def export_variants(estimator: Any, holdout: pd.DataFrame, config: PipelineConfig, out_dir: Path,
                    calibration: pd.DataFrame | None = None) -> dict[str, Any]:
    """Export fp32 (and INT8 where it applies), check parity, keep what passed.

    Args:
        estimator: the fitted native pipeline.
        holdout: rows to judge parity on (model inputs and the label).
        config: the pipeline (features, threshold, parity limits).
        out_dir: where ``model-fp32.onnx`` / ``model-int8.onnx`` and ``export.json`` go.
        calibration: training rows for static INT8 (none: dynamic INT8).

    Returns:
        ``variants``: per precision ``published``, ``path``, ``sha256``, ``parity`` or ``reason``;
        ``opset``, ``input_schema``.

    Raises:
        ParityError: fp32 does not reproduce the native model; nothing is published.
    """
    import onnx

    from mlflywheel.services.data.io import write_text_atomic
    from mlflywheel.services.dataset import model_inputs

    out_dir.mkdir(parents=True, exist_ok=True)
    x = model_inputs(holdout, config)
    y = holdout[config.data.label].to_numpy()
    native = estimator.predict_proba(x)[:, 1]
    threshold = config.gate.decision_threshold
    variants: dict[str, Any] = {}

    fp32_path = out_dir / "model-fp32.onnx"
    onnx.save(export_onnx(estimator, config), str(fp32_path))
    fp32 = OnnxModel(fp32_path, providers=["CPUExecutionProvider"])
    check = parity(native, fp32.predict_proba(x), y, threshold, config.export.fp32)
    if not check.passed:
        fp32_path.unlink()
        raise ParityError(f"{config.name}: the fp32 ONNX export breaks parity on {len(x)} holdout rows: "
                          + "; ".join(check.failures))
    variants["fp32"] = {"published": True, "path": str(fp32_path), "sha256": fp32.sha256, "parity": asdict(check)}

    graph = onnx.load(str(fp32_path))
    if quantizable(graph):
        int8_path = out_dir / "model-int8.onnx"
        method = quantize_int8(fp32_path, int8_path,
                               None if calibration is None else model_inputs(calibration, config))
        int8 = OnnxModel(int8_path, providers=["CPUExecutionProvider"])
        check8 = parity(native, int8.predict_proba(x), y, threshold, config.export.int8)
        if check8.passed:
            variants["int8"] = {"published": True, "path": str(int8_path), "sha256": int8.sha256,
                                "method": method, "parity": asdict(check8)}
        else:
            int8_path.unlink()
            variants["int8"] = {"published": False, "reason": f"parity ({method}): " + "; ".join(check8.failures),
                                "method": method, "parity": asdict(check8)}
    else:
        model_ops = sorted({n.op_type for n in graph.graph.node if n.domain == "ai.onnx.ml"}
                           - {"Imputer", "OneHotEncoder", "Scaler"})
        variants["int8"] = {"published": False,
                            "reason": f"no MatMul/Gemm in the graph (model ops {model_ops}): "
                                      "INT8 has nothing to quantize"}
    manifest = {"pipeline": config.name, "opset": config.export.opset, "input_schema": fp32.input_schema,
                "holdout_rows": len(x), "variants": variants}
    write_text_atomic(json.dumps(manifest, indent=2), out_dir / "export.json")
    for name, variant in variants.items():
        log.info("%s %s: %s", config.name, name, "published" if variant["published"] else variant["reason"])
    return manifest


def export_version(config: PipelineConfig, ws: Any, *, version: str, if_exists: str = "skip") -> dict[str, Any]:
    """The ``export_quantize`` step for one registered version.

    Exports the version's native model, checks parity on its snapshot's holdout, and adds
    the passing variants to the version's own logged model (files under ``onnx/`` and an
    ``onnx`` flavor in its MLmodel), so ``mlflow.onnx.load_model("models:/<name>@<alias>")``
    returns the ONNX graph. Hashes, opset, input schema and parity numbers become version
    tags. A version that already carries them is left as it is (``if_exists="skip"``).
    """
    import tempfile

    import onnx
    from mlflow.models import Model

    from mlflywheel.services import tracking
    from mlflywheel.services.dataset import holdout_split, load_snapshot, snapshot_path
    from mlflywheel.services.native import load_native_version
    from mlflywheel.services.served import model_id

    if if_exists not in ("skip", "replace"):
        raise ValueError(f"if_exists must be 'skip' or 'replace', got {if_exists!r}")
    name = config.model_name
    with tracking.active(ws):
        client = tracking.client(ws)
        mv = client.get_model_version(name, version)
        if mv.tags.get(f"{TAG_ONNX}.fp32.sha256") and if_exists == "skip":
            log.info("%s v%s already carries its ONNX variants: skipped", name, version)
            return {"name": name, "version": version, "reused": True, **_tag_summary(mv.tags)}
        digest = mv.tags.get(TAG_DIGEST)
        snapshot = snapshot_path(ws, config.name, str(digest))
        train_part, holdout = holdout_split(load_snapshot(str(snapshot), digest), config)
        calibration = train_part.sample(min(2000, len(train_part)), random_state=config.training.seed)
        estimator = load_native_version(ws, name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            upload = Path(tmp) / "upload"
            manifest = export_variants(estimator, holdout, config, upload / "onnx", calibration=calibration)
            mlmodel = Model.load(f"models:/{name}/{version}")
            mlmodel.add_flavor("onnx", onnx_version=onnx.__version__, data="onnx/model-fp32.onnx",
                               providers=list(config.export.providers), onnx_session_options=None, code=None)
            mlmodel.save(str(upload / "MLmodel"))
            client.log_model_artifacts(model_id(mv), str(upload))
        tags = {f"{TAG_ONNX}.opset": str(manifest["opset"]),
                f"{TAG_ONNX}.input_schema": json.dumps(manifest["input_schema"])}
        for precision, variant in manifest["variants"].items():
            prefix = f"{TAG_ONNX}.{precision}"
            tags[f"{prefix}.published"] = str(variant["published"]).lower()
            if variant["published"]:
                tags[f"{prefix}.sha256"] = variant["sha256"]
                tags[f"{prefix}.path"] = f"onnx/{Path(variant['path']).name}"
            else:
                tags[f"{prefix}.reason"] = tag_value(variant["reason"])
            if "method" in variant:
                tags[f"{prefix}.method"] = variant["method"]
            if "parity" in variant:
                p = variant["parity"]
                tags[f"{prefix}.parity"] = json.dumps({k: p[k] for k in ("max_abs_diff", "decision_agreement",
                                                                         "metric_delta")})
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    return {"name": name, "version": version, "reused": False, **_tag_summary(tags)}


def _tag_summary(tags: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"variants": {}}
    for precision in ("fp32", "int8"):
        prefix = f"{TAG_ONNX}.{precision}"
        if f"{prefix}.published" in tags:
            out["variants"][precision] = {
                "published": tags[f"{prefix}.published"] == "true", "sha256": tags.get(f"{prefix}.sha256"),
                "path": tags.get(f"{prefix}.path"), "reason": tags.get(f"{prefix}.reason"),
                "parity": json.loads(tags[f"{prefix}.parity"]) if f"{prefix}.parity" in tags else None}
    out["opset"] = int(tags.get(f"{TAG_ONNX}.opset", 0))
    return out
