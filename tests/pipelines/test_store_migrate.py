"""``facewatch store migrate --to URI``: a milvus-lite store copied to a real Milvus 2.3
server (tests/milvus_loopback.py), every collection, verified by counts and by the rows
themselves; a non-empty destination is refused and nothing is lost; the act is audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.audit import AuditLog
from pipelines.config import Settings
from pipelines.store import FACES, MATCHES, WATCHLIST, VectorStore

ROOT = Path(__file__).resolve().parents[2]
BOX = [10.5, 20.0, 110.25, 140.0]


def _rows(engine, data) -> dict[str, list[dict]]:
    names = ["obama.jpg", "obama2.jpg", "biden.jpg"]
    embs = [f.embedding for f in engine.probe_faces([data / "known" / n for n in names])]
    wl = [
        {"id": f"e-{i}", "embedding": e, "person_id": f"p-{i}", "list_name": "wl"}
        for i, e in enumerate(embs)
    ]
    matches = [
        {"id": "m-1", "embedding": embs[1], "person_id": "p-0", "score": 0.9, "box": BOX},
        {"id": "m-2", "embedding": embs[2], "person_id": "p-2", "score": 0.8, "source": "live"},
    ]
    faces = [{"id": "f-1", "embedding": embs[0], "source_path": "/a/b.mp4", "frame_index": 7}]
    return {WATCHLIST: wl, MATCHES: matches, FACES: faces}


WRITE_LITE = """
import json, sys
from pipelines.config import Settings
from pipelines.schemas import EmbedderInfo
from pipelines.store import VectorStore
home, info, rows = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.stdin.read())
vs = VectorStore.open(Settings(home=home)).bind(EmbedderInfo(**info))
for name, batch in rows.items():
    vs.upsert(name, batch)
"""


def _write_lite(home: Path, engine, rows: dict) -> None:
    """In another process: milvus-lite keeps a database locked to the first process that
    opened it until that process exits."""
    info = {"name": engine.info.name, "version": engine.info.version, "dim": engine.info.dim}
    plain = {
        n: [{**r, "embedding": [float(x) for x in r["embedding"]]} for r in b]
        for n, b in rows.items()
    }
    cmd = [sys.executable, "-c", WRITE_LITE, str(home), json.dumps(info)]
    done = subprocess.run(
        cmd, cwd=ROOT, input=json.dumps(plain), capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _server_db(uri: str, name: str) -> None:
    from pymilvus import MilvusClient

    admin = MilvusClient(uri=uri)
    admin.create_database(name)
    admin.close()


def _migrate(home: Path, uri: str, db: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "store", "migrate"]
    cmd += ["--to", uri, "--db-name", db, "--json"]
    env = {**os.environ, "FACEWATCH_USER": "officer-7"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)


@pytest.mark.timeout(300)
def test_lite_to_server_copies_every_collection_verified(milvus_server, engine, data, tmp_path):
    home = tmp_path / "home"
    rows = _rows(engine, data)
    _write_lite(home, engine, rows)
    db = f"migrate{os.getpid()}"
    _server_db(milvus_server.uri, db)

    done = _migrate(home, milvus_server.uri, db)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    counts = {c["collection"]: (c["source"], c["destination"]) for c in report["collections"]}
    assert counts == {WATCHLIST: (3, 3), MATCHES: (2, 2), FACES: (1, 1)}

    server = VectorStore.open(Settings(store={"uri": milvus_server.uri, "db_name": db}))
    server.bind(engine.info)
    try:
        got = {r["id"]: r for r in server.query(MATCHES, ids=["m-1", "m-2"])}
        assert got["m-1"]["box"] == BOX and got["m-2"]["source"] == "live"
        want = np.asarray(rows[MATCHES][0]["embedding"], np.float32)
        assert np.allclose(np.asarray(got["m-1"]["embedding"], np.float32), want, atol=1e-6)
        assert server.query(FACES, ids=["f-1"])[0]["frame_index"] == 7
    finally:
        server.close()
    acts = [r["action"] for r in AuditLog(home / "audit.log").records()]
    assert "store.migrate" in acts

    again = _migrate(home, milvus_server.uri, db)  # the destination now holds rows
    assert again.returncode == 2
    assert "already holds" in again.stderr and "empty store" in again.stderr


@pytest.mark.timeout(60)
def test_a_destination_that_is_not_a_server_uri_is_refused(tmp_path):
    done = _migrate(tmp_path / "home", str(tmp_path / "other.db"), "default")
    assert done.returncode == 2
    assert "Milvus server URI" in done.stderr
