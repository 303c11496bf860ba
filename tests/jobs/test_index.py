"""The face index end to end: real Ray, the real FacePool (MTCNN + dlib ResNet), milvus-lite
in tmp_path and the real Hamilton clip, driven through the CLI.

One Ray instance and one FacePool serve the whole module (starting them is the slow part);
the CLI commands find the running pool and reuse it.
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CLIP = "video/short_hamilton_clip.mp4"
PROBE = "known/lin-manuel-miranda.png"


@pytest.fixture(scope="module")
def pool(settings):
    """One local Ray and FacePool for the module, shut down at its end: later modules (the
    live server) start their own Ray with their own token settings."""
    import ray

    from jobs.archive import runtime

    started = not ray.is_initialized()
    runtime.start_ray(None, settings)
    with ExitStack() as stack:
        yield stack.enter_context(runtime.face_pool(settings))
    if started:
        ray.shutdown()


def cli(*args: str, home: Path):
    from jobs.cli.app import app

    return CliRunner().invoke(app, ["--home", str(home), *args], catch_exceptions=False)


def purpose(case: str = "IDX-1") -> list[str]:
    return ["--case", case, "--reason", "test of the face index"]


def audit(home: Path) -> list[dict]:
    lines = (home / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def index_rows(home: Path, settings) -> list[dict]:
    from pipelines.engine import FaceEngine
    from pipelines.home import Home
    from pipelines.store import FACES

    s = settings.model_copy(update={"home": home.resolve()})
    with Home.open(s, FaceEngine(s).info) as h:
        return h.vectors().query(
            FACES, fields=["id", "thumbnail", "track_id", "indexed_at", "source_id"]
        )


def track_map_of(home: Path) -> dict:
    """The home's track map, as {(file id, track id): sorted face ids}."""
    from pipelines.catalog import Catalog

    catalog = Catalog.open(home)
    try:
        rows = catalog.rows("SELECT source_id, track_id, face_ids FROM index_tracks")
    finally:
        catalog.close()
    return {(r["source_id"], r["track_id"]): sorted(json.loads(r["face_ids"])) for r in rows}


def tracks_of(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["source_id"], r["track_id"]), []).append(r["id"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def indexed(pool, data, tmp_path_factory):
    """A copy of the clip, searched by decoding it and indexed, in one home."""
    root = tmp_path_factory.mktemp("index")
    home, video = root / "home", root / "clip.mp4"
    shutil.copyfile(data / CLIP, video)
    archive = cli(
        "search", str(video), "--probe", str(data / PROBE), *purpose(), "--out",
        str(root / "archive"), home=home,
    )  # fmt: skip
    assert archive.exit_code == 0, archive.output
    first = cli("index", str(video), *purpose(), "--json", "--out", str(root / "idx"), home=home)
    assert first.exit_code == 0, first.output
    return {"root": root, "home": home, "video": video, "first": json.loads(first.stdout)}


@pytest.mark.timeout(600)
def test_indexed_search_finds_the_person_archive_search_finds(indexed, data, settings):
    root, home, video = indexed["root"], indexed["home"], indexed["video"]
    assert indexed["first"]["faces indexed"] > 0
    hidden = video.with_suffix(".gone")
    video.rename(hidden)  # the indexed search must not need the video at all
    try:
        res = cli(
            "search", "--probe", str(data / PROBE), "--indexed", "--top-k", "50", *purpose(),
            "--out", str(root / "indexed"), home=home,
        )  # fmt: skip
    finally:
        hidden.rename(video)
    assert res.exit_code == 0, res.output
    arch = pq.read_table(root / "archive" / "sightings.parquet").to_pylist()
    idx = pq.read_table(root / "indexed" / "sightings.parquet").to_pylist()
    assert arch and idx
    for a in arch:  # every archive sighting overlaps an indexed one in the same file
        assert any(
            i["source_id"] == a["source_id"]
            and i["start_s"] <= a["end_s"]
            and a["start_s"] <= i["end_s"]
            for i in idx
        ), (arch, idx)
    # the same faces are matched, by the same rules over the same tracks
    key = ("frame_index", "face_index")
    a_m = pq.read_table(root / "archive" / "matches.parquet").to_pylist()
    i_m = pq.read_table(root / "indexed" / "matches.parquet").to_pylist()
    assert {tuple(m[k] for k in key) for m in i_m} == {tuple(m[k] for k in key) for m in a_m}
    assert {m["match_id"] for m in i_m} == {m["match_id"] for m in a_m}
    # outputs as in archive search: report with the found face's thumbnail beside it
    report = (root / "indexed" / "report.html").read_text()
    thumb = idx[0]["thumbnail"]
    assert thumb.startswith("thumbs/") and (root / "indexed" / thumb).is_file()
    assert thumb in report
    record = [r for r in audit(home) if r["action"] == "search"][-1]
    assert record["details"]["mode"] == "indexed"
    assert record["details"]["case"] == "IDX-1"


@pytest.mark.timeout(600)
def test_alex_is_not_found_in_the_index(indexed, data):
    """A person who is not in the clip yields no sighting (the threshold is applied)."""
    root, home = indexed["root"], indexed["home"]
    res = cli(
        "search", "--probe", str(data / "known/alex-lacamoire.png"), "--indexed", *purpose(),
        "--out", str(root / "alex"), home=home,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert pq.read_table(root / "alex" / "sightings.parquet").num_rows == 0
    assert pq.read_table(root / "alex" / "matches.parquet").num_rows == 0


@pytest.mark.timeout(600)
def test_reindexing_is_idempotent(indexed, settings):
    root, home, video = indexed["root"], indexed["home"], indexed["video"]
    before = index_rows(home, settings)
    thumbs = sorted(p.name for p in (home / "media" / "faces").iterdir())
    assert len(before) == indexed["first"]["faces indexed"] == len(thumbs)
    again = cli("index", str(video), *purpose("IDX-2"), "--json", "--out", str(root / "i2"),
                home=home)  # fmt: skip
    assert again.exit_code == 0, again.output
    after = index_rows(home, settings)
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in before)
    assert {r["id"]: r["track_id"] for r in after} == {r["id"]: r["track_id"] for r in before}
    assert sorted(p.name for p in (home / "media" / "faces").iterdir()) == thumbs
    assert json.loads(again.stdout)["rows replaced from an earlier indexing"] == 0
    assert track_map_of(home) == tracks_of(after)
    records = [r for r in audit(home) if r["action"] == "index"]
    assert [r["details"]["case"] for r in records] == ["IDX-1", "IDX-2"]
    assert records[0]["details"]["paths"] == [str(video.resolve())]

    # indexed again at another rate, the file's earlier rows and thumbnails are replaced
    slow = cli("index", str(video), *purpose("IDX-3"), "--fps", "1", "--json", "--out",
               str(root / "i3"), home=home)  # fmt: skip
    assert slow.exit_code == 0, slow.output
    n = json.loads(slow.stdout)["faces indexed"]
    rows = index_rows(home, settings)
    assert len(rows) == n and 0 < n < len(before)
    assert len(list((home / "media" / "faces").iterdir())) == n
    assert all(r["indexed_at"] > 0 for r in rows)
    assert track_map_of(home) == tracks_of(rows)  # the map follows the index


def test_index_requires_a_case(data, tmp_path):
    home = tmp_path / "home"
    res = cli("index", str(data / CLIP), "--reason", "no case given", home=home)
    assert res.exit_code == 2
    assert "--case" in res.output
    assert not (home / "audit.log").exists() or "index" not in (home / "audit.log").read_text()
    res = cli("search", "--probe", str(data / PROBE), "--indexed", home=home)
    assert res.exit_code == 2
    assert "--case" in res.output


@pytest.mark.parametrize(("complete", "left"), [(True, 1), (False, 2)])
def test_reindexing_a_partly_read_file_keeps_its_earlier_rows(tmp_path, settings, complete, left):
    """Faces an earlier indexing stored and this one did not find again are dropped only if
    this one read the whole file: a file that lost frames to a decode error (a NAS hiccup)
    must not lose yesterday's index of the parts it could not read today."""
    import numpy as np

    from jobs.archive.index import FaceIndexWriter
    from jobs.archive.search import FileResult
    from pipelines.engine import FaceEngine
    from pipelines.home import Home
    from pipelines.sightings import FaceTable
    from pipelines.store import FACES
    from pipelines.track_map import TrackMap
    from pipelines.video import VideoInfo

    s = settings.model_copy(update={"home": tmp_path / "home"})
    info = FaceEngine(s).info

    def faces(frames: list[int]) -> tuple[FaceTable, np.ndarray]:
        n = len(frames)
        table = FaceTable(
            t=np.asarray(frames, float) / 2,
            frame_index=np.asarray(frames),
            face_index=np.zeros(n, int),
            boxes=np.tile(np.asarray([10, 10, 50, 50], np.float32), (n, 1)),
            passed=np.ones(n, bool),
            quality=np.ones(n, np.float32),
            cand_person=np.full((n, 1), -1),
            cand_score=np.full((n, 1), -np.inf),
            cand_margin=np.full((n, 1), -np.inf),
        )
        emb = np.random.default_rng(0).normal(size=(n, info.dim)).astype(np.float32)
        return table, emb / np.linalg.norm(emb, axis=1, keepdims=True)

    with Home.open(s, info) as home:
        writer = FaceIndexWriter(home, "IDX-2")
        video = VideoInfo("v.mp4", 100, 2.0, 64, 64)
        table, emb = faces([0, 4])
        writer(FileResult("v.mp4", "f" * 64, video), table, emb, [b""] * 2, np.arange(2))
        table, emb = faces([0])  # the second run lost frame 4
        again = FileResult("v.mp4", "f" * 64, video, complete=complete)
        writer(again, table, emb, [b""], np.arange(1))
        rows = home.vectors().query(FACES, fields=["id", "frame_index"])
        mapped = TrackMap(home.catalog).lookup({"f" * 64: {0, 1}})
    assert len(rows) == left
    assert writer.counts.replaced == 2 - left
    # the track map follows a whole reading; a partial one leaves the file unmapped
    first = [r["id"] for r in rows if r["frame_index"] == 0]
    got = {k: v.face_ids for k, v in mapped.items()}
    assert got == ({("f" * 64, 0): first} if complete else {})


def test_indexed_search_scope_is_exact_and_outlives_the_files(tmp_path):
    """--indexed PATH: a folder named with Milvus wildcards returns only itself, and a
    folder that has been moved away still counts as a folder (the index outlives it)."""
    from jobs.archive.index_search import PathScope

    pct, gone, clip = tmp_path / "100%", tmp_path / "moved-away", tmp_path / "gone.mp4"
    pct.mkdir()
    scope = PathScope.of([pct, gone, clip], (".mp4",))
    assert scope.keeps(f"{pct}/cam1/a.mp4") and scope.keeps(f"{gone}/b.mp4")
    assert scope.keeps(str(clip)) and not scope.keeps(f"{clip}.bak")
    assert not scope.keeps(f"{tmp_path}/1000/a.mp4")  # `like "100%/%"` would let it through
    assert f'source_path like "{pct}/%"' in scope.filter()


@pytest.mark.timeout(60)
def test_the_track_read_back_filters_only_on_indexed_fields(tmp_path):
    """At a million faces the read-back of candidate tracks must not scan the collection:
    the filter indexed search builds uses only fields with an INVERTED index on a fresh
    milvus-lite face index (HNSW on its vectors), and it reads back exactly those tracks."""
    import re

    import numpy as np

    from jobs.archive.index_search import TRACK_FILTER_FIELDS, track_filter
    from pipelines.config import Settings
    from pipelines.schemas import EmbedderInfo
    from pipelines.store import FACES, INDEXED_FIELDS, VectorStore

    store = VectorStore.open(Settings(home=str(tmp_path))).bind(EmbedderInfo("t", "1", 8))
    try:
        kinds = store.index_kinds(FACES)
        assert kinds["embedding"] == "HNSW" and FACES in store.hnsw
        assert {f: kinds.get(f) for f in INDEXED_FIELDS[FACES]} == dict.fromkeys(
            INDEXED_FIELDS[FACES], "INVERTED"
        )
        where = track_filter({"s1": {2, 1}, "s3": {0}})
        used = set(re.findall(r"\b([a-z_]+) (?:==|in) ", where))
        assert used == set(TRACK_FILTER_FIELDS) and used <= set(INDEXED_FIELDS[FACES])
        emb = np.eye(8, dtype=np.float32)[np.arange(40) % 8]
        rows = [
            {"id": f"f{i}", "embedding": emb[i], "source_id": f"s{i % 4}", "track_id": i % 3}
            for i in range(40)
        ]
        store.upsert(FACES, rows)
        got = sorted(r["id"] for r in store.query(FACES, filter=where, fields=["id"]))
        want = [f"f{i}" for i in range(40) if (i % 4, i % 3) in {(1, 1), (1, 2), (3, 0)}]
        assert got == sorted(want)
    finally:
        store.close()


def count_filter_queries(store) -> list[str]:
    """The filters of the store's filter queries from now on (the real queries run)."""
    filters: list[str] = []
    query = store.query

    def spy(name, filter="", ids=None, fields=None, limit=None):
        if ids is None:
            filters.append(filter)
        return query(name, filter, ids, fields, limit)

    store.query = spy
    return filters


@pytest.mark.timeout(60)
def test_tracks_read_back_by_id_equal_those_read_by_filter(tmp_path):
    """The track map is a shortcut, never the truth: the tracks it knows are read by id,
    the rest by filter; a file whose faces changed since the map was written (restamped by
    another indexing, or fewer) is read by filter. Either way the result is the filter's."""
    import numpy as np

    from jobs.archive.index_search import read_tracks
    from pipelines.catalog import Catalog
    from pipelines.config import Settings
    from pipelines.schemas import EmbedderInfo
    from pipelines.store import FACES, VectorStore
    from pipelines.track_map import TrackMap, group_by_track

    store = VectorStore.open(Settings(home=str(tmp_path))).bind(EmbedderInfo("t", "1", 8))
    track_map = TrackMap(Catalog.open(tmp_path))
    filters = count_filter_queries(store)
    try:
        emb = np.eye(8, dtype=np.float32)[np.arange(30) % 8]
        rows = [
            {"id": f"f{i}", "embedding": emb[i], "source_id": f"s{i % 3}", "track_id": i % 4,
             "indexed_at": 1}
            for i in range(30)
        ]  # fmt: skip
        store.upsert(FACES, rows)
        for src in ("s0", "s1"):  # s2 is not mapped
            mine = [(r["id"], r["track_id"]) for r in rows if r["source_id"] == src]
            track_map.replace(src, group_by_track(*zip(*mine, strict=True)), 1)
        assert track_map.faces() == 20

        def ids(got: dict) -> dict:
            return {f: sorted(r["id"] for r in v) for f, v in got.items()}

        def check(want: dict) -> list[str]:
            filters.clear()
            by_map = ids(read_tracks(store, track_map, want))
            used = list(filters)
            assert by_map == ids(read_tracks(store, None, want)), want
            return used

        assert check({"s0": {0, 2}, "s1": {1, 3}}) == []  # all by id
        assert check({"s0": {0}, "s2": {0, 3}}) == ['(source_id == "s2" and track_id in [0, 3])']
        # s0 indexed again (by another home sharing the store): every row restamped, and f0
        # now in track 2, which the map does not list it in
        again = [{**r, "indexed_at": 2} for r in rows if r["source_id"] == "s0"]
        store.upsert(FACES, [{**again[0], "track_id": 2}, *again[1:]])
        assert check({"s0": {2}, "s1": {1}}) == ['(source_id == "s0" and track_id in [2])']
        assert ids(read_tracks(store, track_map, {"s0": {2}}))["s0"] == ["f0", "f18", "f6"]
        store.delete(FACES, ids=["f1"])  # s1 track 1 lost a face (retention): by filter
        assert check({"s1": {1}}) == ['(source_id == "s1" and track_id in [1])']
        assert track_map.expire(2) == 8 and track_map.faces() == 0  # s0's and s1's tracks
    finally:
        track_map.catalog.close()
        store.close()
