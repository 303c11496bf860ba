"""The workspace's routes on the real FastAPI app (``create_app``), in process: real tokens,
a real home (catalog, audit log) and ``LiveHub``'s own ``case_act``; no Ray: the workspace
asks the model pool only to check probe photos, done here by a real engine in process.
Sightings come from the browser test's real search (tests/serve/test_workspace_browser.py);
these cover cases, roles and refusals."""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def archive_home(tmp_path):
    settings = Settings(home=tmp_path / "home", workspace={"archive_roots": [EXAMPLES]})
    with Home.open(settings) as h:
        yield h


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "path, status, words",
    [
        ("0/../../etc", 404, "no such file or folder under archive root 0"),
        ("0/../README.md", 404, "no such file or folder under archive root 0"),
        ("/etc/passwd", 422, "an archive path is ROOT/path"),
        ("1/x", 422, "an archive path is ROOT/path"),
    ],
)
def test_the_archive_browser_and_searches_stay_under_the_archive_roots(
    archive_home, path, status, words
):
    async def scenario(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        roots = await c.get("/v1/archive", headers=as_("ana"))
        inside = await c.get("/v1/archive?path=0", headers=as_("ana"))
        browse = await c.get("/v1/archive", params={"path": path}, headers=as_("ana"))
        spec = {"paths": [path], "probes": []}
        start = await c.post("/v1/cases/OP-7/searches", json=spec, headers=as_("ana"))
        return roots, inside, browse, start

    roots, inside, browse, start = run(archive_home, scenario)
    assert [e["name"] for e in roots.json()["entries"]] == ["examples"]
    names = {e["name"] for e in inside.json()["entries"]}
    assert "short_hamilton_clip.mp4" in names and "obama.jpg" not in names  # videos only
    assert inside.json()["display"] == "examples"  # the root's name, not its index
    for r in (browse, start):
        assert r.status_code == status and words in r.json()["error"], r.text
    assert archive_home.catalog.rows("SELECT * FROM case_searches") == []


@pytest.mark.timeout(120)
@pytest.mark.integration  # the good photo's face check loads MTCNN and dlib-resnet
def test_a_probe_upload_is_checked_as_an_image_first(archive_home):
    photo = (EXAMPLES / "lin-manuel-miranda.png").read_bytes()

    async def scenario(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        post = functools.partial(c.post, "/v1/cases/OP-7/probes")
        text = await post(content=b"hello", headers=as_("ana") | {"Content-Type": "text/plain"})
        fake = await post(
            content=b"\x89PNG\r\n\x1a\nnot really",
            headers=as_("ana") | {"Content-Type": "image/png"},
        )
        ben = await post(content=photo, headers=as_("ben") | {"Content-Type": "image/png"})
        good = await post(content=photo, headers=as_("ana") | {"Content-Type": "image/png"})
        return text, fake, ben, good

    text, fake, ben, good = run(archive_home, scenario)
    assert text.status_code == 415
    assert fake.status_code == 422 and "probe photo" in fake.json()["error"]
    assert ben.status_code == 403
    assert good.status_code == 201 and good.json()["width"] > 0, good.text
    stored = list((archive_home.path / "cases" / "OP-7" / "probes").iterdir())
    assert [p.name for p in stored] == [good.json()["probe_id"] + ".png"]


@pytest.mark.timeout(700)
@pytest.mark.integration  # a real search process (Ray, MTCNN, dlib-resnet), then cancelled
def test_a_cancelled_search_stops_its_process_and_says_what_it_kept(archive_home):
    photo = (EXAMPLES / "lin-manuel-miranda.png").read_bytes()

    async def scenario(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        probe = await c.post(
            "/v1/cases/OP-7/probes",
            content=photo,
            headers=as_("ana") | {"Content-Type": "image/png"},
        )
        spec = {"paths": ["0/short_hamilton_clip.mp4"], "probes": [probe.json()["probe_id"]]}
        started = await c.post("/v1/cases/OP-7/searches", json=spec, headers=as_("ana"))
        assert started.status_code == 202, started.text
        sid = started.json()["search_id"]
        for _ in range(1000):  # until Ray and the pool run and the files are counted
            st = (await c.get(f"/v1/cases/OP-7/searches/{sid}", headers=as_("ana"))).json()
            if st["progress"].get("state") == "running" or st["state"] != "running":
                break
            await asyncio.sleep(0.5)
        assert st["state"] == "running" and st["progress"]["files_total"] == 1, st
        aud = await c.post(f"/v1/cases/OP-7/searches/{sid}/cancel", headers=as_("aud"))
        cancelled = await c.post(f"/v1/cases/OP-7/searches/{sid}/cancel", headers=as_("ana"))
        again = await c.post(f"/v1/cases/OP-7/searches/{sid}/cancel", headers=as_("ana"))
        listed = await c.get("/v1/cases/OP-7/searches", headers=as_("aud"))
        return started.json(), aud, cancelled.json(), again, listed.json()

    started, aud, cancelled, again, listed = run(archive_home, scenario)
    assert started["state"] == "running" and aud.status_code == 403
    assert cancelled["state"] == "cancelled" and "stay stored" in cancelled["message"]
    assert again.status_code == 409 and listed["searches"][0]["state"] == "cancelled"
    pid = archive_home.catalog.row("SELECT pid FROM case_searches")["pid"]
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the search's whole process group is gone
    actions = [r["action"] for r in archive_home.audit.records()]
    assert "case.search_start" in actions and "case.search_cancel" in actions


@pytest.mark.timeout(30)
def test_an_auditor_reads_the_audit_log_and_an_investigator_only_its_cases(home):
    async def scenario(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        whole = await c.get("/v1/audit", headers=as_("aud"))
        ana_whole = await c.get("/v1/audit", headers=as_("ana"))
        ana_case = await c.get("/v1/audit?case=OP-7", headers=as_("ana"))
        ben_case = await c.get("/v1/audit?case=OP-7", headers=as_("ben"))
        return whole, ana_whole, ana_case, ben_case

    whole, ana_whole, ana_case, ben_case = run(home, scenario)
    assert whole.status_code == 200 and whole.json()["chain_ok"] is True
    assert "case.create" in [r["action"] for r in whole.json()["records"]]
    assert ana_whole.status_code == 403 and ben_case.status_code == 403
    assert {r["details"]["case"] for r in ana_case.json()["records"]} == {"OP-7"}
    reads = [r["actor"] for r in home.audit.records() if r["action"] == "audit.read"]
    assert reads == ["aud", "ana"]  # reading the log is itself audited


def _png(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _probe_photos() -> dict[str, bytes]:
    """A blank photo, two faces side by side, one face too small, and a good one."""
    from PIL import Image

    one = Image.open(EXAMPLES / "lin-manuel-miranda.png").convert("RGB")
    other = Image.open(EXAMPLES / "alex-lacamoire.png").convert("RGB").resize(one.size)
    pair = Image.new("RGB", (one.width * 2, one.height))
    pair.paste(one, (0, 0))
    pair.paste(other, (one.width, 0))
    return {
        "blank": _png(Image.new("RGB", (320, 240), (128, 128, 128))),
        "pair": _png(pair),
        "tiny": _png(one.resize((48, 48 * one.height // one.width))),
        "good": (EXAMPLES / "lin-manuel-miranda.png").read_bytes(),
    }


@pytest.mark.timeout(180)
@pytest.mark.integration  # the face check: MTCNN, the quality gates and dlib-resnet
def test_a_probe_photo_is_checked_for_one_usable_face_at_upload(archive_home):
    photos = _probe_photos()

    async def scenario(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        got = {}
        for name, data in photos.items():
            got[name] = await c.post(
                "/v1/cases/OP-7/probes",
                content=data,
                headers=as_("ana") | {"Content-Type": "image/png"},
            )
        return got

    got = run(archive_home, scenario)
    assert got["good"].status_code == 201 and got["good"].json()["face"] == "one usable face"
    said = {n: r.json()["error"] for n, r in got.items() if n != "good"}
    assert all(got[n].status_code == 422 for n in said), {n: got[n].text for n in said}
    assert "no face found" in said["blank"], said
    assert "2 usable faces" in said["pair"] and "exactly one" in said["pair"], said
    assert "none passes quality (small)" in said["tiny"], said
    stored = list((archive_home.path / "cases" / "OP-7" / "probes").iterdir())
    assert [p.name for p in stored] == [got["good"].json()["probe_id"] + ".png"]  # only it
    refused = list(archive_home.audit.records(action="case.probe_refused"))
    assert len(refused) == 3 and all(r["details"]["case"] == "OP-7" for r in refused)


def _facewatch(home: Home, *args: str):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, FACEWATCH_USER="ana", PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home.path), *args]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=400)


async def _until_ended(c, sid: str) -> dict:
    for _ in range(600):
        st = (await c.get(f"/v1/cases/OP-7/searches/{sid}", headers=as_("ana"))).json()
        if st["state"] != "running":
            return st
        await asyncio.sleep(0.5)
    return st


@pytest.mark.timeout(600)
@pytest.mark.integration  # facewatch index (Ray, MTCNN, dlib-resnet), then search --indexed
def test_the_indexed_probe_search_is_offered_once_the_archive_is_indexed(archive_home, tmp_path):
    photo = (EXAMPLES / "lin-manuel-miranda.png").read_bytes()
    spec = {"paths": ["0/short_hamilton_clip.mp4"], "indexed": True}

    async def before(c):
        await c.post("/v1/cases", json=NEW, headers=as_("ana"))
        probe = await c.post("/v1/cases/OP-7/probes", content=photo,
                             headers=as_("ana") | {"Content-Type": "image/png"})  # fmt: skip
        spec["probes"] = [probe.json()["probe_id"]]
        roots = (await c.get("/v1/archive", headers=as_("ana"))).json()
        refused = await c.post("/v1/cases/OP-7/searches", json=spec, headers=as_("ana"))
        return roots, refused

    roots, refused = run(archive_home, before)
    assert roots["indexed"]["available"] is False and "not indexed" in roots["indexed"]["why"]
    assert refused.status_code == 409 and "not indexed" in refused.json()["error"]
    clip = str(EXAMPLES / "short_hamilton_clip.mp4")
    done = _facewatch(archive_home, "index", clip, "--case", "OP-7", "--reason", "an index",
                      "--out", str(tmp_path / "index"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    async def after(c):
        roots = (await c.get("/v1/archive", headers=as_("ana"))).json()
        started = await c.post("/v1/cases/OP-7/searches", json=spec, headers=as_("ana"))
        assert started.status_code == 202, started.text
        st = await _until_ended(c, started.json()["search_id"])
        return roots, st, (await c.get("/v1/cases/OP-7", headers=as_("ana"))).json()

    roots, st, case = run(archive_home, after)
    assert roots["indexed"]["available"] is True, roots
    assert st["state"] == "done", st
    searches = list(archive_home.audit.records(action="search"))
    assert searches[-1]["details"]["mode"] == "indexed" and searches[-1]["actor"] == "ana"
    assert any(s["file"] == "short_hamilton_clip.mp4" for s in case["sightings"]), case


@pytest.mark.timeout(600)
@pytest.mark.integration  # a real watch-list search process (Ray, MTCNN, dlib-resnet)
def test_a_list_search_from_the_page_hands_its_matches_to_the_server_holding_the_store(
    tmp_path,
):
    """This process holds the default store (milvus-lite), as ``facewatch serve`` does: the
    search reads the list's vectors from the server's copy and hands its matches over."""
    from pipelines.engine import FaceEngine
    from pipelines.handoff import handoff_root
    from pipelines.store import MATCHES
    from pipelines.watchlist import Watchlists

    settings = Settings(home=tmp_path / "home", workspace={"archive_roots": [EXAMPLES]})
    engine = FaceEngine(settings).load(warmup=False)
    with Home.open(settings, engine.info) as home:
        face = engine.probe_face(EXAMPLES / "lin-manuel-miranda.png")
        Watchlists(home, engine.info, engine.embedder.default_threshold).add(
            "Lin-Manuel Miranda", [face], "root", reason="a test", authorised_by="DI Shaw"
        )

        async def scenario(c):
            await c.post("/v1/cases", json=NEW, headers=as_("ana"))
            spec = {"paths": ["0/short_hamilton_clip.mp4"], "list_name": "default"}
            started = await c.post("/v1/cases/OP-7/searches", json=spec, headers=as_("ana"))
            assert started.status_code == 202, started.text
            return await _until_ended(c, started.json()["search_id"])

        st = run(home, scenario)
        assert st["state"] == "done", st
        rows = home.vectors().query(MATCHES, 'case_ref == "OP-7"', fields=["id", "person_name"])
        assert rows and {r["person_name"] for r in rows} == {"Lin-Manuel Miranda"}
        assert len({r["id"] for r in rows}) == len(rows)
        assert not list(handoff_root(home.path).glob("*"))  # ingested; the list copy gone
        assert home.catalog.rows("SELECT file_id FROM search_files")  # recorded by the server
