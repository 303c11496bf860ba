"""The fleet gives each camera its list: the live list, or the frozen snapshot of the running
deployment that holds the camera. No Ray, no models: the gallery loader is a recording fake
(named so), and cameras are push cameras (no reader thread).

Cameras that cannot start, and pushers waiting on a camera that stops, go through the real
API app and the hub's own camera methods on a ``HubShell`` (a named fake of the rest of the
hub: the real LiveHub needs milvus-lite and a model pool), so each race is set up exactly
and runs in milliseconds. The same races run on the real LiveHub, with milvus-lite and the
real FacePool, in tests/serve/test_live_server.py (``test_pushers_waiting_on_a_camera_
removed_under_them_get_503``, ``test_a_camera_that_cannot_start_is_not_added_...``)."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from pipelines.audit import AuditLog
from pipelines.catalog import Catalog
from pipelines.config import LiveConfig, Settings
from pipelines.live.cameras import CameraError, CameraRegistry, CameraSpec, camera_file_roots
from pipelines.match import Gallery
from pipelines.schemas import EmbedderInfo
from serve.api import create_app
from serve.auth import FailureThrottle, TokenTable, hash_token
from serve.fleet import Fleet
from serve.hub import LiveHub
from serve.ingest import CameraRunner

INFO = EmbedderInfo("dlib-resnet", "test", 4)


def one_person_gallery(name: str) -> Gallery:
    return Gallery(
        embeddings=np.eye(1, 4, dtype=np.float32),
        entry_ids=[f"e_{name}"],
        person_ids=[f"p_{name}"],
        person_names=[name],
        list_names=["wanted"],
        photos=[""],
        embedder=INFO,
        thresholds=np.array([0.9], np.float32),
    )


class FakeCatalogState:
    """Stands in for the hub: which snapshot each camera's deployment froze, list versions."""

    def __init__(self):
        self.frozen: dict[str, str] = {}
        self.running: list[str] = []
        self.loads: list[tuple] = []

    async def load_gallery(self, list_name, threshold, snapshot_id):
        self.loads.append((list_name, threshold, snapshot_id))
        return one_person_gallery(snapshot_id or "live")

    async def versions(self):
        return {"wanted": (1, None), "running deployments": list(self.running)}

    async def snapshot_for(self, camera_id):
        return self.frozen.get(camera_id)


async def noop_analyse(frame, regions=None):  # never called: no frames are pushed here
    raise AssertionError("no analysis expected")


@pytest.mark.timeout(30)
def test_cameras_in_a_running_deployment_match_its_frozen_snapshot(tmp_path):
    state = FakeCatalogState()
    registry = CameraRegistry(Catalog(tmp_path / "cams.sqlite"))
    specs = [CameraSpec(id=c, url="push", list_name="wanted") for c in ("gate-a", "gate-b")]

    async def scenario():
        fleet = Fleet(
            LiveConfig(), registry, specs, noop_analyse, None,
            state.load_gallery, state.versions, state.snapshot_for,
        )  # fmt: skip
        await fleet.refresh_lists()
        await fleet.reconcile()
        assert all(r.list_info["frozen_snapshot"] is None for r in fleet.runners.values())
        # a deployment starts on gate-a: the versions move, gate-a gets the frozen list
        state.frozen["gate-a"], state.running = "s_frozen", ["d_1"]
        assert await fleet.refresh_lists()
        info = {cid: r.list_info for cid, r in fleet.runners.items()}
        await fleet.stop_all()
        return info

    info = asyncio.run(scenario())
    assert info["gate-a"]["frozen_snapshot"] == "s_frozen"
    assert info["gate-b"]["frozen_snapshot"] is None
    assert ("wanted", None, "s_frozen") in state.loads
    assert ("wanted", None, None) in state.loads


# -- cameras that cannot start, and cameras that stop under a waiting pusher -----------------
ADMIN, CAMERA = "admin-token-0123456789ab", "camera-token-0123456789"
DOOR = "door-camera-token-0123456789"
PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
_HUB = LiveHub.func_or_class  # the hub's class; its methods run unchanged on the shell


class StalledPool:
    """Fake model pool: takes a frame and never answers (a pool call the stop overtakes)."""

    def __init__(self):
        self.called = asyncio.Event()

    async def live(self, frame, regions=None):
        self.called.set()
        await asyncio.Event().wait()


class HubShell:
    """Fake hub: LiveHub's own camera methods, on the parts they use, all real (Fleet,
    CameraRegistry, AuditLog, the decode pool); blocking calls run inline."""

    add_camera, remove_camera = _HUB.add_camera, _HUB.remove_camera
    push_frame, cameras, _decode = _HUB.push_frame, _HUB.cameras, _HUB._decode
    auth_failure = _HUB.auth_failure

    def __init__(self, tmp_path, analyse):
        home = tmp_path / "home"
        self.state = FakeCatalogState()
        self.registry = CameraRegistry(Catalog.open(home))
        self.audit = AuditLog(home / "audit.log")
        self._auth_failures = FailureThrottle()
        self.live = LiveConfig()
        self._cpu_pool = ThreadPoolExecutor(1)
        self.fleet = Fleet(
            LiveConfig(), self.registry, [], analyse, None,
            self.state.load_gallery, self.state.versions, self.state.snapshot_for,
            file_roots=camera_file_roots(home, {}),
        )  # fmt: skip

    async def _ready(self) -> None:
        pass

    async def _io(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


class ShellClient:
    """The API's HubClient over the shell (in-process, as the real one is over Ray)."""

    def __init__(self, shell: HubShell):
        self.shell = shell
        self.notified: list[asyncio.Task] = []  # fire-and-forget, as over Ray

    async def call(self, method, *args):
        return await getattr(self.shell, method)(*args)

    def notify(self, method, *args) -> None:
        self.notified.append(asyncio.ensure_future(getattr(self.shell, method)(*args)))


def api_client(
    shell: HubShell, client: ShellClient | None = None, settings: Settings | None = None
) -> httpx.AsyncClient:
    tokens = TokenTable(
        [
            ("ops", "admin", hash_token(ADMIN)),
            ("cam", "camera", hash_token(CAMERA), ("kiosk",)),  # bound to camera kiosk
            ("door", "camera", hash_token(DOOR)),  # named like its camera: bound to it
        ]
    )
    app = create_app(settings or Settings(), tokens, client or ShellClient(shell))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fw")


def as_admin() -> dict:
    return {"Authorization": f"Bearer {ADMIN}"}


def leftover_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@pytest.mark.timeout(30)
def test_a_camera_that_cannot_start_shows_an_error_and_the_others_start(tmp_path, monkeypatch):
    monkeypatch.delenv("CAM_GATE_PASSWORD", raising=False)
    registry = CameraRegistry(Catalog(tmp_path / "cams.sqlite"))
    gate = "rtsp://viewer:${CAM_GATE_PASSWORD}@192.0.2.1/s"
    for cid, url in (("a-door", "push"), ("b-gate", gate), ("c-kiosk", "push")):
        registry.add(CameraSpec(id=cid, url=url), "admin")
    state = FakeCatalogState()

    async def scenario():
        fleet = Fleet(
            LiveConfig(), registry, [], noop_analyse, None,
            state.load_gallery, state.versions, state.snapshot_for,
        )  # fmt: skip
        await fleet.refresh_lists()
        await fleet.reconcile()
        await fleet.reconcile()  # again: the failed camera is kept, not retried each round
        statuses = {s["id"]: s for s in fleet.statuses()}
        with pytest.raises(CameraError) as refused:
            await fleet.get("b-gate").push(PNG_1x1, None, wait=True)
        await fleet.stop_all()
        return statuses, refused.value.http_status, leftover_tasks()

    statuses, refused, leftover = asyncio.run(scenario())
    assert {c: s["state"] for c, s in statuses.items()} == {
        "a-door": "waiting",
        "b-gate": "error",
        "c-kiosk": "waiting",
    }
    assert "CAM_GATE_PASSWORD" in statuses["b-gate"]["last_error"]
    assert "cannot start" in statuses["b-gate"]["last_error"]
    assert refused == 503 and leftover == []  # the failed camera started no task


@pytest.mark.timeout(30)
def test_a_camera_that_cannot_start_or_reads_outside_the_video_folders_is_not_added(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("CAM_GATE_PASSWORD", raising=False)
    shell = HubShell(tmp_path, noop_analyse)

    async def scenario():
        await shell.fleet.refresh_lists()
        async with api_client(shell) as c:
            add = functools.partial(c.post, "/v1/cameras", headers=as_admin())
            unset = await add(json={"id": "gate", "url": "rtsp://v:${CAM_GATE_PASSWORD}@h/s"})
            leak = await add(json={"id": "cb", "url": "http://evil.example/?t=${CAM_X}"})
            real = await add(json={"id": "f1", "url": "/etc/passwd"})
            fake = await add(json={"id": "f2", "url": "/nope/x.mp4"})
            literal = await add(json={"id": "lit", "url": "rtsp://v:RealPw123@h/s"})
            good = await add(json={"id": "door", "url": "push"})
            listed = (await c.get("/v1/cameras", headers=as_admin())).json()["cameras"]
        await shell.fleet.stop_all()
        return unset, leak, real, fake, literal, good, listed

    unset, leak, real, fake, literal, good, listed = asyncio.run(scenario())
    assert unset.status_code == 422 and "CAM_GATE_PASSWORD" in unset.json()["error"]
    assert leak.status_code == 422 and "must start with CAM" in leak.json()["error"]
    assert real.status_code == fake.status_code == 422
    assert real.json()["error"] == fake.json()["error"]  # no existence oracle
    assert "no such video file in the folders" in real.json()["error"]
    assert literal.status_code == 422 and "literal password" in literal.json()["error"]
    assert "RealPw123" not in literal.text
    assert good.status_code == 201
    assert [c["id"] for c in listed] == ["door"]
    assert [s.id for s in shell.registry.all()] == ["door"]  # nothing refused was stored


@pytest.mark.timeout(30)
def test_a_pusher_waiting_on_a_removed_camera_gets_503(tmp_path):
    pool = StalledPool()
    shell = HubShell(tmp_path, pool.live)

    async def scenario():
        await shell.fleet.refresh_lists()
        async with api_client(shell) as c:
            r = await c.post("/v1/cameras", json={"id": "kiosk", "url": "push"}, headers=as_admin())
            assert r.status_code == 201, r.text
            push = asyncio.ensure_future(
                c.post(
                    "/v1/cameras/kiosk/frames?wait=true",
                    content=PNG_1x1,
                    headers={"Authorization": f"Bearer {CAMERA}", "Content-Type": "image/png"},
                )
            )
            await asyncio.wait_for(pool.called.wait(), 10)  # the frame is at the pool
            removed = await c.delete("/v1/cameras/kiosk", headers=as_admin())
            answer = await asyncio.wait_for(push, 10)
        return removed, answer

    removed, answer = asyncio.run(scenario())
    assert removed.status_code == 200
    assert answer.status_code == 503 and "stopped" in answer.json()["error"]


@pytest.mark.timeout(30)
def test_a_frame_still_decoding_when_its_camera_stops_is_refused(tmp_path):
    """``gated_decode`` is a fake decoder that holds the frame until the camera has stopped."""
    spec = CameraSpec(id="kiosk", url="push")

    async def scenario():
        decoding, release = asyncio.Event(), asyncio.Event()

        async def gated_decode(data: bytes) -> np.ndarray:
            decoding.set()
            await release.wait()
            return np.zeros((4, 4, 3), np.uint8)

        runner = CameraRunner(spec, LiveConfig(), noop_analyse, None)
        runner.start()
        push = asyncio.ensure_future(runner.push(PNG_1x1, gated_decode, wait=True))
        await asyncio.wait_for(decoding.wait(), 5)
        await runner.stop()
        release.set()
        outcomes = []
        for attempt in (push, runner.push(PNG_1x1, gated_decode, wait=False)):
            try:
                await asyncio.wait_for(attempt, 5)
            except CameraError as exc:
                outcomes.append((exc.http_status, str(exc)))
        return outcomes, runner.slot._frame

    outcomes, left_in_slot = asyncio.run(scenario())
    assert [s for s, _ in outcomes] == [503, 503]
    assert all("stopped" in m for _, m in outcomes)
    assert left_in_slot is None  # nothing was put into the stopped camera's slot


@pytest.mark.timeout(30)
def test_a_skipped_frame_is_still_checked():
    """A frame the camera's fps skips is not decoded, but junk behind a JPEG signature is
    still refused: its header is read."""
    from pipelines.images import ImageError

    spec = CameraSpec(id="kiosk", url="push", fps=0.01)  # one frame in 100 s: the rest skip

    async def scenario():
        async def fake_decode(data: bytes) -> np.ndarray:
            """Fake decoder: a black frame for any bytes. The test is about the header check
            on the skip path, which must not depend on decoding (the real decoder would
            refuse the junk itself and hide a missing check)."""
            return np.zeros((4, 4, 3), np.uint8)

        runner = CameraRunner(spec, LiveConfig(), noop_analyse, None)
        runner.start()
        first = await runner.push(PNG_1x1, fake_decode, wait=False)
        skipped = await runner.push(PNG_1x1, fake_decode, wait=False)
        try:
            await runner.push(b"\xff\xd8\xff" + b"junk" * 100, fake_decode, wait=False)
        except ImageError as exc:
            junk = str(exc)
        else:
            junk = ""
        await runner.stop()
        return first["status"], skipped["status"], junk

    first, skipped, junk = asyncio.run(scenario())
    assert (first, skipped) == ("queued", "skipped")
    assert "not a recognised image format" in junk


@pytest.mark.timeout(30)
def test_a_camera_that_could_not_start_is_tried_again(tmp_path, monkeypatch):
    """The cause may pass (here a deployment lookup that fails once): after RETRY_FAILED_S
    (set to 0 here) the next reconcile starts it; before, it stayed in 'error' until restart."""
    import serve.fleet as fleet_mod

    registry = CameraRegistry(Catalog(tmp_path / "cams.sqlite"))
    registry.add(CameraSpec(id="kiosk", url="push"), "admin")
    state, calls = FakeCatalogState(), []

    async def flaky_snapshot_for(camera_id):
        calls.append(camera_id)
        if len(calls) == 1:
            raise RuntimeError("fake: the catalog is locked")
        return None

    async def scenario():
        fleet = Fleet(
            LiveConfig(), registry, [], noop_analyse, None,
            state.load_gallery, state.versions, flaky_snapshot_for,
        )  # fmt: skip
        await fleet.refresh_lists()
        await fleet.reconcile()
        first = fleet.get("kiosk").status()["state"]
        await fleet.reconcile()  # within the retry interval: left as it is
        kept = fleet.get("kiosk").status()["state"]
        monkeypatch.setattr(fleet_mod, "RETRY_FAILED_S", 0.0)
        await fleet.reconcile()
        again = fleet.get("kiosk").status()["state"]
        await fleet.stop_all()
        return first, kept, again

    assert asyncio.run(scenario()) == ("error", "error", "waiting")


def audited_refusals(shell: HubShell) -> list[dict]:
    return [r for r in shell.audit.records() if r["action"] == "auth.failure"]


@pytest.mark.timeout(30)
def test_a_403_is_audited_under_the_token_name_never_its_value(tmp_path):
    shell = HubShell(tmp_path, noop_analyse)
    client = ShellClient(shell)

    async def scenario():
        async with api_client(shell, client) as c:
            as_cam = {"Authorization": f"Bearer {CAMERA}"}
            forbidden = await c.get("/v1/cameras", headers=as_cam)
            unknown = await c.get("/v1/cameras", headers={"Authorization": "Bearer " + "x" * 20})
        await asyncio.gather(*client.notified)
        return forbidden.status_code, unknown.status_code

    assert asyncio.run(scenario()) == (403, 401)
    records = {r["details"]["reason"]: r for r in audited_refusals(shell)}
    assert records["role"]["actor"] == "cam"  # the token's name
    assert records["role"]["details"]["status"] == 403
    assert records["unknown token"]["actor"] == "anonymous"
    assert CAMERA not in (tmp_path / "home" / "audit.log").read_text()


# -- one camera cannot slow the others: bound tokens, pixel limit, per-camera decoding ----------
def push_as(c: httpx.AsyncClient, token: str, camera: str, body: bytes = PNG_1x1):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
    return c.post(f"/v1/cameras/{camera}/frames", content=body, headers=headers)


@pytest.mark.timeout(30)
def test_a_camera_token_pushes_to_its_own_camera_only(tmp_path):
    shell = HubShell(tmp_path, noop_analyse)
    client = ShellClient(shell)

    async def scenario():
        await shell.fleet.refresh_lists()
        async with api_client(shell, client) as c:
            for cid in ("kiosk", "door", "lobby"):
                r = await c.post("/v1/cameras", json={"id": cid, "url": "push"}, headers=as_admin())
                assert r.status_code == 201, r.text
            codes = {
                "cam->kiosk": (await push_as(c, CAMERA, "kiosk")).status_code,
                "cam->door": (await push_as(c, CAMERA, "door")).status_code,
                "door->door": (await push_as(c, DOOR, "door")).status_code,
                "door->kiosk": (await push_as(c, DOOR, "kiosk")).status_code,
                "admin->lobby": (await push_as(c, ADMIN, "lobby")).status_code,
            }
            refused = await push_as(c, CAMERA, "lobby")
        await asyncio.gather(*client.notified)
        await shell.fleet.stop_all()
        return codes, refused

    codes, refused = asyncio.run(scenario())
    assert codes == {
        "cam->kiosk": 202,
        "cam->door": 403,
        "door->door": 202,
        "door->kiosk": 403,
        "admin->lobby": 202,
    }
    assert "may not push frames for camera 'lobby'" in refused.json()["error"]
    records = [r for r in audited_refusals(shell) if r["details"]["reason"] == "camera"]
    assert {r["actor"] for r in records} == {"cam", "door"}  # the token's name, audited
    assert all(r["details"]["status"] == 403 for r in records)
    assert CAMERA not in (tmp_path / "home" / "audit.log").read_text()


def png_of(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, format="PNG")
    return buf.getvalue()


class CountingShell(HubShell):
    """The fake hub, counting the frames that reach the hub's real decoder."""

    decoded = 0

    async def _decode(self, data: bytes) -> np.ndarray:
        self.decoded += 1
        return await _HUB._decode(self, data)


@pytest.mark.timeout(30)
def test_a_frame_over_the_pixel_limit_is_refused_413_before_it_is_decoded(tmp_path):
    shell = CountingShell(tmp_path, noop_analyse)
    big = png_of(3000, 3000)  # 9 MP, a few KB: over the 8 MP default, under the body limit

    async def scenario():
        await shell.fleet.refresh_lists()
        async with api_client(shell) as c:
            r = await c.post("/v1/cameras", json={"id": "kiosk", "url": "push"}, headers=as_admin())
            assert r.status_code == 201, r.text
            refused = await push_as(c, CAMERA, "kiosk", big)
            decoded_after_refusal = shell.decoded
            small = await push_as(c, CAMERA, "kiosk", png_of(64, 48))
        await shell.fleet.stop_all()
        return refused, decoded_after_refusal, small

    refused, decoded_after_refusal, small = asyncio.run(scenario())
    assert refused.status_code == 413
    assert "3000x3000" in refused.json()["error"] and "max_push_pixels" in refused.json()["error"]
    assert decoded_after_refusal == 0  # refused from its header: never decoded
    assert small.status_code == 202
    assert LiveConfig().max_push_pixels == 8_000_000

    async def never_decode(data: bytes) -> np.ndarray:
        raise AssertionError("an over-limit frame must not be decoded")

    async def in_the_hub():  # the hub checks again (a frame that did not come by the API)
        policy = LiveConfig(max_push_pixels=2_000_000)
        runner = CameraRunner(CameraSpec(id="kiosk", url="push"), policy, noop_analyse, None)
        runner.start()
        try:
            await runner.push(png_of(2000, 1001), never_decode, wait=True)
        except CameraError as exc:
            return exc.http_status, str(exc)
        finally:
            await runner.stop()

    status, message = asyncio.run(in_the_hub())
    assert status == 413 and "2000x1001" in message and "max_push_pixels" in message


class CountedBody:
    """A request body sent in chunks, counting the chunks the server has taken."""

    def __init__(self, data: bytes, chunk: int = 16 * 1024):
        self.data, self.chunk, self.taken = data, chunk, 0

    async def __aiter__(self):
        for i in range(0, len(self.data), self.chunk):
            self.taken += 1
            yield self.data[i : i + self.chunk]

    def push(self, c: httpx.AsyncClient, token: str, camera: str):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
        headers["Content-Length"] = str(len(self.data))
        return c.post(f"/v1/cameras/{camera}/frames", content=self, headers=headers)


def png_claiming(width: int, height: int, total: int) -> bytes:
    """A PNG header saying ``width`` x ``height``, padded to ``total`` bytes (the pixels
    are never read: what is refused from the header must not need them)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    head = b"\x89PNG\r\n\x1a\n" + chunk
    return head + struct.pack(">I", total - len(head) - 8) + b"IDAT" + bytes(total - len(head) - 8)


@pytest.mark.timeout(30)
def test_an_oversized_frame_is_refused_from_its_first_bytes_without_reading_the_rest(tmp_path):
    shell = CountingShell(tmp_path, noop_analyse)
    body = CountedBody(png_claiming(6300, 6330, 4 * 1024 * 1024))  # as in the hostile probe

    async def scenario():
        await shell.fleet.refresh_lists()
        async with api_client(shell) as c:
            r = await c.post("/v1/cameras", json={"id": "kiosk", "url": "push"}, headers=as_admin())
            assert r.status_code == 201, r.text
            refused = await body.push(c, CAMERA, "kiosk")
        await shell.fleet.stop_all()
        return refused

    refused = asyncio.run(scenario())
    assert refused.status_code == 413 and "6300x6330" in refused.json()["error"]
    assert body.taken * body.chunk <= 64 * 1024 + body.chunk  # the head only, of 4 MB
    assert shell.decoded == 0


@pytest.mark.timeout(30)
def test_a_camera_over_its_byte_budget_gets_429_unread_and_other_cameras_do_not(tmp_path):
    shell = CountingShell(tmp_path, noop_analyse)
    settings = Settings(live={"max_push_bytes_per_s": 64 * 1024})
    frame = png_claiming(640, 480, 100 * 1024)  # 100 KB: more than a second's budget

    async def scenario():
        await shell.fleet.refresh_lists()
        async with api_client(shell, settings=settings) as c:
            for cid in ("kiosk", "door"):
                r = await c.post("/v1/cameras", json={"id": cid, "url": "push"}, headers=as_admin())
                assert r.status_code == 201, r.text
            first = await CountedBody(frame).push(c, CAMERA, "kiosk")
            second_body = CountedBody(frame)
            second = await second_body.push(c, CAMERA, "kiosk")
            other = await CountedBody(frame).push(c, DOOR, "door")
            received = {
                cid: shell.fleet.get(cid).source.frames_received for cid in ("kiosk", "door")
            }
        await shell.fleet.stop_all()
        return first, second, second_body.taken, other, received

    first, second, taken, other, received = asyncio.run(scenario())
    assert first.status_code == 202  # a full bucket lets any single frame in
    assert second.status_code == 429 and "max_push_bytes_per_s" in second.json()["error"]
    assert int(second.headers["retry-after"]) >= 1 and second.headers["connection"] == "close"
    assert taken == 0  # refused from the headers: the body was never read
    assert other.status_code == 202  # the budget is per camera
    assert received == {"kiosk": 1, "door": 1}  # the refused frame never reached the hub


def test_push_budget_refills_at_its_rate_and_lets_a_frame_in_while_not_in_debt():
    from serve.pushlimit import PushBudget

    now = [0.0]
    budget = PushBudget(100, clock=lambda: now[0])
    assert budget.retry_after_s("a") == 0
    budget.charge("a", 150)  # one frame bigger than the bucket: in, into debt
    assert budget.retry_after_s("a") == pytest.approx(0.5)
    assert budget.retry_after_s("b") == 0  # another camera is not charged
    now[0] = 0.5
    assert budget.retry_after_s("a") == 0
    budget.charge("a", 10)
    now[0] = 100.0  # a long pause refills to one second's worth, no more
    budget.charge("a", 100)
    assert budget.retry_after_s("a") == 0
    budget.charge("a", 1)
    assert budget.retry_after_s("a") == pytest.approx(0.01)
    assert budget.refused == 2


def empty_batch() -> object:
    from pipelines.schemas import FaceBatch, FaceDetections, Quality

    z = np.zeros(0, np.float32)
    quality = Quality(np.zeros(0, bool), np.zeros(0, object), z, z, z, z, z)
    return FaceBatch(FaceDetections.empty(), quality, np.zeros((0, 4), np.float32), INFO, 1)


class HeldDecode:
    """A fake decoder, named as such: a decode that never finishes on its own cannot be
    caused with a real image in a test's time. Each call blocks its decode thread until
    ``release`` is set, as a huge frame would, and counts how many run at once."""

    def __init__(self):
        import threading

        self.release, self.entered = threading.Event(), threading.Event()
        self.in_flight = self.most = 0

    def __call__(self, data: bytes) -> np.ndarray:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.entered.set()
        self.release.wait(30)
        self.in_flight -= 1
        return np.zeros((48, 64, 3), np.uint8)


async def _flood(pool, held: HeldDecode):
    """Camera A: one held decode and 20 more frames; camera B: 5 frames decoded for real on
    the same threads meanwhile. Returns A's and B's answers, and B's status."""
    from pipelines.images import decode_image
    from serve.sources import Pacer

    loop = asyncio.get_running_loop()

    async def held_decode(data: bytes) -> np.ndarray:
        return await loop.run_in_executor(pool, held, data)

    async def real_decode(data: bytes) -> np.ndarray:
        return await loop.run_in_executor(pool, decode_image, data, "frame", 8_000_000)

    async def analyse(frame, regions=None):
        return empty_batch()

    a, b = (
        CameraRunner(CameraSpec(id=c, url="push"), LiveConfig(), analyse, None)
        for c in ("cam-a", "cam-b")
    )
    for runner in (a, b):
        runner.pacer = Pacer(1e6)
        runner.start()
    flood = [asyncio.ensure_future(a.push(PNG_1x1, held_decode, wait=True))]
    await loop.run_in_executor(None, held.entered.wait, 10)  # A's first frame is decoding
    flood += [asyncio.ensure_future(a.push(PNG_1x1, held_decode, wait=True)) for _ in range(20)]
    while len(a._raw) != 1 or a.decode_dropped != 19:  # all 20 queued (no time involved)
        await asyncio.sleep(0)
    b_frames = png_of(64, 48)
    b_out = [await asyncio.wait_for(b.push(b_frames, real_decode, True), 10) for _ in range(5)]
    held.release.set()
    a_out = await asyncio.wait_for(asyncio.gather(*flood), 10)
    b_status = b.status()
    for runner in (a, b):
        await runner.stop()
    return a_out, b_out, b_status


@pytest.mark.timeout(60)
def test_a_flood_on_one_camera_neither_blocks_nor_drops_another_cameras_frames():
    """Camera A floods: its first decode is held (``HeldDecode``); 20 more frames follow.
    Camera B pushes meanwhile, decoded for real on the same two decode threads. A keeps one
    decode in flight and one frame waiting, dropping its own oldest; every B frame is
    analysed. Pacers run at 1 MHz so that no frame is skipped for its fps."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(2)  # the hub's decode threads, shared by every camera
    held = HeldDecode()
    try:
        a_out, b_out, b_status = asyncio.run(_flood(pool, held))
    finally:
        held.release.set()
        pool.shutdown(wait=True)
    assert [o["status"] for o in b_out] == ["analysed"] * 5
    assert b_status["drops"] == 0
    statuses = [o["status"] for o in a_out]
    assert statuses.count("dropped") == 19 and statuses.count("analysed") == 2
    assert all("from this camera" in o["reason"] for o in a_out if o["status"] == "dropped")
    assert held.most == 1  # never more than one of A's frames decoding at once


@pytest.mark.timeout(30)
def test_requests_are_authenticated_before_their_body_is_read(tmp_path):
    """Malformed JSON, an oversized body or an unknown path without a token: 401 (audited),
    not 400, 413 or 404; with a token lacking the role: 403, not 400."""
    shell = HubShell(tmp_path, noop_analyse)
    client = ShellClient(shell)
    junk = {"content": b"{id: ", "headers": {"Content-Type": "application/json"}}

    async def scenario():
        async with api_client(shell, client) as c:
            cams = "/v1/cameras"
            got = {
                "no token, bad JSON": await c.post(cams, **junk),
                "no token, big body": await c.post(cams, content=b"{" + b" " * 100_000 + b"}"),
                "no token, no route": await c.get("/v1/nothing-here"),
                "camera token, bad JSON": await c.post(
                    cams, content=b"{id: ", headers={"Authorization": f"Bearer {CAMERA}"}
                ),
                "admin, bad JSON": await c.post(
                    cams, content=b"{id: ", headers={**as_admin(), **junk["headers"]}
                ),
                "admin, no route": await c.get("/v1/nothing-here", headers=as_admin()),
            }
        await asyncio.gather(*client.notified)
        return {k: (r.status_code, r.headers.get("www-authenticate")) for k, r in got.items()}

    assert asyncio.run(scenario()) == {
        "no token, bad JSON": (401, 'Bearer realm="facewatch"'),
        "no token, big body": (401, 'Bearer realm="facewatch"'),
        "no token, no route": (401, 'Bearer realm="facewatch"'),
        "camera token, bad JSON": (403, None),
        "admin, bad JSON": (400, None),
        "admin, no route": (404, None),
    }
    records = audited_refusals(shell)  # one record per client, reason and actor a minute
    first = {(r["actor"], r["details"]["reason"]): r["details"] for r in records}
    assert first[("anonymous", "missing")]["path"] == "/v1/cameras"
    assert first[("anonymous", "missing")]["method"] == "POST"
    assert first[("cam", "role")]["status"] == 403


def test_a_camera_at_an_address_outside_the_allowed_networks_is_not_added(tmp_path):
    """Checked when the camera is added, for a host written as an address (no DNS lookup
    then; names are resolved and checked before each connection, see test_live_units)."""
    registry = CameraRegistry(Catalog(tmp_path / "cams.sqlite"))
    state = FakeCatalogState()
    policy = LiveConfig(allowed_camera_networks=["10.0.0.0/8"])
    fleet = Fleet(policy, registry, [], noop_analyse, None, state.load_gallery, state.versions)
    with pytest.raises(CameraError, match="outside live.allowed_camera_networks") as err:
        fleet.admit({"id": "gate", "url": "rtsp://v:${CAM_GATE_PW}@192.0.2.7/s"})
    assert err.value.http_status == 422
    assert fleet.admit({"id": "door", "url": "push"}).id == "door"
    assert registry.all() == []
