"""Thumbnails and crops on disk, confined to the data home.

Paths are stored relative to the home. Every path is resolved and checked to stay inside
``<home>/media`` before anything is read, written or deleted, so an id or a database row
can never point the program at another file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipelines.errors import FacewatchError
from pipelines.paths import resolved

KINDS = ("watchlist", "matches", "alerts", "faces", "probes")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class MediaPathError(FacewatchError, ValueError):
    """A media path or id would leave the media folder."""


class Media:
    def __init__(self, home: Path):
        self.home = Path(home).resolve()
        self.root = self.home / "media"

    def _confined(self, rel: str | Path) -> Path:
        path = resolved(self.home / rel)  # a link loop is outside, not an exception
        if not path.is_relative_to(self.root):
            raise MediaPathError(f"{rel}: outside the media folder {self.root}")
        return path

    def save(self, kind: str, item_id: str, data: bytes, ext: str = ".jpg") -> str:
        """Write ``data`` and return its path relative to the home."""
        if kind not in KINDS:
            raise MediaPathError(f"unknown media kind {kind!r}")
        if not _SAFE_ID.match(item_id) or item_id in (".", ".."):
            raise MediaPathError(f"unsafe media id {item_id!r}")
        rel = Path("media") / kind / f"{item_id}{ext}"
        path = self._confined(rel)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            tmp.write_bytes(data)
        except OSError:  # a full disk: leave no partial file behind
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        return rel.as_posix()

    def path(self, rel: str) -> Path:
        return self._confined(rel)

    def delete(self, rel: str) -> bool:
        if not rel:
            return False
        path = self._confined(rel)
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def files(self, kind: str | None = None) -> list[Path]:
        base = self.root / kind if kind else self.root
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []
