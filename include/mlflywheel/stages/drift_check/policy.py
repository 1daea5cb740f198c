"""The retrain decision: which findings call for a retrain, and the guards against a storm.

Triggers (``drift.*`` in the pipeline config):

* data drift: at least ``max_drifted_share`` of the model inputs drifted, or any of
  ``key_features`` did;
* prediction drift: PSI of the champion's score distribution >= ``prediction_psi``;
* concept drift: live metrics on matured labels below the champion's gate baseline by more
  than ``live.max_drop``, a calibration error above ``live.max_calibration_error``, or a
  label-rate change beyond ``label_rate_max_relative_change``.

Guards, in order: a window below ``min_rows`` is *skipped* (never judged); a trigger within
``cooldown_hours`` of the last emitted one is *suppressed*; the same kinds of trigger
against the same champion version within ``dedup_hours`` are *suppressed* (a flapping
feature cannot start a retrain storm). Emitted triggers are recorded in an append-only
ledger, ``reports/<pipeline>/drift/triggers.jsonl``, before the event leaves.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mlflywheel.services.data.io import write_text_atomic

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.stages.drift_check.stats import ColumnDrift

RETRAIN: Final = "retrain"
NO_DRIFT: Final = "no_drift"
SUPPRESSED: Final = "suppressed"
SKIPPED: Final = "skipped"
DecisionKind = Literal["retrain", "no_drift", "suppressed", "skipped"]


@dataclass
class Decision:
    """What the check concluded and why; ``reasons`` are the triggers found (empty: healthy)."""

    decision: DecisionKind
    reasons: list[str] = field(default_factory=list)
    #: the kinds of trigger, the identity used to deduplicate (``data_drift``, ``key_feature:amount``, ...)
    signature: list[str] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": self.reasons, "signature": self.signature,
                "detail": self.detail}


def find_triggers(config: PipelineConfig, columns: list[ColumnDrift], prediction: ColumnDrift | None,
                  live: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """The reasons to retrain and their kinds, from the statistics and the live metrics."""
    drift = config.drift
    reasons: list[str] = []
    kinds: list[str] = []
    drifted = [c for c in columns if c.drifted]
    share = len(drifted) / len(columns) if columns else 0.0
    if drifted and share >= drift.max_drifted_share:
        reasons.append(f"data drift: {len(drifted)}/{len(columns)} inputs drifted ({share:.0%} >= "
                       f"{drift.max_drifted_share:.0%}): {', '.join(c.column for c in drifted)}")
        kinds.append("data_drift")
    for column in drifted:
        if column.column in drift.key_features:
            reasons.append(f"key feature {column.column!r} drifted: {'; '.join(column.reasons)}")
            kinds.append(f"key_feature:{column.column}")
    if prediction is not None and prediction.psi >= drift.prediction_psi and prediction.p_value < drift.limits.alpha:
        reasons.append(f"prediction drift: score PSI {prediction.psi:.3f} >= {drift.prediction_psi}")
        kinds.append("prediction_drift")
    for reason in (live or {}).get("reasons", []):
        reasons.append(f"live metrics: {reason}")
        kinds.append(f"live:{reason.split()[1] if reason.startswith('live ') else reason.split()[0]}")
    return reasons, sorted(set(kinds))


def decide(config: PipelineConfig, *, reasons: list[str], signature: list[str], ledger: list[dict[str, Any]],
           now: dt.datetime, champion_version: str, check_id: str) -> Decision:
    """Apply cooldown and deduplication to the triggers found."""
    if not reasons:
        return Decision(NO_DRIFT, detail="no trigger fired")
    drift = config.drift
    earlier = [e for e in ledger if e.get("check_id") != check_id]  # a retried check re-emits its own decision
    if earlier:
        last = max(earlier, key=lambda e: e["emitted_at"])
        since = now - dt.datetime.fromisoformat(last["emitted_at"])
        if since < dt.timedelta(hours=drift.cooldown_hours):
            return Decision(SUPPRESSED, reasons, signature,
                            f"cooldown: the last retrain trigger ({last['check_id']}) was {_hours(since)} ago "
                            f"(drift.cooldown_hours={drift.cooldown_hours})")
        for entry in sorted(earlier, key=lambda e: e["emitted_at"], reverse=True):
            age = now - dt.datetime.fromisoformat(entry["emitted_at"])
            if age >= dt.timedelta(hours=drift.dedup_hours):
                break
            if entry.get("champion_version") == champion_version and entry.get("signature") == signature:
                return Decision(SUPPRESSED, reasons, signature,
                                f"duplicate: {entry['check_id']} already asked for a retrain of "
                                f"v{champion_version} for {signature} {_hours(age)} ago "
                                f"(drift.dedup_hours={drift.dedup_hours})")
    return Decision(RETRAIN, reasons, signature, "emitting the drift asset event")


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


# --- the trigger ledger ----------------------------------------------------------------
def ledger_path(reports_dir: Path, pipeline: str) -> Path:
    return reports_dir / pipeline / "drift" / "triggers.jsonl"


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Every emitted trigger, oldest first (a missing ledger is an empty one)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_trigger(path: Path, entry: dict[str, Any]) -> None:
    """Append one trigger (rewritten atomically; the same ``check_id`` replaces its earlier line)."""
    entries = [e for e in read_ledger(path) if e.get("check_id") != entry["check_id"]]
    entries.append(entry)
    write_text_atomic("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), path)
