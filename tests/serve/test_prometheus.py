"""Metrics and status, for real: a local facewatch server (Ray Serve on 127.0.0.1, the
FacePool with MTCNN + dlib-resnet, milvus-lite in tmp) with a file camera playing
short_hamilton_clip.mp4 against a list holding Lin-Manuel Miranda, while an archive search
(the CLI, in its own process, on the server's Ray and pool) searches the same clip and a
damaged file. A real Prometheus scrapes Ray's metrics agent every second.

Everything runs once for the module (about two minutes on two cores); the tests then read
what Prometheus stored, and the server's ``GET /v1/status``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import live_helpers as helpers
import pytest
import yaml
from prometheus_loopback import LoopbackPrometheus, PrometheusUnavailable

from pipelines.status import read_searches
from pipelines.video import probe
from serve.auth import hash_token
from serve.local import METRICS_PORT_ENV, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TOKENS = {
    "ops-1": ("admin", "admin-token-metrics-0123456789"),
    "officer-1": ("operator", "operator-token-metrics-012345"),
    "inv-1": ("investigator", "investigator-token-metrics-01"),
}
ADMIN, OP, INV = (f"Bearer {t}" for _, t in TOKENS.values())
CAMERA, FPS = "cam-door", 5.0
ENV = {METRICS_PORT_ENV: "", "RAY_metrics_report_interval_ms": "1000"}


def start_search(tmp: Path, address: str, clip: Path, data: Path) -> subprocess.Popen:
    """``facewatch search`` by probe photo, on the server's Ray: the clip and a damaged file."""
    videos = tmp / "archive"
    videos.mkdir()
    shutil.copy(clip, videos / "clip.mp4")
    (videos / "damaged.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(tmp / "archive-home"), "search"]
    cmd += [str(videos), "--probe", str(data / "known/lin-manuel-miranda.png")]
    cmd += ["--case", "OPS-1", "--reason", "metrics test", "--out", str(tmp / "out")]
    cmd += ["--ray-address", address, "--json", "--fps", "8"]  # long enough to watch
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEWATCH_USER": "test-investigator"}
    log = open(tmp / "search.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory, data):
    """Run the whole scene once; yield what the tests read."""
    import ray

    from serve.app import BuildArgs
    from serve.local import (
        ServeFile,
        metrics_endpoint,
        refresh_ray_auth_cache,
        start_local,
        stop_local,
    )

    tmp = tmp_path_factory.mktemp("metrics")
    home = tmp / "home"
    helpers.enrol(home, "Lin-Manuel Miranda", data / "known/lin-manuel-miranda.png", "watch")
    clip = data / "video/short_hamilton_clip.mp4"
    (home / "videos").mkdir()
    shutil.copy(clip, home / "videos/door.mp4")
    saved = {k: os.environ.get(k) for k in (*ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    metrics_port, port = free_port(), free_port()
    os.environ.update(ENV | {METRICS_PORT_ENV: str(metrics_port)})
    settings = {
        "home": str(home),
        "live": {"list_refresh_s": 1.0},
        "pool": {"num_replicas": 1},
        "api": {
            "tokens": [
                {"name": n, "role": r, "sha256": hash_token(t)} for n, (r, t) in TOKENS.items()
            ]
        },
    }
    assert not ray.is_initialized(), "this module starts its own Ray"
    sf = ServeFile("127.0.0.1", port, "facewatch", "/", BuildArgs(settings=settings), {})
    try:
        start_local(sf)
        base = f"http://127.0.0.1:{port}"
        with LoopbackPrometheus(tmp / "prom", [f"127.0.0.1:{metrics_port}"], free_port()) as prom:
            scene = run_scene(tmp, base, prom, clip, data, home)
            yield scene | {
                "endpoint": metrics_endpoint(),
                "metrics_port": metrics_port,
                "home": home,
            }
    except PrometheusUnavailable as exc:
        pytest.fail(str(exc))
    finally:
        stop_local(shutdown_ray=True)
        helpers.restore_env(saved)
        refresh_ray_auth_cache()


def run_scene(tmp: Path, base: str, prom, clip: Path, data: Path, home: Path) -> dict:
    import ray

    t0 = time.time()
    search = start_search(tmp, ray.get_runtime_context().gcs_address, clip, data)
    spec = {"id": CAMERA, "url": str(home / "videos/door.mp4"), "fps": FPS, "list": "watch"}
    r = httpx.post(f"{base}/v1/cameras", json=spec | {"loop": False}, headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    progress = []
    while search.poll() is None:  # what `facewatch status` shows while it runs
        progress += read_searches(tmp / "archive-home")
        time.sleep(0.2)
    log = (tmp / "search.log").read_text()
    assert search.returncode == 3, log[-3000:]  # 3: one file could not be searched
    helpers.wait_until(lambda: ended(base), 240, "the camera to play the clip")
    camera = helpers.wait_until(lambda: settled(base, prom), 120, "Prometheus to see every frame")
    alerts = httpx.get(f"{base}/v1/alerts", headers=auth(OP)).json()["alerts"]
    assert len(alerts) == 1, (alerts, camera)
    body = {"outcome": "confirmed", "note": "metrics test"}
    url = f"{base}/v1/alerts/{alerts[0]['alert_id']}/adjudication"
    assert httpx.post(url, json=body, headers=auth(OP)).status_code == 200
    helpers.wait_until(
        lambda: (
            prom.value("sum(ray_facewatch_alerts_adjudicated_total)", wait_s=0) == 1
            and prom.value("sum(ray_facewatch_search_files_total)", wait_s=0) == 2
        ),
        120,
        "the decision and the search's last file",
    )
    time.sleep(3)  # a few more scrapes, so rates over the window have two samples
    return {
        "prom": prom,
        "base": base,
        "camera": camera,
        "progress": progress,
        "duration_s": probe(str(clip)).duration_s,
        "window": (t0, time.time()),
    }


_analysed_seen: list[tuple[float, int]] = []


def settled(base: str, prom) -> dict | None:
    """The ended camera, once its analysed count has not moved for 3 s (frames at the pool
    when the file ended are analysed after) and Prometheus has scraped exactly that."""
    cam = ended(base)
    now = time.monotonic()
    _analysed_seen.append((now, cam["frames_analysed"]))
    before = [n for t, n in _analysed_seen if now - t >= 3.0]
    if not before or before[-1] != cam["frames_analysed"]:
        return None
    series = "sum(ray_facewatch_camera_frames_analysed_total)"
    return cam if prom.value(series, wait_s=0) == cam["frames_analysed"] else None


def auth(header: str) -> dict[str, str]:
    return {"Authorization": header}


def ended(base: str) -> dict | None:
    cams = httpx.get(f"{base}/v1/cameras", headers=auth(ADMIN), timeout=30).json()["cameras"]
    (cam,) = [c for c in cams if c["id"] == CAMERA]
    return cam if cam["state"] == "ended" else None


@pytest.mark.timeout(600)
def test_counters_rose_with_plausible_values(metrics_stack):
    prom, camera = metrics_stack["prom"], metrics_stack["camera"]
    analysed = camera["frames_analysed"]
    expected = FPS * metrics_stack["duration_s"]  # the clip is played once, in real time
    assert prom.value("sum(ray_facewatch_camera_frames_analysed_total)") == analysed
    dropped = prom.value("sum(ray_facewatch_camera_frames_dropped_total)")
    assert dropped == camera["drops"]
    # every frame the camera let through (fps x seconds) was analysed or, when a newer one
    # came first, dropped; on a quiet machine nearly all are analysed, and even on a
    # loaded one (other tests, the search) the pool keeps up with a good share of them
    assert analysed + dropped == pytest.approx(expected, rel=0.25), (analysed, dropped)
    assert analysed >= 0.25 * expected, (analysed, dropped, expected)
    received = prom.value("sum(ray_facewatch_camera_frames_received_total)")
    assert received == camera["frames_received"] >= analysed + dropped  # decoded: 30 fps
    count = "sum(ray_facewatch_frame_to_result_seconds_count)"
    assert prom.value(count) == analysed
    assert prom.value('sum(ray_facewatch_alerts_raised_total{camera="cam-door"})') == 1
    assert prom.value("sum(ray_facewatch_frame_to_alert_seconds_count)") == 1
    assert prom.value('sum(ray_facewatch_alerts_adjudicated_total{outcome="confirmed"})') == 1
    assert prom.value('sum(ray_facewatch_search_files_total{outcome="done"})') == 1
    assert prom.value('sum(ray_facewatch_search_files_total{outcome="failed"})') == 1
    video_s = prom.value("sum(ray_facewatch_search_video_seconds_total)")
    assert video_s == pytest.approx(metrics_stack["duration_s"], abs=0.5)
    assert prom.value('sum(ray_facewatch_faces_detected_total{lane="live"})') > 0
    assert prom.value('sum(ray_facewatch_pool_frames_total{lane="archive"})') > 0
    assert prom.value('sum(ray_facewatch_audit_appends_total{outcome="ok"})') > 0
    assert prom.value('sum(ray_facewatch_audit_appends_total{outcome="failed"})') == 0
    busy = prom.query("max by (replica) (ray_facewatch_pool_busy_fraction)")
    assert len(busy) == 1 and busy[0]["metric"].get("replica"), busy  # Serve's replica id
    assert metrics_stack["endpoint"] == f"http://127.0.0.1:{metrics_stack['metrics_port']}/metrics"


def split_comparison(expr: str) -> str:
    """The signal of an alert rule: the expression left of its last top-level comparison."""
    depth, cut = 0, None
    for i, ch in enumerate(expr):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch in "<>" and expr[i - 1] != "=":
            cut = i
    return expr[:cut].strip() if cut else expr


@pytest.mark.timeout(300)
def test_every_dashboard_and_rule_expression_parses_and_returns_data(metrics_stack):
    """Over the scene's time window, as Grafana asks (a range query); every rule also
    parses whole (promtool checks it too), and its signal has data."""
    prom = metrics_stack["prom"]
    start, end = metrics_stack["window"]
    end = time.time()
    board = (ROOT / "conf/grafana/facewatch.json").read_text()
    exprs = [t["expr"] for p in yaml.safe_load(board)["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((ROOT / "conf/prometheus/facewatch.rules.yml").read_text())
    rule_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    empty = []
    for expr in exprs + [split_comparison(e) for e in rule_exprs]:
        if not prom.query_range(expr, start, end):
            empty.append(expr)
    for expr in rule_exprs:
        prom.query(expr)  # parses and runs
    assert not empty, "no data:\n" + "\n".join(empty)
    assert metrics_stack["camera"]["state"] == "ended"
    down = prom.query("ALERTS{alertname='FacewatchCameraDown'}")
    assert not down, down  # a file read to its end is not a camera down


@pytest.mark.timeout(120)
def test_search_progress_was_readable_while_it_ran(metrics_stack):
    rows = [r for r in metrics_stack["progress"] if r["files_total"]]
    assert rows, "no progress file seen while the search ran"
    assert {r["state"] for r in rows} == {"running"}
    assert all(r["files_total"] == 1 for r in rows)  # the damaged file never started
    assert any(r["eta_s"] is not None and r["frames_done"] > 0 for r in rows), rows
    assert max(r["progress"] for r in rows) <= 1.0


@pytest.mark.timeout(120)
def test_status_route_for_admin_and_operator_only(metrics_stack):
    base = metrics_stack["base"]
    assert httpx.get(f"{base}/v1/status").status_code == 401
    assert httpx.get(f"{base}/v1/status", headers=auth(INV)).status_code == 403
    for who in (ADMIN, OP):
        r = httpx.get(f"{base}/v1/status", headers=auth(who), timeout=30)
        assert r.status_code == 200, r.text
    status = r.json()
    (cam,) = status["cameras"]
    assert cam["id"] == CAMERA and cam["state"] == "ended" and cam["fps"] == FPS
    assert cam["frames_analysed"] == metrics_stack["camera"]["frames_analysed"]
    (replica,) = status["pool"]["replicas"]  # pool.num_replicas: 1
    assert replica["node_ip"] == "127.0.0.1" and replica["node_id"]
    assert 0.0 <= replica["busy_fraction"] <= 1.0 and replica["queue_live"] >= 0
    assert status["store"]["backend"] == "milvus-lite"
    assert status["store"]["rows"]["fw_matches"] >= 1  # the confirmed alert
    assert status["outbox"]["depth"] == 0
    assert status["retention"]["last_run"]["actor"] == "live-hub (schedule)"
    assert status["searches"] == []  # the search ran in another home

    def refused() -> list[dict]:  # audited like every route (serve.api's gate)
        log = (metrics_stack["home"] / "audit.log").read_text().splitlines()
        records = [json.loads(line) for line in log]
        return [r for r in records if r["action"] == "auth.failure"]

    record = helpers.wait_until(
        lambda: [r for r in refused() if r["details"]["path"] == "/v1/status"], 30, "audit"
    )
    assert {(r["actor"], r["details"]["status"]) for r in record} == {
        ("anonymous", 401),
        ("inv-1", 403),
    }


@pytest.mark.timeout(180)
def test_status_cli_through_the_api(metrics_stack):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "jobs.cli", "status", "--api", metrics_stack["base"]]
    out = subprocess.run(
        [*cmd, "--token", TOKENS["officer-1"][1]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stderr
    for title in ("Cameras", "Pool", "Searches in progress", "Store", "Outbox", "Retention"):
        assert title in text, text
    assert re.search(rf"{CAMERA}\s.*ended", text), text
    refused = subprocess.run(
        [*cmd, "--token", TOKENS["inv-1"][1]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr[-2000:]
