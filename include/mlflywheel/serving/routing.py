"""Which model answers a request: pure functions, shared by the server and the rollout controller.

Deployment state lives in the registry. Besides the aliases, three registered-model tags
steer traffic:

=============================  ==========================================================
tag                            meaning
=============================  ==========================================================
``flywheel.serving_mode``      ``canary`` (default), ``shadow`` or ``ab``
``flywheel.canary_weight``     percent (0-100) of entities answered by ``@canary``
``flywheel.ab_weight``         percent (0-100) answered by ``@challenger`` in ``ab`` mode
``flywheel.routing_salt``      optional; changes which entities fall in which bucket
=============================  ==========================================================

An entity's bucket is a hash of ``salt:entity_id`` in ``[0, 100)``: the same entity sees the
same model for a given weight, and raising the weight only moves entities from champion to
canary, never back (a user who saw the canary at 5 % still sees it at 20 %).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlflywheel.services.names import TAG_AB_WEIGHT, TAG_CANARY_WEIGHT, TAG_MODE, TAG_SALT

CHAMPION, CANARY, CHALLENGER, SHADOW = "champion", "canary", "challenger", "shadow"
MODES = ("canary", "shadow", "ab")


class RoutingError(ValueError):
    """A routing tag holds a value the server cannot act on (it keeps its last good state)."""


@dataclass(frozen=True)
class RoutingState:
    """How traffic is split, as read from the registered model's tags."""

    mode: str = "canary"
    canary_weight: float = 0.0
    ab_weight: float = 0.0
    salt: str = ""


@dataclass(frozen=True)
class Route:
    """The alias whose answer is returned, and the alias that gets a shadow copy (or ``None``)."""

    primary: str
    shadow: str | None = None


def bucket(key: str | int, salt: str = "") -> float:
    """The key's position in ``[0, 100)``: uniform, stable across processes and restarts."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


def route(key: str | int, state: RoutingState, available: frozenset[str] | set[str]) -> Route:
    """The route for one entity (or request) ``key`` given the aliases that are loaded.

    An alias that is not loaded (missing, or refused because it failed its checks) never
    gets traffic: its share falls back to the champion.
    """
    if state.mode == "shadow":
        return Route(CHAMPION, CHALLENGER if CHALLENGER in available else None)
    if state.mode == "ab":
        if CHALLENGER in available and bucket(key, state.salt) < state.ab_weight:
            return Route(CHALLENGER)
        return Route(CHAMPION)
    if CANARY in available and state.canary_weight > 0 and bucket(key, state.salt) < state.canary_weight:
        return Route(CANARY)
    return Route(CHAMPION)


def _weight(tags: Mapping[str, str], name: str) -> float:
    raw = tags.get(name)
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise RoutingError(f"registered-model tag {name}={raw!r}: expected a percentage 0-100") from None
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise RoutingError(f"registered-model tag {name}={raw!r}: expected a percentage 0-100")
    return value


def parse_routing(tags: Mapping[str, str]) -> RoutingState:
    """The routing state from registered-model tags; a bad value raises :class:`RoutingError`."""
    mode = tags.get(TAG_MODE) or "canary"
    if mode not in MODES:
        raise RoutingError(f"registered-model tag {TAG_MODE}={mode!r}: expected one of {list(MODES)}")
    return RoutingState(mode=mode, canary_weight=_weight(tags, TAG_CANARY_WEIGHT),
                        ab_weight=_weight(tags, TAG_AB_WEIGHT), salt=tags.get(TAG_SALT, ""))


def share(keys: list[str | int], state: RoutingState, alias: str,
          available: frozenset[str] | set[str] = frozenset({CHAMPION, CANARY, CHALLENGER})) -> float:
    """Fraction of ``keys`` whose primary route is ``alias`` (what a step should observe)."""
    if not keys:
        return 0.0
    return sum(route(k, state, available).primary == alias for k in keys) / len(keys)
