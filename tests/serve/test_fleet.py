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
from pipelines.config import LiveConfig, Settings
from pipelines.match import Gallery
from pipelines.schemas import EmbedderInfo
from serve.api import create_app
from serve.auth import TokenTable, hash_token
from serve.cameras import CameraError, CameraRegistry, CameraSpec, camera_file_roots
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


async def noop_analyse(frame):  # never called: no frames are pushed here
    raise AssertionError("no analysis expected")


@pytest.mark.timeout(30)
def test_cameras_in_a_running_deployment_match_its_frozen_snapshot(tmp_path):
    state = FakeCatalogState()
    registry = CameraRegistry(tmp_path / "cams.sqlite")
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
PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
_HUB = LiveHub.func_or_class  # the hub's class; its methods run unchanged on the shell


class StalledPool:
    """Fake model pool: takes a frame and never answers (a pool call the stop overtakes)."""

    def __init__(self):
        self.called = asyncio.Event()

    async def live(self, frame):
        self.called.set()
        await asyncio.Event().wait()


class HubShell:
    """Fake hub: LiveHub's own camera methods, on the parts they use, all real (Fleet,
    CameraRegistry, AuditLog, the decode pool); blocking calls run inline."""

    add_camera, remove_camera = _HUB.add_camera, _HUB.remove_camera
    push_frame, cameras, _decode = _HUB.push_frame, _HUB.cameras, _HUB._decode

    def __init__(self, tmp_path, analyse):
        home = tmp_path / "home"
        self.state = FakeCatalogState()
        self.registry = CameraRegistry(home / "catalog.sqlite")
        self.audit = AuditLog(home / "audit.log")
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

    async def call(self, method, *args):
        return await getattr(self.shell, method)(*args)

    def notify(self, method, *args) -> None:
        pass


def api_client(shell: HubShell) -> httpx.AsyncClient:
    tokens = TokenTable(
        [("ops", "admin", hash_token(ADMIN)), ("cam", "camera", hash_token(CAMERA))]
    )
    app = create_app(Settings(), tokens, ShellClient(shell))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fw")


def as_admin() -> dict:
    return {"Authorization": f"Bearer {ADMIN}"}


def leftover_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@pytest.mark.timeout(30)
def test_a_camera_that_cannot_start_shows_an_error_and_the_others_start(tmp_path, monkeypatch):
    monkeypatch.delenv("CAM_GATE_PASSWORD", raising=False)
    registry = CameraRegistry(tmp_path / "cams.sqlite")
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
        return statuses, refused.value.status, leftover_tasks()

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
            good = await add(json={"id": "door", "url": "push"})
            listed = (await c.get("/v1/cameras", headers=as_admin())).json()["cameras"]
        await shell.fleet.stop_all()
        return unset, leak, real, fake, good, listed

    unset, leak, real, fake, good, listed = asyncio.run(scenario())
    assert unset.status_code == 422 and "CAM_GATE_PASSWORD" in unset.json()["error"]
    assert leak.status_code == 422 and "must start with CAM" in leak.json()["error"]
    assert real.status_code == fake.status_code == 422
    assert real.json()["error"] == fake.json()["error"]  # no existence oracle
    assert "no such video file in the folders" in real.json()["error"]
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
                outcomes.append((exc.status, str(exc)))
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

    registry = CameraRegistry(tmp_path / "cams.sqlite")
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
