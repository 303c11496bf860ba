"""The live server, for real: local Ray Serve on 127.0.0.1, MTCNN + dlib-resnet in the
shared FacePool, milvus-lite in tmp_path, real video frames pushed over HTTP.

One server for the whole module (starting Serve and loading the models costs most of the
time on 2 cores). Two watch lists: "watch" holds Lin-Manuel Miranda, "other" holds Alex
Lacamoire, who is not in the clip. Camera ``cam-lin`` matches "watch", ``cam-alex``
matches "other"; both receive the same frames of short_hamilton_clip.mp4.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import live_helpers as helpers
import pytest

from pipelines.video import video_jpegs
from serve.auth import hash_token
from serve.local import free_port

pytestmark = pytest.mark.slow

TOKENS = {
    "officer-1": ("operator", "operator-token-0123456789"),
    "inv-1": ("investigator", "investigator-token-0123456789"),
    "admin-1": ("admin", "admin-token-0123456789abcdef"),
    "device-1": ("camera", "camera-token-0123456789abcd"),
}
OP, INV, ADMIN, CAM = (f"Bearer {t}" for _, t in TOKENS.values())
FRAME_EVERY = 6  # 29.97 fps -> about 5 fps of video
CAMS = ("cam-lin", "cam-alex")


def auth(header: str) -> dict[str, str]:
    return {"Authorization": header}


@pytest.fixture(scope="module")
def receiver():
    r = helpers.WebhookReceiver(fail_first=2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, data, receiver):
    """Enrol two lists, start Ray + Serve + the facewatch app; yield the base URL."""
    import ray

    from serve.app import BuildArgs
    from serve.local import ServeFile, refresh_ray_auth_cache, start_local, stop_local

    home = tmp_path_factory.mktemp("live-home")
    helpers.enrol(home, "Lin-Manuel Miranda", data / "known/lin-manuel-miranda.png", "watch")
    helpers.enrol(home, "Alex Lacamoire", data / "known/alex-lacamoire.png", "other")
    settings = {
        "home": str(home),
        "live": {
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 1.0,
            "list_refresh_s": 1.0,
            "webhooks": [{"url": receiver.url, "backoff_s": 0.2, "backoff_max_s": 0.5}],
        },
        "api": {
            "max_body_bytes": 2 * 1024 * 1024,
            "tokens": [
                {"name": n, "role": r, "sha256": hash_token(t)}
                | (
                    {"cameras": [*CAMS, "cam-race"]} if r == "camera" else {}
                )  # cam-race: the race test
                for n, (r, t) in TOKENS.items()
            ],
        },
    }
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    owned_ray = not ray.is_initialized()
    port = free_port()
    sf = ServeFile("127.0.0.1", port, "facewatch", "/", BuildArgs(settings=settings), {})
    try:
        start_local(sf)
        base = f"http://127.0.0.1:{port}"
        for cam, lst in (("cam-lin", "watch"), ("cam-alex", "other")):
            r = httpx.post(
                f"{base}/v1/cameras",
                json={"id": cam, "url": "push", "fps": 30, "list": lst},
                headers=auth(ADMIN),
                timeout=60,
            )
            assert r.status_code == 201, r.text
        yield base, home
    finally:
        stop_local(shutdown_ray=owned_ray)
        helpers.restore_env(saved)
        refresh_ray_auth_cache()  # later clusters in this session must not use our token


@pytest.fixture(scope="module")
def pushed(server, data):
    """Push the clip to both cameras (concurrently, each frame waits for its analysis)
    while an SSE subscriber listens; return what came back."""
    base, _ = server
    sse = helpers.SSEReader(base, TOKENS["officer-1"][1])
    sse.start()
    assert sse.connected.wait(60), "no SSE connection"
    frames = video_jpegs(data / "video/short_hamilton_clip.mp4", FRAME_EVERY)

    def push(camera: str) -> list[dict]:
        out = []
        with httpx.Client(base_url=base, headers=auth(CAM), timeout=60) as c:
            for jpeg in frames:
                out.append(helpers.push_frame(c, camera, jpeg))
        return out

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        results = dict(zip(CAMS, ex.map(push, CAMS), strict=True))
    cams = {
        c["id"]: c for c in httpx.get(f"{base}/v1/cameras", headers=auth(ADMIN)).json()["cameras"]
    }
    decided = cams["cam-lin"]["counters"].get("alerts", 0)
    events = []
    for _ in range(decided):  # every decided alert must reach the subscriber
        events.append(sse.events.get(timeout=30))
    yield {"results": results, "cameras": cams, "events": events, "sse": sse, "frames": frames}
    sse.stop()


def test_health_is_public(server):
    base, _ = server
    r = httpx.get(f"{base}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ray_and_serve_stay_on_loopback(server):
    import ray
    from ray import serve as ray_serve

    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    replicas = ray_serve.status().applications["facewatch"].deployments
    assert set(replicas) == {"FacePool", "LiveHub", "Api"}


def test_live_alert_exactly_once_over_sse_and_stored(server, pushed):
    base, home = server
    lin = pushed["results"]["cam-lin"]
    assert all(r["status"] == "analysed" for r in lin)
    assert sum(len(r["alerts"]) for r in lin) == 1
    alerts = [e for e in pushed["events"] if e[0] == "alert"]
    assert len(alerts) == 1 and pushed["sse"].drain() == []
    alert = alerts[0][1]
    assert (alert["person_name"], alert["camera_id"], alert["list_name"]) == (
        "Lin-Manuel Miranda",
        "cam-lin",
        "watch",
    )
    # Lin-Manuel's faces in this clip score 0.914-0.973 against his photo (README, Accuracy:
    # "The shipped default threshold"); the track's score (mean of its best top_n) was
    # measured at 0.9503, its best face 0.9492, at the shipped 0.95: it only just alerts
    assert alert["threshold"] == 0.95 and alert["status"] == "pending"
    assert 0.95 <= alert["score"] <= 0.973 and 0.914 <= alert["face_score"] <= 0.973, alert
    assert alert["margin"] == pytest.approx(alert["score"] - 0.95, abs=1e-3)
    assert not alert["photo"].startswith("/")  # no server paths leave
    r = httpx.get(f"{base}/v1/matches?source=live&case=T-1&reason=test", headers=auth(INV))
    stored = r.json()["matches"]
    assert [m["id"] for m in stored] == [alert["alert_id"]]
    m = stored[0]
    assert (m["source"], m["source_id"], m["track_id"]) == ("live", "cam-lin", alert["track_id"])
    assert m["timestamp_s"] > 0 and "embedding" not in m
    for kind in ("crop", "photo"):
        img = httpx.get(f"{base}/v1/alerts/{alert['alert_id']}/{kind}", headers=auth(OP))
        assert img.status_code == 200 and img.content[:3] == b"\xff\xd8\xff"
    # who saw whose face: each image shown is audited under the token's name
    records = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    views = [r for r in records if r["action"] == "alert.view"]
    assert {(r["actor"], r["details"]["kind"]) for r in views} >= {
        ("officer-1", "crop"),
        ("officer-1", "photo"),
    }
    assert all(r["details"]["alert_id"] == alert["alert_id"] for r in views)


# Lin-Manuel's alerting appearance in the clip begins at pushed frame 14 (2.80 s in): whole-
# frame detection of every pushed frame (every 6th of the clip) finds no face of his in frames
# 4-13 and his face in each of frames 14-35, at 0.927-0.979 against his photo. (Frames 0-3
# show him at 0.909-0.943, a track below the list's 0.95 that never alerts, with whole-frame
# detection on every frame as well.) Measured once with FaceEngine.process on those frames.
FIRST_IN_VIEW = 14
ALERT_BY_FRAME = 18  # 0.8 s of clip later: the track's score first reaches 0.95


def test_alert_within_1s_of_first_being_in_view(pushed):
    """Time to first alert, in clip time: from the first frame of the appearance to the
    frame whose analysis raised the alert, plus that frame's latency in the server. The
    alert must come from frame 18 at the latest (0.8 s of clip after the appearance
    begins), where his track's score first reaches 0.95, at the default
    live.detect_every 2 as with every frame searched whole: region detection must not
    delay it. The frame's latency (about 0.13 s on 2 free cores, more on a busy machine)
    is printed, not asserted: latency targets live in benchmarks/bench_live.py."""
    lin = pushed["results"]["cam-lin"]
    first = next(k for k, r in enumerate(lin) if r["alerts"])
    clip_s = (first - FIRST_IN_VIEW) * FRAME_EVERY / 29.97
    ttfa_s = clip_s + lin[first]["latency_ms"] / 1000
    print(f"time to first alert: {ttfa_s:.2f} s (frame {first}, in view from {FIRST_IN_VIEW})")
    assert FIRST_IN_VIEW <= first <= ALERT_BY_FRAME, (first, lin[first])
    assert pushed["cameras"]["cam-lin"]["frames_region_searched"] > 0


def test_unwatched_person_gives_no_alert(pushed):
    alex = pushed["results"]["cam-alex"]
    assert all(r["status"] == "analysed" for r in alex)
    assert sum(r["usable_faces"] for r in alex) > 10  # faces were seen and matched
    assert all(r["alerts"] == [] for r in alex)
    cam = pushed["cameras"]["cam-alex"]
    assert cam["counters"].get("alerts", 0) == 0 and cam["watchlist"]["people"] == 1


def test_nothing_is_stored_for_other_faces(server, pushed):
    base, home = server
    stats = httpx.get(f"{base}/v1/stats", headers=auth(ADMIN)).json()
    assert stats["non_match_data"] == "discarded"
    assert stats["stored"] == {"live_matches": 1, "faces": 0}
    media = home / "media"
    assert [p.name for p in (media / "alerts").iterdir()] == [
        pushed["events"][0][1]["alert_id"] + ".jpg"
    ]
    assert not (media / "faces").exists()
    assert stats["live"]["cam-alex"]["faces"] > 10


def test_faces_scanned_reach_the_deployment_counter(server, pushed):
    """The hub's upkeep adds each camera's analysed-face count (a number, nothing else) to
    the table deployment reports read; it runs every live.list_refresh_s (1 s here)."""
    import sqlite3
    import time

    base, home = server
    live = httpx.get(f"{base}/v1/stats", headers=auth(ADMIN)).json()["live"]
    wanted = {cam: live[cam]["faces"] for cam in ("cam-lin", "cam-alex")}
    deadline, counted = time.monotonic() + 20, {}
    while time.monotonic() < deadline:
        with sqlite3.connect(home / "catalog.sqlite", timeout=10) as db:
            rows = db.execute(
                "SELECT camera_id, SUM(faces) FROM live_scanned GROUP BY camera_id"
            ).fetchall()
        counted = dict(rows)
        if all(counted.get(cam, 0) >= n for cam, n in wanted.items()):
            break
        time.sleep(0.5)  # a polled table: no event to wait on
    assert all(counted.get(cam, 0) >= n > 0 for cam, n in wanted.items()), (counted, wanted)


def test_webhook_retries_with_one_idempotency_key(pushed, receiver):
    alert_id = pushed["events"][0][1]["alert_id"]
    assert receiver.accepted.wait(30)
    assert [d["attempt"] for d in receiver.deliveries] == ["1", "2", "3"]
    assert {d["key"] for d in receiver.deliveries} == {alert_id}
    assert list(receiver.processed) == [alert_id]  # processed exactly once


def test_no_api_act_happens_when_the_audit_log_is_damaged(server, pushed):
    """A whole line of garbage appended to the log: every act the API audits answers 503
    naming the damaged line and did not happen (the alert stays pending, no camera added
    or removed, no face shown, no match searched). The registry CLI refuses too. Runs
    before the review test, which decides the alert; the log is restored after."""
    base, home = server
    alert_id = pushed["events"][0][1]["alert_id"]
    log = home / "audit.log"
    size = log.stat().st_size
    line = log.read_bytes().count(b"\n") + 1
    with open(log, "ab") as f:
        f.write(b"not a record\n")
    c = httpx.Client(base_url=base, timeout=60)
    try:
        acts = [
            ("POST", f"/v1/alerts/{alert_id}/adjudication", OP, {"json": {"outcome": "confirmed"}}),
            ("POST", "/v1/cameras", ADMIN, {"json": {"id": "door-9", "url": "push"}}),
            ("DELETE", "/v1/cameras/cam-alex", ADMIN, {}),
            ("GET", f"/v1/alerts/{alert_id}/crop", OP, {}),
            ("GET", f"/v1/alerts/{alert_id}/photo", OP, {}),
            ("GET", "/v1/matches?source=live&case=T-1&reason=test", INV, {}),
        ]
        for method, path, token, kwargs in acts:
            r = c.request(method, path, headers=auth(token), **kwargs)
            assert r.status_code == 503, (path, r.status_code, r.text[:200])
            assert f"line {line} is damaged" in r.json()["error"], r.text
        assert c.get(f"/v1/alerts/{alert_id}", headers=auth(OP)).json()["status"] == "pending"
        cams = {x["id"] for x in c.get("/v1/cameras", headers=auth(ADMIN)).json()["cameras"]}
        assert {"cam-lin", "cam-alex"} <= cams and "door-9" not in cams
        out = cli("camera", "add", "door-4", "push", home=home)  # the registry, no server
        assert out.returncode == 2 and f"damaged at line {line}" in out.stderr, out.stderr
        out = cli("camera", "ls", "--json", home=home)
        assert "door-4" not in {x["id"] for x in json.loads(out.stdout)}
    finally:
        c.close()
        with open(log, "r+b") as f:  # the refused acts wrote nothing after the garbage
            f.truncate(size)
    assert cli("audit", "verify", home=home).returncode == 0


@contextlib.contextmanager
def officer_browser(**options):
    """A browser context of Debian's chromium, signed in as officer-1 (HTTP Basic)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            creds = {"username": "officer", "password": TOKENS["officer-1"][1]}
            yield browser.new_context(http_credentials=creds, **options)
        finally:
            browser.close()


def test_review_page_fits_a_390px_phone(server, pushed, tmp_path):
    """At 390x844 the page is no wider than the screen, and the pending alert's name,
    score and Confirm/Reject buttons are on screen and at least 44 px tall (a thumb)."""
    base, _ = server
    alert_id = pushed["events"][0][1]["alert_id"]
    with officer_browser(viewport={"width": 390, "height": 844}) as ctx:
        page = ctx.new_page()
        page.goto(f"{base}/review")
        card = page.locator(f'article[data-alert-id="{alert_id}"]')
        card.wait_for(timeout=20_000)
        card.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "review-390.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        for part in (card.locator(".who"), card.locator(".score")):
            box = part.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        for name in ("Confirm", "Reject"):
            button = card.get_by_role("button", name=name)
            box = button.bounding_box()
            assert button.is_visible() and box, name
            assert box["height"] >= 44 and box["x"] + box["width"] <= 390, (name, box)
        assert card.bounding_box()["height"] <= 844  # one alert fits one screen
    assert (tmp_path / "review-390.png").stat().st_size > 0


def test_review_page_confirm_in_chromium(server, pushed):
    base, _ = server
    alert_id = pushed["events"][0][1]["alert_id"]
    with officer_browser() as ctx:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/review")
        card = page.locator(f'article[data-alert-id="{alert_id}"]')
        card.wait_for(timeout=20_000)
        assert "Lin-Manuel Miranda" in card.inner_text()
        assert card.locator("img").count() == 2
        card.locator("textarea").fill("same person, checked the tattoo")
        card.get_by_role("button", name="Confirm").click()
        card.locator(".outcome").filter(has_text="confirmed by officer-1").wait_for(timeout=20_000)
        assert errors == []
    stored = httpx.get(f"{base}/v1/alerts/{alert_id}", headers=auth(OP)).json()
    assert (stored["status"], stored["decided_by"]) == ("confirmed", "officer-1")
    assert stored["note"] == "same person, checked the tattoo"
    r = httpx.get(f"{base}/v1/matches?source=live&case=T-1&reason=test", headers=auth(INV))
    assert r.json()["matches"][0]["status"] == "confirmed"  # in Milvus too
    stats = httpx.get(f"{base}/v1/stats", headers=auth(OP)).json()
    assert (stats["confirmed"], stats["pending"], stats["precision"]) == (1, 0, 1.0)
    assert stats["per_camera"]["cam-lin"]["precision"] == 1.0
    again = httpx.post(
        f"{base}/v1/alerts/{alert_id}/adjudication",
        json={"outcome": "rejected"},
        headers=auth(OP),
    )
    assert again.status_code == 409 and "already confirmed" in again.json()["error"]


def test_reconnect_after_the_stream_is_stopped_and_restarted(server, data):
    base, _ = server
    port = free_port()
    stream = helpers.StreamServer(
        helpers.mpegts_bytes(data / "video/short_hamilton_clip.mp4"), 10.0, port
    )
    stream.start()
    c = httpx.Client(base_url=base, headers=auth(ADMIN), timeout=60)

    def status() -> dict:
        cams = c.get("/v1/cameras").json()["cameras"]
        return next(x for x in cams if x["id"] == "street")

    try:
        url = f"http://127.0.0.1:{port}/live.ts"
        r = c.post("/v1/cameras", json={"id": "street", "url": url, "fps": 2})
        assert r.status_code == 201, r.text
        assert stream.connections.wait(30), "the camera never connected"
        first = helpers.wait_until(
            lambda: (s := status())["frames_analysed"] > 0 and s, 60, "frames"
        )
        assert first["connected"] and first["reconnects"] == 0
        stream.stop()
        stream.connections.clear()
        lost = helpers.wait_until(lambda: (s := status())["reconnects"] > 0 and s, 30, "loss")
        assert not lost["connected"] and lost["last_error"]
        stream.start()  # same port, as a camera coming back
        assert stream.connections.wait(30), "the camera did not reconnect"
        analysed = lost["frames_analysed"]
        back = helpers.wait_until(
            lambda: (s := status())["frames_analysed"] > analysed and s["connected"] and s,
            60,
            "frames after the reconnect",
        )
        assert back["state"] == "streaming"
        others = {x["id"]: x for x in c.get("/v1/cameras").json()["cameras"]}
        assert others["cam-lin"]["errors"] == 0  # other cameras are unaffected
    finally:
        c.delete("/v1/cameras/street")
        c.close()
        stream.close()


# -- security -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, path, header, status",
    [
        ("GET", "/v1/alerts", None, 401),
        ("GET", "/v1/alerts", "Bearer not-a-known-token-000000", 401),
        ("GET", "/v1/alerts", "Basic %%%", 401),
        ("GET", "/review", None, 401),
        ("GET", "/v1/cameras", INV, 403),
        ("POST", "/v1/cameras", OP, 403),
        ("GET", "/v1/matches?case=a&reason=b", OP, 403),
        ("GET", "/v1/config", OP, 403),
        ("GET", "/v1/alerts", CAM, 403),
        ("GET", "/v1/alerts", ADMIN, 403),
        ("POST", "/v1/alerts/a_000000000000000000000000/adjudication", INV, 403),
        ("POST", "/v1/cameras/cam-lin/frames", OP, 403),
    ],
)
def test_auth_and_role_failures(server, method, path, header, status):
    base, _ = server
    r = httpx.request(method, base + path, headers=auth(header) if header else {}, json={})
    assert r.status_code == status, r.text
    assert r.json()["error"]
    if status == 401:
        assert "WWW-Authenticate" in r.headers


def test_auth_failures_are_audited_without_the_token(server):
    base, home = server
    secret = "Bearer wrong-token-0123456789-zz"
    assert httpx.get(f"{base}/v1/stats", headers=auth(secret)).status_code == 401

    def audited() -> list[dict]:
        lines = (home / "audit.log").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return [r for r in records if r["action"] == "auth.failure"]

    # one record per client and reason a minute (FailureThrottle): earlier tests' refusals
    # from this client may hold the record, with this one counted in the next
    records = helpers.wait_until(
        lambda: [r for r in audited() if r["details"]["reason"] == "unknown token"], 30, "audit"
    )
    assert records[-1]["details"]["client"] == "127.0.0.1"
    assert "0123456789-zz" not in (home / "audit.log").read_text()


@pytest.mark.parametrize("path", ["/-/routes", "/-/healthz", "/-/anything"])
def test_serve_own_routes_are_closed(server, path):
    """Serve's proxy answers /-/routes and /-/healthz itself, before our token check; the
    proxy middleware (serve.proxy) closes them: 404, with or without a token."""
    base, _ = server
    for headers in ({}, auth(ADMIN)):
        r = httpx.get(base + path, headers=headers)
        assert r.status_code == 404, r.text
        assert r.json() == {"error": "not found"} and "facewatch" not in r.text
    assert httpx.get(f"{base}/healthz").status_code == 200  # ours stays public


def test_config_hides_token_hashes(server):
    base, _ = server
    r = httpx.get(f"{base}/v1/config", headers=auth(ADMIN))
    assert r.status_code == 200
    assert all(set(t) == {"name", "role"} for t in r.json()["api"]["tokens"])
    assert hash_token(TOKENS["admin-1"][1]) not in r.text


PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
JPEG = "image/jpeg"
FRAMES = "/v1/cameras/cam-lin/frames"
NO_ALERT = "/v1/alerts/a_000000000000000000000000"
JSON_T = "application/json"


def case(name, method, path, token, status, words, **kw):
    """One row: a request, the 4xx it must get, and words its message must contain."""
    return pytest.param(method, path, token, kw, status, words, id=name)


BAD_INPUTS = [
    case("json-malformed", "POST", "/v1/cameras", ADMIN, 400, "malformed JSON",
         content=b"{id: ", ctype=JSON_T),
    case("json-wrong-type", "POST", "/v1/cameras", ADMIN, 422, "fps",
         json={"id": "x1", "url": "push", "fps": "fast"}),
    case("json-missing", "POST", "/v1/cameras", ADMIN, 422, "url", json={"id": "x1"}),
    case("json-extra", "POST", "/v1/cameras", ADMIN, 422, "extra",
         json={"id": "x1", "url": "push", "x": 1}),
    case("bad-url-scheme", "POST", "/v1/cameras", ADMIN, 422, "unsupported URL scheme",
         json={"id": "x1", "url": "ftp://h/v"}),
    case("bad-url-file", "POST", "/v1/cameras", ADMIN, 422, "no such video file",
         json={"id": "x1", "url": "/etc/passwd.mp4"}),
    case("bad-url-space", "POST", "/v1/cameras", ADMIN, 422, "whitespace",
         json={"id": "x1", "url": "rtsp://h/a b"}),
    case("bad-camera-id", "POST", "/v1/cameras", ADMIN, 422, "id",
         json={"id": "../x", "url": "push"}),
    case("duplicate-camera", "POST", "/v1/cameras", ADMIN, 409, "already exists",
         json={"id": "cam-lin", "url": "push"}),
    case("json-too-big", "POST", "/v1/cameras", ADMIN, 413, "too large",
         content=b"{" + b" " * 70_000 + b"}", ctype=JSON_T),
    case("unknown-camera-frame", "POST", "/v1/cameras/nocam/frames", ADMIN, 404, "no camera",
         content=PNG_1x1, ctype="image/png"),
    case("other-camera-frame", "POST", "/v1/cameras/nocam/frames", CAM, 403,
         "may not push frames for camera", content=PNG_1x1, ctype="image/png"),
    case("unknown-camera-delete", "DELETE", "/v1/cameras/nocam", ADMIN, 404, "no camera"),
    case("frame-not-image", "POST", FRAMES, CAM, 415, "not a JPEG", content=b"hello", ctype=JPEG),
    case("frame-wrong-type", "POST", FRAMES, CAM, 415, "image/jpeg or image/png",
         content=b"GIF89a", ctype="image/gif"),
    case("frame-empty", "POST", FRAMES, CAM, 400, "empty body", content=b"", ctype=JPEG),
    case("frame-truncated", "POST", FRAMES + "?wait=true", CAM, 422, "frame",
         content=b"\xff\xd8\xff\xe0" + b"\0" * 64, ctype=JPEG),
    case("frame-too-big", "POST", FRAMES, CAM, 413, "too large",
         content=b"\xff\xd8\xff" + b"\0" * (3 << 20), ctype=JPEG),
    case("bad-alert-id", "GET", "/v1/alerts/not-an-id", OP, 422, "alert_id"),
    case("unknown-alert", "GET", NO_ALERT, OP, 404, "no alert"),
    case("bad-outcome", "POST", NO_ALERT + "/adjudication", OP, 422, "outcome",
         json={"outcome": "maybe"}),
    case("bad-limit", "GET", "/v1/alerts?limit=100000", OP, 422, "limit"),
    case("search-without-purpose", "GET", "/v1/matches", INV, 422, "purpose"),
    case("search-injection", "GET", "/v1/matches?case=a&reason=b&person=x%22%20or%20id!%3D%22",
         INV, 422, "only letters"),
    case("cross-origin", "POST", "/v1/cameras", ADMIN, 403, "cross-origin",
         json={"id": "x2", "url": "push"}, origin="http://evil.example"),
]  # fmt: skip


@pytest.mark.parametrize("method, path, token, kwargs, status, words", BAD_INPUTS)
def test_malformed_input_gets_a_clear_4xx(server, method, path, token, kwargs, status, words):
    base, _ = server
    headers = auth(token)
    kwargs = dict(kwargs)
    if "ctype" in kwargs:
        headers["Content-Type"] = kwargs.pop("ctype")
    if "origin" in kwargs:
        headers["Origin"] = kwargs.pop("origin")
    r = httpx.request(method, base + path, headers=headers, timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()
    assert httpx.get(f"{base}/healthz").status_code == 200  # still serving


# -- cameras through the CLI ----------------------------------------------------------------
def cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli"]
    if home is not None:
        cmd += ["--home", str(home)]
    return subprocess.run(
        [*cmd, *args], cwd=helpers.ROOT, capture_output=True, text=True, timeout=120
    )


def test_camera_cli_through_the_api_and_through_the_registry(server):
    base, home = server
    token = ["--server", base, "--token", TOKENS["admin-1"][1]]
    out = cli("camera", "add", "door-1", "push", "--fps", "4", "--list", "watch", *token)
    assert out.returncode == 0, out.stderr
    out = cli("camera", "ls", "--json", *token)
    listed = {c["id"]: c for c in json.loads(out.stdout)}
    assert listed["door-1"]["fps"] == 4 and listed["door-1"]["list"] == "watch"
    out = cli("camera", "rm", "door-1", *token)
    assert out.returncode == 0, out.stderr
    refused = cli("camera", "add", "door-2", "push", "--server", base, "--token", "x" * 20)
    assert refused.returncode == 2 and "401" in refused.stderr
    # no --server: the registry in the home; the running server picks it up
    out = cli("camera", "add", "door-3", "push", home=home)
    assert out.returncode == 0, out.stderr

    def running() -> set[str]:
        cams = httpx.get(f"{base}/v1/cameras", headers=auth(ADMIN)).json()["cameras"]
        return {c["id"] for c in cams}

    helpers.wait_until(lambda: "door-3" in running(), 30, "the server to start door-3")
    assert cli("camera", "rm", "door-3", home=home).returncode == 0
    helpers.wait_until(lambda: "door-3" not in running(), 30, "the server to stop door-3")


# -- the fleet's races on the real hub (tests/serve/test_fleet.py has the fast fakes) --------
def _push_until_refused(base: str, camera: str, frames: list[bytes], answered) -> list:
    """Push frames (each waits for its analysis) until the camera refuses one; return every
    (status, body) seen. ``answered`` counts the analysed frames, so the test knows when
    frames are at the real pool."""
    seen = []
    with httpx.Client(base_url=base, headers=auth(CAM), timeout=60) as c:
        for jpeg in frames * 4:
            r = c.post(
                f"/v1/cameras/{camera}/frames?wait=true",
                content=jpeg,
                headers={"Content-Type": "image/jpeg"},
            )
            seen.append((r.status_code, r.json()))
            if r.status_code != 200:
                return seen
            answered.release()
    return seen


@pytest.mark.timeout(180)
def test_pushers_waiting_on_a_camera_removed_under_them_get_503(server, pushed):
    """As test_fleet's ``test_a_pusher_waiting_on_a_removed_camera_gets_503``, on the real
    LiveHub (milvus-lite, the real FacePool, the hub's own JPEG decoder): four pushers keep
    frames at the pool, the camera is removed, and every pusher ends, none with a 5xx other
    than the camera's 503 ("was stopped") or hanging. List "other" (Alex Lacamoire, not in
    the clip), so no alert is added to what the module's other tests count."""
    import threading

    base, _ = server
    r = httpx.post(
        f"{base}/v1/cameras",
        json={"id": "cam-race", "url": "push", "fps": 30, "list": "other"},
        headers=auth(ADMIN),
        timeout=60,
    )
    assert r.status_code == 201, r.text
    answered = threading.Semaphore(0)
    frames = pushed["frames"]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        push = functools.partial(_push_until_refused, base, "cam-race", frames, answered)
        pushers = [ex.submit(push) for _ in range(4)]
        for _ in range(8):  # the real pool has analysed frames: the pushers are in flight
            assert answered.acquire(timeout=60), "no frame was analysed"
        removed = httpx.delete(f"{base}/v1/cameras/cam-race", headers=auth(ADMIN), timeout=60)
        ends = [p.result(timeout=60)[-1] for p in pushers]
    assert removed.status_code == 200, removed.text
    codes = sorted(status for status, _ in ends)
    assert 503 in codes and set(codes) <= {404, 503}, ends
    stopped = [body["error"] for status, body in ends if status == 503]
    assert all("cam-race" in e and "was stopped" in e for e in stopped), stopped
    cams = httpx.get(f"{base}/v1/cameras", headers=auth(ADMIN)).json()["cameras"]
    assert "cam-race" not in {c["id"] for c in cams}


def test_a_camera_that_cannot_start_is_not_added_and_the_others_run(server, pushed):
    """As test_fleet's fake-hub test, on the real LiveHub: an unset ${CAM_...} variable is
    refused with the variable's name, nothing is stored, and the running cameras go on."""
    base, _ = server
    url = "rtsp://viewer:${CAM_RACE_PASSWORD}@192.0.2.1/s"  # never set; TEST-NET, never reached
    r = httpx.post(
        f"{base}/v1/cameras", json={"id": "cam-bad", "url": url}, headers=auth(ADMIN), timeout=60
    )
    assert r.status_code == 422 and "CAM_RACE_PASSWORD" in r.json()["error"], r.text
    listed = httpx.get(f"{base}/v1/cameras", headers=auth(ADMIN)).json()["cameras"]
    states = {c["id"]: c["state"] for c in listed}
    assert "cam-bad" not in states and states["cam-alex"] != "error", states
    r = httpx.post(
        f"{base}/v1/cameras/cam-alex/frames?wait=true",
        content=pushed["frames"][0],
        headers={**auth(CAM), "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["status"] in ("analysed", "skipped"), r.text
