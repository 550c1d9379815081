"""The frontend service: an HTML page to submit jobs and watch them.

The page calls the backend through relative URLs (`/api/...`): in production
nginx sends /api/ to the backend and everything else here. Its script and
style are files of their own under /static/ (no inline code), so the edge's
Content-Security-Policy can forbid inline scripts; their names carry a
fingerprint (`assets.py`). Without nginx (local runs), set APP_BACKEND_URL
and this service forwards /api/ requests itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from . import assets
from .service import STATE, ServiceState, error
from .service import make_app as make_base_app

SESSION = web.AppKey("session", ClientSession)
BUNDLE = web.AppKey("bundle", assets.Bundle)
# Request headers the relay passes on (the body is relayed as it came, still
# compressed), and answer headers it passes back.
_FORWARDED = ("Content-Encoding", "Idempotency-Key")
_HOP_HEADERS = {
    "content-type",
    "location",
    "retry-after",
    "x-app-color",
    "x-app-version",
    "idempotent-replayed",
    "accept-post",
    "accept-encoding",
}


async def index(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[BUNDLE].page,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": assets.PAGE_CACHE},
    )


async def asset(request: web.Request) -> web.Response:
    """A static file by its fingerprinted name; any other name is 404."""
    found = request.app[BUNDLE].assets.get(request.match_info["name"])
    if found is None:
        return error(404, "no such file", field="path")
    return web.Response(
        body=found.body,
        content_type=found.media_type,
        charset="utf-8",
        headers={"Cache-Control": assets.IMMUTABLE},
    )


async def proxy_api(request: web.Request) -> web.Response:
    """Forward one /api/ request to APP_BACKEND_URL and relay the answer."""
    state = request.app[STATE]
    url = state.cfg.backend_url + request.rel_url.path_qs
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    headers.update({name: request.headers[name] for name in _FORWARDED if name in request.headers})
    try:
        async with request.app[SESSION].request(
            request.method, url, data=body or None, headers=headers
        ) as upstream:
            payload = await upstream.read()
            relayed = {k: v for k, v in upstream.headers.items() if k.lower() in _HOP_HEADERS}
            # The backend's colour and version travel as X-Backend-*; ours stay ours.
            for name in ("X-App-Color", "X-App-Version"):
                if name in relayed:
                    relayed["X-Backend-" + name[6:]] = relayed.pop(name)
            return web.Response(status=upstream.status, body=payload, headers=relayed)
    except (ClientError, TimeoutError) as exc:
        return error(502, f"backend unreachable: {exc.__class__.__name__}")


def make_app(state: ServiceState) -> web.Application:
    """The frontend application: shared routes, the page, and the optional /api/ relay."""
    app = make_base_app(state)
    app[BUNDLE] = assets.load(state.cfg.version)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", asset)
    if state.cfg.backend_url:

        async def session_ctx(app: web.Application) -> AsyncIterator[None]:
            app[SESSION] = ClientSession(timeout=ClientTimeout(total=30))
            yield
            await app[SESSION].close()

        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/api/{tail:.*}", proxy_api)
    return app
