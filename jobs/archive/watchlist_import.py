"""Bulk enrolment: ``facewatch watchlist import MANIFEST.csv``. Thousands of photos in, people
on a watch list out, through the shared FacePool with Ray Data.

Order of work, so that bad input loses nothing and a rerun adds nothing:
1. the manifest is read and checked whole (``pipelines.manifest``), with the list's policy
   (minors) and size cap; any problem stops the import before a photo is read;
2. the driver hashes every photo; a photo whose content hash is already an entry of its
   person (the person id derives from the list and ``person_ref``) is skipped, so a rerun
   sends nothing to the pool;
3. the remaining distinct photos go through Ray Data: ``PhotoStage`` actors read and
   decode them and send them to the pool's ``photos`` lane (batch priority: live first);
4. the driver enrols each person with their usable photos (one ``watchlist.add`` audit
   record each, or ``watchlist.add_photos`` for a person enrolled before); unusable
   photos, and people refused (e.g. at the size cap), go to the errors table;
5. one ``watchlist.import`` audit record with the counts.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.engine import ProbeFace
from pipelines.home import Home
from pipelines.images import ImageError, decode_image, encode_jpeg, sha256_bytes, sha256_file
from pipelines.manifest import ImportPerson, ManifestError, person_id_for, read_manifest
from pipelines.watchlist import WatchlistError, Watchlists

PHOTO_STAGE_MEMORY = 512 * 1024**2  # bytes each PhotoStage actor asks Ray for
ERROR_COLUMNS = ("line", "person_ref", "photo", "reason")


@dataclass
class ImportResult:
    people_added: int = 0
    people_extended: int = 0  # enrolled before; new photos added
    people_unchanged: int = 0
    people_failed: int = 0
    photos_enrolled: int = 0
    photos_skipped: int = 0  # already enrolled (same person, same content)
    photos_failed: int = 0
    photos_processed: int = 0  # distinct photos sent through the pool
    wall_s: float = 0.0
    pool_s: float = 0.0  # Ray Data + pool, from the first photo sent to the last result
    errors: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "errors"}
        out["errors"] = len(self.errors)
        return out


@dataclass
class _Todo:
    person: ImportPerson
    person_id: str
    existing: bool
    photos: list[tuple[Any, str]]  # (PhotoRow, sha256) to enrol


class PhotoStage:
    """Ray Data callable class: photo paths -> usable faces, through the shared FacePool."""

    def __init__(self, app_name: str, max_pixels: int, chunk: int, dim: int):
        from ray import serve as ray_serve

        from jobs.archive.runtime import wait_for_pool
        from serve.pool import POOL_DEPLOYMENT
        from serve.priority import lower_cpu_priority

        lower_cpu_priority()  # batch work: live first
        wait_for_pool(app_name)
        self.pool = ray_serve.get_deployment_handle(POOL_DEPLOYMENT, app_name=app_name)
        self.max_pixels = max_pixels
        self.chunk = chunk
        self.dim = dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        n = len(batch["path"])
        images, where = [], []
        faces: list[ProbeFace | str | None] = [None] * n
        for i, path in enumerate(batch["path"]):
            try:
                data = Path(str(path)).read_bytes()
                if sha256_bytes(data) != batch["sha256"][i]:
                    raise ImageError("the photo changed during the import")
                images.append(decode_image(data, Path(str(path)).name, self.max_pixels))
                where.append(i)
            except (OSError, ImageError) as exc:
                faces[i] = str(exc).removeprefix(f"{Path(str(path)).name}: ")
        calls = [
            self.pool.photos.remote(images[s : s + self.chunk])
            for s in range(0, len(images), self.chunk)
        ]
        got = [f for c in calls for f in c.result()]
        for i, face in zip(where, got, strict=True):
            faces[i] = face
        return self._columns(batch["sha256"], faces)

    def _columns(self, digests, faces: list) -> dict[str, np.ndarray]:
        """One row per photo, every column of one type and shape in every block (Ray Data
        joins blocks: a block of failures only must look like any other)."""
        n = len(faces)
        out = {
            "sha256": np.asarray([str(d) for d in digests], dtype=object),
            "error": np.full(n, "", dtype=object),
            "embedding": np.zeros((n, self.dim), np.float32),
            "thumb": np.full(n, b"", dtype=object),
            "quality": np.zeros(n, np.float64),
            "borderline": np.full(n, "", dtype=object),
            "mode": np.full(n, "", dtype=object),
        }
        for i, f in enumerate(faces):
            if not isinstance(f, ProbeFace):
                out["error"][i] = str(f)
                continue
            out["embedding"][i] = f.embedding
            out["thumb"][i] = encode_jpeg(f.thumbnail, 95)
            out["quality"][i] = f.quality_score
            out["borderline"][i] = ",".join(f.borderline)
            out["mode"][i] = f.embedding_mode
        return out


class BulkImport:
    """One import of a manifest into one list (the driver's side)."""

    def __init__(self, home: Home, lists: Watchlists, list_name: str, actor: str, reason: str):
        self.home, self.lists, self.list_name = home, lists, list_name
        self.actor, self.reason = actor, reason

    def check(self, manifest: Path, today) -> list[ImportPerson]:
        """The manifest's people, checked whole with the list's policies, or ManifestError."""
        if not self.reason.strip():
            raise ManifestError(["an import needs --reason TEXT (audited)"])
        lst = self.home.catalog.get_list(self.list_name)
        people = read_manifest(manifest, self.reason, today, bool(lst and lst["allow_minors"]))
        new = [p for p in people if self._person(p) is None]
        removed = [(p, row) for p in people if (row := self._person(p) or {}).get("removed_at")]
        problems = [
            f"person_ref {p.person_ref!r} was removed from list '{self.list_name}' on "
            f"{row['removed_at']}; an import does not bring a person back"
            for p, row in removed
        ]
        cap, active = self.lists.size_cap(lst), self.lists.active_people(self.list_name)
        if active + len(new) > cap:
            problems.append(
                f"list '{self.list_name}' holds {active} active people and its size cap is "
                f"{cap}: {len(new)} new people do not fit (facewatch watchlist policy)"
            )
        if problems:
            raise ManifestError(problems)
        return people

    def _person(self, p: ImportPerson) -> dict[str, Any] | None:
        pid = person_id_for(self.list_name, p.person_ref)
        return self.home.catalog.row("SELECT * FROM persons WHERE person_id = ?", pid)

    def plan(self, people: list[ImportPerson], result: ImportResult) -> list[_Todo]:
        """Per person, the photos not yet enrolled (by content hash), each once."""
        todo = []
        for p in people:
            pid = person_id_for(self.list_name, p.person_ref)
            known = {
                r["image_sha256"]
                for r in self.home.catalog.rows(
                    "SELECT image_sha256 FROM entries WHERE person_id = ?", pid
                )
            }
            existing = self._person(p) is not None
            photos, seen = [], set(known)
            for row in p.photos:
                digest = sha256_file(row.path)
                if digest in seen:
                    result.photos_skipped += 1
                    continue
                seen.add(digest)
                photos.append((row, digest))
            if photos:
                todo.append(_Todo(p, pid, existing, photos))
            else:
                result.people_unchanged += 1
        return todo

    def run(
        self,
        manifest: Path,
        pool: Callable[[], AbstractContextManager[str]],
        settings,
        today,
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> ImportResult:
        """Check, plan, embed and enrol. ``pool()`` gives the FacePool's Serve app (Ray and
        the pool start there), entered only when some photo is new: a rerun needs none."""
        t0 = time.perf_counter()
        result = ImportResult()
        people = self.check(manifest, today)
        self.home.audit.check()  # fail before any work that could not be recorded
        todo = self.plan(people, result)
        faces = {}
        if todo:
            with pool() as app_name:
                faces = self._faces(todo, app_name, settings, progress, result)
        for item in todo:
            self._enrol(item, faces, result)
        result.wall_s = time.perf_counter() - t0
        self.home.audit.append(
            self.actor,
            "watchlist.import",
            list=self.list_name,
            manifest=str(Path(manifest).resolve()),
            manifest_sha256=sha256_file(manifest),
            reason=self.reason,
            people=len(people),
            **{k: v for k, v in result.counts().items() if not k.endswith("_s")},
        )
        return result

    def _faces(self, todo, app_name, settings, progress, result) -> dict[str, ProbeFace | str]:
        """Each distinct photo's face (or why it has none), by content hash."""
        import ray.data

        paths: dict[str, str] = {}
        for item in todo:
            for row, digest in item.photos:
                paths.setdefault(digest, str(row.path))
        chunk = settings.pool.archive_chunk_frames * 2
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        items = [{"path": p, "sha256": d} for d, p in paths.items()]
        with warnings.catch_warnings():  # Ray calls the restart keywords deprecated
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = self._dataset(items, app_name, settings, chunk, self.lists.embedder.dim)
        out: dict[str, ProbeFace | str] = {}
        t0 = time.perf_counter()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, digest in enumerate(batch["sha256"]):
                out[str(digest)] = _face(batch, i)
            progress(len(out), len(paths))
        result.pool_s = time.perf_counter() - t0
        result.photos_processed = len(out)
        return out

    @staticmethod
    def _dataset(items: list[dict], app_name: str, settings, chunk: int, dim: int):
        import ray.data

        return ray.data.from_items(items).map_batches(
            PhotoStage,
            fn_constructor_kwargs={
                "app_name": app_name,
                "max_pixels": settings.detector.max_pixels,
                "chunk": chunk,
                "dim": dim,
            },
            batch_size=chunk * settings.pool.num_replicas,
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.1,
            memory=PHOTO_STAGE_MEMORY,
            # nothing worth restarting for: a photo lost with an actor is reported as lost
            max_restarts=0,
            max_task_retries=0,
        )

    def _enrol(self, item: _Todo, faces: dict, result: ImportResult) -> None:
        good = []
        for row, digest in item.photos:
            face = faces.get(digest, "not processed (lost in the pipeline)")
            if isinstance(face, str):
                self._error(result, row, face)
                continue
            good.append(_with_source(face, row, digest))
        if not good:  # none usable: a new person is not enrolled; one enrolled is unchanged
            if item.existing:
                result.people_unchanged += 1
            else:
                result.people_failed += 1
            return
        try:
            self._add(item, good)
        except (WatchlistError, ImageError) as exc:
            result.people_failed += 1
            for row, digest in item.photos:
                if not isinstance(faces.get(digest), str):
                    self._error(result, row, f"person not enrolled: {exc}")
            return
        result.photos_enrolled += len(good)
        if item.existing:
            result.people_extended += 1
        else:
            result.people_added += 1

    def _add(self, item: _Todo, good: list[ProbeFace]) -> None:
        p = item.person
        if item.existing:
            self.lists.add_photos(item.person_id, good, self.actor, self.reason)
            return
        self.lists.add(
            p.name,
            good,
            self.actor,
            self.list_name,
            p.category,
            p.reason,
            p.expires_on,
            p.authorised_by,
            p.minor,
            image_source=p.source,
            person_id=item.person_id,
        )

    def _error(self, result: ImportResult, row, reason: str) -> None:
        result.photos_failed += 1
        result.errors.append(
            {"line": row.line, "person_ref": row.person_ref, "photo": row.photo, "reason": reason}
        )


def _face(batch: dict[str, np.ndarray], i: int) -> ProbeFace | str:
    if batch["error"][i]:
        return str(batch["error"][i])
    return ProbeFace(
        path="",
        sha256=str(batch["sha256"][i]),
        embedding=np.asarray(batch["embedding"][i], np.float32),
        thumbnail=decode_image(bytes(batch["thumb"][i])),
        quality_score=float(batch["quality"][i]),
        borderline=tuple(b for b in str(batch["borderline"][i]).split(",") if b),
        embedding_mode=str(batch["mode"][i]),
    )


def _with_source(face: ProbeFace, row, digest: str) -> ProbeFace:
    """The face with this row's photo name (one photo may be two people's, in one import)."""
    return dataclasses.replace(face, path=str(row.photo), sha256=digest)


def write_errors(out: Path, errors: list[dict[str, Any]]) -> tuple[Path, Path]:
    """The errors table as CSV (for an officer) and Parquet (for scripts)."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = out / "errors.csv", out / "errors.parquet"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ERROR_COLUMNS)
        writer.writeheader()
        writer.writerows(errors)
    cols = {k: [e[k] for e in errors] for k in ERROR_COLUMNS}
    schema = pa.schema(
        [
            ("line", pa.int64()),
            ("person_ref", pa.string()),
            ("photo", pa.string()),
            ("reason", pa.string()),
        ]
    )
    pq.write_table(pa.table(cols, schema=schema), parquet_path)
    return csv_path, parquet_path
