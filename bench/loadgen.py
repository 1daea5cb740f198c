"""A lean HTTP/1.1 load generator for the serving bench: raw asyncio protocols on uvloop.

A general-purpose client (aiohttp) spends 300-400 us of Python per request; on the one
load-generator core that caps a closed loop near 2,500 requests/s and adds milliseconds of
its own to open-loop percentiles, so it measures itself as much as the server. This one
sends pre-encoded requests over keep-alive connections and reads only the status line,
``Content-Length`` and ``Connection`` of each answer (tens of microseconds a request).
Every server in the bench is measured with it, the same way.

- :func:`closed_loop`: ``concurrency`` connections, one request in flight on each; latency
  from send to the end of the answer.
- :func:`open_loop`: requests leave at a fixed rate whatever the answers; each takes an idle
  connection or opens one (up to ``max_connections``); latency counts from the scheduled
  send time, so a stalled server is not hidden (no coordinated omission).

A connection the server closes (``Connection: close``, a reset) is reopened; a request that
gets no answer is counted by the error's class name instead of a status code.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`send` returns the next answer's status code."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).split(b"\r\n")
        length, close = 0, False
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                self.waiter.set_exception(RuntimeError("chunked answers are not supported by bench/loadgen.py"))
                return
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[:end + 4 + length]
        self.reusable = not close
        self.waiter.set_result(int(head[0][9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError(f"connection closed before the answer: {exc}"))

    def send(self, request: bytes) -> asyncio.Future:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def requests(host: str, port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    """Pre-encoded ``POST`` requests, one per body."""
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]


class _Tally:
    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.latencies: list[float] = []

    def add(self, code: str, latency: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        if code == "200":
            self.latencies.append(latency)


async def _open(host: str, port: int) -> _Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    return protocol


async def _one(connection: _Connection, request: bytes, since: float, tally: _Tally) -> bool:
    """Send ``request``; tally its status (or error) and latency from ``since``; ``True`` if the
    connection can carry the next request."""
    try:
        code = str(await connection.send(request))
    except (OSError, RuntimeError) as exc:
        tally.add(type(exc).__name__, 0.0)
        connection.close()
        return False
    tally.add(code, time.perf_counter() - since)
    if not connection.reusable:
        connection.close()
    return connection.reusable


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(tally: _Tally) -> dict[str, Any]:
    return {"p50_ms": round(percentile(tally.latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 2), "codes": tally.codes}


async def closed_loop(host: str, port: int, requests_: list[bytes], concurrency: int,
                      seconds: float) -> dict[str, Any]:
    """``concurrency`` connections sending back to back for ``seconds``."""
    tally = _Tally()
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i, connection = w, None
        while time.perf_counter() < stop:
            if connection is None:
                try:
                    connection = await _open(host, port)
                except OSError as exc:
                    tally.add(type(exc).__name__, 0.0)
                    await asyncio.sleep(0.01)
                    continue
            request = requests_[i % len(requests_)]
            i += concurrency
            if not await _one(connection, request, time.perf_counter(), tally):
                connection = None
        if connection is not None:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests_per_s": round(tally.codes.get("200", 0) / elapsed, 1), **_summary(tally)}


async def open_loop(host: str, port: int, requests_: list[bytes], rate: float, seconds: float, *,
                    max_connections: int = 1024) -> dict[str, Any]:
    """``rate`` requests/s for ``seconds``, whatever the answers; latency from the scheduled time."""
    tally = _Tally()
    idle: list[_Connection] = []
    opened = 0
    n = int(rate * seconds)

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened
        if idle:
            connection = idle.pop()
        elif opened >= max_connections:
            tally.add("no_connection", 0.0)
            return
        else:
            opened += 1
            try:
                connection = await _open(host, port)
            except OSError as exc:
                opened -= 1
                tally.add(type(exc).__name__, 0.0)
                return
        if await _one(connection, requests_[i % len(requests_)], scheduled, tally):
            idle.append(connection)
        else:
            opened -= 1

    started = time.perf_counter()
    tasks = []
    for i in range(n):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    ok = tally.codes.get("200", 0)
    return {"rate": rate, "sent": n, "ok": ok, **_summary(tally),
            "only_200_or_503": set(tally.codes) <= {"200", "503"}, "latencies": tally.latencies}


def run(coroutine: Any) -> Any:
    """Run ``coroutine`` on a fresh uvloop loop (the servers' loop too), with the garbage
    collector paused: the bench process has imported the whole stack (about 10^6 objects), and
    a full collection stops the generator for a few hundred milliseconds, which then counts as
    the server's latency and sends the overdue requests in one burst."""
    import gc

    import uvloop

    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    finally:
        gc.enable()
