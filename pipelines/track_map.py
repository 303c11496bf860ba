"""The face index's track map: which face ids make up each indexed track.

An indexed search finds faces by vector search, then reads back every face of each
candidate track. A scalar filter (``source_id == ... and track_id in [...]``) is fast on a
Milvus server, but milvus-lite evaluates any filter by walking every row of the collection
(about 2 s a query at a million faces, with or without a scalar index), while a read by
primary key takes milliseconds. So ``facewatch index`` records each track's face ids here,
in the catalog (``index_tracks``, migration 7), and a search on milvus-lite reads the faces
by id (a server's indexed filter is faster than its read by id, so a server is read by
filter).

The map is a shortcut, never the truth. The faces are read from the store, and a file's
faces read by id must be what the map recorded: as many as it lists, each still in its
track, none stored after the map was written (each face's ``indexed_at`` at most the map's).
Otherwise the file changed since (a retention run, or an indexing by another home that
shares the store) and its tracks are read back by filter. So is a track the map does not
know: a home indexed before the map existed, a live drill face, a file only partly read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from pipelines.catalog import Catalog

TrackKey = tuple[str, int]  # (source_id, track_id)


class Track(NamedTuple):
    face_ids: list[str]
    indexed_at: int  # when it was written: its faces were stored then or before


LOOKUP_BATCH = 500  # one file's tracks per SQL lookup (far below SQLite's variable limit)


class TrackMap:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def replace(self, source_id: str, tracks: dict[int, list[str]], indexed_at: int) -> None:
        """This file's tracks, replacing whatever an earlier indexing recorded for it."""
        rows = [
            (source_id, int(t), json.dumps(ids), len(ids), int(indexed_at))
            for t, ids in sorted(tracks.items())
        ]
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM index_tracks WHERE source_id = ?", (source_id,))
            db.executemany(
                "INSERT INTO index_tracks(source_id, track_id, face_ids, n_faces, indexed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def forget(self, source_id: str) -> None:
        """No map for this file: its tracks are read back by filter (see the docstring)."""
        self.catalog.db.execute("DELETE FROM index_tracks WHERE source_id = ?", (source_id,))

    def lookup(self, tracks: dict[str, set[int]]) -> dict[TrackKey, Track]:
        """Those of ``tracks`` the map knows."""
        out: dict[TrackKey, Track] = {}
        for fid in sorted(tracks):
            wanted = sorted(int(t) for t in tracks[fid])
            for i in range(0, len(wanted), LOOKUP_BATCH):
                chunk = wanted[i : i + LOOKUP_BATCH]
                marks = ",".join("?" * len(chunk))
                for r in self.catalog.db.execute(
                    "SELECT track_id, face_ids, indexed_at FROM index_tracks "
                    f"WHERE source_id = ? AND track_id IN ({marks})",
                    (fid, *chunk),
                ):
                    ids = json.loads(r["face_ids"])
                    out[(fid, int(r["track_id"]))] = Track(ids, int(r["indexed_at"]))
        return out

    def faces(self) -> int:
        """How many faces the map knows (the home's indexed archive faces)."""
        row = self.catalog.db.execute("SELECT COALESCE(SUM(n_faces), 0) FROM index_tracks")
        return int(row.fetchone()[0])

    def expire(self, cutoff: int) -> int:
        """Forget tracks indexed before ``cutoff`` (Unix seconds), as retention deletes
        their faces; returns how many."""
        cur = self.catalog.db.execute("DELETE FROM index_tracks WHERE indexed_at < ?", (cutoff,))
        return cur.rowcount


def group_by_track(ids: Iterable[str], track_ids: Iterable[int]) -> dict[int, list[str]]:
    """Face ids by track, in the order given."""
    out: dict[int, list[str]] = {}
    for fid, t in zip(ids, track_ids, strict=True):
        out.setdefault(int(t), []).append(fid)
    return out
