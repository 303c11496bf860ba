"""The driver of the cluster integration test (tests/cluster/test_cluster_scenario.py).

The test first does what a data engineer does from the machine (``write_configs``, then
``facewatch cluster run -- watchlist add ...`` and ``facewatch cluster exec -- serve deploy``
with a copy of conf/serve.yaml whose only change is ``args.config``). This driver then runs
inside the test cluster's network namespace (jobs/cluster.py), as on a head node: it waits
for the deployed app, checks that it answers an authenticated request (and refuses one
without a token), adds one push camera, and at the same time pushes a clip to that camera
and runs an archive search of the same clip with the real CLI. Afterwards it reads, through
``ray.util.state``, where every replica and decode task ran, the matches in the Milvus
server, and ``audit verify``; it prints one JSON line for the test to judge.

    python tests/cluster/scenario.py HOME MILVUS_URI DATA OUT
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jobs.cluster_status import node_rows, replica_rows, search_rows, task_nodes  # noqa: E402
from pipelines.video import video_jpegs  # noqa: E402
from serve.auth import hash_token  # noqa: E402

TOKENS = {
    "admin-1": ("admin", "admin-token-0123456789abcdef"),
    "device-1": ("camera", "camera-token-0123456789abcd"),
}
ADMIN, CAM = (f"Bearer {t}" for _, t in TOKENS.values())
CLIP = "video/short_hamilton_clip.mp4"
FRAME_EVERY = 6  # about 5 fps of video
PORT = 8000  # conf/serve.yaml's; the namespace's own loopback: nothing else listens there


def cli(home: Path, uri: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "--store", uri, *args]
    env = {**os.environ, "FACEWATCH_USER": "cluster-test"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def write_configs(home: Path, uri: str, where: Path) -> tuple[Path, Path]:
    """A facewatch config (home, Milvus server, tokens) and conf/serve.yaml with only its
    ``args.config`` pointed at it, as a data engineer would write them for a cluster."""
    import yaml

    tokens = [{"name": n, "role": r, "sha256": hash_token(t)} for n, (r, t) in TOKENS.items()]
    tokens[1]["cameras"] = ["cam-lin"]
    config = where / "facewatch.yaml"
    settings = {"home": str(home), "store": {"uri": uri}, "api": {"tokens": tokens}}
    config.write_text(yaml.safe_dump(settings))
    serve_file = yaml.safe_load((ROOT / "conf" / "serve.yaml").read_text())
    (app,) = serve_file["applications"]
    app["args"]["config"] = str(config)
    served = where / "serve.yaml"
    served.write_text(yaml.safe_dump(serve_file))
    return config, served


def wait_deployed(base: str, timeout_s: float = 300) -> dict:
    """Wait for `serve deploy`'s app; then one request with the admin token, one without."""
    from ray import serve as ray_serve

    deadline = time.monotonic() + timeout_s
    status = "absent"
    while time.monotonic() < deadline:
        app = ray_serve.status().applications.get("facewatch")
        status = str(getattr(app.status, "value", app.status)) if app else "absent"
        if status in ("RUNNING", "DEPLOY_FAILED"):
            break
        time.sleep(1)
    authed = httpx.get(f"{base}/v1/cameras", headers={"Authorization": ADMIN}, timeout=60)
    anonymous = httpx.get(f"{base}/v1/cameras", timeout=60)
    return {"app_status": status, "authed": authed.status_code, "anon": anonymous.status_code}


def push(base: str, frames: list[bytes]) -> list[dict]:
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": CAM}, timeout=120) as c:
        for jpeg in frames:
            r = c.post(
                "/v1/cameras/cam-lin/frames?wait=true",
                content=jpeg,
                headers={"Content-Type": "image/jpeg"},
            )
            r.raise_for_status()
            out.append(r.json())
    return out


def searches_seen(search: concurrent.futures.Future) -> int:
    """The most searches in progress that `facewatch cluster status` would show, polled
    while the search runs."""
    most = 0
    while not search.done():
        most = max(most, len(search_rows()))
        time.sleep(1)
    return most


def milvus_matches(uri: str) -> list[dict]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    rows = client.query(
        "fw_matches", filter='id != ""', output_fields=["id", "source"], consistency_level="Strong"
    )
    client.close()
    return [{"id": r["id"], "source": r["source"]} for r in rows]


def main(home: Path, uri: str, data: Path, out: Path) -> dict:
    import ray

    ray.init(address=os.environ["FACEWATCH_RAY_ADDRESS"], log_to_driver=False)
    base = f"http://127.0.0.1:{PORT}"
    deployed = wait_deployed(base)
    placed = replica_rows()  # as `serve deploy` placed them, before anything else runs
    cam = {"id": "cam-lin", "url": "push", "fps": 30, "list": "watch"}
    r = httpx.post(f"{base}/v1/cameras", json=cam, headers={"Authorization": ADMIN}, timeout=60)
    assert r.status_code == 201, r.text
    frames = video_jpegs(data / CLIP, FRAME_EVERY)
    search = ["search", str(data / CLIP), "--list", "watch", "--case", "CL-1"]
    search += ["--reason", "cluster test", "--out", str(out), "--json"]
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        live = ex.submit(push, base, frames)
        found = ex.submit(cli, home, uri, *search)
        watched = ex.submit(searches_seen, found)
        pushed, searched = live.result(), found.result()
    verify = cli(home, uri, "audit", "verify")
    return {
        "alerts": sum(len(p["alerts"]) for p in pushed),
        "analysed": sum(p["status"] == "analysed" for p in pushed),
        "frames": len(frames),
        "search_rc": searched.returncode,
        "search_err": searched.stderr[-2000:],
        "sightings": [json.loads(x) for x in searched.stdout.splitlines() if x.startswith("{")],
        "nodes": node_rows(),
        "deployed": deployed,
        "searches_seen": watched.result(),
        "replicas": placed,
        "decode_nodes": task_nodes("decode_segment"),
        "matches": milvus_matches(uri),
        "verify_rc": verify.returncode,
        "verify_out": (verify.stdout + verify.stderr)[-1000:],
    }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    print("RESULT " + json.dumps(result), flush=True)
