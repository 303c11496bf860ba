"""The data home, opened as one thing: vector store, catalog, audit log and media.

Layout of ``<home>`` (created with mode 0700):
- ``milvus.db/``      milvus-lite database (absent when a Milvus server URI is configured)
- ``catalog.sqlite``  metadata: lists, people, entries, snapshots, cameras, deployments
- ``audit.log``       the hash-chained audit log
- ``media/``          thumbnails and crops, confined here

Faces, names and the audit log live here, so the home is private: a new one is made 0700,
and an existing one that its group or other users may read or enter is refused (the
message names the folder and the fix) unless ``allow_shared_home`` says it is meant to be
shared. The commands also run with umask 077 (``private_umask``), so every file and
folder they create, in the home and in search outputs, is 0600/0700.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.audit import AuditLog
from pipelines.catalog import Catalog
from pipelines.config import Settings
from pipelines.media import Media
from pipelines.privacy import check_private_home
from pipelines.schemas import EmbedderInfo
from pipelines.store import VectorStore


@dataclass
class Home:
    settings: Settings
    path: Path
    catalog: Catalog
    audit: AuditLog
    media: Media
    store: VectorStore | None = None

    @classmethod
    def open(cls, settings: Settings, embedder: EmbedderInfo | None = None) -> Home:
        """Open the home; with ``embedder``, also the vector store bound to that embedder.

        Without it nothing touches Milvus, so metadata commands work while a server holds a
        milvus-lite store.
        """
        path = settings.resolved_home()
        check_private_home(path, settings.allow_shared_home)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        home = cls(settings, path, Catalog.open(path), AuditLog(path / "audit.log"), Media(path))
        if embedder is not None:
            try:
                home.store = VectorStore.open(settings).bind(embedder)
            except Exception:
                home.catalog.close()
                raise
        return home

    def vectors(self) -> VectorStore:
        if self.store is None:
            raise RuntimeError("this home was opened without its vector store")
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        self.catalog.close()

    def __enter__(self) -> Home:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
