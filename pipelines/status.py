"""What ``facewatch status`` and ``GET /v1/status`` read from the home: archive searches in
progress (with an ETA) and the last retention run.

Why small files in ``<home>/status/``: a search runs in its own driver process (the CLI),
and the server, or a ``facewatch status`` run beside it, must see its progress without a
connection to it. One JSON file per search, replaced atomically (write, then rename) a few
times a second at most, costs nothing, needs no catalog table and never blocks the search.
A search that ends removes its file; one whose process died leaves it, and is shown as
``stopped`` (checked by pid on the same host, by age elsewhere). Files hold counts and
times only: never a path, a case reference or a person.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUS_DIR = "status"
SEARCHES_DIR = "searches"
RETENTION_FILE = "retention.json"
WRITE_EVERY_S = 0.5
STALE_S = 600.0  # a search on another host that wrote nothing for this long: stopped
FORGET_S = 86400.0  # a stopped search's file is removed a day after its last write


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class SearchProgressFile:
    """One running search's progress in ``<home>/status/searches/<id>.json``."""

    def __init__(
        self, home: Path, kind: str = "search", clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.search_id = "s_" + uuid.uuid4().hex[:12]
        self.path = Path(home) / STATUS_DIR / SEARCHES_DIR / f"{self.search_id}.json"
        self.state: dict[str, Any] = {
            "search_id": self.search_id,
            "kind": kind,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": clock(),
            "updated_at": clock(),
            "files_total": 0,
            "files_done": 0,
            "files_failed": 0,
            "frames_total": 0,
            "frames_done": 0,
            "video_s": 0.0,
        }
        self._written = 0.0

    def total(self, files: int, frames: int) -> None:
        self.state.update(files_total=int(files), frames_total=int(frames))
        self._write(force=True)

    def advance(self, frames: int) -> None:
        first = self.state["frames_done"] == 0 and frames > 0  # the first rate: an ETA
        self.state["frames_done"] += int(frames)
        self._write(force=first)

    def file_done(self, failed: bool, video_s: float) -> None:
        self.state["files_failed" if failed else "files_done"] += 1
        self.state["video_s"] += float(video_s)
        self._write(force=True)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._written < WRITE_EVERY_S:
            return
        self.state["updated_at"] = now
        self._written = now
        try:
            _write_json(self.path, self.state)
        except OSError:  # progress is for watching; a full disk must not fail the search
            pass


def _alive(entry: dict[str, Any], now: float) -> bool:
    if entry.get("host") != socket.gethostname():
        return now - float(entry.get("updated_at", 0)) < STALE_S
    try:
        os.kill(int(entry.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def search_view(entry: dict[str, Any], now: float) -> dict[str, Any]:
    """A search's row: progress (0-1) by frames, rate and ETA in seconds."""
    total, done = int(entry.get("frames_total", 0)), int(entry.get("frames_done", 0))
    elapsed = max(1e-6, now - float(entry.get("started_at", now)))
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 and total >= done else None
    files_total = int(entry.get("files_total", 0))
    finished = int(entry.get("files_done", 0)) + int(entry.get("files_failed", 0))
    return {
        "search_id": entry.get("search_id", ""),
        "kind": entry.get("kind", "search"),
        "state": "running" if _alive(entry, now) else "stopped",
        "started_at": datetime.fromtimestamp(
            float(entry.get("started_at", 0)), timezone.utc
        ).isoformat(timespec="seconds"),
        "files_total": files_total,
        "files_done": int(entry.get("files_done", 0)),
        "files_failed": int(entry.get("files_failed", 0)),
        "files_remaining": max(0, files_total - finished),
        "frames_done": done,
        "frames_total": total,
        "progress": round(done / total, 4) if total else 0.0,
        "frames_per_s": round(rate, 2),
        "eta_s": None if eta is None else round(eta, 1),
        "video_s": round(float(entry.get("video_s", 0.0)), 1),
    }


def read_searches(home: Path, now: float | None = None) -> list[dict[str, Any]]:
    """Searches with a progress file in this home, oldest first; a stopped search's file
    is removed a day after it last wrote."""
    now = time.time() if now is None else now
    folder = Path(home) / STATUS_DIR / SEARCHES_DIR
    out = []
    for path in sorted(folder.glob("s_*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced, or damaged: the next read sees it
        view = search_view(entry, now)
        if view["state"] == "stopped" and now - float(entry.get("updated_at", 0)) > FORGET_S:
            path.unlink(missing_ok=True)
            continue
        out.append(view)
    return sorted(out, key=lambda v: v["started_at"])


def write_last_retention(home: Path, actor: str, row: dict[str, Any]) -> None:
    """The last (non-dry) retention run, for the status page; the audit log has them all."""
    data = {"at": utc_now(), "actor": actor, **row}
    try:
        _write_json(Path(home) / STATUS_DIR / RETENTION_FILE, data)
    except OSError:  # the run is audited; this file is a convenience
        pass


def read_last_retention(home: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(
            (Path(home) / STATUS_DIR / RETENTION_FILE).read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return None
    return data
