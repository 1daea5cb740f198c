"""Dynamic micro-batching with a bounded queue.

Requests are queued as jobs (one job = the rows of one request for one model version).
While every model session is busy, jobs accumulate; when one frees up it takes what is
queued, up to ``max_batch_size`` rows, waiting at most ``max_wait_s`` for more and only
while other requests are still being parsed (an idle server never waits for company, so a
lone request pays no batching delay). Jobs for different versions are scored in separate
calls. The queue is bounded in rows: a job that does not fit is refused at once
(:class:`QueueFull`, which the app answers with 503 and ``Retry-After``). Scoring runs in a
thread pool of ``sessions`` threads: that many batches at most are in a model at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflywheel.serving.metrics import ServerMetrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue_rows`` already: come back later."""


@dataclass
class Job:
    """Rows of one request for one model, and where the answer goes."""

    key: Any
    rows: list[Any]
    payload: Any = None
    future: asyncio.Future[Any] | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Collects jobs into batches and runs ``process`` on them in a bounded thread pool.

    Args:
        process: called in a worker thread with the jobs of one key (model version); returns
            one result per job (an ``Exception`` instance fails that job only).
        metrics: queue depth and batch sizes.
        max_batch_size: rows per call (a single larger job still goes alone).
        max_wait_s: the longest a job waits for others to join its batch.
        max_queue_rows: rows queued at most.
        sessions: batches scored at once.
    """

    def __init__(self, process: Callable[[list[Job]], list[Any]], metrics: ServerMetrics, *,
                 max_batch_size: int = 256, max_wait_s: float = 0.002, max_queue_rows: int = 1024,
                 sessions: int = 1) -> None:
        self.process, self.metrics = process, metrics
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.max_queue_rows, self.sessions = max_queue_rows, sessions
        self.arriving = 0
        self._queue: deque[Job] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.sessions)
        self._pool = ThreadPoolExecutor(self.sessions, thread_name_prefix="flywheel-score")
        self._runner = asyncio.create_task(self._run(), name="flywheel-batcher")

    def submit(self, job: Job, *, want_result: bool = True) -> asyncio.Future[Any] | None:
        """Queue ``job``; raises :class:`QueueFull` when its rows do not fit."""
        if self._closing or self._wakeup is None:
            raise QueueFull("the server is shutting down")
        if self._queued_rows + len(job.rows) > self.max_queue_rows:
            raise QueueFull(f"{self._queued_rows} rows queued (limit {self.max_queue_rows})")
        if want_result:
            job.future = asyncio.get_running_loop().create_future()
        self._queue.append(job)
        self._queued_rows += len(job.rows)
        self.metrics.queue_depth.set(self._queued_rows)
        self._wakeup.set()
        return job.future

    def _take(self, batch: list[Job], rows: int) -> int:
        while self._queue and rows + len(self._queue[0].rows) <= self.max_batch_size:
            job = self._queue.popleft()
            batch.append(job)
            rows += len(job.rows)
        return rows

    async def _run(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            await self._slots.acquire()  # hold jobs back while every session is busy: they batch up
            while not self._queue:
                if self._closing:
                    self._slots.release()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._queue.popleft()
            batch, rows = [first], len(first.rows)
            rows = self._take(batch, rows)
            deadline = first.enqueued + self.max_wait_s
            while rows < self.max_batch_size and self.arriving > 0 and not self._closing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                rows = self._take(batch, rows)
            self._queued_rows -= rows
            self.metrics.queue_depth.set(self._queued_rows)
            task = asyncio.create_task(self._score(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _score(self, batch: list[Job]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        try:
            groups: dict[Any, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                self.metrics.batch_size.labels(str(key)).observe(sum(len(j.rows) for j in jobs))
                try:
                    results = await loop.run_in_executor(self._pool, self.process, jobs)
                except Exception as exc:  # process itself failed: every job of the group fails
                    log.exception("scoring a batch of %d job(s) for %s failed", len(jobs), key)
                    results = [exc] * len(jobs)
                for job, result in zip(jobs, results, strict=True):
                    if job.future is not None and not job.future.done():
                        if isinstance(result, BaseException):
                            job.future.set_exception(result)
                        else:
                            job.future.set_result(result)
        finally:
            self._slots.release()

    async def stop(self) -> None:
        """Score everything queued, wait for batches in flight, then shut the pool down."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._runner is not None:
            await self._runner
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
