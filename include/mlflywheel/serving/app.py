"""The ASGI app: Open Inference Protocol v2, ``/predict`` with the Feast lookup, ``/metrics``.

=====================================================  =====================================
``GET  /v2/health/live``                               200 while the process runs
``GET  /v2/health/ready``                              200 with ``@champion`` loaded and not
                                                       draining, else 503
``GET  /v2``                                           server metadata
``GET  /v2/models/{name}[/versions/{version}]``        model metadata, loaded versions,
                                                       routing, refused versions
``GET  /v2/models/{name}[/versions/{version}]/ready``  200 / 503
``POST /v2/models/{name}[/versions/{version}]/infer``  v2 tensors in (one per model input),
                                                       ``score`` out; ``@champion`` unless a
                                                       version is named
``POST /predict``                                      ``{"records": [{<entity>: id, ...}]}``:
                                                       routed per entity, store features added
``GET  /metrics``                                      Prometheus text format
=====================================================  =====================================

Every refusal is JSON ``{code, field, message}`` with a 4xx (or 503 when the queue is full,
the server is not ready or the prediction log cannot be written); a bad payload never
causes a 5xx. ``X-Request-ID`` (or the v2 ``id``) names the request in the log and the answer.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlflywheel.services.names import CHALLENGER, CHAMPION
from mlflywheel.serving.batching import Job, MicroBatcher, QueueFull
from mlflywheel.serving.contract import RequestError, check_request_id, parse_infer, parse_predict
from mlflywheel.serving.metrics import ServerMetrics
from mlflywheel.serving.models import ModelWatcher
from mlflywheel.serving.routing import SHADOW, route
from mlflywheel.serving.scoring import Payload, Scorer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mlflywheel.services.config import ServingSpec
    from mlflywheel.services.online import OnlineFeatures
    from mlflywheel.services.predlog import PredictionLog
    from mlflywheel.serving.contract import Contract
    from mlflywheel.serving.models import Loaded, ModelSource

log = logging.getLogger(__name__)
JSON = "application/json"
PREDICT, INFER = "/predict", "/v2/models/{name}/infer"


_encode = msgspec.json.Encoder().encode


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status, headers=headers, media_type=JSON)


class _RequestIds:
    """Fresh request ids: 32 hex characters, a random 80-bit prefix per process and a counter
    (``uuid4`` costs a system call per request)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:20]
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):012x}"


class ModelServer:
    """The server's parts wired together; :meth:`app` is the ASGI application.

    Args:
        model_name: the registered model (the only ``{name}`` the v2 routes know).
        source: the registry to follow.
        contract: what requests may contain.
        log: the prediction log.
        spec: batching, limits and timing (the pipeline's ``serving`` section).
        online: the store lookup for ``/predict``, or ``None`` (records carry every input).
    """

    def __init__(self, model_name: str, source: ModelSource, contract: Contract, log: PredictionLog,
                 spec: ServingSpec, *, online: OnlineFeatures | None = None) -> None:
        self.model_name, self.contract, self.log, self.spec, self.online = model_name, contract, log, spec, online
        self.metrics = ServerMetrics()
        self.watcher = ModelWatcher(source, self.metrics, poll_interval_s=spec.poll_interval_s,
                                    retry_refused_s=spec.retry_refused_s)
        self.scorer = Scorer(model_name, log, self.metrics, online=online, unknown_entity=spec.unknown_entity,
                             fallback_features=dict(spec.fallback_features))
        self.batcher = MicroBatcher(self.scorer, self.metrics, max_batch_size=spec.max_batch_size,
                                    max_wait_s=spec.max_wait_ms / 1000.0, max_queue_rows=spec.max_queue_rows,
                                    sessions=spec.sessions)
        self.draining = False
        self.started = False
        self._retry = {"Retry-After": str(spec.retry_after_s)}
        self._new_id = _RequestIds()
        self._answered: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    # --- lifecycle ---------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.watcher.refresh)
        await loop.run_in_executor(None, self._warm_online)
        self.watcher.start()
        await self.batcher.start()
        # Startup left ~10^6 long-lived objects (mlflow, pandas, onnx, feast); without this every
        # full collection walks them all, a 100+ ms pause in the middle of a request.
        gc.collect()
        gc.freeze()
        self.started = True
        log.info("serving %s: %s; prediction log %s", self.model_name, self.watcher.status()["roles"] or
                 "no @champion yet (not ready)", self.log.path)
        try:
            yield
        finally:
            self.draining = True
            await self.batcher.stop()
            self.watcher.stop()
            self.log.close()
            log.info("stopped: %d prediction rows appended this run, log flushed to %s", self.log.appended,
                     self.log.path)

    def _warm_online(self) -> None:
        if self.online is None:
            return
        probe = "__flywheel_warmup__" if self.contract.entity.kind == "string" else -1
        try:
            self.online.warm(probe)
        except Exception as exc:  # the store may come up later; requests will say so if it does not
            log.warning("online store warm-up lookup failed: %s", exc)

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self.watcher.ready

    def app(self) -> Any:
        """The ASGI application.

        ``POST /predict`` and the v2 ``infer`` routes go straight to their handlers; the rest
        (health, metadata, metrics, 404/405, lifespan) goes through a Starlette router. On one
        core the router and its middleware stack cost about a tenth of a single-row request.
        """
        routes = [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready_endpoint, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}", self.model_metadata, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", self.model_ready, methods=["GET"]),
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.infer, methods=["POST"]),
            Route("/predict", self.predict, methods=["POST"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]
        router = Starlette(routes=routes, lifespan=self.lifespan,
                           exception_handlers={HTTPException: self._http_error, Exception: self._crash})

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            handler = self._hot_route(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
            if handler is None:
                await router(scope, receive, send)
                return
            request = Request(scope, receive)
            try:
                response = await handler(request)
            except Exception as exc:
                response = await self._crash(request, exc)
            await response(scope, receive, send)

        return asgi

    def _hot_route(self, scope: dict[str, Any]) -> Any:
        """The handler of a ``POST`` to ``/predict`` or ``/v2/models/{name}[/versions/{version}]/infer``
        (path parameters set on ``scope`` as the router would), else ``None``."""
        path = scope["path"]
        if path == PREDICT:
            return self.predict
        if not (path.startswith("/v2/models/") and path.endswith("/infer")):
            return None
        parts = path[len("/v2/models/"):-len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            scope["path_params"] = {"name": parts[0]}
        elif len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            scope["path_params"] = {"name": parts[0], "version": parts[2]}
        else:
            return None
        return self.infer

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        self.metrics.rejected.labels("other", code).inc()
        return _json({"code": code, "field": None, "message": f"{request.method} {request.url.path}: {exc.detail}"},
                     exc.status_code)

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        self.metrics.errors.labels(request.url.path, "none", "internal").inc()
        return _json({"code": "internal", "field": None, "message": f"{type(exc).__name__}: {exc}"}, 500)

    # --- health and metadata -----------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready_endpoint(self, request: Request) -> Response:
        if self.ready:
            return _json({"ready": True})
        reason = "draining" if self.draining else ("starting" if not self.started else "no @champion loaded")
        return _json({"ready": False, "reason": reason, "last_error": self.watcher.last_error}, 503, self._retry)

    async def server_metadata(self, request: Request) -> Response:
        from importlib.metadata import version

        return _json({"name": "mlflywheel", "version": version("mlflywheel"), "extensions": ["predict", "metrics"]})

    def _model(self, request: Request) -> tuple[Loaded | None, str | None]:
        """The model a v2 route names (``None`` when not loaded); 404 for an unknown name/version."""
        name = request.path_params["name"]
        if name != self.model_name:
            raise RequestError(404, "unknown_model", f"model {name!r} is not served here; this server serves "
                                                     f"{self.model_name!r}", "name")
        models = self.watcher.current.models
        wanted = request.path_params.get("version")
        if wanted is None:
            return models.get(CHAMPION), CHAMPION
        for role, loaded in models.items():
            if loaded.version == wanted:
                return loaded, role
        raise RequestError(404, "unknown_version", f"{name} v{wanted} is not loaded (loaded: "
                                                   f"{sorted({m.version for m in models.values()})})", "version")

    async def model_metadata(self, request: Request) -> Response:
        try:
            loaded, _ = self._model(request)
        except RequestError as exc:
            return self._refuse(exc, "/v2/models/{name}")
        inputs = [{"name": n, "datatype": "BYTES" if self.contract.input_fields[n].kind == "string" else "FP32",
                   "shape": [-1, 1]} for n in self.contract.input_fields]
        versions = sorted({m.version for m in self.watcher.current.models.values()}, key=int)
        return _json({"name": self.model_name, "versions": versions, "platform": "onnxruntime_onnx",
                      "inputs": inputs, "outputs": [{"name": "score", "datatype": "FP64", "shape": [-1]}],
                      "parameters": {"ready": loaded is not None, **self.watcher.status()}})

    async def model_ready(self, request: Request) -> Response:
        try:
            loaded, _ = self._model(request)
        except RequestError as exc:
            return self._refuse(exc, "/v2/models/{name}/ready")
        ok = loaded is not None and not self.draining
        return _json({"name": self.model_name, "ready": ok}, 200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        self.metrics.ready.set(1 if self.ready else 0)
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- scoring -----------------------------------------------------------------------
    def _refuse(self, exc: RequestError, route_name: str, started: float | None = None, *,
                version: str = "none", role: str = "none") -> Response:
        if exc.status < 500 or exc.code in ("queue_full", "not_ready"):
            self.metrics.rejected.labels(route_name, exc.code).inc()
        self.metrics.errors.labels(route_name, version, exc.code).inc()
        self.metrics.requests.labels(route_name, version, role, str(exc.status)).inc()
        if started is not None:
            self.metrics.latency.labels(route_name, version, role).observe(time.perf_counter() - started)
        headers = dict(exc.headers)
        if exc.status == 503:
            headers.setdefault("Retry-After", str(self.spec.retry_after_s))
        if exc.status == 413:
            headers["Connection"] = "close"  # the rest of an oversized body is never read
        return _json(exc.body(), exc.status, headers)

    async def _body(self, request: Request) -> bytes:
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != JSON:
            raise RequestError(415, "unsupported_media_type", f"Content-Type must be {JSON}, found {ctype!r}",
                               "Content-Type")
        limit = self.spec.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "bad_content_length", f"Content-Length {declared!r} is not a number",
                                   "Content-Length")
            if int(declared) > limit:
                raise RequestError(413, "payload_too_large", f"body of {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "payload_too_large", f"body over {limit} bytes (stopped reading)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _submit_all(self, jobs: list[Job]) -> list[asyncio.Future[Any]]:
        rows = sum(len(j.rows) for j in jobs)
        if self.batcher.queued_rows + rows > self.batcher.max_queue_rows:
            raise RequestError(503, "queue_full", f"{self.batcher.queued_rows} rows queued (limit "
                                                  f"{self.batcher.max_queue_rows}); retry later")
        try:
            return [self.batcher.submit(job) for job in jobs]  # type: ignore[misc]
        except QueueFull as exc:
            raise RequestError(503, "queue_full", str(exc)) from None

    async def _gather(self, futures: list[asyncio.Future[Any]], jobs: list[Job], route_name: str,
                      started: float) -> list[Any] | Response:
        """The jobs' results, or the error answer of the first job that failed, counted against its version.

        A model that raises is a 500 ``model_error`` charged to that version and role, so the
        rollout analysis sees a failing canary as the canary's errors.
        """
        results = await asyncio.gather(*futures, return_exceptions=True)
        for job, result in zip(jobs, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            version, role = job.payload.model.version, job.payload.role
            if not isinstance(result, RequestError):
                log.error("%s v%s (@%s) failed on request %s: %r", self.model_name, version, role,
                          job.payload.request_id, result)
                result = RequestError(500, "model_error", f"{self.model_name} v{version} failed: "
                                                          f"{type(result).__name__}: {result}"[:500])
            return self._refuse(result, route_name, started, version=version, role=role)
        return results

    def _shed(self) -> None:
        """Refuse at once, before reading or parsing the body, when the queue is already full:
        under overload the server's time goes to the requests it can answer."""
        if self.batcher.queued_rows >= self.batcher.max_queue_rows:
            raise RequestError(503, "queue_full", f"{self.batcher.queued_rows} rows queued (limit "
                                                  f"{self.batcher.max_queue_rows}); retry later")

    def _champion(self) -> None:
        if CHAMPION not in self.watcher.current.models:
            raise RequestError(503, "not_ready", "no @champion loaded yet" +
                               (f" ({self.watcher.last_error})" if self.watcher.last_error else ""))

    def _account(self, route_name: str, roles: dict[str, str], started: float) -> None:
        versions = set(roles.values())
        version = versions.pop() if len(versions) == 1 else "mixed"
        role = next(iter(roles)) if len(roles) == 1 else "mixed"
        key = (route_name, version, role)
        series = self._answered.get(key)
        if series is None:  # labels() takes a lock and validates: once per series, not per request
            series = self._answered[key] = (self.metrics.requests.labels(route_name, version, role, "200"),
                                            self.metrics.latency.labels(route_name, version, role))
        series[0].inc()
        series[1].observe(time.perf_counter() - started)

    async def predict(self, request: Request) -> Response:
        started = time.perf_counter()
        self.batcher.arriving += 1
        arriving = True
        self.metrics.in_flight.inc()
        try:
            self._shed()
            body = await self._body(request)
            request_id = check_request_id(request.headers.get("x-request-id")) or self._new_id()
            parsed = parse_predict(body, self.contract)
            self._champion()
            deployment = self.watcher.current
            by_role: dict[str, list[int]] = {}
            shadow_rows: list[int] = []
            for i, entity_id in enumerate(parsed.entity_ids):
                decision = route(entity_id, deployment.routing, deployment.available)
                by_role.setdefault(decision.primary, []).append(i)
                if decision.shadow is not None:
                    shadow_rows.append(i)
            jobs = []
            for role, index in by_role.items():
                loaded = deployment.models[role]
                jobs.append(Job(key=loaded.version, rows=[parsed.records[i] for i in index], payload=Payload(
                    request_id=request_id, route=PREDICT, role=role, model=loaded, received=started,
                    entity_ids=[parsed.entity_ids[i] for i in index], record_ids=[parsed.ids[i] for i in index],
                    row_index=index, lookup=self.online is not None)))
            futures = self._submit_all(jobs)
            self.batcher.arriving -= 1
            arriving = False
            results = await self._gather(futures, jobs, PREDICT, started)
            if isinstance(results, Response):
                return results
            out: list[dict[str, Any] | None] = [None] * len(parsed.records)
            for job, result in zip(jobs, results, strict=True):
                p = job.payload
                for k, i in enumerate(p.row_index):
                    out[i] = {"entity_id": parsed.entity_ids[i], "score": result.scores[k],
                              "model_version": p.model.version, "role": p.role, "fallback": result.fallback[k]}
                    if parsed.ids[i] is not None:
                        out[i]["id"] = parsed.ids[i]
            if shadow_rows and CHALLENGER in deployment.models:
                self._shadow(deployment.models[CHALLENGER], request_id, jobs, results, shadow_rows, started)
            self._account(PREDICT, {j.payload.role: j.payload.model.version for j in jobs}, started)
            return _json({"request_id": request_id, "model_name": self.model_name, "predictions": out},
                         headers={"X-Request-ID": request_id})
        except RequestError as exc:
            return self._refuse(exc, PREDICT, started)
        finally:
            if arriving:
                self.batcher.arriving -= 1
            self.metrics.in_flight.dec()

    def _shadow(self, challenger: Loaded, request_id: str, jobs: list[Job], results: list[Any],
                rows: list[int], started: float) -> None:
        """Send a copy of the scored rows (store features included) to the challenger; never raises."""
        wanted = set(rows)
        features, index, entities, returned = [], [], [], []
        for job, result in zip(jobs, results, strict=True):
            for k, i in enumerate(job.payload.row_index):
                if i in wanted:
                    features.append(dict(result.features[k]))
                    index.append(i)
                    entities.append(job.payload.entity_ids[k])
                    returned.append(result.scores[k])
        job = Job(key=challenger.version, rows=features, payload=Payload(
            request_id=request_id, route=PREDICT, role=SHADOW, model=challenger, received=started,
            entity_ids=entities, row_index=index))
        try:
            future = self.batcher.submit(job)
        except QueueFull:
            self.metrics.shadow.labels(challenger.version, "dropped").inc()
            return
        assert future is not None

        def compare(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                self.metrics.shadow.labels(challenger.version, "failed").inc()
                return
            self.metrics.shadow.labels(challenger.version, "ok").inc()
            diff = self.metrics.shadow_diff.labels(challenger.version)
            for mine, theirs in zip(done.result().scores, returned, strict=True):
                diff.observe(abs(mine - theirs))

        future.add_done_callback(compare)

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        self.batcher.arriving += 1
        arriving = True
        self.metrics.in_flight.inc()
        try:
            loaded, role = self._model(request)
            self._shed()
            body = await self._body(request)
            parsed = parse_infer(body, self.contract)
            if loaded is None:
                self._champion()
                raise RequestError(503, "not_ready", "no @champion loaded yet")
            request_id = parsed.id or check_request_id(request.headers.get("x-request-id")) or self._new_id()
            job = Job(key=loaded.version, rows=parsed.records, payload=Payload(
                request_id=request_id, route=INFER, role=role or CHAMPION, model=loaded, received=started))
            (future,) = self._submit_all([job])
            self.batcher.arriving -= 1
            arriving = False
            gathered = await self._gather([future], [job], INFER, started)
            if isinstance(gathered, Response):
                return gathered
            (result,) = gathered
            self._account(INFER, {job.payload.role: loaded.version}, started)
            return _json({"model_name": self.model_name, "model_version": loaded.version, "id": request_id,
                          "parameters": {"role": job.payload.role},
                          "outputs": [{"name": "score", "datatype": "FP64", "shape": [len(result.scores)],
                                       "data": result.scores}]}, headers={"X-Request-ID": request_id})
        except RequestError as exc:
            return self._refuse(exc, INFER, started)
        finally:
            if arriving:
                self.batcher.arriving -= 1
            self.metrics.in_flight.dec()
