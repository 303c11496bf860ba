"""Serve's own HTTP routes (``/-/routes``, ``/-/healthz``) closed to the outside.

Ray Serve's HTTP proxy answers ``/-/routes`` (which app is mounted where) and
``/-/healthz`` itself, in front of every application and without any authentication, so
our token check never sees them. They tell little, but nothing should answer an
unauthenticated caller that the API does not know about. Serve lets a deployment wrap its
proxy in ASGI middlewares named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, read by
the proxy process at start-up; ``serve.local.start_local`` points it at
``proxy_middlewares`` below before Ray starts, so the proxy (a Ray worker) inherits it.
Every ``/-/`` path then gets 404, the same answer as any path nobody serves. Serve itself
checks its proxies through actor calls, not over HTTP, and our own ``/healthz`` is the
health endpoint for load balancers.

On a cluster started with ``ray start``, set the same variable on every node before
starting Ray (``serve deploy`` cannot set it for a proxy that is already running).
"""

from __future__ import annotations

import json

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "serve.proxy:proxy_middlewares"
SERVE_OWN_PREFIX = "/-/"


class HideServeRoutes:
    """Pure ASGI middleware for Serve's proxy: ``/-/...`` answers 404, the rest passes."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or not path.startswith(SERVE_OWN_PREFIX):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "not found"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Middleware]:
    """What Serve's proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    return [Middleware(HideServeRoutes)]
