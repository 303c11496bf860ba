"""The investigator workspace's routes: cases, their sightings, faces, clips, decisions and
evidence bundles, on the same FastAPI app, tokens and audit log as the live API.

The role gate (``Permission.CASES``) only says who may use the workspace at all; which
case, and what in it, is decided per case by ``pipelines.cases`` in the hub, which audits
every refusal with the token's name. The page (``/workspace``) is public and holds no
data: its login form keeps the token in memory and sends it as a bearer header, so faces
and clips are fetched by script, never by a URL a browser would send without it.
"""

from __future__ import annotations

import html
import secrets
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from pipelines.cases import CASE_REF
from pipelines.search_jobs import LIST_NAME
from pipelines.workspace import SIGHTING_ID
from serve.auth import Permission, Principal

P = Permission
ROUTES = [
    ("GET", "/workspace", None),
    ("GET", "/v1/cases", P.CASES),
    ("POST", "/v1/cases", P.CASES),
    ("GET", "/v1/cases/{ref}", P.CASES),
    ("POST", "/v1/cases/{ref}/grants", P.CASES),
    ("GET", "/v1/cases/{ref}/sightings/{id}/face", P.CASES),
    ("GET", "/v1/cases/{ref}/sightings/{id}/photo", P.CASES),
    ("GET", "/v1/cases/{ref}/sightings/{id}/clip", P.CASES),
    ("POST", "/v1/cases/{ref}/sightings/{id}/decision", P.CASES),
    ("POST", "/v1/cases/{ref}/evidence", P.CASES),
    ("GET", "/v1/archive", P.CASES),
    ("GET", "/v1/audit", P.CASES),
    ("POST", "/v1/cases/{ref}/probes", P.CASES),
    ("GET", "/v1/cases/{ref}/searches", P.CASES),
    ("POST", "/v1/cases/{ref}/searches", P.CASES),
    ("GET", "/v1/cases/{ref}/searches/{id}", P.CASES),
    ("POST", "/v1/cases/{ref}/searches/{id}/cancel", P.CASES),
]
PRIVATE = {"Cache-Control": "no-store"}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # a field the core adds is passed on


class Case(_Open):
    case_ref: str
    reason: str
    authorised_by: str
    owner: str
    created_at: str
    grants: list[str] = Field(default_factory=list, description="investigators let in")


class CaseList(BaseModel):
    cases: list[Case]


class CaseSighting(_Open):
    sighting_id: str
    tier: str = Field(description="sighting (alert threshold) or candidate (review)")
    person_name: str
    file: str
    start_s: float
    end_s: float
    best_score: float
    decision: str | None
    note: str


class CaseView(_Open):
    """A case opened: sightings then candidates by score, decisions, precision per tier,
    and each person's sightings across the case's files."""

    case: Case
    may_decide: bool
    searches: int
    sightings: list[CaseSighting]
    precision: dict[str, dict[str, Any]]
    timeline: dict[str, list[dict[str, Any]]]


class DecisionRecord(_Open):
    sighting_id: str
    decision: str
    note: str
    decided_by: str
    decided_at: str


class ArchiveListing(_Open):
    path: str = Field(description="a folder under the archive roots ('' lists the roots)")
    entries: list[dict[str, Any]]
    indexed: dict[str, Any] | None = Field(
        None, description="with the roots: whether the indexed probe search is offered, why"
    )


class Probe(_Open):
    probe_id: str
    width: int
    height: int
    face: str = Field(description="'one usable face' (a photo without one is refused: 422)")


class AuditExtract(_Open):
    records: list[dict[str, Any]]
    total: int
    chain_ok: bool
    chain_problem: str | None


class SearchState(_Open):
    search_id: str
    started_by: str
    started_at: str
    state: str
    message: str
    ended_at: str | None
    progress: dict[str, Any] | None = Field(description="files, frames, faces, ETA")


class SearchList(BaseModel):
    searches: list[SearchState]


def _binary(media: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media: {"schema": {"type": "string", "format": "binary"}}}}}


class NewCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case_ref: str = Field(..., pattern=CASE_REF)
    reason: str = Field(..., min_length=1, max_length=1000)
    authorised_by: str = Field(..., min_length=1, max_length=1000)


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grantee: str = Field(..., pattern=r"^[A-Za-z0-9_.@-]{1,64}$")


class NewSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(..., min_length=1, max_length=100)
    probes: list[str] = Field(default_factory=list, max_length=10)
    list_name: str | None = Field(None, pattern=LIST_NAME)
    fps: float | None = Field(None, gt=0.05, le=60)
    indexed: bool = Field(False, description="search the face index (search --indexed)")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["confirmed", "rejected", "unsure"]
    note: str = Field("", max_length=1000)


def workspace_routes(app: FastAPI, hub, need) -> None:
    """The page and the cases themselves; then a case's searches and its sightings."""
    ref_ = Path(..., pattern=CASE_REF)
    member = need(P.CASES)
    search_routes(app, hub, need)
    sighting_routes(app, hub, need)
    act = _acts(hub)

    @app.get("/workspace", response_class=HTMLResponse, responses=_binary("text/html"))
    async def page() -> HTMLResponse:
        return workspace_page()

    @app.get("/v1/cases", response_model=CaseList)
    async def cases(who: Principal = Depends(member)) -> dict:
        return {"cases": await act(who, "cases")}

    @app.post("/v1/cases", status_code=201, response_model=Case)
    async def create(body: NewCase, who: Principal = Depends(member)) -> dict:
        return await act(who, "create", body.model_dump())

    @app.get("/v1/cases/{ref}", response_model=CaseView)
    async def open_case(ref: str = ref_, who: Principal = Depends(member)) -> JSONResponse:
        return JSONResponse(await act(who, "open", ref), headers=PRIVATE)

    @app.post("/v1/cases/{ref}/grants", response_model=Case)
    async def grant(body: Grant, ref: str = ref_, who: Principal = Depends(member)) -> dict:
        return await act(who, "grant", ref, body.grantee)


def sighting_routes(app: FastAPI, hub, need) -> None:
    """A case's sightings: faces, clips and decisions (each view audited), its evidence."""
    ref_ = Path(..., pattern=CASE_REF)
    sid_ = Path(..., pattern=SIGHTING_ID)
    member = need(P.CASES)
    act = _acts(hub)

    @app.get(
        "/v1/cases/{ref}/sightings/{sid}/clip",
        response_class=Response,
        responses=_binary("video/mp4"),
    )
    async def clip(ref: str = ref_, sid: str = sid_, who: Principal = Depends(member)):
        got = await act(who, "clip", ref, sid)
        boxes = ";".join(
            f"{b['t']:.3f}:{','.join(f'{v:.1f}' for v in b['box'])}" for b in got["boxes"]
        )
        if len(boxes) > 6000:  # whole entries only: a cut one would draw a wrong box
            boxes = boxes[: boxes.rindex(";", 0, 6000)]
        headers = {
            **PRIVATE,
            "X-Clip-Offset": f"{got['offset_s']:.3f}",
            "X-Face-Boxes": boxes,
        }
        return Response(got["mp4"], media_type="video/mp4", headers=headers)

    @app.get(
        "/v1/cases/{ref}/sightings/{sid}/{kind}",
        response_class=Response,
        responses=_binary("image/jpeg"),
    )
    async def image(
        kind: Literal["face", "photo"],
        ref: str = ref_,
        sid: str = sid_,
        who: Principal = Depends(member),
    ) -> Response:
        data = await act(who, "image", ref, sid, kind)
        media = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        return Response(data, media_type=media, headers=PRIVATE)

    @app.post("/v1/cases/{ref}/sightings/{sid}/decision", response_model=DecisionRecord)
    async def decide(
        body: Decision, ref: str = ref_, sid: str = sid_, who: Principal = Depends(member)
    ) -> dict:
        return await act(who, "decide", ref, sid, body.decision, body.note)

    @app.post(
        "/v1/cases/{ref}/evidence",
        response_class=Response,
        responses=_binary("application/zip"),
    )
    async def evidence(ref: str = ref_, who: Principal = Depends(member)) -> Response:
        got = await act(who, "export", ref)
        headers = {
            **PRIVATE,
            "Content-Disposition": f'attachment; filename="{got["bundle"]}"',
            "X-Bundle-SHA256": got["sha256"],
        }
        return Response(got["zip"], media_type="application/zip", headers=headers)


def _acts(hub):
    """``act(who, op, *args)``: one workspace act in the hub, as the token's name and role."""

    async def act(who: Principal, op: str, *args: Any) -> Any:
        return await hub.call("case_act", op, who.name, who.role, *args)

    return act


def search_routes(app: FastAPI, hub, need) -> None:
    """Searches in a case: the archive browser, probe uploads, start, progress, cancel."""
    ref_ = Path(..., pattern=CASE_REF)
    search_id = Path(..., pattern=r"^sr_[0-9a-f]{12}$")
    member = need(P.CASES)

    act = _acts(hub)

    @app.get("/v1/archive", response_model=ArchiveListing)
    async def browse(
        path: str = Query("", max_length=1000), who: Principal = Depends(member)
    ) -> dict:
        return await act(who, "browse", path)

    @app.post("/v1/cases/{ref}/probes", status_code=201, response_model=Probe)
    async def probe(request: Request, ref: str = ref_, who: Principal = Depends(member)) -> dict:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("image/jpeg", "image/png"):
            raise HTTPException(415, "send the probe photo as image/jpeg or image/png")
        data = await request.body()
        if not data:
            raise HTTPException(400, "empty body: send one JPEG or PNG photo")
        return await act(who, "probe", ref, data)

    @app.get("/v1/audit", response_model=AuditExtract)
    async def audit(
        case: str | None = Query(None, pattern=CASE_REF),
        action: str | None = Query(None, pattern=r"^[a-z_.]{1,64}$"),
        limit: int = Query(500, ge=1, le=5000),
        who: Principal = Depends(member),
    ) -> JSONResponse:
        return JSONResponse(await act(who, "audit", case, action, limit), headers=PRIVATE)

    @app.get("/v1/cases/{ref}/searches", response_model=SearchList)
    async def searches(ref: str = ref_, who: Principal = Depends(member)) -> dict:
        return {"searches": await act(who, "searches", ref)}

    @app.post("/v1/cases/{ref}/searches", status_code=202, response_model=SearchState)
    async def start(body: NewSearch, ref: str = ref_, who: Principal = Depends(member)) -> dict:
        return await act(who, "search", ref, body.model_dump())

    @app.get("/v1/cases/{ref}/searches/{sid}", response_model=SearchState)
    async def status(ref: str = ref_, sid: str = search_id, who: Principal = Depends(member)):
        return JSONResponse(await act(who, "search_status", ref, sid), headers=PRIVATE)

    @app.post("/v1/cases/{ref}/searches/{sid}/cancel", response_model=SearchState)
    async def cancel(ref: str = ref_, sid: str = search_id, who: Principal = Depends(member)):
        return await act(who, "search_cancel", ref, sid)


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("serve").joinpath("workspace.html").read_text(encoding="utf-8")


def workspace_page() -> HTMLResponse:
    """The page with a fresh nonce; a strict CSP: only its own nonced script and style,
    images and video from blob: URLs the script made, requests to this origin only."""
    nonce = secrets.token_urlsafe(16)
    body = _template().replace("{{nonce}}", html.escape(nonce))
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src blob:; media-src blob:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return HTMLResponse(body, headers={"Content-Security-Policy": csp, **PRIVATE})
