"""Matches handed to the store's one writer: how a search started by the server stores its
matches while the server holds the milvus-lite store.

milvus-lite lets one process open a database, and ``facewatch serve`` (its LiveHub) holds
the home's. A search started from the workspace is its own process (it outlives the web
request, and the server), so it cannot open that store. Instead it writes each finished
file's matches, with the file's completion record, as one JSON file (no pickle) under
``HOME/handoff/SEARCH_ID/`` (written whole, then renamed into place). The server, the
store's single writer, ingests them: upsert by the matches' deterministic ids, then the
completion record, then the file goes. Whatever dies in between, the file stays and is
ingested again; upserts by id make that idempotent, so no match is lost or duplicated. A
rerun of the search skips the files whose completion records were written, as it does
after a search that wrote the store itself (jobs/archive/resume.py).

A watch-list search also reads the list's vectors: the server writes them to
``gallery.json`` in the same folder before it starts the search (``HandoffVectors``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.catalog import Catalog, utcnow
from pipelines.store import WATCHLIST

logger = logging.getLogger(__name__)
GALLERY = "gallery.json"


def handoff_root(home: Path) -> Path:
    return home / "handoff"


def record_completion(
    catalog: Catalog, key: str, file_id: str, path: str, body: dict[str, Any]
) -> None:
    """A file of search ``key`` is complete: its matches are stored (call only then)."""
    catalog.db.execute(
        "INSERT OR REPLACE INTO search_files(search_key, file_id, path, completed_at, "
        "result_json) VALUES (?, ?, ?, ?, ?)",
        (key, file_id, path, utcnow(), json.dumps(body)),
    )


def _write_whole(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, default=_plain)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be handed off")


class HandoffVectors:
    """The search's side: the store it may not open, as a folder the server reads.

    ``query`` answers watch-list vector look-ups from the server's ``gallery.json``;
    ``hand_off`` leaves one file's matches and completion record for the server."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def query(self, name: str, ids: list[str] | None = None, **_: Any) -> list[dict[str, Any]]:
        if name != WATCHLIST or ids is None:
            raise RuntimeError(f"a handed-off search reads only watch-list vectors, not {name}")
        path = self.folder / GALLERY
        vectors = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        found = [i for i in ids if i in vectors]
        return [{"id": i, "embedding": np.asarray(vectors[i], np.float32)} for i in found]

    def hand_off(
        self,
        key: str,
        file_id: str,
        path: str,
        rows: list[dict[str, Any]],
        body: dict[str, Any] | None,
    ) -> None:
        """``body`` None: the file was not searched whole (stored, but no completion)."""
        data = {"search_key": key, "file_id": file_id, "path": path, "rows": rows, "body": body}
        _write_whole(self.folder / f"file-{file_id}.json", data)

    def close(self) -> None:
        """Nothing held: the server holds the store."""


def export_gallery(store: Any, folder: Path) -> int:
    """The server's side, before a watch-list search starts: every enrolled vector."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    rows = store.query(WATCHLIST, fields=["embedding"])
    _write_whole(folder / GALLERY, {r["id"]: r["embedding"] for r in rows})
    return len(rows)


def pending(folder: Path) -> int:
    """Files handed off from ``folder`` and not yet ingested."""
    return len(list(folder.glob("file-*.json"))) if folder.is_dir() else 0


def ingest(store: Any, catalog: Catalog, root: Path) -> int:
    """The server's side: store every handed-off file under ``root``, oldest search first;
    the number of files ingested. A file that is not a hand-off is set aside, named."""
    done = 0
    for path in sorted(root.glob("*/file-*.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = [dict(r, embedding=np.asarray(r["embedding"], np.float32)) for r in data["rows"]]
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("hand-off %s is unreadable (%s): set aside as .bad", path, exc)
            path.rename(path.with_suffix(".bad"))
            continue
        if rows:
            store.upsert_matches(rows)
        if data["body"] is not None:
            key, file_id, name = data["search_key"], data["file_id"], data["path"]
            record_completion(catalog, key, file_id, name, data["body"])
        path.unlink()
        done += 1
    return done
