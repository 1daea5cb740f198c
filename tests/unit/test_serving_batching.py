"""Micro-batching: jobs gather while the session is busy, batches split by version, the queue is bounded."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mlflywheel.serving.batching import Job, MicroBatcher, QueueFull
from mlflywheel.serving.metrics import ServerMetrics

pytestmark = pytest.mark.unit


class Recorder:
    """A process function that records its batches and can be held busy."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set once a batch is in the session

    def __call__(self, jobs: list[Job]) -> list[object]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([(job.key, len(job.rows)) for job in jobs])
        return [ValueError("bad job") if job.rows == ["fail"] else sum(job.rows) for job in jobs]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def in_session(process: Recorder) -> None:
    """Wait until the batcher has handed a batch to the (blocked) session."""
    assert await asyncio.to_thread(process.entered.wait, 10), "no batch reached the session"


def test_jobs_batch_up_while_the_session_is_busy():
    async def scenario():
        process = Recorder()
        batcher = MicroBatcher(process, ServerMetrics(), max_batch_size=4, max_wait_s=0, max_queue_rows=100)
        await batcher.start()
        process.gate.clear()
        first = batcher.submit(Job("v1", [1]))
        await in_session(process)  # the first job is in the (blocked) session
        later = [batcher.submit(Job(key, [n])) for key, n in
                 [("v1", 2), ("v2", 3), ("v1", 4), ("v1", 5), ("v1", 6), ("v1", 7)]]
        assert batcher.queued_rows == 6
        process.gate.set()
        results = await asyncio.gather(first, *later)
        await batcher.stop()
        return process.batches, results

    batches, results = run(scenario())
    assert results == [1, 2, 3, 4, 5, 6, 7]
    assert batches[0] == [("v1", 1)]
    # the next batch takes 4 rows in arrival order and scores each version separately
    assert batches[1:3] == [[("v1", 1), ("v1", 1), ("v1", 1)], [("v2", 1)]]
    assert batches[3] == [("v1", 1), ("v1", 1)]


def test_the_queue_is_bounded_in_rows_and_refuses_at_once():
    async def scenario():
        process = Recorder()
        batcher = MicroBatcher(process, ServerMetrics(), max_queue_rows=3)
        await batcher.start()
        process.gate.clear()
        batcher.submit(Job("v1", [1]))
        await in_session(process)
        batcher.submit(Job("v1", [1, 1]))
        with pytest.raises(QueueFull, match=r"2 rows queued \(limit 3\)"):
            batcher.submit(Job("v1", [1, 1]))
        process.gate.set()
        await batcher.stop()

    run(scenario())


def test_a_failing_job_fails_alone_and_stop_drains_the_queue():
    async def scenario():
        process = Recorder()
        batcher = MicroBatcher(process, ServerMetrics(), max_batch_size=8)
        await batcher.start()
        process.gate.clear()
        futures = [batcher.submit(Job("v1", rows)) for rows in ([1], ["fail"], [2, 3])]
        stopping = asyncio.create_task(batcher.stop())
        await in_session(process)
        process.gate.set()
        await stopping
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        with pytest.raises(QueueFull, match="shutting down"):
            batcher.submit(Job("v1", [1]))
        return outcomes

    ok, failed, rest = run(scenario())
    assert ok == 1 and isinstance(failed, ValueError) and rest == 5


def test_a_lone_request_does_not_wait_for_company():
    async def scenario():
        process = Recorder()
        batcher = MicroBatcher(process, ServerMetrics(), max_batch_size=64, max_wait_s=5.0)
        await batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(Job("v1", [1]))
        elapsed = loop.time() - started
        await batcher.stop()
        return elapsed

    assert run(scenario()) < 1.0  # nothing else is arriving: no reason to wait max_wait_s
