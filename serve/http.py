"""HTTP plumbing for the API: body limits, uniform errors, security headers, same origin.

Requests are authenticated (token and role) from their headers before any body is read,
so malformed JSON without a token is a 401 (audited), not a 400. Every error leaves as
``{"error": "<what is wrong, for a person>", "detail": [...]}`` with a 4xx status,
including FastAPI's own validation errors (malformed JSON becomes 400, not 422, because
the body is not JSON at all). The body limit is enforced on the declared
``Content-Length`` and again on the bytes actually received, so a client that lies about
the length or streams chunks cannot make the server buffer more than the limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.errors import FacewatchError

logger = logging.getLogger(__name__)

JSON_BODY_LIMIT = 64 * 1024
FRAME_PATH_SUFFIX = "/frames"
# image bodies (camera frames, probe photos) may be up to api.max_body_bytes; JSON is small
IMAGE_PATH_SUFFIXES = (FRAME_PATH_SUFFIX, "/probes")
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class HubError(FacewatchError):
    """An expected failure with an HTTP status (unknown camera, bad image, ...).

    The constructor's arguments are its ``args``, so the error survives the trip from the
    hub replica to the API replica (Ray pickles exceptions by their args).
    """

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.http_status, self.message = status, message

    def __str__(self) -> str:
        return self.message

    def public_message(self) -> str:
        return self.message


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body too large: the limit is {limit} bytes")


def error_body(message: str, detail: list[str] | None = None) -> dict:
    return {"error": message, **({"detail": detail} if detail else {})}


# (status, body, extra headers) for a refused request, or None to let it through
Refusal = tuple[int, dict, dict[str, str]]
Gate = Callable[[Scope], Refusal | None]


class Guard:
    """Pure ASGI middleware, outermost: first the ``gate`` (authentication and role, from
    the headers alone, so no body is read or parsed for a request without a valid token),
    then body limits (frames get the larger one), a same-origin check for state-changing
    browser requests, and security headers on every answer."""

    def __init__(
        self,
        app: ASGIApp,
        frames_max: int,
        json_max: int = JSON_BODY_LIMIT,
        gate: Gate | None = None,
    ):
        self.app, self.frames_max, self.json_max = app, frames_max, json_max
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.gate(scope) if self.gate is not None else None
        if refusal is None:
            found = self._refuse(scope)
            refusal = (*found, {}) if found is not None else None
        if refusal is not None:
            await _send_json(send, *refusal)
            return
        path = scope.get("path", "")
        limit = self.frames_max if path.endswith(IMAGE_PATH_SUFFIXES) else self.json_max
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in have
                ]
            await send(message)

        await self.app(scope, limited, with_headers)

    def _refuse(self, scope: Scope) -> tuple[int, dict] | None:
        path = scope.get("path", "")
        limit = self.frames_max if path.endswith(IMAGE_PATH_SUFFIXES) else self.json_max
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return 400, error_body("invalid Content-Length header")
            if int(declared) > limit:
                return 413, error_body(BodyTooLarge(limit).detail)
        if scope.get("method") in UNSAFE_METHODS:
            origin = _header(scope, b"origin")
            host = _header(scope, b"host")
            if origin and urlsplit(origin).netloc != host:
                return 403, error_body("cross-origin request refused")
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


async def _send_json(
    send: Send, status: int, body: dict, headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body).encode()
    extra = {**SECURITY_HEADERS, **(headers or {})}
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *((k.lower().encode(), v.encode("latin-1")) for k, v in extra.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(FacewatchError)
    async def expected(_: Request, exc: FacewatchError) -> JSONResponse:
        """Every expected failure (HubError from the hub included): its status, its message."""
        if exc.http_status >= 500:
            logger.error("%s: %s", type(exc).__name__, exc)
        return JSONResponse(error_body(exc.public_message()), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("malformed JSON in the request body"), 400)
        detail = [_describe(e) for e in errors]
        return JSONResponse(error_body("invalid request: " + "; ".join(detail), detail), 422)


def _describe(error: dict) -> str:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
    where = ".".join(loc) or "body"
    return f"{where}: {error.get('msg', 'invalid')}"
