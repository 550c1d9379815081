"""What every service (backend and frontend) shares: state, middlewares, /health, /metrics.

- Every answer carries `X-App-Color` and `X-App-Version`.
- Errors are JSON: `{"error": ..., "field": ...}`. A body whose chunked framing
  breaks off answers 400: a client fault is never a 5xx.
- Request metrics (off with APP_METRICS_ENABLED=false) are labelled by route
  template; anything unrouted is "unmatched". `active_operations` is read at
  scrape time (requests in flight + jobs running), costing nothing per request.
- Fault injection: APP_FAULT_API_ERROR_RATIO answers that share of /api/
  requests with 500; APP_FAULT_UNHEALTHY makes /health answer 503.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import Config
from .logs import EventLog
from .metrics import CONTENT_TYPE_LATEST, Metrics

# Options of the HTTP server (AppRunner, and TestServer in the tests). Request
# bodies are decompressed by `bodies`, so a broken one answers a JSON 400.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServiceState:
    cfg: Config
    service: str
    metrics: Metrics
    log: EventLog
    instance: str
    draining: bool = False
    in_flight: int = 0
    before_scrape: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    running_jobs: Callable[[], int] = lambda: 0

    def active_operations(self) -> int:
        return self.in_flight + self.running_jobs()


STATE = web.AppKey("state", ServiceState)


def error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **fields: Any
) -> web.Response:
    """A JSON error answer."""
    return web.json_response({"error": message, **fields}, status=status, headers=headers)


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _recorder(state: ServiceState) -> Callable[[web.Request, int, float], None]:
    """Observe one answered request: duration histogram and counter, by route template."""
    metrics = state.metrics
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(request: web.Request, status: int, start: float) -> None:
        method = request.method if request.method in _METHODS else "other"
        key = (method, _route_of(request), status)
        pair = children.get(key)
        if pair is None:
            labels = {"method": key[0], "route": key[1], "status_code": str(status)}
            pair = (metrics.http_duration.labels(**labels), metrics.http_requests.labels(**labels))
            children[key] = pair
        pair[0].observe(time.perf_counter() - start)
        pair[1].inc()

    return record


def _core_middleware(state: ServiceState) -> Any:
    """Count requests in flight, answer errors as JSON, and (if enabled) record metrics.

    One middleware rather than three keeps the per-request cost low: with
    metrics on, the only extra work is `record` (a histogram and a counter).
    """
    record = _recorder(state) if state.cfg.metrics_enabled else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        state.in_flight += 1
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                if record is not None:
                    record(request, exc.status, start)
                raise
            response = error(exc.status, exc.reason)
        except web.RequestPayloadError as exc:  # a chunked body that breaks off
            response = error(400, f"the request body could not be read: {exc}", field="body")
            response.force_close()  # what is left of the body cannot be framed: say so
        except Exception as exc:
            state.log.event("request_error", level="error", path=request.path, error=repr(exc))
            response = error(500, "internal error")
        finally:
            state.in_flight -= 1
        if record is not None:
            record(request, response.status, start)
        return response

    return middleware


def _fault_middleware(state: ServiceState) -> Any:
    ratio = state.cfg.fault_api_error_ratio

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and random.random() < ratio:
            return error(500, "injected fault (APP_FAULT_API_ERROR_RATIO)")
        return await handler(request)

    return middleware


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    cfg = request.app[STATE].cfg
    response.headers["X-App-Color"] = cfg.color
    response.headers["X-App-Version"] = cfg.version


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {
        "status": "ok",
        "color": state.cfg.color,
        "version": state.cfg.version,
        "service": state.service,
    }
    if state.draining:
        return web.json_response({**body, "status": "draining"}, status=503)
    if state.cfg.fault_unhealthy:
        return web.json_response({**body, "status": "unhealthy"}, status=503)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    for hook in state.before_scrape:
        await hook()
    return web.Response(body=state.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(state: ServiceState) -> web.Application:
    """An application with the shared middlewares and the /health and /metrics routes."""
    middlewares = [_core_middleware(state)]
    if state.cfg.fault_api_error_ratio > 0:
        middlewares.append(_fault_middleware(state))
    app = web.Application(middlewares=middlewares, client_max_size=state.cfg.max_body_bytes)
    app[STATE] = state
    state.metrics.active_operations.set_function(state.active_operations)
    app.on_response_prepare.append(_add_headers)
    app.router.add_get("/health", health, allow_head=True)
    app.router.add_get("/metrics", metrics, allow_head=False)
    return app
