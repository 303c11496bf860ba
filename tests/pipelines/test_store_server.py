"""The vector store on a real Milvus 2.3 server (and the same calls on milvus-lite).

The server is the ``milvus`` package's standalone build, started in a private network
namespace that only loopback reaches (tests/milvus_loopback.py); the tests and the CLI talk
to it by URI, as a deployment would. Embeddings are real (dlib-resnet on the named photos).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from milvus_loopback import MilvusLoopbackServer, MilvusServerUnavailable

from pipelines.config import Settings
from pipelines.schemas import EmbedderInfo, EmbedderMismatchError
from pipelines.store import MATCHES, WATCHLIST, VectorStore

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
BOX = [10.5, 20.0, 110.25, 140.0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        with MilvusLoopbackServer(tmp_path_factory.mktemp("milvus-server")) as srv:
            yield srv
    except MilvusServerUnavailable as exc:
        pytest.fail(f"these tests need a Milvus server on loopback: {exc}")


@pytest.fixture(scope="module")
def faces(engine, data):
    names = ["obama.jpg", "obama2.jpg", "biden.jpg"]
    probed = engine.probe_faces([data / "known" / n for n in names])
    return {Path(n).stem: f for n, f in zip(names, probed, strict=True)}


@pytest.fixture(scope="module", params=["server", "lite"])
def store(request, engine, tmp_path_factory):
    if request.param == "server":
        settings = Settings(store={"uri": request.getfixturevalue("server").uri})
    else:
        settings = Settings(home=tmp_path_factory.mktemp("lite-home"))
    vs = VectorStore.open(settings).bind(engine.info)
    yield vs
    vs.close()


def _match(mid: str, face, **extra) -> dict:
    row = {"id": mid, "embedding": face.embedding, "person_id": "p-obama", "score": 0.97}
    return {**row, "source": "archive", "source_id": "f1", "track_id": 1, **extra}


def test_rows_round_trip_with_a_list_box(store, faces):
    wl = [
        {"id": "e-obama", "embedding": faces["obama"].embedding, "person_id": "p-obama"},
        {"id": "e-biden", "embedding": faces["biden"].embedding, "person_id": "p-biden"},
    ]
    assert store.upsert(WATCHLIST, [dict(r, list_name="wl") for r in wl]) == 2
    rows = [_match("rt-1", faces["obama2"], box=BOX), _match("rt-2", faces["obama2"])]
    assert store.upsert_matches(rows) == 2
    got = {r["id"]: r for r in store.query(MATCHES, ids=["rt-1", "rt-2"])}
    assert got["rt-1"]["box"] == BOX and isinstance(got["rt-1"]["box"], list)
    assert got["rt-2"]["box"] == []  # a row written without a box
    assert got["rt-1"]["person_id"] == "p-obama" and got["rt-1"]["source"] == "archive"
    assert np.allclose(got["rt-1"]["embedding"], faces["obama2"].embedding, atol=1e-6)
    some = store.query(MATCHES, filter='id in ["rt-1", "rt-2"]', fields=["box"], limit=5)
    assert sorted(map(str, (r["box"] for r in some))) == sorted(map(str, ([], BOX)))
    assert store.count(WATCHLIST, 'list_name == "wl"') == 2
    store.upsert_matches([_match("rt-1", faces["obama2"], box=BOX, status="reviewed")])
    assert store.count(MATCHES, 'id == "rt-1"') == 1  # upsert replaced, did not add
    assert store.query(MATCHES, ids=["rt-1"], fields=["status"])[0]["status"] == "reviewed"


def test_search_by_vector_finds_the_same_person(store, faces, engine):
    store.upsert(WATCHLIST, [{"id": "s-obama", "embedding": faces["obama"].embedding}])
    store.upsert(WATCHLIST, [{"id": "s-biden", "embedding": faces["biden"].embedding}])
    hits = store.search(WATCHLIST, faces["obama2"].embedding[None, :], 2, 'id like "s-%"')
    assert [h["id"] for h in hits[0]] == ["s-obama", "s-biden"]
    assert hits[0][0]["score"] >= engine.embedder.default_threshold > hits[0][1]["score"]
    store.upsert_matches([_match("sv-1", faces["obama"], box=BOX, track_id=7)])
    where = '(source_id == "f1" and track_id in [7, 8])'  # as jobs/index_search.py filters
    hits = store.search(MATCHES, faces["obama2"].embedding, 3, where, fields=["box", "track_id"])
    assert [(h["id"], h["box"], h["track_id"]) for h in hits[0]] == [("sv-1", BOX, 7)]


def test_delete_by_ids_and_by_filter(store, faces):
    rows = [_match(f"d-{i}", faces["biden"], box=BOX, source_id="del") for i in range(4)]
    store.upsert_matches(rows)
    assert store.count(MATCHES, 'source_id == "del"') == 4
    store.delete(MATCHES, ids=["d-0", "d-1"])
    assert store.count(MATCHES, 'source_id == "del"') == 2
    store.delete(MATCHES, filter='source_id == "del" and id == "d-2"')
    assert [r["id"] for r in store.query(MATCHES, filter='source_id == "del"')] == ["d-3"]
    assert store.delete(MATCHES, ids=[]) == 0


def test_an_embedder_mismatch_is_refused(store):
    other = VectorStore(store.client, store.where)
    with pytest.raises(EmbedderMismatchError, match="configured embedder is other@1/128"):
        other.bind(EmbedderInfo(name="other", version="1", dim=128))


def test_a_list_box_from_older_code_reads_back_as_a_list(engine, tmp_path):
    """milvus-lite stores written before boxes became objects stay readable."""
    vs = VectorStore.open(Settings(home=tmp_path)).bind(engine.info)
    try:
        old = vs._defaults(MATCHES, {"id": "old", "embedding": [0.1] * engine.info.dim})
        vs.client.upsert(MATCHES, [{**old, "box": BOX}])  # the old stored form
        assert vs.query(MATCHES, ids=["old"])[0]["box"] == BOX
    finally:
        vs.close()


def _cli(server, home: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "jobs.cli", "--store", server.uri, "--home", str(home), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.timeout(200)
def test_the_cli_enrols_into_and_removes_from_the_server(server, engine, data, tmp_path):
    photo = data / "known" / "lin-manuel-miranda.png"
    home = tmp_path / "home"
    out = _cli(server, home, "watchlist", "add", "Lin-Manuel Miranda", str(photo), "--list", "cli")
    person_id = out.strip().splitlines()[-1]
    listed = json.loads(_cli(server, home, "watchlist", "ls", "--json", "--list", "cli"))
    assert [(p["person_id"], p["name"]) for p in listed["people"]] == [
        (person_id, "Lin-Manuel Miranda")
    ]
    vs = VectorStore.open(Settings(store={"uri": server.uri})).bind(engine.info)
    try:
        rows = vs.query(WATCHLIST, filter=f'person_id == "{person_id}"')
        assert len(rows) == 1 and rows[0]["list_name"] == "cli"
        probe = engine.probe_faces([photo])[0].embedding
        assert float(np.dot(rows[0]["embedding"], probe)) > 0.999  # the photo's embedding
        _cli(server, home, "watchlist", "rm", person_id)
        assert vs.count(WATCHLIST, f'person_id == "{person_id}"') == 0
    finally:
        vs.close()


@pytest.mark.timeout(60)
def test_a_store_that_cannot_be_reached_is_named_without_its_password():
    """The error names the server by its URI without the user:password (a closed port on
    loopback: nothing answers)."""
    import socket

    from pipelines.store import StoreError

    with socket.socket() as s:  # a free loopback port, closed again: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(store={"uri": f"http://user:StorePw-1@127.0.0.1:{port}"})
    with pytest.raises(StoreError) as err:
        VectorStore.open(settings)
    assert f"Milvus server at http://***@127.0.0.1:{port}" in str(err.value)
    assert "StorePw-1" not in str(err.value)
