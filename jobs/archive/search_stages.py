"""The Ray Data stages of an archive search. They run in Ray workers, not in the driver.

1. ``decode_segment``: decord reads one segment's sampled frames, a chunk at a time.
2. ``FaceStage``: sends frames to the shared FacePool (through a Serve handle), matches
   the returned embeddings against the watch list held in memory, and keeps a thumbnail
   only for faces close to a match. Everything else about unmatched faces stays in memory.

Rows leaving the stages are of three kinds: "face" (one detected face), "frame" (one
analysed frame, for progress and counts) and "error" (a segment that could not be read).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from pipelines.images import encode_jpeg
from pipelines.match import Gallery, Matcher
from pipelines.schemas import (
    FACE_ROW,
    FaceBatch,
    concat_batches,
    face_row_columns,
    face_row_defaults,
)
from pipelines.video import Segment, VideoError, read_frames
from serve.priority import lower_cpu_priority

TOP_K = 5
POOL_RETRY_S = 300.0  # how long a chunk is retried while the pool replaces a dead replica

logger = logging.getLogger(__name__)


def previous_sampled(sampled: tuple[int, ...]) -> dict[int, int]:
    """For each sampled frame of a segment, the sampled frame before it (the first has none)."""
    return dict(zip(sampled[1:], sampled[:-1], strict=True))


def frame_batch(
    seg: dict, idx: list[int], frames: np.ndarray, before: dict[int, int]
) -> dict[str, Any]:
    n = len(idx)
    return {
        "file_id": np.array([seg["file_id"]] * n, dtype=object),
        "frame_index": np.asarray(idx, np.int64),
        # the sampled frame before this one in the segment (-1: none): lets FaceStage see
        # which frames of a batch follow each other (see frames_follow)
        "prev_index": np.array([before.get(f, -1) for f in idx], np.int64),
        "t": np.asarray(idx, np.float64) / seg["fps"],
        "frame": list(frames),
        "error": np.array([""] * n, dtype=object),
        "n_missing": np.zeros(n, np.int64),
    }


def _error_batch(seg: dict, reason: str, n_missing: int) -> dict[str, Any]:
    return {
        "file_id": np.array([seg["file_id"]], dtype=object),
        "frame_index": np.array([-1], np.int64),
        "prev_index": np.array([-1], np.int64),
        "t": np.array([-1.0]),
        "frame": [np.zeros((1, 1, 3), np.uint8)],
        "error": np.array([reason], dtype=object),
        "n_missing": np.array([n_missing], np.int64),
    }


def decode_segment(batch: dict[str, np.ndarray], chunk: int = 4):
    """Yield frame batches for each segment in ``batch``; a broken file yields an error row."""
    lower_cpu_priority()  # an archive-only worker: live work comes first
    for k in range(len(batch["path"])):
        seg = {key: batch[key][k] for key in batch}
        segment = Segment(
            str(seg["path"]),
            str(seg["file_id"]),
            int(seg["index"]),
            tuple(int(i) for i in seg["frame_indices"]),
            float(seg["fps"]),
            str(seg["backend"]),
        )
        done, before = 0, previous_sampled(segment.frame_indices)
        try:
            for idx, frames in read_frames(segment, chunk):
                done += len(idx)
                yield frame_batch(seg, idx, frames, before)
        except VideoError as exc:
            reason = exc.reason + (f": {exc.detail}" if exc.detail else "")
            yield _error_batch(seg, reason, len(segment.frame_indices) - done)


class FaceStage:
    """Ray Data callable class: frames -> face rows, through the shared FacePool."""

    def __init__(
        self,
        app_name: str,
        gallery: Gallery,
        candidate_margin: float = 0.08,
        crop_all: bool = False,  # a thumbnail for every quality-passing face (the face index)
        chunk: int = 4,  # frames per pool call
    ):
        from ray import serve as ray_serve

        from jobs.archive.runtime import wait_for_pool
        from serve.pool import POOL_DEPLOYMENT

        lower_cpu_priority()  # an archive-only worker: live work first

        wait_for_pool(app_name)  # a pool started with the job may still be loading
        self.pool = ray_serve.get_deployment_handle(POOL_DEPLOYMENT, app_name=app_name)
        self.matcher = Matcher(gallery)
        self.info = gallery.embedder
        self.candidate_margin = candidate_margin
        self.crop_all = crop_all
        self.chunk = chunk

    def _faces(self, frames: list[np.ndarray], follows: list[bool]) -> FaceBatch:
        """Send the frames to the pool ``chunk`` at a time, all chunks at once, so that every
        replica has work even when only this actor has frames to give."""
        args = [
            (frames[i : i + self.chunk], True, [False] + follows[i + 1 : i + self.chunk])
            for i in range(0, len(frames), self.chunk)
        ]
        calls = [self.pool.archive.remote(*a) for a in args]
        parts = [self._result(c, a) for c, a in zip(calls, args, strict=True)]
        return parts[0] if len(parts) == 1 else concat_batches(parts)

    def _result(self, call, args: tuple) -> FaceBatch:
        """The pool's answer; a replica that died with the call in flight (Serve replaces
        it, but loses what it was doing), or whose answer was lost with its node before it
        was read (the answer lives in that node's object store, and a Serve call is not
        re-run to rebuild it: ObjectLostError), is asked again, with capped backoff, for up
        to ``POOL_RETRY_S``. A pool call is a pure function of its frames, so the answer is
        the one the dead replica would have given."""
        import ray.exceptions

        lost = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)
        deadline, delay = time.monotonic() + POOL_RETRY_S, 0.5
        while True:
            try:
                return call.result()
            except lost as exc:
                if time.monotonic() > deadline:
                    raise
                logger.warning(
                    "a FacePool replica or its answer was lost (%s); asking again in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                time.sleep(delay)  # Serve is starting a replacement: nothing to wait on
                delay = min(delay * 2, 10.0)
                call = self.pool.archive.remote(*args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ok = np.array([e == "" for e in batch["error"]], bool)
        rows = _Rows(self.info.dim)
        for i in np.flatnonzero(~ok):
            rows.error(batch, int(i))
        good = np.flatnonzero(ok)
        if len(good):
            frames = [np.asarray(batch["frame"][i]) for i in good]
            faces = self._faces(frames, frames_follow(batch, good))
            matches = self.matcher.match(faces.embeddings, faces.embedder, TOP_K)
            matches.margin[~faces.passed] = -np.inf
            for j, i in enumerate(good):
                rows.frame(batch, int(i), int((faces.detections.frame_index == j).sum()))
            crops = faces.crops
            if crops is None:  # self._faces asks the engine for crops
                raise RuntimeError("the face engine returned no crops")
            for f in face_order(faces.detections.frame_index, faces.detections.boxes):
                close = matches.margin[f, 0] >= -self.candidate_margin
                close = close or bool(self.crop_all and faces.passed[f])
                crop = encode_jpeg(crops[f]) if close else b""
                rows.face(
                    batch, int(good[faces.detections.frame_index[f]]), faces, matches, f, crop
                )
        return rows.columns()


def face_order(frame_index: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The faces by frame, then left to right (then top to bottom): the order that numbers
    them (``face_index``, part of match and face ids). Whole-frame and region detection list
    the same faces in different orders; numbered by place, a face keeps its id whichever
    found it, so a rerun with other pool settings adds no duplicates."""
    return np.lexsort((boxes[:, 1], boxes[:, 0], frame_index))


def frames_follow(batch: dict[str, np.ndarray], rows: np.ndarray) -> list[bool]:
    """For each of ``rows``, whether it is the sampled frame right after the row before it
    (same file, and that row's frame is the one sampled just before it)."""
    out = [False]
    for a, b in zip(rows[:-1], rows[1:], strict=True):
        same = batch["file_id"][a] == batch["file_id"][b]
        out.append(bool(same and batch["prev_index"][b] == batch["frame_index"][a]))
    return out[: len(rows)]


class _Rows:
    """Column builder for FaceStage output (all kinds share one schema)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.cols: dict[str, list] = {c.name: [] for c in FACE_ROW}
        self._face_counter: dict[tuple[str, int], int] = {}

    def _add(self, **values: Any) -> None:
        row = {**face_row_defaults(self.dim, TOP_K), **values}
        for k, v in row.items():
            self.cols[k].append(v)

    def _base(self, batch: dict, i: int) -> dict[str, Any]:
        return {
            "file_id": str(batch["file_id"][i]),
            "frame_index": int(batch["frame_index"][i]),
            "t": float(batch["t"][i]),
        }

    def error(self, batch: dict, i: int) -> None:
        self._add(
            kind="error",
            error=str(batch["error"][i]),
            n_missing=int(batch["n_missing"][i]),
            **self._base(batch, i),
        )

    def frame(self, batch: dict, i: int, n_faces: int) -> None:
        self._add(kind="frame", n_faces=n_faces, **self._base(batch, i))

    def face(self, batch: dict, i: int, faces, matches, f: int, crop: bytes) -> None:
        base = self._base(batch, i)
        key = (base["file_id"], base["frame_index"])
        face_index = self._face_counter.get(key, 0)
        self._face_counter[key] = face_index + 1
        q = faces.quality
        self._add(
            kind="face",
            face_index=face_index,
            box=faces.detections.boxes[f],
            passed=bool(q.passed[f]),
            reason=str(q.reason[f]),
            quality=float(q.quality_score[f]),
            embedding=faces.embeddings[f],
            cand_person=matches.person[f],
            cand_score=matches.score[f],
            cand_margin=matches.margin[f],
            crop=crop,
            **base,
        )

    def columns(self) -> dict[str, Any]:
        return face_row_columns(self.cols, self.dim, TOP_K)
