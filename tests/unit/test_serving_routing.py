"""Routing: consistent buckets, monotone canary growth, shadow and A/B, tags that fail closed."""

from __future__ import annotations

import pytest

from mlflywheel.services.names import CANARY, CHALLENGER, CHAMPION
from mlflywheel.serving.routing import (
    Route,
    RoutingError,
    RoutingState,
    bucket,
    parse_routing,
    route,
    share,
)

pytestmark = pytest.mark.unit
ALL = frozenset({CHAMPION, CANARY, CHALLENGER})
USERS = list(range(1, 20_001))


def test_buckets_are_stable_and_uniform():
    assert bucket(42, "s") == bucket("42", "s")  # ints and their JSON string form agree
    assert bucket(42, "s") != bucket(42, "t")
    values = [bucket(u) for u in USERS]
    assert all(0 <= v < 100 for v in values)
    assert abs(sum(v < 5 for v in values) / len(values) - 0.05) < 0.006


@pytest.mark.parametrize("weight", [0, 5, 20, 50, 100])
def test_canary_share_follows_the_weight(weight):
    state = RoutingState(canary_weight=weight)
    assert share(USERS, state, CANARY) == pytest.approx(weight / 100, abs=0.01)


def test_raising_the_weight_never_moves_an_entity_back_to_the_champion():
    steps = [RoutingState(canary_weight=w) for w in (5, 20, 50, 100)]
    for user in USERS[:5000]:
        seen = [route(user, s, ALL).primary for s in steps]
        assert seen == sorted(seen, key=lambda r: r == CHAMPION, reverse=True), (user, seen)


def test_a_missing_or_refused_canary_gets_no_traffic():
    state = RoutingState(canary_weight=100)
    assert {route(u, state, {CHAMPION}).primary for u in USERS[:500]} == {CHAMPION}


def test_shadow_copies_to_the_challenger_and_answers_with_the_champion():
    state = RoutingState(mode="shadow", canary_weight=50)
    assert route(1, state, ALL) == Route(CHAMPION, CHALLENGER)
    assert route(1, state, {CHAMPION}) == Route(CHAMPION, None)


def test_ab_splits_between_champion_and_challenger():
    state = RoutingState(mode="ab", ab_weight=30)
    assert share(USERS, state, CHALLENGER) == pytest.approx(0.3, abs=0.01)
    assert share(USERS, state, CANARY) == 0


@pytest.mark.parametrize(("tags", "expected"), [
    ({}, RoutingState()),
    ({"flywheel.canary_weight": "20"}, RoutingState(canary_weight=20.0)),
    ({"flywheel.serving_mode": "ab", "flywheel.ab_weight": "50", "flywheel.routing_salt": "exp-7"},
     RoutingState(mode="ab", ab_weight=50.0, salt="exp-7")),
])
def test_tags_parse(tags, expected):
    assert parse_routing(tags) == expected


@pytest.mark.parametrize(("tags", "message"), [
    ({"flywheel.canary_weight": "lots"}, r"flywheel.canary_weight='lots': expected a percentage"),
    ({"flywheel.canary_weight": "150"}, r"flywheel.canary_weight='150'"),
    ({"flywheel.canary_weight": "nan"}, r"flywheel.canary_weight='nan'"),
    ({"flywheel.ab_weight": "-1"}, r"flywheel.ab_weight='-1'"),
    ({"flywheel.serving_mode": "blue-green"}, r"flywheel.serving_mode='blue-green': expected one of"),
])
def test_bad_tags_are_errors_naming_the_tag(tags, message):
    with pytest.raises(RoutingError, match=message):
        parse_routing(tags)
