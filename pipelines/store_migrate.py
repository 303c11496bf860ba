"""Copy a store to a Milvus server: ``facewatch store migrate --to URI``.

Why: a single machine starts on milvus-lite (a file in the home); a cluster needs a Milvus
server (serve/placement.py refuses milvus-lite on several nodes). Moving must lose
nothing: every collection (watch list, matches, face index) is copied row by row with its
ids, embeddings and scalar fields, into collections made for the same embedder, and each
copy is verified by counting both sides. A destination that already holds rows is refused,
so a copy never mixes with other data; the source is only read. Rows keep their ids, so
an interrupted copy can be run again into the emptied destination.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.schemas import EmbedderInfo
from pipelines.store import (
    EMBEDDER_PROPERTY,
    FACES,
    MATCHES,
    WATCHLIST,
    StoreError,
    VectorStore,
    decode_row,
)

COLLECTIONS = (WATCHLIST, MATCHES, FACES)
BATCH = 1000


@dataclass
class Copied:
    collection: str
    source: int
    destination: int

    @property
    def ok(self) -> bool:
        return self.source == self.destination


def source_embedder(src: VectorStore) -> EmbedderInfo:
    """The embedding space the source's collections were made for."""
    keys = set()
    for name in COLLECTIONS:
        if src.client.has_collection(name):
            props = src.client.describe_collection(name).get("properties", {})
            keys.add(props.get(EMBEDDER_PROPERTY, "(unknown)"))
    if len(keys) != 1:
        raise StoreError(f"the {src.where} has no collections of one embedder to copy: {keys}")
    key = keys.pop()
    try:
        name_version, dim = key.rsplit("/", 1)
        name, version = name_version.split("@", 1)
        return EmbedderInfo(name, version, int(dim))
    except ValueError:
        raise StoreError(f"the {src.where} names an unknown embedder {key!r}") from None


def migrate(src: VectorStore, dst: VectorStore, batch: int = BATCH) -> list[Copied]:
    """Copy every collection of ``src`` into ``dst`` (empty); the counts of both sides."""
    if src.where == dst.where:
        raise StoreError(f"source and destination are the same store ({src.where})")
    info = source_embedder(src)
    src.bind(info)
    dst.bind(info)
    for name in COLLECTIONS:
        if dst.count(name):
            raise StoreError(
                f"the {dst.where} already holds {dst.count(name)} rows in {name}: migrate "
                "into an empty store (a copy never mixes with other data)"
            )
    return [_copy(src, dst, name, batch) for name in COLLECTIONS]


def _copy(src: VectorStore, dst: VectorStore, name: str, batch: int) -> Copied:
    it = src.client.query_iterator(
        name, batch_size=batch, filter='id != ""', output_fields=["*"], consistency_level="Strong"
    )
    try:
        while rows := it.next():
            dst.upsert(name, [decode_row(dict(r)) for r in rows])
    finally:
        it.close()
    return Copied(name, src.count(name), dst.count(name))
