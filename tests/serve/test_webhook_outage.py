"""Fault 6 of issue 16: the webhook receiver is down while alerts are raised, and the live
server is restarted before it comes back. Every alert must be delivered after recovery,
once per idempotency key, in order per camera.

Real parts: local Ray Serve on 127.0.0.1 with the facewatch app (MTCNN + dlib-resnet in the
FacePool, milvus-lite and the catalog in tmp_path), real frames of the Hamilton clip pushed
to two cameras over HTTP, and a real HTTP receiver on 127.0.0.1 that is down (its port
held by a socket that does not listen: connection refused, and no process Ray starts
meanwhile can be given the port) and later listens again. The restart is the one `facewatch
serve` does (serve.local.stop_local, then start_local over the same home): Serve, Ray and
every replica go, the new hub finds the pending deliveries in the home's outbox.

The issue's outage is 60 s; here it lasts as long as the alerts, the stop and the start
take (well over a minute on 2 cores), with the retry delays shortened in the hook's config
(backoff 0.2 s, capped at 1 s) so that many attempts fail while it is down.
"""

from __future__ import annotations

import os
import time

import httpx
import live_helpers as helpers
import pytest

from pipelines.video import video_jpegs
from serve.auth import hash_token
from serve.local import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ADMIN_TOKEN, CAMERA_TOKEN = "admin-token-outage-0123456789", "camera-token-outage-0123456789"
OPERATOR_TOKEN = "operator-token-outage-0123456789"
CAMS = ("door-a", "door-b")
FRAME_EVERY = 6  # 29.97 fps -> about 5 fps of video


def _settings(home, receiver_url: str) -> dict:
    return {
        "home": str(home),
        "pool": {"num_replicas": 1},
        "live": {
            "alert_window_s": 0,  # every new track of the person alerts: several per camera
            "track_max_gap_s": 0.5,
            "list_refresh_s": 1.0,
            "webhooks": [{"url": receiver_url, "backoff_s": 0.2, "backoff_max_s": 1.0}],
        },
        "api": {
            "tokens": [
                {"name": "admin-1", "role": "admin", "sha256": hash_token(ADMIN_TOKEN)},
                {"name": "officer-1", "role": "operator", "sha256": hash_token(OPERATOR_TOKEN)},
                {
                    "name": "doors",
                    "role": "camera",
                    "sha256": hash_token(CAMERA_TOKEN),
                    "cameras": list(CAMS),
                },
            ]
        },
    }


class _Server:
    """The facewatch app started and stopped as `facewatch serve` does it."""

    def __init__(self, settings: dict):
        from serve.app import BuildArgs
        from serve.local import ServeFile

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = BuildArgs(settings=settings)
        self.file = ServeFile("127.0.0.1", self.port, "facewatch", "/", args, {})
        self.running = False

    def start(self) -> None:
        from serve.local import start_local

        self.running = True
        start_local(self.file)

    def stop(self) -> None:
        from serve.local import refresh_ray_auth_cache, stop_local

        if self.running:
            self.running = False
            stop_local(shutdown_ray=True)
            refresh_ray_auth_cache()  # a later cluster in this session must not use our token


def _get(base: str, path: str) -> dict:
    r = httpx.get(base + path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _push_passes(base: str, frames: list[bytes], passes: int) -> None:
    """The clip to each camera, ``passes`` times, a pause between passes so each pass is a
    new track (each frame waits for its analysis)."""
    auth = {"Authorization": f"Bearer {CAMERA_TOKEN}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
        for n in range(passes):
            if n:
                time.sleep(1.5)  # longer than track_max_gap_s: the next pass is a new track
            for jpeg in frames:
                for cam in CAMS:
                    helpers.push_frame(c, cam, jpeg)


def _alerts_by_camera(base: str) -> dict[str, list[str]]:
    alerts = _get(base, "/v1/alerts?status=all&limit=500")["alerts"]
    alerts.sort(key=lambda a: (a["alerted_at"], a["alert_id"]))
    out: dict[str, list[str]] = {}
    for a in alerts:
        out.setdefault(a["camera_id"], []).append(a["alert_id"])
    return out


@pytest.mark.timeout(600)
def test_every_alert_is_delivered_after_an_outage_and_a_restart_in_order_once(data, tmp_path):
    import ray

    assert not ray.is_initialized(), "this test starts and stops its own Ray"
    home = tmp_path / "home"
    helpers.enrol(home, "Lin-Manuel Miranda", data / "known/lin-manuel-miranda.png", "watch")
    receiver = helpers.OutageReceiver()
    receiver.down()
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    server = _Server(_settings(home, receiver.url))
    frames = video_jpegs(data / "video/short_hamilton_clip.mp4", FRAME_EVERY)
    try:
        server.start()
        helpers.add_push_cameras(server.base, ADMIN_TOKEN, CAMS, "watch")
        _push_passes(server.base, frames, passes=2)
        raised = _alerts_by_camera(server.base)
        assert all(len(raised.get(cam, [])) >= 2 for cam in CAMS), raised
        hooks = helpers.wait_until(
            lambda: (w := _get(server.base, "/v1/stats")["webhooks"]).get("retries") and w,
            30,
            "failed attempts while the receiver is down",
        )
        n = sum(len(v) for v in raised.values())
        assert hooks["outbox"] == {"pending": n} and hooks["causes"]["ConnectError"] >= 1
        assert receiver.deliveries == []

        server.stop()  # with every delivery still pending
        server.start()
        assert _alerts_by_camera(server.base) == raised  # the alerts were stored
        receiver.up()
        helpers.wait_until(lambda: len(receiver.processed) >= n, 60, "deliveries after recovery")
        after = helpers.wait_until(
            lambda: (
                (w := _get(server.base, "/v1/stats")["webhooks"])["outbox"].get("delivered") == n
                and w
            ),
            30,
            "the outbox to record every delivery",
        )
    finally:
        receiver.close()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert receiver.keys_by_camera() == raised  # every alert, in order per camera
    assert len(receiver.deliveries) == n  # once per idempotency key
    assert after["delivered"] == n and "pending" not in after["outbox"]
