"""Pure logic of the live path, without Ray or models: tracking and alert decisions, frame
slots and pacing, backoff, tokens and roles, camera specs, Serve config, Ray token auth."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipelines.catalog import Catalog
from pipelines.config import ApiConfig, LiveConfig, WebhookConfig
from pipelines.live.analyser import LiveAnalyser, alert_id
from pipelines.live.cameras import (
    CameraError,
    camera_file_roots,
    expand_secrets,
    load_cameras_file,
    parse_spec,
    redact_url,
    scrub_secrets,
)
from pipelines.match import Gallery, Matcher
from pipelines.schemas import EmbedderInfo, FaceBatch, FaceDetections, Quality
from serve.auth import (
    Permission,
    Principal,
    TokenConfigError,
    TokenTable,
    hash_token,
    parse_env_tokens,
)
from serve.local import ray_token_auth, read_serve_file
from serve.sources import Backoff, FrameSlot, Pacer, PendingFrame
from serve.webhooks import WebhookDispatcher, backoff_delay, public_hook_url, retryable

ROOT = Path(__file__).resolve().parents[2]
INFO = EmbedderInfo("test-embedder", "1", 4)


# -- tracking and alert decisions -----------------------------------------------------------
def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


ALICE, BOB = unit(1, 0, 0, 0), unit(0, 1, 0, 0)


def matcher() -> Matcher:
    gallery = Gallery(
        embeddings=np.stack([ALICE, BOB]),
        entry_ids=["e1", "e2"],
        person_ids=["p_alice", "p_bob"],
        person_names=["Alice", "Bob"],
        list_names=["watch", "watch"],
        photos=["media/watchlist/e1.jpg", "media/watchlist/e2.jpg"],
        embedder=INFO,
        thresholds=np.array([0.9, 0.9], np.float32),
        snapshot_ids={"watch": "s_1"},
    )
    return Matcher(gallery)


def batch(faces: list[tuple[tuple[float, float, float, float], np.ndarray, bool]]) -> FaceBatch:
    """One frame's faces: (box, embedding, passed quality)."""
    n = len(faces)
    boxes = np.array([f[0] for f in faces], np.float32).reshape(n, 4)
    passed = np.array([f[2] for f in faces], bool)
    emb = np.stack([f[1] if f[2] else np.zeros(4, np.float32) for f in faces]) if n else None
    dets = FaceDetections(
        np.zeros(n, np.int32), boxes, np.zeros((n, 5, 2), np.float32), np.full(n, 0.99)
    )
    q = Quality(
        passed=passed,
        reason=np.array(["" if p else "blur" for p in passed], object),
        eye_distance=np.full(n, 30.0, np.float32),
        blur=np.full(n, 100.0, np.float32),
        yaw=np.zeros(n, np.float32),
        pitch=np.zeros(n, np.float32),
        score=np.full(n, 0.99, np.float32),
    )
    crops = [np.zeros((8, 8, 3), np.uint8) for _ in range(n)]
    return FaceBatch(dets, q, emb if n else np.zeros((0, 4), np.float32), INFO, 1, crops)


def analyser(**policy) -> LiveAnalyser:
    a = LiveAnalyser("cam1", LiveConfig(**policy), epoch="e0")
    a.set_matcher(matcher())
    return a


BOX = (100.0, 100.0, 160.0, 170.0)
NEAR_ALICE = unit(1, 0.05, 0, 0)  # similarity ~0.9988


def run(a: LiveAnalyser, frames: list[list], t0: float = 0.0, dt: float = 0.2):
    alerts = []
    for i, faces in enumerate(frames):
        out = a.update(t0 + i * dt, i + 1, 1000.0 + t0 + i * dt, batch(faces))
        alerts += out.alerts
    return alerts


def test_one_alert_per_person_per_track_with_the_best_face():
    a = analyser()
    alerts = run(a, [[(BOX, NEAR_ALICE, True)]] * 10)
    assert [x.person_id for x in alerts] == ["p_alice"]
    assert alerts[0].alert_id == alert_id("cam1", "e0", alerts[0].track_id, "p_alice")
    assert alerts[0].n_faces == 2  # decided as soon as min_track_faces usable faces agree


def test_a_single_face_does_not_alert():
    assert run(analyser(), [[(BOX, NEAR_ALICE, True)]]) == []


def test_faces_failing_quality_are_never_matched():
    assert run(analyser(), [[(BOX, NEAR_ALICE, False)]] * 6) == []


def test_unwatched_faces_do_not_alert_and_leave_only_counters():
    stranger = unit(0, 0, 1, 0.2)
    a = analyser()
    assert run(a, [[(BOX, stranger, True)]] * 5) == []
    a.update(100.0, 99, 2000.0, batch([]))  # much later: the track ends
    assert a.tracks == {}
    assert a.counters["tracks_unmatched"] == 1 and a.counters["faces_discarded"] == 5


def test_a_new_track_of_the_same_person_within_the_window_is_suppressed():
    a = analyser(alert_window_s=300)
    first = run(a, [[(BOX, NEAR_ALICE, True)]] * 3)
    later = run(a, [[(BOX, NEAR_ALICE, True)]] * 3, t0=10.0)  # gap > track_max_gap_s
    assert len(first) == 1 and later == []
    assert a.counters["alerts_suppressed"] == 1


def test_after_the_window_the_same_person_alerts_again():
    a = analyser(alert_window_s=5)
    assert len(run(a, [[(BOX, NEAR_ALICE, True)]] * 3)) == 1
    assert len(run(a, [[(BOX, NEAR_ALICE, True)]] * 3, t0=10.0)) == 1


def test_two_people_in_one_frame_get_one_alert_each():
    other_box = (300.0, 100.0, 360.0, 170.0)
    frame = [(BOX, NEAR_ALICE, True), (other_box, unit(0.05, 1, 0, 0), True)]
    alerts = run(analyser(), [frame] * 4)
    assert sorted(x.person_id for x in alerts) == ["p_alice", "p_bob"]
    assert len({x.track_id for x in alerts}) == 2


def test_drill_mode_hands_over_the_best_face_of_unmatched_tracks():
    a = analyser(keep_nonmatches=True)
    run(a, [[(BOX, unit(0, 0, 1, 0), True)]] * 3)
    out = a.update(100.0, 99, 2000.0, batch([]))
    assert len(out.drill_faces) == 1


# -- frames: pacing, newest-frame slot, backoff ---------------------------------------------
def test_pacer_keeps_the_configured_rate():
    p = Pacer(5.0)
    times = np.arange(0, 10, 1 / 30)  # a 30 fps source for 10 s
    # the first frame, then every 6th (frames 5, 11, ...): each is taken at most a quarter
    # interval early, so 50 in 10 s after t = 0, and never two in one interval
    due = np.array([t for t in times if p.due(t)])
    assert len(due) == 51 and due[1] == pytest.approx(5 / 30)
    assert np.allclose(np.diff(due[1:]), 0.2)


def test_big_frames_cost_their_own_camera_its_rate():
    """A camera pushing 8 MP frames (8 frames' cost each at 1 MP per frame) at 30 fps is
    analysed at 5/8 fps, while a camera of small frames keeps its 5 fps."""
    big, small = Pacer(5.0), Pacer(5.0)
    times = np.arange(0, 16, 1 / 30)
    cost = 8_000_000 / LiveConfig(push_frame_pixels=1_000_000).push_frame_pixels
    assert LiveConfig().push_frame_pixels == 640 * 480  # the default: VGA
    assert 9 <= sum(big.due(t, cost=cost) for t in times) <= 11  # 16 s x 5/8 fps = 10
    assert 78 <= sum(small.due(t, cost=0.2) for t in times) <= 82  # under 1: one frame


def test_frame_slot_keeps_the_newest_and_counts_drops():
    async def scenario():
        slot = FrameSlot()
        loop = asyncio.get_running_loop()
        frames = [PendingFrame(i, 0.0, 0.0, done=loop.create_future()) for i in range(3)]
        for f in frames:
            slot.put(f)
        got = await asyncio.wait_for(slot.get(), 1)
        return got.seq, slot.dropped, [f.done.result()["status"] for f in frames[:2]]

    assert asyncio.run(scenario()) == (2, 2, ["dropped", "dropped"])


def test_backoff_is_exponential_capped_and_resets():
    b = Backoff(0.5, 4.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_webhook_backoff_and_retry_rules():
    hook = WebhookConfig(url="http://127.0.0.1:1/x", backoff_s=0.5, backoff_max_s=3)
    assert [round(backoff_delay(hook, n, jitter=0), 2) for n in (1, 2, 3, 4, 5)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]
    assert [retryable(s) for s in (500, 503, 429, 408, 400, 404, 422)] == [True] * 4 + [False] * 3


# -- tokens and roles -----------------------------------------------------------------------
TOKENS = {"op": "operator-token-0123456789", "inv": "investigator-0123456789"}
TOKENS |= {"adm": "admin-token-0123456789ab", "cam": "camera-token-0123456789"}
ROLE_OF = {"op": "operator", "inv": "investigator", "adm": "admin", "cam": "camera"}


@pytest.fixture(scope="module")
def table() -> TokenTable:
    return TokenTable([(n, ROLE_OF[n], hash_token(t)) for n, t in TOKENS.items()])


@pytest.mark.parametrize(
    "who, permission, allowed",
    [
        ("op", Permission.REVIEW, True),
        ("op", Permission.ADJUDICATE, True),
        ("op", Permission.SEARCH, False),
        ("op", Permission.CAMERAS_WRITE, False),
        ("inv", Permission.SEARCH, True),
        ("inv", Permission.ADJUDICATE, False),
        ("inv", Permission.REVIEW, False),
        ("adm", Permission.CAMERAS_WRITE, True),
        ("adm", Permission.CONFIG, True),
        ("adm", Permission.ADJUDICATE, False),
        ("cam", Permission.FRAMES, True),
        ("cam", Permission.CAMERAS_READ, False),
    ],
)
def test_roles(table, who, permission, allowed):
    result = table.authorize(f"Bearer {TOKENS[who]}", permission)
    assert isinstance(result, Principal) == allowed
    if not allowed:
        assert result.status == 403 and permission.value in result.message


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"officer:{password}".encode()).decode()


@pytest.mark.parametrize(
    "header, status, reason",
    [
        (None, 401, "missing"),
        ("", 401, "missing"),
        ("Bearer", 401, "malformed"),
        ("Bearer a b", 401, "malformed"),
        ("Token operator-token-0123456789", 401, "malformed"),
        ("Basic !!!", 401, "malformed"),
        ("Bearer operator-token-0123456780", 401, "unknown token"),
        (basic("operator-token-0123456789"), 200, ""),
        (f"bearer {TOKENS['op']}", 200, ""),
    ],
)
def test_authentication_table(table, header, status, reason):
    result = table.authorize(header, Permission.REVIEW)
    if status == 200:
        assert result == Principal("op", "operator")
    else:
        assert (result.status, result.reason) == (status, reason)
        assert "0123456789" not in result.message  # never echoes a token


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("a:operator", "expected name:role:token"),
        ("a:boss:0123456789abcdef", "unknown role"),
        ("a:operator:short", "shorter than 16"),
    ],
)
def test_bad_env_tokens_are_refused_without_echoing_them(raw, problem):
    with pytest.raises(TokenConfigError, match=problem) as err:
        parse_env_tokens(raw)
    assert "0123456789abcdef" not in str(err.value)


def test_camera_tokens_are_bound_to_their_cameras():
    cfg = ApiConfig(
        tokens=[
            {"name": "gate-1", "role": "camera", "sha256": hash_token("g" * 20)},
            {"name": "dev", "role": "camera", "sha256": hash_token("d" * 20),
             "cameras": ["door-1", "door-2"]},
            {"name": "ops", "role": "admin", "sha256": hash_token("a" * 20)},
        ]
    )  # fmt: skip
    env = {"FACEWATCH_API_TOKENS": f"kiosk-dev:camera@kiosk-1:{'k' * 20},lobby:camera:{'l' * 20}"}
    t = TokenTable.from_config(cfg, env)
    may = {
        tok: sorted(c for c in ("gate-1", "door-1", "door-2", "kiosk-1", "lobby")
                    if t.lookup(tok * 20).may_push(c))
        for tok in "gdakl"
    }  # fmt: skip
    assert may == {
        "g": ["gate-1"],  # named like its camera
        "d": ["door-1", "door-2"],
        "a": ["door-1", "door-2", "gate-1", "kiosk-1", "lobby"],  # admin: any camera
        "k": ["kiosk-1"],
        "l": ["lobby"],
    }
    with pytest.raises(ValueError, match="only a token of role 'camera'"):
        ApiConfig(tokens=[{"name": "x", "role": "admin", "sha256": "0" * 64, "cameras": ["c"]}])
    with pytest.raises(TokenConfigError, match="only role camera takes"):
        parse_env_tokens(f"x:admin@c1:{'x' * 20}")


def test_tokens_from_config_and_environment_are_held_hashed():
    cfg = ApiConfig(tokens=[{"name": "a", "role": "admin", "sha256": hash_token("x" * 20)}])
    t = TokenTable.from_config(cfg, {"FACEWATCH_API_TOKENS": "b:operator:" + "y" * 20})
    assert t.lookup("x" * 20) == Principal("a", "admin")
    assert t.lookup("y" * 20) == Principal("b", "operator")
    assert "y" * 20 not in repr(t.__dict__)


# -- camera specs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, problem",
    [
        ({"id": "bad id", "url": "push"}, "id"),
        ({"id": "c1", "url": "ftp://x/y"}, "unsupported URL scheme"),
        ({"id": "c1", "url": "rtsp:///nohost"}, "no host"),
        ({"id": "c1", "url": "http://h:99999/x"}, "invalid port"),
        ({"id": "c1", "url": "/no/such/video.mp4"}, "no such video file"),
        ({"id": "c1", "url": "push", "fps": 0}, "fps"),
        ({"id": "c1", "url": "push", "colour": "red"}, "colour"),
        ({"id": "c\x1b[2J", "url": "push"}, "id"),
        ({"id": "c1", "url": "push", "list": "watch\x1b[2J"}, "control or bidirectional"),
        ({"id": "c1", "url": "push", "list": "watch\u202eexe.gnp"}, "U\\+202E at position 6"),
    ],
)
def test_bad_camera_specs(data, problem):
    with pytest.raises(CameraError, match=problem):
        parse_spec(data)


def test_stream_passwords_are_redacted():
    assert redact_url("rtsp://u:secret@10.0.0.1:554/s") == "rtsp://u:***@10.0.0.1:554/s"


SECRETS_ENV = {"CAM1_PASSWORD": "RealPw123", "FACEWATCH_API_TOKENS": "a:admin:" + "t" * 20}


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example/cb?t=${FACEWATCH_API_TOKENS}",
        "rtsp://viewer:${FACEWATCH_API_TOKENS}@10.0.0.1/s",  # not a CAM variable
        "rtsp://viewer:${cam1_password}@10.0.0.1/s",
        "rtsp://viewer:${CAM1_PASSWORD}@${CAM1_PASSWORD}/s",  # host
        "rtsp://viewer:${CAM1_PASSWORD}@10.0.0.1/${CAM1_PASSWORD}",  # path
        "https://10.0.0.1/live.m3u8#${CAM1_PASSWORD}",
        "/srv/videos/${CAM1_PASSWORD}.mp4",
    ],
)
def test_environment_references_only_in_the_userinfo_and_only_cam_variables(url):
    with pytest.raises(CameraError, match=r"user:password part .* must start with CAM") as err:
        parse_spec({"id": "c1", "url": url})
    assert err.value.http_status == 422
    with pytest.raises(CameraError, match="must start with CAM"):  # and never at connect time
        expand_secrets(url, SECRETS_ENV)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://viewer:RealPw123@10.0.0.1/s",
        "rtsps://viewer:RealPw123${CAM1_PASSWORD}@10.0.0.1/s",  # a reference plus a literal
        "http://viewer:RealPw123@127.0.0.1:8080/x.ts",
        "https://:RealPw123@cams.example/live.m3u8",
    ],
)
def test_literal_stream_passwords_are_refused_everywhere(tmp_path, url):
    """Through the spec (API and CLI), the cameras file, and at connect time (a camera
    stored before the rule): refused, and the message never shows the password."""
    with pytest.raises(CameraError, match="literal password") as err:
        parse_spec({"id": "c1", "url": url})
    assert err.value.http_status == 422 and "RealPw123" not in str(err.value)
    cams = tmp_path / "cams.yaml"
    cams.write_text(f"cameras:\n  - id: c1\n    url: '{url}'\n")
    with pytest.raises(CameraError, match="literal password") as err:
        load_cameras_file(cams)
    assert "RealPw123" not in str(err.value)
    with pytest.raises(CameraError, match="literal password"):
        expand_secrets(url, SECRETS_ENV)
    # a user name alone, or no userinfo, is fine
    assert parse_spec({"id": "c2", "url": "rtsp://viewer@10.0.0.1/s"}).url.startswith("rtsp")


def test_a_literal_password_from_the_cli_is_refused_and_nothing_is_stored(tmp_path):
    import subprocess
    import sys

    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "camera", "add", "c1"]
    out = subprocess.run(
        [*cmd, "rtsp://viewer:RealPw123@10.0.0.1/s"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "literal password" in out.stderr, out.stderr
    assert "RealPw123" not in out.stdout + out.stderr
    db = home / "catalog.sqlite"
    assert not db.exists() or b"RealPw123" not in db.read_bytes()


def test_cam_variables_in_the_userinfo_are_expanded_when_connecting():
    spec = parse_spec({"id": "c1", "url": "rtsp://viewer:${CAM1_PASSWORD}@10.0.0.1:554/s"})
    assert expand_secrets(spec.url, SECRETS_ENV) == "rtsp://viewer:RealPw123@10.0.0.1:554/s"
    assert spec.public()["url"] == "rtsp://viewer:***@10.0.0.1:554/s"
    both = parse_spec({"id": "c2", "url": "rtsps://${CAMERA_U}:${CAMERA_PW}@lobby.example/l"})
    assert expand_secrets(both.url, {"CAMERA_U": "u", "CAMERA_PW": "p"}) == (
        "rtsps://u:p@lobby.example/l"
    )


def test_api_file_cameras_are_confined_to_the_allowed_folders(tmp_path):
    root, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "drill.mp4").write_bytes(b"video")
    (elsewhere / "other.mp4").write_bytes(b"video")
    (root / "escape.mp4").symlink_to(elsewhere / "other.mp4")
    (root / "system").symlink_to("/etc")
    roots = [root]
    ok = parse_spec({"id": "c1", "url": str(root / "drill.mp4")}, file_roots=roots)
    assert ok.url == str((root / "drill.mp4").resolve())
    outside = [
        "/etc/passwd",  # exists
        "/nope/x.mp4",  # does not
        str(elsewhere / "other.mp4"),
        str(elsewhere / "missing.mp4"),
        str(root / "escape.mp4"),  # a symlink out
        str(root / "system" / "passwd"),
        str(root / "system" / "missing.mp4"),
        f"{root}/../elsewhere/other.mp4",
        f"file://{root}/../elsewhere/other.mp4",
    ]
    messages = set()
    for url in outside:
        with pytest.raises(CameraError, match="no such video file in the folders") as err:
            parse_spec({"id": "c1", "url": url}, file_roots=roots)
        messages.add(str(err.value))
    assert len(messages) == 1  # the same answer whether or not the file exists
    (message,) = messages
    assert "FACEWATCH_CAMERA_FILE_ROOTS" in message
    assert not any(word in message for word in ("passwd", "nope", "other", "missing"))
    with pytest.raises(CameraError, match="no such video file: .*missing.mp4"):
        parse_spec({"id": "c1", "url": str(root / "missing.mp4")}, file_roots=roots)
    (root / "loop.mp4").symlink_to(root / "loop.mp4")  # a loop: refused, not a RuntimeError
    with pytest.raises(CameraError, match="no such video file"):
        parse_spec({"id": "c1", "url": str(root / "loop.mp4")}, file_roots=roots)


def test_camera_file_roots_are_the_home_videos_and_the_environment(tmp_path):
    env = {"FACEWATCH_CAMERA_FILE_ROOTS": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"}
    home = tmp_path / "home"
    assert camera_file_roots(home, env) == [home / "videos", tmp_path / "a", tmp_path / "b"]
    assert camera_file_roots(home, {}) == [home / "videos"]


def test_example_cameras_file_parses(monkeypatch):
    monkeypatch.chdir(ROOT)
    specs = load_cameras_file(ROOT / "conf" / "cameras.example.yaml")
    assert [s.kind for s in specs] == ["stream", "stream", "file", "push"]


# -- Serve config and Ray token auth --------------------------------------------------------
def test_serve_yaml_names_the_typed_builder_and_loopback():
    sf = read_serve_file(ROOT / "conf" / "serve.yaml")
    assert (sf.host, sf.port, sf.app_name) == ("127.0.0.1", 8000, "facewatch")
    assert sf.overrides["LiveHub"]["num_replicas"] == 1
    assert "FacePool" in sf.overrides


def test_serve_own_routes_are_closed_by_the_proxy_middleware():
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from serve.local import hide_serve_routes
    from serve.proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV, proxy_middlewares

    async def anything(request):
        return PlainTextResponse("app")

    inner = Starlette(routes=[Route("/{p:path}", anything)])
    (middleware,) = proxy_middlewares()
    app = middleware.cls(inner, *middleware.args, **middleware.kwargs)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as c:
            return await c.get(path)

    assert [asyncio.run(get(p)).status_code for p in ("/-/routes", "/-/healthz")] == [404, 404]
    assert asyncio.run(get("/v1/alerts")).text == "app"
    env: dict[str, str] = {}
    hide_serve_routes(env)
    assert env == {PROXY_CALLBACK_ENV: PROXY_CALLBACK}
    env = {PROXY_CALLBACK_ENV: "mine:callback"}
    hide_serve_routes(env)  # the user's choice is kept (with a warning)
    assert env == {PROXY_CALLBACK_ENV: "mine:callback"}


@pytest.mark.integration  # a subprocess importing Ray Serve
def test_importing_the_app_builder_loads_nothing():
    import subprocess
    import sys

    code = (
        "import sys, serve.app; "
        "print(any(m in sys.modules for m in ('facenet_pytorch', 'pymilvus', 'milvus_lite')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr[-1000:]


def test_ray_token_is_private_to_the_home(tmp_path):
    env: dict[str, str] = {}
    how = ray_token_auth(tmp_path, env)
    path = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert env["RAY_AUTH_MODE"] == "token" and path.is_relative_to(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(path.read_text()) == 64
    assert path.read_text() not in how
    again: dict[str, str] = {}
    ray_token_auth(tmp_path, again)
    assert Path(again["RAY_AUTH_TOKEN_PATH"]).read_text() == path.read_text()  # reused


@pytest.mark.parametrize(
    "env, expect",
    [
        ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "disabled"}),
        ({"RAY_AUTH_TOKEN": "t" * 32}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t" * 32}),
    ],
)
def test_ray_token_auth_respects_an_explicit_choice(tmp_path, env, expect):
    ray_token_auth(tmp_path, env)
    assert env == expect and not (tmp_path / "ray").exists()


def test_free_port_is_outside_the_ports_the_kernel_and_ray_hand_out(tmp_path, monkeypatch):
    import socket

    from serve import local

    low = local.ephemeral_port_low()
    ports = [local.free_port() for _ in range(20)]
    assert len(set(ports)) == 20  # never the same one twice
    if low - local.RAY_WORKER_PORTS[1] > 1000:  # Linux's default range: 32768-60999
        assert all(local.RAY_WORKER_PORTS[1] < p < low for p in ports), (ports, low)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # free indeed
    no_range = tmp_path / "range"
    no_range.write_text("1024 65000\n")
    assert local.ephemeral_port_low(str(no_range)) == 1024  # no gap: the kernel picks
    assert local.ephemeral_port_low(str(tmp_path / "missing")) == 0
    monkeypatch.setattr(local, "ephemeral_port_low", lambda: 1024)
    assert local.free_port() >= 1024  # no gap: a port the kernel chose


def test_serve_proxy_gets_time_to_start_on_a_busy_machine_unless_the_user_chose():
    from serve.local import PROXY_READY_ENV, patient_proxy_start

    env: dict[str, str] = {}
    patient_proxy_start(env)
    assert float(env[PROXY_READY_ENV]) >= 30  # Serve's own: 5 s a check, 3 checks
    env = {PROXY_READY_ENV: "7"}
    patient_proxy_start(env)
    assert env == {PROXY_READY_ENV: "7"}


def bound_chain(app) -> list:
    """Api -> LiveHub -> FacePool as bound: each deployment's name, replicas, actor options
    and init args. Ray Serve has no public reader of a built app; ``_bound_deployment`` is
    the attribute its own build step reads."""
    chain = []
    while app is not None:
        d = app._bound_deployment
        chain.append(d)
        app = next((a for a in d.init_args if hasattr(a, "_bound_deployment")), None)
    return chain


def test_the_builder_binds_the_three_deployments_without_ray(tmp_path):
    from serve.app import build_app

    args = read_serve_file(ROOT / "conf" / "serve.yaml").args
    args = args.model_copy(update={"settings": {"home": str(tmp_path)}})
    api, hub, pool = bound_chain(build_app(args))
    assert [d.name for d in (api, hub, pool)] == ["Api", "LiveHub", "FacePool"]
    assert (api.num_replicas, hub.num_replicas, pool.num_replicas) == (1, 1, 2)
    # the stateful deployments on the home node (placement.home), as `serve deploy` places them
    home = {"num_cpus": 0.1, "resources": {"facewatch_home": 0.01}}
    from serve.memory_env import hub_process_env, model_process_env

    assert api.ray_actor_options == home
    # the hub, where the embedded store lives, runs Arrow on malloc (serve/memory_env.py)
    assert hub.ray_actor_options == home | {"runtime_env": {"env_vars": hub_process_env()}}

    preload = model_process_env()  # jemalloc where installed (serve/memory_env.py)
    assert pool.ray_actor_options == {  # pool.* defaults, placed on pool nodes
        "num_cpus": 1.0,
        "num_gpus": 0.0,
        "resources": {"facewatch_pool": 0.01},
    } | ({"runtime_env": {"env_vars": preload}} if preload else {})
    # every deployment gets the same settings, with the home made absolute
    assert api.init_args[0]["home"] == hub.init_args[0]["home"] == str(tmp_path)
    assert pool.init_args[0] == hub.init_args[0] and hub.init_args[2] == []  # no cameras file
    assert not (tmp_path / "milvus.db").exists()  # building opened no store


def test_a_lost_stream_is_retried_with_backoff_until_stopped():
    from serve.local import free_port
    from serve.sources import StreamReader

    url = f"http://127.0.0.1:{free_port()}/nothing-listens-here.ts"
    reader = StreamReader("c1", url, False, False, 5.0, lambda *a: None, Backoff(0.05, 0.2))
    reader.start()
    reader.join(1.0)  # keeps retrying: still alive
    assert reader.is_alive() and reader.state.state in ("connecting", "reconnecting")
    reader.stop()
    reader.join(5.0)
    assert not reader.is_alive()
    assert reader.state.state == "stopped" and reader.state.reconnects >= 2
    assert reader.state.last_error and not reader.state.connected


def test_error_texts_are_scrubbed_before_they_are_cut():
    url = "rtsp://viewer:RealPw123@10.0.0.1/s"
    text = "x" * 280 + f" Connection refused: '{url}'"
    scrubbed = scrub_secrets(text, url, "rtsp://viewer:***@10.0.0.1/s")
    assert "RealPw" not in scrubbed[:300] and "'rtsp://viewer:***@10.0.0.1/s'" in scrubbed
    # any other URL's password too, a password with an @ in it included
    other = scrub_secrets("see http://u:p@ss@h:8/x and rtsps://:pw@h/y, http://h:8/z")
    assert other == "see http://u:***@h:8/x and rtsps://:***@h/y, http://h:8/z"
    assert scrub_secrets("open rtsp://u:p/ss@h/s failed") == "open rtsp://u:***@h/s failed"


def test_camera_hosts_are_checked_against_the_allowed_networks():
    from pipelines.live.cameras import check_camera_host

    lan = ["10.0.0.0/8", "fd00::/8"]
    assert check_camera_host("rtsp://v:${CAM1_PW}@10.1.2.3/s", lan) == ["10.1.2.3"]
    assert check_camera_host("rtsp://[fd00::5]:8554/s", lan) == ["fd00::5"]
    for url in ("rtsp://v:${CAM1_PW}@192.0.2.7/s", "http://[2001:db8::1]/x.ts"):
        with pytest.raises(CameraError, match="outside live.allowed_camera_networks") as err:
            check_camera_host(url, lan)
        assert err.value.http_status == 422
    # a name is resolved first (localhost: loopback, outside the LAN), and only then refused
    with pytest.raises(CameraError, match=r"localhost \(.*127\.0\.0\.1"):
        check_camera_host("http://localhost:8080/x.ts", lan)
    assert check_camera_host("http://localhost/x", lan, resolve=False) == []  # no lookup
    assert check_camera_host("http://localhost/x", ["0.0.0.0/0", "::/0"]) == []  # any: none
    with pytest.raises(ValueError, match="CIDR"):
        LiveConfig(allowed_camera_networks=["10.0.0.0/33"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_stream_outside_the_allowed_networks_is_never_connected(host):
    """A real CameraRunner and StreamReader, a stream on a loopback port that records any
    connection, and networks that leave loopback out: the reader refuses after resolving
    the host, and nothing connects. The control: with loopback allowed, it connects."""
    import socket

    from pipelines.live.cameras import CameraSpec
    from serve.ingest import CameraRunner

    def attempt(networks: list[str]) -> tuple[bool, str]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))  # localhost's ::1, if tried first, is refused
        listener.listen(4)
        listener.settimeout(3)
        port = listener.getsockname()[1]
        spec = CameraSpec(id="c1", url=f"http://{host}:{port}/x.ts")
        policy = LiveConfig(
            reconnect_initial_s=0.05, reconnect_max_s=0.1, allowed_camera_networks=networks
        )

        async def scenario():
            runner = CameraRunner(spec, policy, analyse=None, sink=None)
            runner.start()
            loop = asyncio.get_running_loop()
            try:
                conn, _ = await loop.run_in_executor(None, listener.accept)
                conn.close()
                connected = True
            except TimeoutError:
                connected = False
            status = runner.status()
            await runner.stop()
            return connected, status["last_error"]

        try:
            return asyncio.run(scenario())
        finally:
            listener.close()

    connected, error = attempt(["10.0.0.0/8"])
    assert not connected
    assert "outside live.allowed_camera_networks" in error and "not connected" in error
    connected, _ = attempt(["127.0.0.0/8", "::1/128", "10.0.0.0/8"])
    assert connected  # the control: the same stream, allowed


@pytest.mark.timeout(30)
def test_a_stream_error_shows_the_redacted_url_not_the_expanded_password(monkeypatch, caplog):
    from pipelines.live.cameras import CameraSpec
    from serve.ingest import CameraRunner
    from serve.local import free_port

    monkeypatch.setenv("CAM_T1_PASSWORD", "RealPw123")
    port = free_port()  # nothing listens: every connect fails with PyAV's error text
    spec = CameraSpec(id="c1", url=f"http://viewer:${{CAM_T1_PASSWORD}}@127.0.0.1:{port}/x.ts")
    policy = LiveConfig(reconnect_initial_s=0.05, reconnect_max_s=0.1)

    async def scenario():
        runner = CameraRunner(spec, policy, analyse=None, sink=None)
        runner.start()
        while runner.status()["reconnects"] < 2:
            await asyncio.sleep(0.05)
        status = runner.status()
        await runner.stop()
        return status

    caplog.set_level(logging.WARNING)
    status = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert status["url"] == f"http://viewer:***@127.0.0.1:{port}/x.ts"
    assert status["url"] in status["last_error"]
    assert "source lost" in caplog.text and status["url"] in caplog.text
    assert "RealPw123" not in status["last_error"] + caplog.text


def test_webhook_urls_are_shown_as_scheme_host_and_port_only():
    from pipelines.config import Settings
    from serve.api import public_config

    url = "https://bot:pw-123@hooks.example.com:8443/services/T0/B0/SECRETPATH?token=SECRETQ"
    shown = public_config(Settings(live={"webhooks": [{"url": url}]}))["live"]["webhooks"]
    assert shown[0]["url"] == "https://hooks.example.com:8443/…"
    assert public_hook_url("http://[::1]/hook?t=x") == "http://[::1]/…"
    assert public_hook_url("http://h:99999/x") == "(invalid URL)"


class NoHub:
    """Fake HubClient for routes that never reach the hub (``/v1/config``): any call fails
    the test; refusals (``notify``) are recorded."""

    def __init__(self):
        self.notified: list[tuple] = []

    async def call(self, method, *args):
        raise AssertionError(f"unexpected hub call {method}")

    def stream(self, method, *args):
        raise AssertionError(f"unexpected hub stream {method}")

    def notify(self, method, *args) -> None:
        self.notified.append((method, *args))


CONFIG_SECRETS = {
    "store_token": "root:MilvusTok-2b",
    "store_password": "MilvusPw-1a",
    "hook_password": "HookPw-3c",
    "hook_path": "SECRETPATH4d",
    "hook_query": "SECRETQ5e",
    "admin_token": "admin-token-0123456789ab",
}


@pytest.mark.timeout(30)
def test_config_shows_no_configured_secret_anywhere():
    """Every secret a configuration can hold is set, then ``GET /v1/config`` is read
    through the real API app: none of them, nor a token hash, appears in the body."""
    import httpx

    from pipelines.config import Settings
    from serve.api import create_app

    s = CONFIG_SECRETS
    settings = Settings(
        store={"uri": f"http://milvus:{s['store_password']}@milvus.internal:19530",
               "token": s["store_token"]},
        live={"webhooks": [{"url": f"https://bot:{s['hook_password']}@hooks.example/"
                                  f"{s['hook_path']}?token={s['hook_query']}"}]},
        api={"tokens": [{"name": "adm", "role": "admin", "sha256": hash_token(s["admin_token"])}]},
    )  # fmt: skip

    async def read_config() -> httpx.Response:
        tokens = TokenTable.from_config(settings.api, {})
        app = create_app(settings, tokens, NoHub())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            return await c.get(
                "/v1/config", headers={"Authorization": f"Bearer {s['admin_token']}"}
            )

    r = asyncio.run(read_config())
    assert r.status_code == 200, r.text
    leaked = [k for k, v in s.items() if v in r.text] + [
        "sha256" for _ in [0] if hash_token(s["admin_token"]) in r.text
    ]
    assert leaked == []
    body = r.json()
    assert body["store"]["token"] == "***"
    assert body["store"]["uri"] == "http://***@milvus.internal:19530"
    assert body["api"]["tokens"] == [{"name": "adm", "role": "admin"}]
    assert body["api"]["tokens_env"] == "FACEWATCH_API_TOKENS"  # a variable name, kept


def test_secret_fields_are_redacted_by_name_and_by_type():
    from pydantic import BaseModel, SecretStr

    from pipelines.config import redacted

    class Later(BaseModel):  # a section a later change might add
        webhook_secret: str = "hmac-Secret-6f"
        api_key: str | None = "key-7g"
        signing: SecretStr = SecretStr("signing-8h")
        proxy: str = "socks5://u:ProxyPw-9i@proxy:1080"
        name: str = "kept"

    shown = redacted(Later())
    assert shown == {
        "webhook_secret": "***",
        "api_key": "***",
        "signing": "***",
        "proxy": "socks5://***@proxy:1080",
        "name": "kept",
    }


@pytest.mark.timeout(30)
def test_webhook_logs_never_show_userinfo_path_or_query(caplog):
    from live_helpers import WebhookReceiver

    from serve.local import free_port

    receiver = WebhookReceiver(fail_first=100)  # answers 500: retried, then given up
    port = receiver.server.server_address[1]
    secret_path = "/services/SECRETPATH?token=SECRETQ"
    refusing = WebhookConfig(url=f"http://bot:pw-123@127.0.0.1:{port}{secret_path}", **FAST)
    closed = WebhookConfig(url=f"http://bot:pw-123@127.0.0.1:{free_port()}{secret_path}", **FAST)

    async def scenario():
        hooks = WebhookDispatcher([refusing, closed])
        got = [await hooks.deliver(h, {"alert": 1}, "a_1") for h in (refusing, closed)]
        await hooks.close()
        return got

    caplog.set_level(logging.INFO)  # httpx's own request lines included
    try:
        assert asyncio.run(scenario()) == [False, False]
    finally:
        receiver.close()
    assert len(receiver.deliveries) == 2
    assert f"HTTP Request: POST http://127.0.0.1:{port}/… " in caplog.text
    assert f"webhook http://127.0.0.1:{port}/…: answered 500" in caplog.text
    assert "ConnectError" in caplog.text and caplog.text.count("gave up") == 2
    assert not any(s in caplog.text for s in ("pw-123", "bot", "SECRETPATH", "SECRETQ"))


FAST = {"max_attempts": 2, "backoff_s": 0.01, "backoff_max_s": 0.01, "timeout_s": 5}


def test_the_builder_takes_serve_deploy_args_as_a_dict_and_checks_them(tmp_path):
    import pydantic

    from serve.app import build_app

    app = build_app({"settings": {"home": str(tmp_path), "pool": {"num_replicas": 3}}})
    api, hub, pool = bound_chain(app)
    assert pool.num_replicas == 3 and hub.init_args[0]["pool"]["num_replicas"] == 3
    assert api.init_args[0]["home"] == str(tmp_path)
    with pytest.raises(pydantic.ValidationError, match="cameras_fil"):
        build_app({"cameras_fil": "typo.yaml"})


# -- review decisions ------------------------------------------------------------------------
class FakeMatchStore:
    """Named fake of the Milvus status write (``AlertRecorder.set_status``): slow enough that
    two reviewers overlap, and able to fail."""

    def __init__(self, fail: BaseException | None = None):
        self.status: dict[str, str] = {}
        self.fail = fail

    def set_status(self, alert_id: str, status: str) -> None:
        import time

        time.sleep(0.05)
        if self.fail is not None:
            raise self.fail
        self.status[alert_id] = status


def review_book(tmp_path):
    from pipelines.live.review_book import ReviewBook

    book = ReviewBook(Catalog(tmp_path / "reviews.sqlite"))
    record = {"alert_id": "a1", "camera_id": "cam", "list_name": "l", "person_id": "p"}
    book.add({**record, "alerted_at": 1.0})
    return book


def test_two_reviewers_at_once_one_wins_and_milvus_agrees_with_the_book(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.live.review_book import ReviewError, adjudicate

    book, store = review_book(tmp_path), FakeMatchStore()

    def review(who_outcome):
        who, outcome = who_outcome
        try:
            return adjudicate(book, store.set_status, "a1", outcome, "", who)["status"]
        except ReviewError as exc:
            return exc.http_status

    with ThreadPoolExecutor(2) as ex:
        got = list(ex.map(review, [("alice", "confirmed"), ("bob", "rejected")]))
    assert sorted(map(str, got)) in (["409", "confirmed"], ["409", "rejected"])
    assert store.status == {"a1": book.get("a1")["status"]}


@pytest.mark.parametrize(
    ("fail", "status"), [(RuntimeError("milvus down"), 503), (KeyError("a1"), 404)]
)
def test_a_decision_milvus_cannot_take_leaves_the_alert_pending(tmp_path, fail, status):
    from pipelines.live.review_book import ReviewError, adjudicate

    book, store = review_book(tmp_path), FakeMatchStore(fail)
    with pytest.raises(ReviewError) as err:
        adjudicate(book, store.set_status, "a1", "confirmed", "sure", "alice")
    assert err.value.http_status == status
    assert book.get("a1")["status"] == "pending" and book.get("a1")["decided_by"] is None
    store.fail = None  # and once Milvus is back, the same decision goes through
    assert (
        adjudicate(book, store.set_status, "a1", "confirmed", "", "alice")["status"] == "confirmed"
    )


def test_refused_requests_are_audited_once_per_client_and_reason_per_window():
    from serve.auth import FailureThrottle

    now = [0.0]
    throttle = FailureThrottle(window_s=60.0, max_keys=2, clock=lambda: now[0])
    assert throttle.admit("10.0.0.9", "missing token") == 0  # the first: written at once
    assert [throttle.admit("10.0.0.9", "missing token") for _ in range(50)] == [None] * 50
    assert throttle.admit("10.0.0.9", "unknown token") == 0  # another reason: its own record
    now[0] = 61.0
    assert throttle.admit("10.0.0.9", "missing token") == 50  # the next, with the count
    assert throttle.admit("10.0.0.7", "missing token") == 0  # a third client: oldest forgotten
    assert len(throttle._seen) == 2
    # a flood that stops is still counted: upkeep writes what the window left out
    assert [throttle.admit("10.0.0.7", "missing token") for _ in range(3)] == [None] * 3
    assert throttle.due() == []  # the window is still open
    now[0] = 125.0
    assert throttle.due() == [("10.0.0.7", "missing token", 3, "anonymous")]
    assert throttle.due() == []
    # a 403 is throttled per token: another token from the same client gets its own record
    assert throttle.admit("10.0.0.7", "role", "officer-1") == 0
    assert throttle.admit("10.0.0.7", "role", "officer-2") == 0
