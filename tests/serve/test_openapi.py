"""The API's OpenAPI schema is complete: every route answers with a declared model, so
``/openapi.json`` tells a client what each 2xx body holds, and the schema itself is served
only to a token whose role may read the service's statistics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from pipelines.config import Settings
from serve.api import PUBLIC, ROUTES, create_app, route_permission
from serve.auth import TokenTable, hash_token
from tests.serve.test_live_units import NoHub

pytestmark = pytest.mark.timeout(30)

TOKENS = {"operator": "op-token-0123456789", "camera": "cam-token-0123456789"}


def _get(path: str, token: str | None) -> httpx.Response:
    tokens = TokenTable([(role, role, hash_token(t), ()) for role, t in TOKENS.items()])
    app = create_app(Settings(), tokens, NoHub())
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            return await c.get(path, headers=headers)

    return asyncio.run(get())


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _declared(schema: dict[str, Any], spec: dict[str, Any]) -> bool:
    """A schema that says something: a type with its properties or items, not ``{}``."""
    schema = _resolve(schema, spec)
    if schema.get("type") == "object":
        return bool(schema.get("properties")) or isinstance(
            schema.get("additionalProperties"), dict
        )
    if schema.get("type") == "array":
        return _declared(schema.get("items", {}), spec)
    return bool(schema.get("type"))


def test_every_route_declares_its_2xx_body():
    r = _get("/openapi.json", TOKENS["operator"])
    assert r.status_code == 200, r.text
    spec = r.json()
    seen = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            seen.add((method.upper(), path))
            ok = {code: resp for code, resp in op["responses"].items() if code.startswith("2")}
            assert ok, f"{method} {path}: no 2xx response"
            for code, resp in ok.items():
                content = resp.get("content") or {}
                assert content, f"{method} {path} {code}: no body declared"
                for media, body in content.items():
                    assert _declared(body.get("schema", {}), spec), (method, path, code, media)
    # every route in the permission table is in the schema, and each in the schema is listed
    listed = [(m, p) for m, p, _ in ROUTES if p != "/openapi.json"]
    assert all(any(_same_route(a, b) for b in seen) for a in listed), listed
    assert all(any(_same_route(b, a) for a in listed) for b in seen), seen


def _same_route(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two (method, path) name one route: a ``{...}`` segment matches anything."""
    (ma, pa), (mb, pb) = a, b
    sa, sb = pa.split("/"), pb.split("/")
    return (ma, len(sa)) == (mb, len(sb)) and all(
        x == y or x.startswith("{") or y.startswith("{") for x, y in zip(sa, sb, strict=True)
    )


def test_alert_bodies_are_the_core_alert_record():
    spec = _get("/openapi.json", TOKENS["operator"]).json()
    alert = spec["components"]["schemas"]["ReviewedAlert"]
    for field in ("alert_id", "camera_id", "person_id", "score", "alerted_at", "status"):
        assert field in alert["properties"]
    assert {"alert_id", "status", "decided_by"} <= set(alert["required"])


def test_the_schema_needs_a_token_whose_role_reads_stats():
    assert _get("/openapi.json", None).status_code == 401
    assert _get("/openapi.json", TOKENS["camera"]).status_code == 403
    assert route_permission("GET", "/openapi.json") not in (None, PUBLIC)


def test_answers_keep_integer_counts_and_extra_fields():
    """A response model must not turn a count into a float (clients loop over it) nor drop
    a field the hub adds that the model does not declare yet."""
    from serve.responses import CameraStatus

    body = {"id": "c", "url": "push", "kind": "push", "state": "streaming"}
    body |= {"counters": {"alerts": 3, "faces": 7}, "later_field": 1}
    shown = CameraStatus.model_validate(body).model_dump(mode="json")
    assert shown["counters"] == {"alerts": 3, "faces": 7}
    assert all(type(v) is int for v in shown["counters"].values())
    assert shown["later_field"] == 1


def test_whoami_names_the_token_and_its_role_to_any_valid_token():
    """The pages show who is signed in: any valid token learns its own name, role and
    permissions (never the token itself); no token is 401."""
    me = _get("/v1/whoami", TOKENS["camera"])
    assert me.status_code == 200, me.text
    assert me.json() == {"name": "camera", "role": "camera", "permissions": ["frames"]}
    op = _get("/v1/whoami", TOKENS["operator"]).json()
    assert op["name"] == "operator" and "review" in op["permissions"]
    assert TOKENS["operator"] not in str(op)
    assert _get("/v1/whoami", None).status_code == 401
    assert _get("/v1/whoami", "not-a-token-0123456789").status_code == 401
