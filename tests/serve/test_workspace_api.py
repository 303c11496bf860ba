"""The workspace's routes on the real FastAPI app (``create_app``), in process: real tokens,
a real home (catalog, audit log) and ``LiveHub``'s own ``case_act``; no Ray, because the
workspace needs no model pool. Sightings come from the browser test's real search
(tests/serve/test_workspace_browser.py); these cover cases, roles and refusals."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from workspace_helpers import as_, workspace_app

from pipelines.config import Settings
from pipelines.home import Home


@pytest.fixture
def home(tmp_path):
    with Home.open(Settings(home=tmp_path / "home")) as h:
        yield h


def run(home: Home, scenario):
    async def go():
        transport = httpx.ASGITransport(app=workspace_app(home))
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            out = await scenario(c)
        await asyncio.sleep(0.05)  # the refusals' audit records (fire-and-forget)
        return out

    return asyncio.run(go())


NEW = {"case_ref": "OP-7", "reason": "burglary, 3 High St", "authorised_by": "DI Shaw"}


@pytest.mark.timeout(30)
def test_cases_roles_and_audited_refusals(home):
    async def scenario(c):
        made = await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        again = await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        by_auditor = await c.post("/v1/cases", json=NEW | {"case_ref": "X-1"}, headers=as_("aud"))
        ben = await c.get("/v1/cases/OP-7", headers=as_("ben"))
        ben_list = await c.get("/v1/cases", headers=as_("ben"))
        aud = await c.get("/v1/cases/OP-7", headers=as_("aud"))
        ops = await c.get("/v1/cases", headers=as_("ops"))
        nobody = await c.get("/v1/cases")
        ana_grants = await c.post(
            "/v1/cases/OP-7/grants", json={"grantee": "ben"}, headers=as_("ana")
        )
        grant = await c.post("/v1/cases/OP-7/grants", json={"grantee": "ben"}, headers=as_("root"))
        ben_after = await c.get("/v1/cases/OP-7", headers=as_("ben"))
        return (
            made,
            again,
            by_auditor,
            ben,
            ben_list,
            aud,
            ops,
            nobody,
            ana_grants,
            grant,
            ben_after,
        )

    made, again, by_auditor, ben, ben_list, aud, ops, nobody, ana_grants, grant, ben_after = run(
        home, scenario
    )
    assert made.status_code == 201 and made.json()["owner"] == "ana"
    assert again.status_code == 409 and by_auditor.status_code == 403
    assert ben.status_code == 403 and "ben may not read in case OP-7" in ben.json()["error"]
    assert ben_list.json()["cases"] == []
    assert aud.status_code == 200 and aud.json()["may_decide"] is False
    assert ops.status_code == 403 and nobody.status_code == 401
    assert ana_grants.status_code == 403 and grant.json()["grants"] == ["ben"]
    assert ben_after.status_code == 200 and ben_after.json()["may_decide"] is True
    records = list(home.audit.records())
    refused = [
        (r["actor"], r["details"].get("case")) for r in records if r["action"] == "case.refused"
    ]
    assert ("ben", "OP-7") in refused and ("aud", "X-1") in refused
    failures = [
        (r["actor"], r["details"]["status"]) for r in records if r["action"] == "auth.failure"
    ]
    assert ("ops", 403) in failures and ("anonymous", 401) in failures  # role gate, by token name
    assert home.audit.verify().ok


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("POST", "/v1/cases", {"case_ref": "../x", "reason": "r", "authorised_by": "a"}, 422),
        ("POST", "/v1/cases", {"case_ref": "A-1", "reason": "", "authorised_by": "a"}, 422),
        ("POST", "/v1/cases", NEW | {"owner": "ben"}, 422),  # no field the server sets
        ("GET", "/v1/cases/OP-7/sightings/x;rm/clip", None, 422),
        ("GET", "/v1/cases/OP-7/sightings/s_0123456789ab/clip", None, 404),
        ("POST", "/v1/cases/OP-7/sightings/s_0123456789ab/decision", {"decision": "maybe"}, 422),
        ("GET", "/v1/cases/NOPE-1", None, 404),
    ],
)
def test_bad_requests_get_a_clear_error_and_change_nothing(home, method, path, body, status):
    async def scenario(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        return await c.request(method, path, json=body, headers=as_("ana"))

    r = run(home, scenario)
    assert r.status_code == status, r.text
    assert r.json()["error"]
    assert [c["case_ref"] for c in home.catalog.rows("SELECT * FROM cases")] == ["OP-7"]


@pytest.mark.timeout(30)
def test_the_page_is_public_has_a_strict_csp_and_no_inline_handlers(home):
    async def scenario(c):
        return await c.get("/workspace")

    r = run(home, scenario)
    csp = r.headers["content-security-policy"]
    assert r.status_code == 200 and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    assert "localStorage" not in r.text and "sessionStorage" not in r.text
    assert " onclick=" not in r.text and " onload=" not in r.text and "onsubmit" not in r.text
