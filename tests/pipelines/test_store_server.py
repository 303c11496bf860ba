"""The vector store's contract, every test on both backends: milvus-lite and a real Milvus
2.3 server.

``store_settings`` (tests/conftest.py) is parametrised: a fresh milvus-lite database in the
test's home, or a fresh database on one real server for the whole session (the ``milvus``
package's standalone build, started in a private network namespace that only loopback
reaches, tests/milvus_loopback.py). The tests and the CLI talk to the server by URI, as a
deployment would. Embeddings are real (dlib-resnet on the named photos). The one test that
runs on milvus-lite only says why in its name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import Settings
from pipelines.schemas import EmbedderInfo, EmbedderMismatchError
from pipelines.store import FACES, MATCHES, WATCHLIST, StoreError, VectorStore

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
BOX = [10.5, 20.0, 110.25, 140.0]


@pytest.fixture
def store(store_settings, engine):
    vs = VectorStore.open(store_settings).bind(engine.info)
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
    # cosine measured in process (photos embedded with photo TTA, as enrolment does):
    # obama2 to obama 0.9684, to biden 0.8375; both backends must return these (a server's
    # approximate index may miss rows, not change scores)
    assert [h["score"] for h in hits[0]] == pytest.approx([0.9684, 0.8375], abs=2e-3)
    assert hits[0][0]["score"] >= engine.embedder.default_threshold > hits[0][1]["score"]
    store.upsert_matches([_match("sv-1", faces["obama"], box=BOX, track_id=7)])
    where = '(source_id == "f1" and track_id in [7, 8])'  # as jobs/archive/index_search.py filters
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


def test_a_list_box_from_older_code_reads_back_as_a_list_on_milvus_lite_only(engine, tmp_path):
    """milvus-lite stores written before boxes became objects stay readable. Lite only: a
    Milvus server refuses a JSON array at the top of a field, so no server holds one."""
    vs = VectorStore.open(Settings(home=tmp_path)).bind(engine.info)
    try:
        old = vs._defaults(MATCHES, {"id": "old", "embedding": [0.1] * engine.info.dim})
        vs.client.upsert(MATCHES, [{**old, "box": BOX}])  # the old stored form
        assert vs.query(MATCHES, ids=["old"])[0]["box"] == BOX
    finally:
        vs.close()


def test_empty_and_limited_reads_and_whole_collection_counts(store, faces):
    assert store.count(MATCHES) == store.count(WATCHLIST) == store.count(FACES) == 0
    assert store.query(MATCHES) == [] and store.query(MATCHES, ids=[]) == []
    store.upsert_matches([_match(f"q-{i}", faces["obama"], track_id=i) for i in range(5)])
    assert store.count(MATCHES) == 5 and store.count(MATCHES, "track_id >= 3") == 2
    assert len(store.query(MATCHES, filter="", fields=["id"], limit=3)) == 3
    assert sorted(r["id"] for r in store.query(MATCHES, fields=["id"])) == [
        f"q-{i}" for i in range(5)
    ]
    assert store.upsert(MATCHES, []) == 0 and store.count(MATCHES) == 5


def test_reads_and_writes_before_bind_are_refused(store_settings):
    vs = VectorStore.open(store_settings)
    try:
        with pytest.raises(StoreError, match="bind"):
            vs.query(MATCHES, ids=["x"])
        with pytest.raises(StoreError, match="bind"):
            vs.upsert(MATCHES, [{"id": "x", "embedding": [0.0] * 128}])
    finally:
        vs.close()


def test_a_reopened_store_keeps_its_rows_and_its_embedder(store_settings, engine, faces):
    first = VectorStore.open(store_settings).bind(engine.info)
    first.upsert(WATCHLIST, [{"id": "r-obama", "embedding": faces["obama"].embedding}])
    first.upsert_matches([_match("r-1", faces["obama2"], box=BOX)])
    first.close()
    again = VectorStore.open(store_settings).bind(engine.info)  # loads the collections
    try:
        assert again.query(MATCHES, ids=["r-1"], fields=["box"])[0]["box"] == BOX
        hits = again.search(WATCHLIST, faces["obama2"].embedding, 1)
        assert [h["id"] for h in hits[0]] == ["r-obama"]
        other = EmbedderInfo(name="other", version="1", dim=engine.info.dim)
        with pytest.raises(EmbedderMismatchError, match="holds fw_watchlist embeddings of"):
            VectorStore(again.client, again.where).bind(other)
    finally:
        again.close()


def _cli(settings: Settings, *args: str) -> str:
    """``facewatch`` in a separate process on the test's store: ``--home`` for milvus-lite;
    for the server also ``--store URI`` and the database through the environment."""
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(settings.home)]
    env = dict(os.environ)
    if settings.store.uri is not None:
        cmd += ["--store", settings.store.uri]
        env["FACEWATCH__STORE__DB_NAME"] = settings.store.db_name
    proc = subprocess.run(
        [*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


READ_ROWS = """
import json, sys
from pipelines.config import Settings
from pipelines.schemas import EmbedderInfo
from pipelines.store import WATCHLIST, VectorStore
settings, info, person = Settings.model_validate_json(sys.argv[1]), sys.argv[2:5], sys.argv[5]
vs = VectorStore.open(settings).bind(EmbedderInfo(info[0], info[1], int(info[2])))
rows = vs.query(WATCHLIST, f'person_id == "{person}"', fields=["list_name", "embedding"])
print(json.dumps([{"list_name": r["list_name"], "embedding": list(r["embedding"])} for r in rows]))
"""


def _enrolled(settings: Settings, engine, person_id: str) -> list[dict]:
    """The person's rows, read by another process as the CLI's are: milvus-lite keeps a
    database locked to the first process that opened it until that process exits."""
    info = [engine.info.name, engine.info.version, str(engine.info.dim)]
    cmd = [sys.executable, "-c", READ_ROWS, settings.model_dump_json(), *info, person_id]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(200)
def test_the_cli_enrols_into_and_removes_from_the_store(store_settings, engine, data):
    photo = data / "known" / "lin-manuel-miranda.png"
    add = ["watchlist", "add", "Lin-Manuel Miranda", str(photo), "--list", "cli"]
    out = _cli(store_settings, *add)
    person_id = out.strip().splitlines()[-1]
    listed = json.loads(_cli(store_settings, "watchlist", "ls", "--json", "--list", "cli"))
    assert [(p["person_id"], p["name"]) for p in listed["people"]] == [
        (person_id, "Lin-Manuel Miranda")
    ]
    rows = _enrolled(store_settings, engine, person_id)
    assert len(rows) == 1 and rows[0]["list_name"] == "cli"
    probe = engine.probe_faces([photo])[0].embedding
    assert float(np.dot(rows[0]["embedding"], probe)) > 0.999  # the photo's embedding
    _cli(store_settings, "watchlist", "rm", person_id)
    assert _enrolled(store_settings, engine, person_id) == []


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


def test_the_face_index_has_hnsw_and_scalar_indexes_and_reads_back_by_them(store_settings):
    """A million-face index must not be scanned: HNSW on its vectors, and an index on every
    field that indexed search, its track read-back and retention filter on (INVERTED on
    milvus-lite; Trie/STL_SORT on a Milvus 2.3 server, which refuses INVERTED)."""
    from pipelines.store import INDEXED_FIELDS

    info = EmbedderInfo("dlib-resnet", "test-indexes", 8)
    store = VectorStore.open(store_settings).bind(info)
    try:
        kinds = store.index_kinds(FACES)
        assert kinds["embedding"] == "HNSW" and FACES in store.hnsw
        assert set(INDEXED_FIELDS[FACES]) <= set(kinds)
        server = store_settings.store.uri is not None
        assert {kinds[f] for f in INDEXED_FIELDS[FACES]} == (
            {"Trie", "STL_SORT"} if server else {"INVERTED"}
        )
        rng = np.random.default_rng(0)
        emb = rng.standard_normal((40, 8)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        rows = [
            {"id": f"f{i}", "embedding": emb[i], "source_id": f"s{i % 4}", "track_id": i % 3}
            for i in range(40)
        ]
        store.upsert(FACES, rows)
        hits = store.search(FACES, emb[:2], 5, filter='source_id == "s0"')
        assert [h[0]["id"] for h in hits] == ["f0", "f4"] or hits[0][0]["id"] == "f0"
        got = store.query(FACES, filter='(source_id == "s1" and track_id in [1, 2])', fields=["id"])
        assert sorted(r["id"] for r in got) == sorted(
            f"f{i}" for i in range(40) if i % 4 == 1 and i % 3 in (1, 2)
        )
        # reopened (and, on milvus-lite, without this process's cached schema), still HNSW
        store.close()
        store = VectorStore.open(store_settings).bind(info)
        assert FACES in store.hnsw
    finally:
        store.close()
