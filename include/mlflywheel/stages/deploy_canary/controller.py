"""The rollout controller of ``deploy_canary``: start a canary, then one analysis step at a time.

Between two calls the whole rollout lives in a small JSON-safe state dict (it travels through
a deferral), so the controller holds no worker slot while a step bakes::

    {"decision", "version", "champion", "step_index", "mode", "weight", "step_started",
     "baseline", "reasons", "verdict_path", "metrics_url", "log", "rollout_started", "reference"}

The champion is judged over the whole rollout: its scores and labels from ``rollout_started``
on, and its error rate and p99 carried in ``reference`` from the last step where it served
``min_requests`` (at 100 % it serves nothing).

``decision`` is what the last call did: ``started``, ``wait``, ``advance`` (keep going),
``promote`` or ``rollback`` (done), or ``skipped`` (nothing was changed in the registry).
Every decision is recorded (verdict JSON and ledger line, :func:`mlflywheel.stages.deploy_canary.analysis.record`)
before the registry moves.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services import deployments
from mlflywheel.services.errors import GateMisconfigured
from mlflywheel.services.model_server import ServerUnavailable, scrape
from mlflywheel.services.names import CHAMPION, TAG_MODE
from mlflywheel.stages.deploy_canary import analysis as rollout

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace

DONE = ("promote", "rollback", "skipped")


def _baseline(text: str) -> dict[str, Any]:
    """Per-version counters of one scrape, JSON-safe (bucket bounds as strings, ``inf`` included)."""
    return {version: {"requests": t.requests, "errors": t.errors,
                      "buckets": {repr(le) if math.isfinite(le) else "inf": n for le, n in t.buckets.items()}}
            for version, t in rollout.parse_metrics(text).items()}


def _traffic(baseline: dict[str, Any], text: str) -> dict[str, rollout.Traffic]:
    old = {v: rollout.Traffic(d["requests"], d["errors"], {float(le): n for le, n in d["buckets"].items()})
           for v, d in baseline.items()}
    out = {}
    for version, now in rollout.parse_metrics(text).items():
        delta = now.minus(old.get(version, rollout.Traffic()))
        if delta.requests < 0:
            raise GateMisconfigured(f"v{version}: request counter went down since the step started "
                                            "(server restarted?); the step cannot be judged on these numbers")
        out[version] = delta
    return out


def _set_step(ws: Workspace, config: PipelineConfig, client: MlflowClient, version: str, step: rollout.Step,
              reason: str) -> None:
    client.set_registered_model_tag(config.model_name, TAG_MODE, "shadow" if step.mode == "shadow" else "canary")
    deployments.set_canary(ws, config, client, version, step.weight, reason)


def start(ws: Workspace, config: PipelineConfig, client: MlflowClient, *, version: str, metrics_url: str,
          log: str | Path, now: dt.datetime | None = None) -> dict[str, Any]:
    """Put ``version`` on ``@canary`` at the plan's first step; ``skipped`` when there is nothing to roll out.

    Fails closed: with no ``@champion`` to compare against, or a server that is not ready, the
    registry is left as it is and the reason goes to the ledger (``skipped``), never a promotion.
    """
    from mlflywheel.services.registry import alias_version

    now = now or dt.datetime.now(dt.UTC)
    version = str(version)
    champion = alias_version(client, config.model_name, CHAMPION)
    state: dict[str, Any] = {"version": version, "champion": str(champion.version) if champion else None,
                             "step_index": 0, "mode": None, "weight": 0.0, "step_started": now.isoformat(),
                             "baseline": {}, "reasons": [], "verdict_path": None, "metrics_url": metrics_url,
                             "log": str(log), "rollout_started": now.isoformat(), "reference": None}
    reason = None
    if champion is None:
        reason = f"no @{CHAMPION} to compare v{version} with: not rolled out (promote it by hand if meant)"
    elif str(champion.version) == version:
        reason = f"v{version} is already @{CHAMPION}: nothing to roll out"
    else:
        try:
            text = scrape(metrics_url)
        except ServerUnavailable as exc:
            reason = f"{exc}: canary not started, @{CHAMPION} v{champion.version} unchanged"
    if reason is not None:
        deployments.append_ledger(deployments.ledger_path(ws, config), {"event": "deploy_canary:skipped", "model":
                              config.model_name, "canary": version, "champion": state["champion"],
                              "reason": reason})
        return {**state, "decision": "skipped", "reasons": [reason]}
    first = rollout.plan(config.rollout)[0]
    _set_step(ws, config, client, version, first, f"rollout of v{version}: step 0 ({first.mode} {first.weight:g}%)")
    return {**state, "decision": "started", "mode": first.mode, "weight": first.weight, "baseline": _baseline(text)}


def analyse(ws: Workspace, config: PipelineConfig, client: MlflowClient, state: dict[str, Any], *,
            metrics_text: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Judge the current step on ``metrics_text`` (a fresh scrape) and the prediction log; record; act.

    Returns the next state: ``wait`` (same step), ``advance`` (next step started, new baseline),
    ``promote`` or ``rollback`` (registry moved, rollout over).
    """
    now = now or dt.datetime.now(dt.UTC)
    steps = rollout.plan(config.rollout)
    step = steps[state["step_index"]]
    version, champion = state["version"], state["champion"]
    started = dt.datetime.fromisoformat(state["step_started"])
    traffic = _traffic(state["baseline"], metrics_text)
    reference = rollout.champion_reference(traffic, champion, step, state.get("reference"))
    log = Path(state["log"])
    if log.exists():
        canary_rows, _ = rollout.window(log, started, now, canary_version=version, champion_version=champion,
                                        shadow=step.mode == "shadow")
        # the champion's model does not change during a rollout: its rows since the first step
        rollout_started = dt.datetime.fromisoformat(state.get("rollout_started") or state["step_started"])
        _, champion_rows = rollout.window(log, rollout_started, now, canary_version=version,
                                          champion_version=champion)
        canary_scores, champion_scores = canary_rows["score"].tolist(), champion_rows["score"].tolist()
        labels = _label_counts(ws, config, canary_rows, champion_rows, rollout_started, now)
    else:  # no prediction logged yet: no scores, so the PSI check is inconclusive (never a pass)
        canary_scores, champion_scores, labels = [], [], None
    verdict = rollout.analyse_step(step, config.rollout, model=config.model_name, canary_version=version,
                                   champion_version=champion, traffic=traffic,
                                   canary_scores=canary_scores, champion_scores=champion_scores, labels=labels,
                                   looks=len(steps), reference=reference)
    action = rollout.decide(verdict, step, (now - started).total_seconds())
    path = rollout.record(ws, config, verdict, action)
    out = {**state, "decision": action, "reasons": verdict.reasons, "verdict_path": str(path)}
    if action == "rollback":
        client.set_registered_model_tag(config.model_name, TAG_MODE, "canary")
        deployments.rollback(ws, config, client, f"v{version} step {step.index}: " + "; ".join(verdict.reasons))
    elif action == "promote":
        deployments.promote(ws, config, client, version, f"v{version} passed {len(steps)} steps")
    elif action == "advance":
        nxt = steps[step.index + 1]
        _set_step(ws, config, client, version, nxt, f"rollout of v{version}: step {nxt.index} "
                                                     f"({nxt.mode} {nxt.weight:g}%)")
        out.update(step_index=nxt.index, mode=nxt.mode, weight=nxt.weight, step_started=now.isoformat(),
                   baseline=_baseline(metrics_text), reference=reference)
    return out


def _label_counts(ws: Workspace, config: PipelineConfig, canary: Any, champion: Any, start: dt.datetime,
                  end: dt.datetime) -> rollout.LabelCounts | None:
    """Delayed labels that arrived for the step's predictions by ``end`` (``None`` when none did)."""
    from mlflywheel.services.data.labels import read_labels

    labels = read_labels(config, ws, since=start.astimezone(dt.UTC).date(), as_of=end)
    if labels.empty:
        return None
    return rollout.label_counts(canary, champion, labels, id_column=config.data.id_column, label=config.data.label,
                                threshold=config.gate.decision_threshold)


def run_step(ws: Workspace, config: PipelineConfig, client: MlflowClient, state: dict[str, Any]) -> dict[str, Any]:
    """One analysis step against the live server: scrape ``state["metrics_url"]``, then :func:`analyse`.

    A server that cannot be read mid-rollout cannot vouch for the canary: the canary is rolled
    back (recorded in the ledger) rather than left serving unjudged.
    """
    try:
        text = scrape(state["metrics_url"])
    except ServerUnavailable as exc:
        reason = f"{exc}: canary rolled back, @{CHAMPION} v{state['champion']} unchanged"
        deployments.append_ledger(deployments.ledger_path(ws, config), {"event": "analysis:rollback", "model":
                              config.model_name, "canary": state["version"], "champion": state["champion"],
                              "reasons": [reason]})
        client.set_registered_model_tag(config.model_name, TAG_MODE, "canary")
        deployments.rollback(ws, config, client, reason)
        return {**state, "decision": "rollback", "reasons": [reason]}
    return analyse(ws, config, client, state, metrics_text=text)


def abort(ws: Workspace, config: PipelineConfig, client: MlflowClient, version: str, reason: str) -> dict[str, Any]:
    """Stop a rollout from outside (task killed): canary off, champion untouched."""
    from mlflywheel.services.names import CANARY
    from mlflywheel.services.registry import alias_version

    canary = alias_version(client, config.model_name, CANARY)
    if canary is None or str(canary.version) != str(version):
        return {}
    client.set_registered_model_tag(config.model_name, TAG_MODE, "canary")
    return deployments.rollback(ws, config, client, reason)
