"""The driver of the cluster integration test (tests/cluster/test_cluster_scenario.py).

It runs inside the test cluster's network namespace (jobs/cluster.py), as a data engineer's
driver on the head would: it enrols a watch list into the Milvus server, deploys the
facewatch app from conf/serve.yaml onto the cluster (placement as configured there), adds
one push camera, and then at the same time pushes a clip to that camera and runs an
archive search of the same clip with the real CLI. Afterwards it reads, through
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jobs.cluster_status import node_rows, replica_rows, task_nodes  # noqa: E402
from pipelines.video import video_jpegs  # noqa: E402
from serve.auth import hash_token  # noqa: E402

TOKENS = {
    "admin-1": ("admin", "admin-token-0123456789abcdef"),
    "device-1": ("camera", "camera-token-0123456789abcd"),
}
ADMIN, CAM = (f"Bearer {t}" for _, t in TOKENS.values())
CLIP = "video/short_hamilton_clip.mp4"
FRAME_EVERY = 6  # about 5 fps of video
PORT = 8000  # the namespace's own loopback: nothing else listens there


def cli(home: Path, uri: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "--store", uri, *args]
    env = {**os.environ, "FACEWATCH_USER": "cluster-test"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def deploy(home: Path, uri: str) -> None:
    from ray import serve as ray_serve

    from serve.app import BuildArgs, build_settings, compose
    from serve.local import read_serve_file

    sf = read_serve_file(ROOT / "conf" / "serve.yaml")
    tokens = [{"name": n, "role": r, "sha256": hash_token(t)} for n, (r, t) in TOKENS.items()]
    tokens[1]["cameras"] = ["cam-lin"]
    overrides = {"home": str(home), "store": {"uri": uri}, "api": {"tokens": tokens}}
    settings = build_settings(BuildArgs(settings=overrides))
    # a search run before (tests/cluster/test_cluster_files.py) may have started Serve
    # without an HTTP proxy for its pool; Serve keeps its first options, so start afresh
    ray_serve.shutdown()
    ray_serve.start(http_options={"host": "127.0.0.1", "port": PORT}, proxy_location="HeadOnly")
    ray_serve.run(compose(settings, sf.overrides), name=sf.app_name, route_prefix="/")


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
    photo = str(data / "known/lin-manuel-miranda.png")
    enrol = cli(home, uri, "watchlist", "add", "Lin-Manuel Miranda", photo, "--list", "watch")
    assert enrol.returncode == 0, enrol.stderr[-2000:]
    deploy(home, uri)
    base = f"http://127.0.0.1:{PORT}"
    cam = {"id": "cam-lin", "url": "push", "fps": 30, "list": "watch"}
    r = httpx.post(f"{base}/v1/cameras", json=cam, headers={"Authorization": ADMIN}, timeout=60)
    assert r.status_code == 201, r.text
    frames = video_jpegs(data / CLIP, FRAME_EVERY)
    search = ["search", str(data / CLIP), "--list", "watch", "--case", "CL-1"]
    search += ["--reason", "cluster test", "--out", str(out), "--json"]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        live = ex.submit(push, base, frames)
        found = ex.submit(cli, home, uri, *search)
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
        "replicas": replica_rows(),
        "decode_nodes": task_nodes("decode_segment"),
        "matches": milvus_matches(uri),
        "verify_rc": verify.returncode,
        "verify_out": (verify.stdout + verify.stderr)[-1000:],
    }


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    print("RESULT " + json.dumps(result), flush=True)
