"""``flywheel replay``: held-out rows sent to the model server at a set rate; labels later.

For the rollout demo and its end-to-end test, one machine has to play the users and the
chargeback department. The replayer

- sends one ``/predict`` request per row (entity id, record id, and the fields the server's
  contract takes: request features with the Feast lookup on, every model input with it off),
  on an open-loop schedule of ``rate`` requests a second (a slow server does not slow the
  arrivals; at most ``max_in_flight`` are outstanding, beyond that a request is counted as
  ``dropped`` rather than queued without bound);
- then, ``label_delay_s`` after each answer, publishes that row's label to the labels zone
  (:mod:`mlflywheel.services.data.labels`, ``ds=<arrival day>/replay-<session>-<seq>.parquet``,
  each file atomic), so the rollout's label test sees outcomes arrive after the predictions,
  as in production.

Rows come from a Parquet file (``source``) or, by default, the holdout of ``@champion``'s
training snapshot: rows the model was not fitted on, with their true labels.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflywheel.services.errors import ConfigError, RegistryError
from mlflywheel.services.names import TAG_DIGEST

if TYPE_CHECKING:
    import pandas as pd

    from mlflywheel.services.config import PipelineConfig
    from mlflywheel.services.settings import Workspace


@dataclass
class ReplayReport:
    sent: int = 0
    statuses: Counter[int | str] = field(default_factory=Counter)
    dropped: int = 0
    labels_published: int = 0
    label_files: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        import numpy as np

        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"sent": self.sent, "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
                "dropped": self.dropped, "labels_published": self.labels_published,
                "label_files": len(self.label_files), "seconds": round(self.seconds, 2),
                "achieved_rps": round(self.sent / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def held_out_rows(config: PipelineConfig, ws: Workspace, source: str | Path | None = None) -> pd.DataFrame:
    """The rows to replay: ``source`` (Parquet) or the holdout of ``@champion``'s snapshot."""
    import pandas as pd

    if source is not None:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"{path}: replay source not found")
        return pd.read_parquet(path)
    from mlflywheel.services import tracking
    from mlflywheel.services.dataset import holdout_split, load_snapshot, snapshot_path
    from mlflywheel.services.registry import champion_version

    mv = champion_version(tracking.client(ws), config.model_name)
    if mv is None:
        raise RegistryError(f"{config.model_name}@champion does not exist (registry {ws.registry_uri})")
    digest = mv.tags.get(TAG_DIGEST)
    if not digest:
        raise ConfigError(f"{config.model_name} v{mv.version} (@champion) has no {TAG_DIGEST} tag: "
                          "pass a Parquet source of rows to replay")
    frame = load_snapshot(str(snapshot_path(ws, config.name, digest)), digest)
    return holdout_split(frame, config)[1]


def records(config: PipelineConfig, frame: pd.DataFrame, *, feast: bool) -> list[dict[str, Any]]:
    """JSON records as the server's contract takes them (NaN -> null)."""
    data = config.data
    fields = config.features.request_features if feast else config.feature_columns
    columns = list(dict.fromkeys([data.entity, data.id_column, *fields]))
    missing = [c for c in [*columns, data.label] if c not in frame.columns]
    if missing:
        raise ConfigError(f"replay rows lack column(s) {missing}; expected {[*columns, data.label]}")
    rows = frame[columns].astype(object).where(frame[columns].notna(), None)
    out: list[dict[str, Any]] = rows.to_dict("records")
    for record in out:
        for key, value in record.items():
            if hasattr(value, "item"):
                record[key] = value.item()
    return out


class LabelPublisher:
    """Labels held until their arrival time, then written to the labels zone in small files."""

    def __init__(self, config: PipelineConfig, ws: Workspace, *, delay_s: float, session: str) -> None:
        from mlflywheel.services.data.labels import labels_dir

        self.config, self.delay = config, dt.timedelta(seconds=delay_s)
        self.root = labels_dir(config, ws)
        self.session, self.seq = session, 0
        self.pending: list[tuple[dt.datetime, str, int]] = []
        self.published: list[str] = []
        self.count = 0

    def answered(self, record_id: str, label: int, at: dt.datetime) -> None:
        self.pending.append((at + self.delay, record_id, label))

    def flush(self, now: dt.datetime, *, everything: bool = False) -> None:
        import pandas as pd

        from mlflywheel.services.data.io import write_parquet_atomic
        from mlflywheel.services.data.labels import LABEL_TS

        due = [p for p in self.pending if everything or p[0] <= now]
        if not due:
            return
        self.pending = [p for p in self.pending if not (everything or p[0] <= now)]
        frame = pd.DataFrame({self.config.data.id_column: [p[1] for p in due],
                              self.config.data.label: pd.Series([p[2] for p in due], dtype="int64"),
                              LABEL_TS: pd.to_datetime([p[0] for p in due], utc=True)})
        for day, part in frame.groupby(frame[LABEL_TS].dt.date):
            self.seq += 1
            path = self.root / f"ds={day.isoformat()}" / f"replay-{self.session}-{self.seq:06d}.parquet"
            self.published.append(str(write_parquet_atomic(part.reset_index(drop=True), path)))
        self.count += len(due)


async def _replay(url: str, model_records: list[dict[str, Any]], labels: list[int], *, id_column: str,
                  rate: float, duration_s: float | None, max_in_flight: int,
                  publisher: LabelPublisher | None, timeout_s: float) -> ReplayReport:
    import httpx

    report = ReplayReport()
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    async def send(client: httpx.AsyncClient, record: dict[str, Any], label: int) -> None:
        nonlocal in_flight
        started = time.perf_counter()
        try:
            status: int | str = (await client.post("/predict", json={"records": [record]})).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        in_flight -= 1
        report.statuses[status] += 1
        if status == 200:
            report.latencies_ms.append((time.perf_counter() - started) * 1000)
            if publisher is not None:
                publisher.answered(record[id_column], label, dt.datetime.now(dt.UTC))

    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        for i, (record, label) in enumerate(zip(model_records, labels, strict=True)):
            due = t0 + i / rate
            if duration_s is not None and due - t0 >= duration_s:
                break
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            if publisher is not None:
                publisher.flush(dt.datetime.now(dt.UTC))
            if in_flight >= max_in_flight:  # open loop: an overloaded server does not slow arrivals
                report.dropped += 1
                continue
            in_flight += 1
            report.sent += 1
            task = asyncio.create_task(send(client, record, label))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        # labels still due arrive on schedule: wait for them, then publish
        while publisher is not None and publisher.pending:
            publisher.flush(dt.datetime.now(dt.UTC))
            if publisher.pending:
                await asyncio.sleep(min(0.2, max(0.0, (min(p[0] for p in publisher.pending)
                                                        - dt.datetime.now(dt.UTC)).total_seconds())))
    report.seconds = time.perf_counter() - t0
    if publisher is not None:
        report.labels_published, report.label_files = publisher.count, publisher.published
    return report


def replay(config: PipelineConfig, ws: Workspace, url: str, *, rate: float, duration_s: float | None = None,
           limit: int | None = None, label_delay_s: float | None = 30.0, feast: bool = True,
           source: str | Path | None = None, max_in_flight: int = 64, timeout_s: float = 10.0,
           seed: int = 0) -> ReplayReport:
    """Send held-out rows to ``url`` at ``rate`` requests/s; publish their labels ``label_delay_s``
    after each answer (``None``: no labels). Stops after ``duration_s`` seconds or ``limit`` rows,
    whichever comes first, and returns once every due label is published."""
    if rate <= 0:
        raise ConfigError(f"rate: expected requests per second > 0, found {rate}")
    frame = held_out_rows(config, ws, source)
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # mixes entities and days
    if limit is not None:
        frame = frame.head(limit)
    if frame.empty:
        raise ConfigError("no rows to replay")
    model_records = records(config, frame, feast=feast)
    labels = frame[config.data.label].astype(int).tolist()
    publisher = None if label_delay_s is None else LabelPublisher(
        config, ws, delay_s=label_delay_s, session=uuid.uuid4().hex[:8])
    return asyncio.run(_replay(url.rstrip("/"), model_records, labels, id_column=config.data.id_column, rate=rate,
                               duration_s=duration_s, max_in_flight=max_in_flight, publisher=publisher,
                               timeout_s=timeout_s))
