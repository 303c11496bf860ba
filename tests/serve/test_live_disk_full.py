"""Fault 7 of issue 16, for live alerting: the home's disk fills while `facewatch serve`
raises alerts. An alert that cannot be stored must not be listed as stored, the server must
go on (and store the next alert once there is room), and the catalog and the audit log
must stay sound (`facewatch audit verify` passes).

`facewatch serve` runs as the operator runs it, a CLI subprocess, here inside a private
mount namespace (``unshare -m``: root or CAP_SYS_ADMIN, as CI has) whose home is a 64 MiB
tmpfs only it sees; the test fills and empties that tmpfs, and runs the checks, through
``nsenter`` into the same namespace. The frame pushed is Lin-Manuel Miranda's photo: a
pause longer than ``track_max_gap_s`` between bursts makes each burst a new track, and
``alert_window_s`` 0 lets each new track alert. Marked ``faults`` (make test-faults).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import live_helpers as helpers
import pytest

from pipelines.images import encode_jpeg, load_image
from serve.auth import hash_token
from serve.local import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.faults]

ROOT = Path(__file__).resolve().parents[2]
ADMIN, CAMERA, OPERATOR = (
    "admin-token-full-0123456789",
    "camera-token-full-0123456789",
    ("operator-token-full-0123456789"),
)
BURST = 6  # frames per burst: enough for a track to alert (min_track_faces 2)


def _conf(port: int) -> dict:
    tokens = [
        {"name": "admin-1", "role": "admin", "sha256": hash_token(ADMIN)},
        {"name": "officer-1", "role": "operator", "sha256": hash_token(OPERATOR)},
        {"name": "door", "role": "camera", "sha256": hash_token(CAMERA), "cameras": ["door"]},
    ]
    settings = {
        "pool": {"num_replicas": 1},
        "live": {"alert_window_s": 0, "track_max_gap_s": 0.5, "list_refresh_s": 1.0},
        "api": {"tokens": tokens},
    }
    app = {"name": "facewatch", "route_prefix": "/", "import_path": "serve.app:build_app",
           "args": {"settings": settings},
           "deployments": [{"name": "FacePool", "num_replicas": 1,
                            "ray_actor_options": {"num_cpus": 0.9}}]}  # fmt: skip
    return {"http_options": {"host": "127.0.0.1", "port": port}, "applications": [app]}


def _inside(pid: int, argv: list[str]) -> subprocess.CompletedProcess:
    """``argv`` in the server's mount namespace (where its tmpfs home is)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEWATCH_USER": "tester"}
    return subprocess.run(["nsenter", "-t", str(pid), "-m", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _burst(base: str, jpeg: bytes) -> None:
    time.sleep(1.0)  # longer than track_max_gap_s: a new track
    auth = {"Authorization": f"Bearer {CAMERA}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as c:
        for _ in range(BURST):
            helpers.push_frame(c, "door", jpeg)


def _stats(base: str) -> dict:
    r = httpx.get(f"{base}/v1/stats", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert r.status_code == 200, r.text
    return r.json()


def _stored(base: str) -> int:
    r = httpx.get(f"{base}/v1/alerts?status=all", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert r.status_code == 200, r.text
    return len(r.json()["alerts"])


def _start(tmp_path: Path, src: Path, home: Path, port: int):
    conf = tmp_path / "serve.yaml"
    conf.write_text(json.dumps(_conf(port)))  # JSON is YAML
    serve = f"{sys.executable} -m jobs.cli --home {home} serve --config {conf}"
    script = f"mount -t tmpfs -o size=64m,mode=700 tmpfs {home} && cp -a {src}/. {home}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{script} && exec {serve}"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_a_full_disk_during_live_alerting_stores_nothing_half_and_goes_on(data, tmp_path):
    src, home = tmp_path / "home-src", tmp_path / "home"
    home.mkdir()
    helpers.enrol(src, "Lin-Manuel Miranda", data / "known/lin-manuel-miranda.png", "watch")
    jpeg = encode_jpeg(load_image(data / "known/lin-manuel-miranda.png"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, src, home, port)
    lines = helpers.pump_lines(proc)
    try:
        helpers.read_until(lines, "facewatch live server on", 300)
        helpers.add_push_cameras(base, ADMIN, ["door"], "watch")
        _burst(base, jpeg)
        helpers.wait_until(lambda: _stored(base) == 1, 30, "the first alert stored")
        _inside(proc.pid, ["dd", "if=/dev/zero", f"of={home}/filler", "bs=64k"])
        _burst(base, jpeg)  # a new track: its alert cannot be stored
        failed = helpers.wait_until(
            lambda: _stats(base)["alerts_not_stored"], 30, "an alert counted as not stored"
        )
        assert failed == {"disk full": 1}  # counted, by cause
        assert _stored(base) == 1  # nothing listed that is not stored
        assert _inside(proc.pid, ["rm", f"{home}/filler"]).returncode == 0
        _burst(base, jpeg)  # room again: the next track's alert is stored
        helpers.wait_until(lambda: _stored(base) == 2, 30, "an alert stored once there is room")
        verify = _inside(proc.pid, [sys.executable, "-m", "jobs.cli", "--home", str(home),
                                    "audit", "verify"])  # fmt: skip
        check = f"import sqlite3; print(sqlite3.connect('{home}/catalog.sqlite')"
        check += ".execute('PRAGMA integrity_check').fetchone()[0])"
        integrity = _inside(proc.pid, [sys.executable, "-c", check])
        stats_after = _stats(base)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert integrity.stdout.strip() == "ok", integrity
    assert stats_after["alerts_not_stored"] == {"disk full": 1}  # the one, and no other
