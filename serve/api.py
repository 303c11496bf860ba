"""The HTTP API: a FastAPI app in front of the live hub, and its Serve ingress deployment.

The API replica holds no state of its own beyond the token table: it authenticates,
validates and forwards to the hub (the single owner of cameras, alerts and the store), so
it can run as several replicas. Routes are built by ``create_app`` around a ``HubClient``,
so the same code serves in Ray and in plain tests. Roles per route are listed in
``ROUTES`` below, which the README's table is generated from.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve as ray_serve
from starlette.datastructures import Headers

from pipelines.config import LiveConfig, Settings, redacted
from pipelines.live.cameras import CAMERA_ID
from pipelines.schemas import ReviewedAlert
from serve import memprobe
from serve.auth import ROLE_PERMISSIONS, AuthFailure, Permission, Principal, TokenTable
from serve.http import Guard, HubError, error_body, install_error_handlers
from serve.loopback import bind_replica_to_node
from serve.pushlimit import PushBudget, read_frame
from serve.responses import (
    AlertList,
    CameraList,
    CameraStatus,
    FrameResult,
    Health,
    MatchList,
    PublicConfig,
    Removed,
    Stats,
    Status,
    WhoAmI,
)
from serve.review_page import review_page
from serve.webhooks import public_hook_url
from serve.workspace_api import ROUTES as WORKSPACE_ROUTES
from serve.workspace_api import workspace_routes

logger = logging.getLogger(__name__)

ALERT_ID = r"^a_[0-9a-f]{24}$"
P = Permission
ANY_TOKEN = "any valid token"
ROUTES = [  # (method, path, permission) for the docs; None: public
    ("GET", "/healthz", None),
    ("GET", "/v1/whoami", ANY_TOKEN),
    ("GET", "/review", P.REVIEW),
    ("GET", "/v1/alerts", P.REVIEW),
    ("GET", "/v1/alerts/stream", P.REVIEW),
    ("GET", "/v1/alerts/{id}", P.REVIEW),
    ("GET", "/v1/alerts/{id}/crop", P.REVIEW),
    ("GET", "/v1/alerts/{id}/photo", P.REVIEW),
    ("POST", "/v1/alerts/{id}/adjudication", P.ADJUDICATE),
    ("GET", "/v1/stats", P.STATS),
    ("GET", "/v1/status", P.STATUS),
    ("GET", "/v1/cameras", P.CAMERAS_READ),
    ("POST", "/v1/cameras", P.CAMERAS_WRITE),
    ("DELETE", "/v1/cameras/{id}", P.CAMERAS_WRITE),
    ("POST", "/v1/cameras/{id}/frames", P.FRAMES),
    ("POST", "/v1/lists/refresh", P.LISTS),
    ("GET", "/v1/matches", P.SEARCH),
    ("GET", "/v1/config", P.CONFIG),
    ("GET", "/openapi.json", P.STATS),
    *WORKSPACE_ROUTES,
]
SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}
}
JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}
}


class HubClient(Protocol):
    async def call(self, method: str, *args: Any) -> Any: ...

    def stream(self, method: str, *args: Any) -> AsyncIterator[str]: ...

    def notify(self, method: str, *args: Any) -> None: ...


class Adjudication(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["confirmed", "rejected"]
    note: str = Field("", max_length=2000)


def _route_pattern(path: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$")


_ROUTE_TABLE = [(m, _route_pattern(p), perm) for m, p, perm in ROUTES]
PUBLIC = "public"


def route_permission(method: str, path: str) -> Permission | str | None:
    """What a request needs, from ROUTES: a Permission, ``PUBLIC``, ``ANY_TOKEN``, or None
    for a path no route serves (any valid token may learn that it is 404 or 405)."""
    method = "GET" if method == "HEAD" else method
    for m, pattern, perm in _ROUTE_TABLE:
        if m == method and pattern.match(path):
            return PUBLIC if perm is None else perm
    return None


def auth_scheme(path: str) -> dict[str, str]:
    browser = path == "/review"
    return {
        "WWW-Authenticate": 'Basic realm="facewatch"' if browser else 'Bearer realm="facewatch"'
    }


def make_gate(tokens: TokenTable, hub: HubClient):
    """The Guard's gate: token and role from the headers, before any body is read."""

    def gate(scope) -> tuple[int, dict, dict] | None:
        """Token and role before anything reads the body: every refusal 401/403, audited."""
        method, path = scope.get("method", ""), scope.get("path", "")
        root = scope.get("root_path", "")
        path = path[len(root) :] if root and path.startswith(root) else path
        need_ = route_permission(method, path)
        if need_ == PUBLIC:
            return None
        header = Headers(scope=scope).get("authorization")
        if isinstance(need_, Permission):
            result = tokens.authorize(header, need_)
        else:
            result = tokens.authenticate(header)
        if isinstance(result, Principal):
            return None
        client = scope.get("client")
        _refused(hub, method, path, client[0] if client else "", result)
        headers = auth_scheme(path) if result.status == 401 else {}
        return result.status, error_body(result.message), headers

    return gate


def create_app(settings: Settings, tokens: TokenTable, hub: HubClient) -> FastAPI:
    app = FastAPI(title="facewatch", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    install_error_handlers(app)

    gate = make_gate(tokens, hub)
    app.add_middleware(Guard, frames_max=settings.api.max_body_bytes, gate=gate)

    def need(permission: Permission):
        async def check(request: Request) -> Principal:
            result = tokens.authorize(request.headers.get("authorization"), permission)
            if isinstance(result, Principal):
                return result
            _refused(hub, request.method, request.url.path, _client(request), result)
            headers = auth_scheme(request.url.path) if result.status == 401 else None
            raise HTTPException(result.status, result.message, headers=headers)

        return check

    async def known(request: Request) -> Principal:
        """Any valid token, whatever its role (``ANY_TOKEN`` routes)."""
        result = tokens.authenticate(request.headers.get("authorization"))
        if isinstance(result, Principal):
            return result
        _refused(hub, request.method, request.url.path, _client(request), result)
        raise HTTPException(result.status, result.message, headers=auth_scheme(request.url.path))

    _service_routes(app, hub, need)
    _whoami_route(app, known)

    _alert_routes(app, hub, need)
    _camera_routes(app, hub, need, settings.live)
    _admin_routes(app, settings, hub, need)
    workspace_routes(app, hub, need)
    return app


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _refused(hub: HubClient, method: str, path: str, client: str, failure: AuthFailure) -> None:
    hub.notify(
        "auth_failure",
        {
            "method": method,
            "path": path[:200],
            "status": failure.status,
            "reason": failure.reason,
            "client": client,
            "actor": failure.actor,
        },
    )


def _service_routes(app: FastAPI, hub: HubClient, need) -> None:
    """Health, statistics and status: the service itself, not one alert."""

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> JSONResponse:
        try:
            await hub.call("ping")
        except Exception:  # noqa: BLE001 - any failure means not healthy; no details here
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/stats", response_model=Stats)
    async def stats(_: Principal = Depends(need(P.STATS))) -> dict[str, Any]:
        return await hub.call("stats")

    @app.get("/v1/status", response_model=Status)
    async def status(_: Principal = Depends(need(P.STATUS))) -> dict[str, Any]:
        return await hub.call("status")


def _whoami_route(app: FastAPI, known) -> None:
    @app.get("/v1/whoami", response_model=WhoAmI)
    async def whoami(who: Principal = Depends(known)) -> dict[str, Any]:
        """Who the token is (its name, never its value), its role and what that allows:
        the pages show who is signed in, and hide what the role may not do."""
        allowed = sorted(p.value for p in ROLE_PERMISSIONS.get(who.role, frozenset()))
        return {"name": who.name, "role": who.role, "permissions": allowed}


def _alert_routes(app: FastAPI, hub: HubClient, need) -> None:
    alert_id = Path(..., pattern=ALERT_ID)

    @app.get("/review", response_class=HTMLResponse)
    async def review(who: Principal = Depends(need(P.REVIEW))) -> HTMLResponse:
        return review_page(who.name, who.can(P.ADJUDICATE))

    @app.get("/v1/alerts", response_model=AlertList)
    async def alerts(
        status: Literal["pending", "confirmed", "rejected", "all"] = "pending",
        camera: str | None = Query(None, pattern=CAMERA_ID),
        limit: int = Query(50, ge=1, le=500),
        _: Principal = Depends(need(P.REVIEW)),
    ) -> dict[str, Any]:
        return {"alerts": await hub.call("list_alerts", status, camera, limit)}

    @app.get("/v1/alerts/stream", response_class=StreamingResponse, responses=SSE)
    async def stream(request: Request, _: Principal = Depends(need(P.REVIEW))) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        return StreamingResponse(
            hub.stream("subscribe", last[:64] if last else None),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/alerts/{alert_id}", response_model=ReviewedAlert)
    async def alert(
        alert_id: str = alert_id, _: Principal = Depends(need(P.REVIEW))
    ) -> ReviewedAlert:
        return await hub.call("get_alert", alert_id)

    @app.get("/v1/alerts/{alert_id}/{kind}", response_class=Response, responses=JPEG)
    async def media(
        kind: Literal["crop", "photo"],
        alert_id: str = alert_id,
        who: Principal = Depends(need(P.REVIEW)),
    ) -> Response:
        data = await hub.call("alert_media", alert_id, kind, who.name)
        return Response(data, media_type="image/jpeg")

    @app.post("/v1/alerts/{alert_id}/adjudication", response_model=ReviewedAlert)
    async def adjudicate(
        body: Adjudication,
        alert_id: str = alert_id,
        who: Principal = Depends(need(P.ADJUDICATE)),
    ) -> ReviewedAlert:
        return await hub.call("adjudicate", alert_id, body.outcome, body.note, who.name)


def _camera_routes(app: FastAPI, hub: HubClient, need, live: LiveConfig) -> None:
    camera_id = Path(..., pattern=CAMERA_ID)
    budget = PushBudget(live.max_push_bytes_per_s)

    @app.get("/v1/cameras", response_model=CameraList)
    async def cameras(_: Principal = Depends(need(P.CAMERAS_READ))) -> dict[str, Any]:
        return {"cameras": await hub.call("cameras")}

    @app.post("/v1/cameras", status_code=201, response_model=CameraStatus)
    async def add(
        spec: dict[str, Any] = Body(...), who: Principal = Depends(need(P.CAMERAS_WRITE))
    ) -> dict[str, Any]:
        # validated by the hub (Fleet.admit): the video-folder rule needs the hub's home and
        # file system, and a check here first would say whether any path exists on this one
        return await hub.call("add_camera", spec, who.name)

    @app.delete("/v1/cameras/{camera_id}", response_model=Removed)
    async def remove(
        camera_id: str = camera_id, who: Principal = Depends(need(P.CAMERAS_WRITE))
    ) -> dict[str, Any]:
        return await hub.call("remove_camera", camera_id, who.name)

    @app.post(
        "/v1/cameras/{camera_id}/frames",
        status_code=202,
        response_model=FrameResult,
        responses={200: {"model": FrameResult, "description": "analysed (wait=true)"}},
    )
    async def push(
        request: Request,
        camera_id: str = camera_id,
        wait: bool = Query(False, description="answer once the frame is analysed"),
        who: Principal = Depends(need(P.FRAMES)),
    ) -> JSONResponse:
        received = time.time()
        if not who.may_push(camera_id):  # a camera token pushes to its own camera only
            failure = AuthFailure(
                403,
                "camera",
                f"token '{who.name}' may not push frames for camera '{camera_id}'",
                actor=who.name,
            )
            _refused(hub, request.method, request.url.path, _client(request), failure)
            raise HTTPException(403, failure.message)
        data = await _frame_body(request, camera_id, budget, live.max_push_pixels)
        result = await hub.call("push_frame", camera_id, data, wait)
        result["api_ms"] = round((time.time() - received) * 1000, 1)
        return JSONResponse(result, status_code=200 if wait else 202)


async def _frame_body(request: Request, camera_id: str, budget: PushBudget, max_pixels: int):
    """The frame, within its camera's byte budget (429 from the headers, body unread) and
    its header checked here (refusals never travel to the hub; it checks again)."""
    declared = request.headers.get("content-length")
    wait_s = budget.retry_after_s(camera_id)
    if wait_s > 0:
        raise await budget.refusal(camera_id, wait_s)
    if declared is not None and declared.isdigit():
        budget.charge(camera_id, int(declared))
        return await read_frame(request, max_pixels)
    data = await read_frame(request, max_pixels)  # chunked: charged once read
    budget.charge(camera_id, len(data))
    return data


def _admin_routes(app: FastAPI, settings: Settings, hub: HubClient, need) -> None:
    @app.post("/v1/lists/refresh", response_model=dict[str, dict[str, Any]])
    async def refresh(who: Principal = Depends(need(P.LISTS))) -> dict[str, Any]:
        """Each camera's watch list after the reload, by camera id."""
        return await hub.call("refresh_lists", who.name)

    @app.get("/v1/matches", response_model=MatchList)
    async def matches(
        case: str = Query("", max_length=200),
        reason: str = Query("", max_length=1000),
        person: str | None = Query(None, max_length=128),
        list_name: str | None = Query(None, alias="list", max_length=128),
        source: Literal["live", "archive", "all"] = "all",
        limit: int = Query(100, ge=1, le=1000),
        who: Principal = Depends(need(P.SEARCH)),
    ) -> dict[str, Any]:
        if settings.governance.require_case and not (case.strip() and reason.strip()):
            raise HTTPException(422, "a search needs a purpose: give case and reason")
        query = {"person": person, "list": list_name, "source": source, "limit": limit}
        return await hub.call("search_matches", query, case, reason, who.name)

    @app.get("/v1/config", response_model=PublicConfig)
    async def config(_: Principal = Depends(need(P.CONFIG))) -> dict[str, Any]:
        return public_config(settings)


def public_config(settings: Settings) -> dict[str, Any]:
    """The effective configuration without secrets: every secret-bearing field redacted
    (``pipelines.config.redacted``: by name, by SecretStr, URL userinfo), API tokens as
    name and role only, and each webhook as ``scheme://host[:port]/…`` (paths and queries
    often carry tokens)."""
    data = redacted(settings)
    data["api"]["tokens"] = [{"name": t.name, "role": t.role} for t in settings.api.tokens]
    for hook in data["live"]["webhooks"]:
        hook["url"] = public_hook_url(hook["url"])
    return data


class ServeHub:
    """``HubClient`` over a Serve deployment handle; unwraps the hub's HubErrors."""

    def __init__(self, handle):
        self.handle = handle

    async def call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self.handle, method).remote(*args)
        except HubError as exc:  # Ray's wrapper is also an instance of the cause
            cause = getattr(exc, "cause", exc)
            raise HubError(cause.http_status, cause.message) from None

    async def stream(self, method: str, *args: Any) -> AsyncIterator[str]:
        async for chunk in getattr(self.handle.options(stream=True), method).remote(*args):
            yield chunk

    def notify(self, method: str, *args: Any) -> None:
        getattr(self.handle, method).remote(*args)


@ray_serve.deployment(name="Api", max_ongoing_requests=512, health_check_period_s=10)
@ray_serve.ingress()
class Api:
    def __init__(self, settings: dict, hub):
        bind_replica_to_node()
        self.settings = Settings.model_validate(settings)
        self.tokens = TokenTable.from_config(self.settings.api)
        if len(self.tokens) == 0:
            logger.warning("no API tokens configured: every request except /healthz is refused")
        self.hub = ServeHub(hub)
        memprobe.start_if_asked("Api")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.settings, self.tokens, self.hub)
