"""The evaluation gate: challenger vs thresholds, fairness limits, output checks and champion.

The verdict (every check with its value, limit and outcome) is written as JSON and logged
to the challenger's MLflow run, with tags, *before* the decision is returned. A gate with
no thresholds, or a check whose value cannot be computed, rejects: it never passes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlflywheel.services import tracking
from mlflywheel.services.config import GATE_METRICS, LOWER_IS_BETTER
from mlflywheel.services.errors import GateMisconfigured
from mlflywheel.services.model_metrics import classification_metrics
from mlflywheel.services.names import TAG_DECISION, TAG_REASONS, tag_value
from mlflywheel.services.native import load_native, load_native_version

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from mlflywheel.services.config import FairnessSpec, GateSpec, PipelineConfig
    from mlflywheel.services.settings import Workspace

log = logging.getLogger(__name__)
APPROVED, REJECTED = "approved", "rejected"


@dataclass
class Check:
    name: str
    value: float | None
    limit: float | None
    op: str
    passed: bool
    detail: str = ""


@dataclass
class Verdict:
    pipeline: str
    model_name: str
    challenger: dict[str, Any]
    champion: dict[str, Any] | None
    holdout: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    evaluated_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @property
    def decision(self) -> str:
        return APPROVED if self.checks and all(c.passed for c in self.checks) else REJECTED

    @property
    def reasons(self) -> list[str]:
        failed = [c for c in self.checks if not c.passed]
        if not self.checks:
            return ["no checks were evaluated"]
        return [f"{c.name}: {c.detail or f'{_fmt(c.value)} {c.op} {_fmt(c.limit)} is false'}" for c in failed]

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "model_name": self.model_name, "decision": self.decision,
                "reasons": self.reasons, "challenger": self.challenger, "champion": self.champion,
                "holdout": self.holdout, "checks": [asdict(c) for c in self.checks],
                "evaluated_at": self.evaluated_at}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def fairness_gaps(y_true: np.ndarray, proba: np.ndarray, groups: np.ndarray, threshold: float,
                  min_group_size: int, min_group_positives: int = 1) -> dict[str, Any]:
    """Demographic parity and equal opportunity differences across ``groups``.

    Groups smaller than ``min_group_size`` are left out of both (and listed); equal
    opportunity also leaves out groups with fewer than ``min_group_positives`` positives,
    whose true-positive rate is noise. A gap needs two groups, else it is ``None``.
    """
    import numpy as np

    pred = proba >= threshold
    rates, tprs, sizes, skipped, few_positives = {}, {}, {}, [], []
    for group in sorted(set(groups.tolist())):
        mask = groups == group
        sizes[str(group)] = int(mask.sum())
        if mask.sum() < min_group_size:
            skipped.append(str(group))
            continue
        rates[str(group)] = float(pred[mask].mean())
        positives = mask & (y_true == 1)
        if positives.sum() >= min_group_positives:
            tprs[str(group)] = float(pred[positives].mean())
        else:
            few_positives.append(str(group))
    dpd = max(rates.values()) - min(rates.values()) if len(rates) >= 2 else None
    eod = max(tprs.values()) - min(tprs.values()) if len(tprs) >= 2 else None
    return {"demographic_parity_difference": dpd, "equal_opportunity_difference": eod,
            "positive_rate": rates, "true_positive_rate": tprs, "group_sizes": sizes,
            "groups_below_min_size": skipped, "groups_below_min_positives": few_positives,
            "n_groups": int(np.unique(groups).size)}


# --- checks ----------------------------------------------------------------------------
def output_checks(proba: np.ndarray, n_rows: int) -> list[Check]:
    import numpy as np

    finite = bool(np.isfinite(proba).all())
    in_range = finite and bool(((proba >= 0) & (proba <= 1)).all())
    return [
        Check("output.shape", float(proba.shape[0]) if proba.ndim == 1 else None, float(n_rows), "==",
              proba.ndim == 1 and proba.shape[0] == n_rows, f"expected {n_rows} scores, got shape {proba.shape}"),
        Check("output.no_nan", float((~np.isfinite(proba)).sum()), 0.0, "==", finite, "scores contain NaN or inf"),
        Check("output.in_unit_interval", float(proba.min()) if proba.size and finite else None, None, "in [0,1]",
              in_range, "scores outside [0, 1]"),
    ]


def threshold_checks(metrics: dict[str, float], gate: GateSpec) -> list[Check]:
    if not gate.thresholds:
        raise GateMisconfigured("gate.thresholds is empty: a gate without thresholds would bless any model")
    checks = []
    for name, limit in sorted(gate.thresholds.items()):
        value = metrics.get(name)
        ok_value = value is not None and math.isfinite(value)
        if limit.min is not None:
            checks.append(Check(f"threshold.{name}.min", value, limit.min, ">=",
                                value is not None and ok_value and value >= limit.min,
                                "" if ok_value else f"{name} could not be computed"))
        if limit.max is not None:
            checks.append(Check(f"threshold.{name}.max", value, limit.max, "<=",
                                value is not None and ok_value and value <= limit.max,
                                "" if ok_value else f"{name} could not be computed"))
    return checks


def fairness_checks(gaps: dict[str, Any], spec: FairnessSpec) -> list[Check]:
    checks = []
    for key, limit in (("demographic_parity_difference", spec.max_demographic_parity_difference),
                       ("equal_opportunity_difference", spec.max_equal_opportunity_difference)):
        value = gaps[key]
        detail = "" if value is not None else (
            f"fewer than two groups of {spec.sensitive_attribute!r} with at least "
            f"{spec.min_group_size} rows"
            f"{f' and {spec.min_group_positives} positives' if 'opportunity' in key else ''}: cannot judge")
        checks.append(Check(f"fairness.{key}", value, limit, "<=", value is not None and value <= limit, detail))
    return checks


def champion_checks(challenger: dict[str, float], champion: dict[str, float] | None,
                    tolerance: dict[str, float]) -> list[Check]:
    """No regression beyond ``tolerance`` per metric (lower-is-better metrics flip the sign)."""
    if champion is None:
        return [Check("champion.none", None, None, "n/a", True, "no @champion yet: nothing to compare")]
    checks = []
    for name in GATE_METRICS:
        if name not in tolerance:
            continue
        tol, new, old = tolerance[name], challenger.get(name), champion.get(name)
        if new is None or old is None:
            checks.append(Check(f"champion.{name}", new, old, "vs", False, f"{name} missing for one model"))
            continue
        if name in LOWER_IS_BETTER:
            checks.append(Check(f"champion.{name}", new, old + tol, "<=", new <= old + tol,
                                f"{name} {new:.4g} is worse than champion {old:.4g} + tolerance {tol}"))
        else:
            checks.append(Check(f"champion.{name}", new, old - tol, ">=", new >= old - tol,
                                f"{name} {new:.4g} is worse than champion {old:.4g} - tolerance {tol}"))
    return checks


# --- the gate --------------------------------------------------------------------------
def _scores(model: Any, frame: pd.DataFrame) -> np.ndarray:
    import numpy as np

    return np.asarray(model.predict_proba(frame)[:, 1], dtype="float64")


def _champion_inputs(model_uri: str, holdout: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """The holdout as the champion's signature wants it (its inputs may differ from ours)."""
    from mlflow.models import get_model_info

    from mlflywheel.services.dataset import model_inputs

    info = get_model_info(model_uri)
    names = info.signature.inputs.input_names() if info.signature is not None else None
    if not names or list(names) == config.feature_columns:
        return model_inputs(holdout, config)
    missing = sorted(set(names) - set(holdout.columns))
    if missing:
        raise ValueError(f"champion inputs {missing} are not in this holdout")
    frame = holdout[list(names)]
    return frame.astype({c: "float32" for c in frame.columns if frame[c].dtype.kind in "iuf"})


def evaluate_gate(config: PipelineConfig, ws: Workspace, *, run_id: str, model_uri: str,
                  snapshot: dict[str, Any]) -> dict[str, Any]:
    """Judge the challenger (``run_id``) against the gate and the current ``@champion``.

    The verdict JSON is logged to the challenger's run (``gate/verdict.json``) and written
    under the workspace reports, with ``flywheel.gate.*`` tags, before returning.

    Returns:
        ``decision``, ``reasons``, ``verdict_path``, ``verdict_artifact``, metrics of both.
    """
    from mlflywheel.services.dataset import holdout_split, load_snapshot

    gate = config.gate
    if not gate.thresholds:
        raise GateMisconfigured(f"{config.name}: gate.thresholds is empty; refusing to judge")
    frame = load_snapshot(snapshot["uri"], snapshot["digest"])
    _, holdout = holdout_split(frame, config)
    y = holdout[config.data.label].to_numpy()
    mlflow_client = tracking.client(ws)
    with tracking.active(ws):
        return _judge(config, ws, mlflow_client, run_id=run_id, model_uri=model_uri, snapshot=snapshot,
                      holdout=holdout, y=y)


def _judge(config: PipelineConfig, ws: Workspace, mlflow_client: MlflowClient, *, run_id: str, model_uri: str,
           snapshot: dict[str, Any], holdout: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    from mlflywheel.services.registry import champion_version

    gate = config.gate

    from mlflywheel.services.dataset import model_inputs

    proba = _scores(load_native(ws, model_uri, run_id=run_id), model_inputs(holdout, config))
    checks = output_checks(proba, len(holdout))
    outputs_ok = all(c.passed for c in checks)
    metrics = classification_metrics(y, proba, gate.decision_threshold) if outputs_ok else {}
    checks += threshold_checks(metrics, gate)
    sensitive = gate.fairness.sensitive_attribute
    if sensitive not in holdout.columns:
        raise GateMisconfigured(f"gate.fairness.sensitive_attribute {sensitive!r} is not a column of the "
                                f"snapshot (columns: {sorted(holdout.columns)})")
    gaps = fairness_gaps(y, proba, holdout[sensitive].astype(str).to_numpy(), gate.decision_threshold,
                         gate.fairness.min_group_size, gate.fairness.min_group_positives) if outputs_ok else {
        "demographic_parity_difference": None, "equal_opportunity_difference": None}
    checks += fairness_checks(gaps, gate.fairness)

    champion = champion_version(mlflow_client, config.model_name)
    champion_info: dict[str, Any] | None = None
    champion_metrics = None
    if champion is not None:
        champion_info = {"version": champion.version, "run_id": champion.run_id, "source": champion.source}
        try:
            champion_uri = f"models:/{config.model_name}/{champion.version}"
            champion_proba = _scores(load_native_version(ws, config.model_name, str(champion.version)),
                                     _champion_inputs(champion_uri, holdout, config))
            champion_metrics = classification_metrics(y, champion_proba, gate.decision_threshold)
            champion_info["metrics"] = champion_metrics
        except Exception as exc:  # fail closed: an unscorable champion is not a free pass
            log.exception("could not score champion v%s on the holdout", champion.version)
            champion_info["error"] = f"{type(exc).__name__}: {exc}"
            checks.append(Check("champion.comparable", None, None, "n/a", False,
                                f"champion v{champion.version} could not be scored on this holdout: {exc}"))
    if champion is None or champion_metrics is not None:
        checks += champion_checks(metrics, champion_metrics, gate.champion_tolerance)

    verdict = Verdict(
        pipeline=config.name, model_name=config.model_name,
        challenger={"run_id": run_id, "model_uri": model_uri, "metrics": metrics, "fairness": gaps},
        champion=champion_info,
        holdout={"rows": len(holdout), "positives": int(y.sum()), "snapshot_digest": snapshot["digest"],
                 "start": str(holdout[config.data.timestamp].min()), "end": str(holdout[config.data.timestamp].max())},
        checks=checks)
    payload = verdict.to_dict()
    path = ws.reports_dir / config.name / "gate" / f"{run_id}.json"
    from mlflywheel.services.data.io import write_text_atomic

    write_text_atomic(json.dumps(payload, indent=2, default=str), path)
    mlflow_client.log_text(run_id, json.dumps(payload, indent=2, default=str), "gate/verdict.json")
    mlflow_client.set_tag(run_id, TAG_DECISION, verdict.decision)
    mlflow_client.set_tag(run_id, TAG_REASONS, tag_value("; ".join(verdict.reasons)) or "all checks passed")
    for name, value in metrics.items():
        mlflow_client.log_metric(run_id, f"gate_{name}", value)
    log.info("gate for run %s: %s %s", run_id, verdict.decision.upper(), verdict.reasons or "")
    return {"decision": verdict.decision, "reasons": verdict.reasons, "verdict_path": str(path),
            "verdict_artifact": f"runs:/{run_id}/gate/verdict.json", "metrics": metrics,
            "champion_version": champion.version if champion else None,
            "champion_metrics": champion_metrics,
            "checks_passed": sum(c.passed for c in checks), "checks_total": len(checks)}
