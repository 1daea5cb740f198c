"""Online features for ``/predict``: the Feast online store, with a short TTL cache.

The server asks Feast for the pipeline's feature service, the same one training joined
point in time, so a request is scored on the columns training saw. Entities the store does
not know come back with every feature null; the server then applies the configured
fallback (flagged in the response) or refuses the record.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

from mlflywheel.services.errors import FeatureError

if TYPE_CHECKING:
    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace


class OnlineFeatures(Protocol):
    """Feature values by entity id; ``None`` for an entity the store does not know."""

    features: list[str]

    def lookup(self, entity_ids: list[Any]) -> list[dict[str, Any] | None]: ...

    def warm(self, probe: Any) -> None: ...


class CachedLookup:
    """A TTL + LRU cache in front of a batch lookup function (thread-safe).

    Args:
        fetch: ids -> one dict (or ``None``) per id, in order.
        features: the feature names each dict carries.
        ttl_s: how long a value is reused (0: no cache). Feast rows change at
            materialization, so a few seconds to a minute costs no freshness that matters.
        max_entries: cache size bound.
    """

    def __init__(self, fetch: Any, features: list[str], *, ttl_s: float = 30.0, max_entries: int = 100_000) -> None:
        self.fetch, self.features, self.ttl_s, self.max_entries = fetch, features, ttl_s, max_entries
        self._cache: OrderedDict[Any, tuple[float, dict[str, Any] | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def warm(self, probe: Any) -> None:
        """Fetch ``probe`` once, uncached: the first Feast read imports the online store's
        modules (about 0.25 s), which the server pays before it is ready, not on a request."""
        self.fetch([probe])

    def lookup(self, entity_ids: list[Any]) -> list[dict[str, Any] | None]:
        now = time.monotonic()
        out: dict[Any, dict[str, Any] | None] = {}
        if self.ttl_s > 0:
            with self._lock:
                for eid in entity_ids:
                    hit = self._cache.get(eid)
                    if hit is not None and hit[0] > now:
                        out[eid] = hit[1]
                        self._cache.move_to_end(eid)
        missing = list(dict.fromkeys(e for e in entity_ids if e not in out))
        self.hits += len(entity_ids) - len(missing)
        self.misses += len(missing)
        if missing:
            fetched = self.fetch(missing)
            if len(fetched) != len(missing):
                raise FeatureError(f"online lookup returned {len(fetched)} rows for {len(missing)} entities")
            out.update(zip(missing, fetched, strict=True))
            if self.ttl_s > 0:
                with self._lock:
                    for eid, value in zip(missing, fetched, strict=True):
                        self._cache[eid] = (now + self.ttl_s, value)
                        self._cache.move_to_end(eid)
                    while len(self._cache) > self.max_entries:
                        self._cache.popitem(last=False)
        return [out[e] for e in entity_ids]


def feast_lookup(ws: Workspace, config: PipelineConfig, *, ttl_s: float = 30.0) -> CachedLookup:
    """A cached lookup of the pipeline's feature service in the workspace's Feast online store."""
    from mlflywheel.services.features import load_store

    store = load_store(ws)
    try:
        service = store.get_feature_service(config.features.feature_service)
    except Exception as exc:
        raise FeatureError(f"feature service {config.features.feature_service!r} is not in the Feast registry "
                           f"({ws.feature_repo}); run the training DAG (feature_materialize) first: {exc}") from exc
    request = set(config.features.request_features)
    features = [c for c in config.feature_columns if c not in request]
    entity = config.data.entity

    def fetch(ids: list[Any]) -> list[dict[str, Any] | None]:
        table = store.get_online_features(features=service, entity_rows=[{entity: i} for i in ids],
                                          full_feature_names=False).to_dict()
        lacking = [f for f in features if f not in table]
        if lacking:
            raise FeatureError(f"feature service {service.name!r} does not return {lacking}")
        rows: list[dict[str, Any] | None] = []
        for j in range(len(ids)):
            values = {f: table[f][j] for f in features}
            rows.append(None if all(v is None for v in values.values()) else values)
        return rows

    return CachedLookup(fetch, features, ttl_s=ttl_s)
