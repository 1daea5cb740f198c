"""Canary analysis: the step plan, per-step checks, the decision, and its record.

The pure core of ``deploy_canary``; the Airflow operator and its deferrable waits call it.
A step is judged on the same live traffic for both arms:

- error rate (non-2xx answers charged to a version, from the server's ``/metrics``): absolute
  and as an increase over the champion;
- latency p99 (from the server's histogram): absolute and as a ratio to the champion;
- score distribution: PSI of canary vs champion scores from the prediction log;
- with delayed labels, a two-proportion z-test of the canary's hit rate against the
  champion's, with the overall ``alpha`` spent evenly over the planned looks (Bonferroni),
  so looking at every step does not inflate false alarms.

A step with fewer canary requests than ``min_requests`` is inconclusive: it never promotes.
Every decision is written first (a JSON verdict and a line in the append-only deployment
ledger) and only then acted on in the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.deployments import append_ledger, ledger_path
from mlflywheel.services.errors import GateMisconfigured
from mlflywheel.services.names import (
    CANARY,
    CHAMPION,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig, RolloutSpec
    from mlflywheel.services.settings import Workspace

REQUESTS = "flywheel_serving_requests"
LATENCY = "flywheel_serving_request_latency_seconds"
#: an inconclusive step is rolled back once it has baked this many times its bake time
INCONCLUSIVE_BAKES = 2.0


# --- plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One rollout step: shadow (no traffic answered by the canary) or a canary weight."""

    index: int
    mode: str
    weight: float
    bake_s: float
    min_requests: int

    @property
    def last(self) -> bool:
        return self.mode == "canary" and self.weight >= 100


def plan(spec: RolloutSpec) -> list[Step]:
    """The steps of ``spec.strategy``: ``canary`` (the weights), ``blue_green`` (100 after one
    bake), ``shadow_first`` (a shadow bake, then the weights)."""
    bake = spec.bake_minutes * 60
    weights = [100.0] if spec.strategy == "blue_green" else list(spec.steps)
    steps = [Step(0, "shadow", 0.0, spec.shadow_bake_minutes * 60, spec.min_requests)] \
        if spec.strategy == "shadow_first" else []
    for weight in weights:
        steps.append(Step(len(steps), "canary", float(weight), bake, spec.min_requests))
    return steps


# --- traffic from /metrics --------------------------------------------------------------
@dataclass
class Traffic:
    """Requests, non-2xx answers and the latency histogram of one model version."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound (s) -> cumulative count

    def minus(self, before: Traffic) -> Traffic:
        return Traffic(self.requests - before.requests, self.errors - before.errors,
                       {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()})

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def p99_ms(self) -> float | None:
        """The histogram's p99 (upper bound of the bucket that holds it), in ms; ``inf`` above the top bucket."""
        total = self.buckets.get(math.inf, 0.0)
        if total <= 0:
            return None
        for le in sorted(self.buckets):
            if self.buckets[le] >= 0.99 * total:
                return le * 1000.0
        return math.inf


def parse_metrics(text: str) -> dict[str, Traffic]:
    """Per-version traffic from the server's Prometheus text (``version="none"`` is left out:
    those requests were refused before a model was chosen)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Traffic] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (REQUESTS, LATENCY):
            continue
        for sample in family.samples:
            version = sample.labels.get("version")
            if version in (None, "none", "mixed"):
                continue
            traffic = out.setdefault(version, Traffic())
            if sample.name == f"{REQUESTS}_total":
                traffic.requests += sample.value
                if not sample.labels.get("code", "").startswith("2"):
                    traffic.errors += sample.value
            elif sample.name == f"{LATENCY}_bucket":
                le = float(sample.labels["le"])
                traffic.buckets[le] = traffic.buckets.get(le, 0.0) + sample.value
    return out


def traffic_between(before: str, after: str) -> dict[str, Traffic]:
    """Traffic per version between two scrapes of ``/metrics`` (a restart in between is an error)."""
    old, new = parse_metrics(before), parse_metrics(after)
    out = {}
    for version, traffic in new.items():
        delta = traffic.minus(old.get(version, Traffic()))
        if delta.requests < 0:
            raise GateMisconfigured(f"v{version}: request counter went down between scrapes (server restarted?); "
                                    "the step cannot be judged on these numbers")
        out[version] = delta
    return out


# --- statistics ------------------------------------------------------------------------
def psi(expected: Sequence[float], actual: Sequence[float], bins: int = 10) -> float | None:
    """Population stability index of ``actual`` against ``expected`` on ``expected``'s deciles."""
    import numpy as np

    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if len(e) == 0 or len(a) == 0:
        return None
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    e_share = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / len(e)
    a_share = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
    e_share, a_share = np.clip(e_share, 1e-4, None), np.clip(a_share, 1e-4, None)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


@dataclass(frozen=True)
class ProportionTest:
    """Two-proportion z-test of ``b`` (canary) against ``a`` (champion)."""

    rate_a: float
    rate_b: float
    diff: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    alpha: float

    @property
    def worse(self) -> bool:
        """The canary is significantly worse (lower rate) at this look's alpha."""
        return self.p_value < self.alpha and self.diff < 0


def two_proportion_test(hits_a: int, n_a: int, hits_b: int, n_b: int, alpha: float) -> ProportionTest:
    """z-test on pooled variance, with a (1 - alpha) Wald interval for ``rate_b - rate_a``."""
    from statistics import NormalDist

    if min(n_a, n_b) <= 0:
        raise ValueError("both arms need at least one labelled row")
    pa, pb = hits_a / n_a, hits_b / n_b
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (pb - pa) / se0 if se0 > 0 else 0.0
    p_value = 2 * (1 - NormalDist().cdf(abs(z)))
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    half = NormalDist().inv_cdf(1 - alpha / 2) * se
    return ProportionTest(pa, pb, pb - pa, pb - pa - half, pb - pa + half, z, p_value, alpha)


def look_alpha(alpha: float, looks: int) -> float:
    """Alpha for one look when ``alpha`` is spent evenly over ``looks`` (Bonferroni: the chance
    of any false alarm over all looks stays at most ``alpha``)."""
    return alpha / max(1, looks)


# --- the step's window in the prediction log --------------------------------------------
def window(log: Path, start: dt.datetime, end: dt.datetime, *, canary_version: str, champion_version: str,
           shadow: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The canary's and the champion's logged predictions with ``start <= ts < end``.

    In a shadow step the canary's rows are the ``shadow`` copies (same requests as the champion).
    """
    from mlflywheel.services.predlog import read_predictions

    frame = read_predictions(log, start, end)
    canary = frame[(frame["model_version"] == str(canary_version))
                   & (frame["role"] == ("shadow" if shadow else CANARY))]
    champion = frame[(frame["model_version"] == str(champion_version)) & (frame["role"] == CHAMPION)]
    return canary, champion


def label_counts(canary: pd.DataFrame, champion: pd.DataFrame, labels: pd.DataFrame, *, id_column: str,
                 label: str, threshold: float) -> LabelCounts:
    """Correct decisions (``score >= threshold`` equals the label) per arm, joined on the record id.

    Rows without a ``record_id`` (the client sent no id) or without a label yet are left out.
    """
    known = labels.drop_duplicates(id_column, keep="last").set_index(id_column)[label]

    def hits(arm: pd.DataFrame) -> tuple[int, int]:
        rows = arm.dropna(subset=["record_id"])
        truth = rows["record_id"].map(known)
        matched = truth.notna()
        decided = (rows.loc[matched, "score"] >= threshold).astype(int)
        return int((decided == truth[matched].astype(int)).sum()), int(matched.sum())

    (canary_hits, canary_n), (champion_hits, champion_n) = hits(canary), hits(champion)
    return LabelCounts(champion_hits, champion_n, canary_hits, canary_n)


# --- one step --------------------------------------------------------------------------
@dataclass
class Check:
    """One comparison: ``passed`` is ``None`` when there was not enough data to judge."""

    name: str
    value: float | None
    limit: float
    passed: bool | None
    detail: str = ""


@dataclass
class LabelCounts:
    """Delayed labels joined to the step's predictions: correct decisions per arm."""

    champion_hits: int
    champion_n: int
    canary_hits: int
    canary_n: int


@dataclass
class StepVerdict:
    """The machine-readable outcome of one analysis of one step."""

    model: str
    canary_version: str
    champion_version: str
    step: dict[str, Any]
    checks: list[Check]
    decision: str
    reasons: list[str]
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checks": [asdict(c) for c in self.checks]}


def _limit(name: str, value: float | None, limit: float, detail: str = "") -> Check:
    return Check(name, value, limit, None if value is None else value <= limit, detail)


def champion_reference(traffic: dict[str, Traffic], champion_version: str, step: Step,
                       previous: dict[str, float | None] | None = None) -> dict[str, float | None]:
    """The champion's error rate and p99 to compare the canary with.

    From this step's window when the champion served ``min_requests`` in it; otherwise (at
    100 %, the champion serves nothing) the reference carried from the last step where it did.
    """
    champion = traffic.get(champion_version, Traffic())
    if champion.requests >= step.min_requests or not previous:
        return {"error_rate": champion.error_rate, "p99_ms": champion.p99_ms(), "requests": champion.requests}
    return dict(previous)


def analyse_step(step: Step, spec: RolloutSpec, *, model: str, canary_version: str, champion_version: str,
                 traffic: dict[str, Traffic], canary_scores: Sequence[float], champion_scores: Sequence[float],
                 labels: LabelCounts | None = None, looks: int | None = None,
                 reference: dict[str, float | None] | None = None) -> StepVerdict:
    """Judge one step: ``pass`` (every check passed), ``fail`` (any failed) or ``inconclusive``.

    Args:
        step: the step being judged.
        spec: the limits.
        model: registered model name (for the verdict).
        canary_version / champion_version: the two arms.
        traffic: per-version traffic over the step's window (:func:`traffic_between`).
        canary_scores / champion_scores: the arms' scores over the window (prediction log;
            in a shadow step, the shadow rows stand for the canary).
        labels: delayed labels of the window, when any have arrived.
        looks: planned looks for the label test (default: the plan's step count).
        reference: the champion's ``error_rate`` and ``p99_ms`` (:func:`champion_reference`);
            default: from ``traffic``.
    """
    canary = traffic.get(canary_version, Traffic())
    reference = reference or champion_reference(traffic, champion_version, step)
    checks: list[Check] = []
    shadow = step.mode == "shadow"
    volume = len(canary_scores) if shadow else canary.requests
    enough = volume >= step.min_requests
    checks.append(Check("canary_requests", float(volume), float(step.min_requests), enough or None,
                        f"{'shadow rows' if shadow else 'canary requests'} in the window"))
    if not shadow:
        rate, base = canary.error_rate, reference["error_rate"]
        checks.append(_limit("error_rate", rate, spec.max_error_rate, f"{canary.errors:.0f}/{canary.requests:.0f}"))
        increase = None if rate is None or base is None else rate - base
        checks.append(_limit("error_rate_increase", increase, spec.max_error_rate_increase,
                             f"champion {base if base is None else round(base, 5)}"))
        p99, p99_base = canary.p99_ms(), reference["p99_ms"]
        checks.append(_sampled(_limit("p99_ms", p99, spec.max_p99_ms), enough))
        ratio = None if p99 is None or not p99_base else p99 / p99_base
        checks.append(_sampled(_limit("p99_ratio", ratio, spec.max_p99_ratio, f"champion p99 {p99_base} ms"),
                               enough))
    # the scores come from the prediction log, which may trail the metrics by a flush
    logged = len(canary_scores) >= step.min_requests
    checks.append(_sampled(_limit("score_psi", psi(champion_scores, canary_scores), spec.max_score_psi,
                                  f"{len(canary_scores)} canary vs {len(champion_scores)} champion scores"),
                           enough and logged))
    if labels is not None and min(labels.canary_n, labels.champion_n) >= spec.min_labels:
        test = two_proportion_test(labels.champion_hits, labels.champion_n, labels.canary_hits, labels.canary_n,
                                   look_alpha(spec.alpha, looks or len(plan(spec))))
        checks.append(Check("label_hit_rate_diff", test.diff, 0.0, not test.worse,
                            f"canary {test.rate_b:.4f} vs champion {test.rate_a:.4f}, CI [{test.ci_low:.4f}, "
                            f"{test.ci_high:.4f}], z={test.z:.2f}, p={test.p_value:.4g} (alpha {test.alpha:.4g})"))
    failed = [c for c in checks if c.passed is False]
    unknown = [c for c in checks if c.passed is None]
    if failed:
        decision = "fail"
        reasons = [f"{c.name} {c.value:.4g} > {c.limit:g}" if c.name != "label_hit_rate_diff"
                   else f"labels: canary significantly worse ({c.detail})" for c in failed]
    elif unknown:
        decision = "inconclusive"
        reasons = [f"{c.name}: not enough data ({c.detail or c.value})" for c in unknown]
    else:
        decision, reasons = "pass", []
    return StepVerdict(model, canary_version, champion_version, asdict(step), checks, decision, reasons)


def _sampled(check: Check, enough: bool) -> Check:
    """A distribution check (p99, score PSI) is judged only on ``min_requests`` canary requests:
    the p99 of six requests is their maximum, the PSI of six scores is noise. Errors are not
    sampled: one 5xx counts from the first request (fail fast)."""
    if enough or check.passed is None:
        return check
    return Check(check.name, check.value, check.limit, None,
                 f"{check.detail + '; ' if check.detail else ''}judged from min_requests canary requests on")


def decide(verdict: StepVerdict, step: Step, baked_s: float) -> str:
    """What the controller does now: ``rollback``, ``wait``, ``advance`` or ``promote``.

    A failed check rolls back at once (within one analysis interval). A pass moves on only
    after the full bake time. An inconclusive step waits, and is rolled back after
    ``INCONCLUSIVE_BAKES`` bake times: too little traffic never promotes.
    """
    if verdict.decision == "fail":
        return "rollback"
    if verdict.decision == "inconclusive":
        return "rollback" if baked_s >= INCONCLUSIVE_BAKES * step.bake_s else "wait"
    if baked_s < step.bake_s:
        return "wait"
    return "promote" if step.last else "advance"


# --- record first, then act --------------------------------------------------------------
def rollout_dir(ws: Workspace, config: PipelineConfig, version: str) -> Path:
    return ws.reports_dir / config.name / "rollout" / f"{config.model_name}-v{version}"


def record(ws: Workspace, config: PipelineConfig, verdict: StepVerdict, action: str) -> Path:
    """Write the verdict JSON and the ledger line for ``action``; returns the verdict path."""
    from mlflywheel.services.data.io import write_text_atomic

    stamp = dt.datetime.fromisoformat(verdict.at).strftime("%Y%m%dT%H%M%S%fZ")
    path = rollout_dir(ws, config, verdict.canary_version) / f"step{verdict.step['index']}-{stamp}.json"
    write_text_atomic(json.dumps({**verdict.to_dict(), "action": action}, indent=2, default=str), path)
    append_ledger(ledger_path(ws, config), {
        "event": f"analysis:{action}", "model": verdict.model, "canary": verdict.canary_version,
        "champion": verdict.champion_version, "mode": verdict.step["mode"], "weight": verdict.step["weight"],
        "decision": verdict.decision, "reasons": verdict.reasons, "verdict": str(path)})
    return path
