"""The vector store: Milvus through pymilvus's MilvusClient, milvus-lite by default.

One class serves both an embedded milvus-lite database inside the data home and a Milvus
server given by URI; only ``open`` differs. Collections:

- ``fw_watchlist``: one row per enrolment photo (entry) of a watch-listed person;
- ``fw_matches``: archive matches and live alerts (``source`` says which);
- ``fw_faces``: the retrospective face index (every quality-passing archive face).

Each collection is bound to one embedding space: a collection property records the embedder
(name, version, dimension), and opening it with another embedder is refused.

Rows round-trip the same on milvus-lite and on a Milvus 2.3+ server: the server refuses a
JSON array at the top of a JSON field, so ``box`` is written as ``{"xyxy": [x1, y1, x2, y2]}``
and read back as the list (a list written by older code reads back as it was). Reads ask
for Strong consistency, so a row is visible to the next query on a server too (its default,
Bounded, can hide a write for a moment). The face index is read with Session consistency
instead: on a server, Strong waits for the next time tick (200 ms) on every call, which made
every probe search and read-back of a million-face index take 200 ms whatever its size
(benchmarks/bench_index.py). Session still shows a process its own writes at once; faces
another process indexed show within about a time tick, which a probe of a finished job
never sees.

milvus-lite lets exactly one process open a database. ``open`` checks the lock first and
says who to ask instead. Under Ray, one owner writes (the search driver, or the live hub).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Settings, redact_userinfo
from pipelines.errors import FacewatchError
from pipelines.milvus_import import import_pymilvus
from pipelines.observe import timed_write
from pipelines.schemas import EmbedderInfo, EmbedderMismatchError

logger = logging.getLogger(__name__)

WATCHLIST, MATCHES, FACES = "fw_watchlist", "fw_matches", "fw_faces"
EMBEDDER_PROPERTY = "facewatch.embedder"
ID_LEN, TEXT_LEN, PATH_LEN = 64, 512, 2048
BOX_KEY = "xyxy"  # box is stored as {BOX_KEY: [x1, y1, x2, y2]}
STRONG = "Strong"
SESSION = "Session"
READ_CONSISTENCY = {FACES: SESSION}  # the rest: STRONG (module docstring)


def read_consistency(name: str) -> str:
    """The consistency level reads of collection ``name`` ask for."""
    return READ_CONSISTENCY.get(name, STRONG)


# The face index holds millions of rows (one per archive face): a graph index on its vectors
# (HNSW) and scalar indexes on the fields indexed search and retention filter on (source,
# case, time, and the tracks read back), so neither a probe search nor a read-back scans
# the collection. milvus-lite 3.x and Milvus 2.4+ build INVERTED indexes; a Milvus 2.3
# server refuses them, and gets its own kinds instead (Trie for text, STL_SORT for numbers).
HNSW = {"M": 16, "efConstruction": 128}
INDEXED_FIELDS = {
    FACES: ("source_id", "source_path", "case_ref", "track_id", "timestamp_s", "indexed_at")
}
LEGACY_SCALAR = {"VARCHAR": "Trie", "INT64": "STL_SORT", "DOUBLE": "STL_SORT", "FLOAT": "STL_SORT"}
MAX_EF = 32768  # HNSW's search list may not be longer


class StoreError(FacewatchError, RuntimeError):
    """The store cannot be used as asked; the message says why and what to do."""

    http_status = 503


class StoreLockedError(StoreError):
    pass


def _fields(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(field, type, params) per collection; the vector field is added separately."""
    common = [
        ("source_id", "VARCHAR", {"max_length": ID_LEN}),
        ("source_path", "VARCHAR", {"max_length": PATH_LEN}),
        ("frame_index", "INT64", {}),
        ("timestamp_s", "DOUBLE", {}),
        ("box", "JSON", {}),
        ("thumbnail", "VARCHAR", {"max_length": PATH_LEN}),
        ("case_ref", "VARCHAR", {"max_length": TEXT_LEN}),
        ("created_at", "INT64", {}),
    ]
    if name == WATCHLIST:
        return [
            ("person_id", "VARCHAR", {"max_length": ID_LEN}),
            ("list_name", "VARCHAR", {"max_length": TEXT_LEN}),
            ("created_at", "INT64", {}),
        ]
    if name == MATCHES:
        return [
            ("person_id", "VARCHAR", {"max_length": ID_LEN}),
            ("person_name", "VARCHAR", {"max_length": TEXT_LEN}),
            ("list_name", "VARCHAR", {"max_length": TEXT_LEN}),
            ("score", "FLOAT", {}),
            ("source", "VARCHAR", {"max_length": 16}),
            *common,
            ("track_id", "INT64", {}),
            ("face_index", "INT64", {}),
            ("snapshot_id", "VARCHAR", {"max_length": ID_LEN}),
            ("status", "VARCHAR", {"max_length": 16}),
        ]
    if name == FACES:  # the retrospective face index (jobs/archive/index.py)
        return [
            *common,
            ("face_index", "INT64", {}),
            ("track_id", "INT64", {}),
            ("quality", "FLOAT", {}),
            ("indexed_at", "INT64", {}),  # unix seconds; retention filters on it
        ]
    raise ValueError(name)


def lite_path(home: Path) -> Path:
    return home / "milvus.db"


# milvus-lite keeps a database's lock until the process exits, even after close(); a
# database this process opened before can be opened again here.
_OPENED_HERE: set[Path] = set()


def check_lite_lock(db: Path) -> None:
    """Fail clearly, before pymilvus does noisily, when another process holds the database."""
    lock = db / "LOCK"
    if not lock.exists() or db.resolve() in _OPENED_HERE:
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        raise StoreLockedError(
            f"another process holds the milvus-lite store at {db} (probably `facewatch serve` "
            "or a running search). milvus-lite allows one process at a time: stop it, use "
            "its HTTP API (a search: start it in the server's workspace, /workspace, which "
            "hands its matches to the server), or move to a Milvus server (store.uri / --store)"
        ) from None
    finally:
        os.close(fd)


def encode_box(box: Any) -> dict[str, Any]:
    """The stored form of a box: a JSON object, which milvus-lite and servers both accept."""
    if isinstance(box, dict):
        box = box.get(BOX_KEY)
    return {BOX_KEY: [] if box is None else [float(x) for x in box]}


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as callers use it: ``box`` is a list (``[]`` when the row has none)."""
    box = row.get("box")
    if isinstance(box, dict):
        row["box"] = list(box.get(BOX_KEY, []))
    return row


class VectorStore:
    def __init__(self, client: Any, where: str, filters_scan: bool = False):
        self.client = client
        self.where = where
        # milvus-lite answers any scalar filter by walking every row (about 2 s at a
        # million faces), and a read by primary key in milliseconds; a server answers an
        # indexed filter in milliseconds (pipelines/track_map.py)
        self.filters_scan = filters_scan
        self.bound: EmbedderInfo | None = None
        self.hnsw: set[str] = set()  # collections whose vectors have an HNSW index

    @classmethod
    def open(cls, settings: Settings) -> VectorStore:
        import_pymilvus()  # first: pymilvus's import closes the logging handlers otherwise
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        uri, token = settings.store.uri, settings.store.token
        if uri is None:
            home = settings.resolved_home()
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = lite_path(home)
            check_lite_lock(db)
            _OPENED_HERE.add(db.resolve())
            uri, where = str(db), f"milvus-lite at {db}"
        else:
            where = f"Milvus server at {redact_userinfo(uri)}"  # messages never show a password
        try:
            client = MilvusClient(uri=uri, token=token or "", db_name=settings.store.db_name)
        except MilvusException as exc:
            raise StoreError(f"cannot open the {where}: {exc.message}") from None
        return cls(client, where, filters_scan=settings.store.uri is None)

    def close(self) -> None:
        self.client.close()

    # -- schema and embedder binding ------------------------------------------------------
    def bind(self, info: EmbedderInfo) -> VectorStore:
        """Create the collections for ``info`` or check that they were made for it. Every
        existing collection is checked before any is created or loaded; the creations and
        loads then run side by side (each takes seconds on a server: its indexes are built
        and it is loaded)."""
        work: list[functools.partial[Any]] = []
        for name in (WATCHLIST, MATCHES, FACES):
            if name == FACES and self._outdated_faces():
                self.client.drop_collection(name)  # empty, made before the index had tracks
            if self.client.has_collection(name):
                props = self.client.describe_collection(name).get("properties", {})
                found = props.get(EMBEDDER_PROPERTY, "(unknown)")
                if found != info.key:
                    raise EmbedderMismatchError(
                        f"the {self.where} holds {name} embeddings of {found}, but the "
                        f"configured embedder is {info.key}. Use a different home/store for "
                        "another embedder, or re-enrol into a fresh store."
                    )
                # reopened collections start released
                work.append(functools.partial(self.client.load_collection, name))
            else:
                work.append(functools.partial(self._create, name, info))
        with ThreadPoolExecutor(len(work), thread_name_prefix="store-bind") as pool:
            for done in [pool.submit(w) for w in work]:
                done.result()
        self.bound = info
        self._check_indexes()
        return self

    def _check_indexes(self) -> None:
        """Note which collections search by HNSW; warn about a face index made before it
        had its indexes (it still works, by scanning)."""
        for name in INDEXED_FIELDS:
            kinds = self.index_kinds(name)
            if kinds.get("embedding") == "HNSW":
                self.hnsw.add(name)
            missing = [f for f in ("embedding", *INDEXED_FIELDS[name]) if f not in kinds]
            if missing or name not in self.hnsw:
                logger.warning(
                    "the %s's %s lacks the indexes a large face index needs (HNSW on its "
                    "vectors; scalar indexes on %s): searches scan it. Reindex into a fresh "
                    "store to get them.",
                    self.where,
                    name,
                    ", ".join(INDEXED_FIELDS[name]),
                )

    def index_kinds(self, name: str) -> dict[str, str]:
        """The collection's index type per indexed field (e.g. ``{"embedding": "HNSW"}``)."""
        described = [self.client.describe_index(name, i) for i in self.client.list_indexes(name)]
        return {str(d.get("field_name")): str(d.get("index_type")) for d in described}

    def _outdated_faces(self) -> bool:
        """An empty face index of the old schema (no track ids) is replaced; a full one is
        refused rather than silently dropped."""
        if not self.client.has_collection(FACES):
            return False
        have = {f["name"] for f in self.client.describe_collection(FACES).get("fields", [])}
        if "indexed_at" in have:
            return False
        self.client.load_collection(FACES)
        res = self.client.query(
            FACES, filter="", output_fields=["count(*)"], consistency_level=STRONG
        )
        if int(res[0]["count(*)"]):
            raise StoreError(
                f"the {self.where} holds a face index of an older schema; re-index into a "
                "fresh store (or drop its fw_faces collection)"
            )
        return True

    def _create(self, name: str, info: EmbedderInfo) -> None:
        import_pymilvus()
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LEN)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=info.dim)
        for field, kind, params in _fields(name):
            schema.add_field(field, getattr(DataType, kind), **params)
        from pymilvus.exceptions import MilvusException

        legacy = name in INDEXED_FIELDS and self._before_inverted()
        try:
            index = self._index_params(name, legacy=legacy)
            self.client.create_collection(
                name,
                schema=schema,
                index_params=index,
                consistency_level=STRONG,
                properties={EMBEDDER_PROPERTY: info.key},
            )
        except MilvusException as exc:  # a Milvus 2.3 server: no INVERTED indexes
            if legacy or "index type not match" not in str(exc):
                raise
            if self.client.has_collection(name):  # made just now, before its indexes failed
                self.client.drop_collection(name)
            self.client.create_collection(
                name,
                schema=schema,
                index_params=self._index_params(name, legacy=True),
                consistency_level=STRONG,
                properties={EMBEDDER_PROPERTY: info.key},
            )

    def _before_inverted(self) -> bool:
        """A Milvus server older than 2.4, which has no INVERTED scalar indexes (its own
        kinds are used instead, LEGACY_SCALAR), as its version says; False for milvus-lite
        or a version that does not parse (the creation then falls back on refusal)."""
        if self.embedded:
            return False
        try:
            found = re.match(r"v?(\d+)\.(\d+)", str(self.client.get_server_version()))
        except Exception:  # noqa: BLE001 - an old or proxied server: fall back on refusal
            return False
        return found is not None and (int(found[1]), int(found[2])) < (2, 4)

    def _index_params(self, name: str, legacy: bool) -> Any:
        """The collection's indexes: HNSW and scalar indexes on the face index (see
        INDEXED_FIELDS); the default vector index elsewhere (small, read by id)."""
        index = self.client.prepare_index_params()
        if name not in INDEXED_FIELDS:
            index.add_index(field_name="embedding", index_type="AUTOINDEX", metric_type="IP")
            return index
        index.add_index(field_name="embedding", index_type="HNSW", metric_type="IP", params=HNSW)
        kinds = {f: k for f, k, _ in _fields(name)}
        for field in INDEXED_FIELDS[name]:
            kind = LEGACY_SCALAR[kinds[field]] if legacy else "INVERTED"
            index.add_index(field_name=field, index_type=kind, index_name=f"{field}_index")
        return index

    def _require(self) -> EmbedderInfo:
        if self.bound is None:
            raise StoreError("bind() the store to an embedder before reading or writing")
        return self.bound

    # -- rows -----------------------------------------------------------------------------
    def _rows(self, name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        info = self._require()
        allowed = {f for f, _, _ in _fields(name)} | {"id", "embedding"}
        now = int(time.time())
        out = []
        for r in rows:
            emb = np.asarray(r["embedding"], np.float32).reshape(-1)
            if emb.shape[0] != info.dim:
                raise EmbedderMismatchError(f"{info.dim}-d store, {emb.shape[0]}-d embedding")
            row = {k: v for k, v in r.items() if k in allowed}
            row["embedding"] = emb.tolist()
            row.setdefault("created_at", now)
            if "box" in allowed:
                row["box"] = encode_box(row.get("box"))
            out.append(self._defaults(name, row))
        return out

    @staticmethod
    def _defaults(name: str, row: dict[str, Any]) -> dict[str, Any]:
        for field, kind, _ in _fields(name):
            if field not in row or row[field] is None:
                row[field] = {"VARCHAR": "", "INT64": 0, "DOUBLE": 0.0, "FLOAT": 0.0, "JSON": {}}[
                    kind
                ]
        return row

    def upsert(self, name: str, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        prepared = self._rows(name, rows)
        with timed_write(name):
            self.client.upsert(name, prepared)
        return len(rows)

    @property
    def embedded(self) -> bool:
        """milvus-lite, in this process: its collections live in this process's memory."""
        return self.filters_scan

    def flush(self, name: str) -> None:
        """Write the collection's recent rows from the write buffer to a segment. On
        milvus-lite the buffer (a memtable, in this process) holds about 16 KB of memory
        per row written one at a time, until 128 MB of Arrow data; a segment holds the same
        rows in a few KB each. The rows are durable either way (milvus-lite's WAL)."""
        with timed_write(name):
            self.client.flush(name)

    def upsert_matches(self, rows: list[dict[str, Any]]) -> int:
        """Matches keyed by their deterministic id: writing one twice keeps one."""
        return self.upsert(MATCHES, [dict(r, id=r.get("id") or r["match_id"]) for r in rows])

    def query(
        self,
        name: str,
        filter: str = "",
        ids: list[str] | None = None,
        fields: list[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        self._require()
        kwargs: dict[str, Any] = {
            "output_fields": fields or ["*"],
            "consistency_level": read_consistency(name),
        }
        if ids is not None:
            if not ids:
                return []
            kwargs["ids"] = ids
        else:
            kwargs["filter"] = filter
            if limit is not None:
                kwargs["limit"] = limit
            elif not filter:
                kwargs["filter"] = 'id != ""'
        return [decode_row(dict(r)) for r in self.client.query(name, **kwargs)]

    def delete(self, name: str, ids: list[str] | None = None, filter: str = "") -> int:
        self._require()
        if ids is not None and not ids:
            return 0
        with timed_write(name):
            res = (
                self.client.delete(name, ids=ids)
                if ids is not None
                else self.client.delete(name, filter=filter)
            )
        return len(res) if isinstance(res, list) else int(res.get("delete_count", 0))

    def count(self, name: str, filter: str = "") -> int:
        self._require()
        res = self.client.query(
            name,
            filter=filter,
            output_fields=["count(*)"],
            consistency_level=read_consistency(name),
        )
        return int(res[0]["count(*)"])

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        top_k: int,
        filter: str = "",
        fields: list[str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Nearest rows by inner product (cosine for our normalised embeddings)."""
        info = self._require()
        vecs = np.asarray(vectors, np.float32).reshape(-1, info.dim)
        params: dict[str, Any] = {"metric_type": "IP"}
        if name in self.hnsw:  # HNSW: its search list must hold the top k
            params["params"] = {"ef": min(max(top_k, 64), MAX_EF)}
        res = self.client.search(
            name,
            data=vecs.tolist(),
            limit=top_k,
            filter=filter,
            output_fields=fields or ["*"],
            search_params=params,
            consistency_level=read_consistency(name),
        )
        return [
            [decode_row({**dict(h["entity"]), "id": h["id"], "score": h["distance"]}) for h in hits]
            for hits in res
        ]
