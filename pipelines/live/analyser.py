"""Per-camera live analysis: faces -> tracks -> at most one alert per person per track.

Plain Python on the engine's ``FaceBatch`` (no Ray), so the rules are unit-tested directly:
- Faces that fail a quality gate are tracked (on box overlap) but never matched.
- Each usable face is matched against the camera's in-memory watch list; a track's identity
  is decided over its faces with the archive search's rule (``decide_tracks``: the mean of
  the best ``top_n`` margins), and only once it has ``min_track_faces`` usable faces, so a
  single lucky frame does not page an officer.
- One alert per person per track, and at most one per person per camera within
  ``alert_window_s``. The alert carries the track's best-quality face.
- Everything about faces that match nobody stays in this object and is dropped when the
  track ends: only counters survive. ``keep_nonmatches`` (drills only) hands the best face
  of such tracks to the caller instead, and the hub says so loudly in its logs.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.config import LiveConfig
from pipelines.match import Matcher
from pipelines.schemas import FaceBatch
from pipelines.sightings import FaceTable, decide_tracks
from pipelines.track import Tracker, TrackerConfig

TOP_K = 5
MAX_FACES_PER_TRACK = 64  # the decision uses the best few; older faces add nothing


@dataclass
class Face:
    """One face of a track, in memory only."""

    t: float  # monotonic seconds
    seq: int  # frame sequence number on this camera
    received_at: float  # epoch seconds the frame arrived
    face_index: int
    box: np.ndarray
    quality: float
    embedding: np.ndarray
    crop: np.ndarray | None
    cand_person: tuple[str, ...] = ()  # top-k person ids
    cand_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cand_margin: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass
class TrackState:
    track_id: int
    last_t: float
    faces: deque[Face] = field(default_factory=lambda: deque(maxlen=MAX_FACES_PER_TRACK))
    best: Face | None = None  # best-quality usable face so far
    alerted: set[str] = field(default_factory=set)  # person ids decided (alerted or suppressed)
    n_seen: int = 0

    def add(self, face: Face) -> None:
        self.faces.append(face)
        if self.best is None or face.quality > self.best.quality:
            self.best = face


@dataclass
class AlertDraft:
    """An alert as decided, before it is stored and sent. Holds the best face in memory."""

    alert_id: str
    camera_id: str
    track_id: int
    person_id: str
    person_name: str
    list_name: str
    photo: str
    snapshot_id: str
    score: float  # the track's score for the person: mean of its best top_n similarities
    margin: float  # score minus threshold, aggregated as the decision rule does
    threshold: float
    face: Face  # the best-quality face of the track
    face_score: float  # the best face's similarity to the person
    trigger_seq: int  # the frame whose analysis decided the alert
    trigger_received_at: float
    n_faces: int


@dataclass
class FrameOutcome:
    seq: int
    faces: int
    usable: int
    track_ids: list[int]
    alerts: list[AlertDraft]
    drill_faces: list[tuple[int, Face]]  # (track id, best face), drills only

    def public(self) -> dict[str, Any]:
        """What a camera that pushed the frame may learn: counts and alert ids only."""
        return {
            "status": "analysed",
            "seq": self.seq,
            "faces": self.faces,
            "usable_faces": self.usable,
            "alerts": [a.alert_id for a in self.alerts],
        }


def alert_id(camera_id: str, epoch: str, track_id: int, person_id: str) -> str:
    """Stable per (camera, tracker run, track, person): retries and webhooks dedupe on it."""
    key = f"{camera_id}:{epoch}:{track_id}:{person_id}"
    return "a_" + hashlib.sha256(key.encode()).hexdigest()[:24]


class LiveAnalyser:
    """Tracking, matching and alert decisions for one camera."""

    def __init__(self, camera_id: str, policy: LiveConfig, epoch: str):
        self.camera_id = camera_id
        self.policy = policy
        self.epoch = epoch  # distinguishes tracker runs, so track ids never collide
        self.matcher: Matcher | None = None
        self.tracker = Tracker(TrackerConfig(max_gap_s=policy.track_max_gap_s))
        self.tracks: dict[int, TrackState] = {}
        self.last_alert: dict[str, float] = {}  # person id -> epoch seconds
        self.counters: Counter[str] = Counter()

    def set_matcher(self, matcher: Matcher | None) -> None:
        """A new copy of the list: candidates scored against the old one no longer count."""
        self.matcher = matcher
        if matcher is not None:  # tracks follow faces, never a threshold
            self.tracker.config = TrackerConfig.for_embedder(
                matcher.gallery.embedder.name, max_gap_s=self.policy.track_max_gap_s
            )
        for track in self.tracks.values():
            track.faces.clear()

    def update(self, t: float, seq: int, received_at: float, batch: FaceBatch) -> FrameOutcome:
        """Analyse one frame's faces (t: monotonic seconds)."""
        drill = self._close_tracks(t)
        passed = batch.passed.astype(bool)
        self.counters["frames"] += 1
        self.counters["faces"] += len(batch)
        for reason, n in batch.quality.rejection_counts().items():
            self.counters[f"rejected_{reason}"] += n
        ids = self.tracker.update(t, batch.detections.boxes, batch.embeddings, passed)
        cands = self._candidates(batch, passed)
        self.counters["faces_matched"] += sum(1 for people, _, _ in cands.values() if people)
        quality = batch.quality.quality_score
        touched = set()
        for i, tid in enumerate(ids.tolist()):
            track = self.tracks.setdefault(tid, TrackState(tid, t))
            track.last_t, track.n_seen = t, track.n_seen + 1
            if not passed[i]:
                continue
            people, scores, margins = cands.get(i, ((), np.zeros(0), np.zeros(0)))
            face = Face(
                t=t,
                seq=seq,
                received_at=received_at,
                face_index=i,
                box=batch.detections.boxes[i].copy(),
                quality=float(quality[i]),
                embedding=batch.embeddings[i].copy(),
                crop=batch.crops[i] if batch.crops is not None else None,
                cand_person=people,
                cand_score=scores,
                cand_margin=margins,
            )
            track.add(face)
            touched.add(tid)
        alerts = [a for tid in sorted(touched) if (a := self._decide(self.tracks[tid], seq))]
        return FrameOutcome(seq, len(batch), int(passed.sum()), ids.tolist(), alerts, drill)

    def _candidates(
        self, batch: FaceBatch, passed: np.ndarray
    ) -> dict[int, tuple[tuple[str, ...], np.ndarray, np.ndarray]]:
        if self.matcher is None or not len(self.matcher.person_ids) or not passed.any():
            return {}
        rows = np.flatnonzero(passed)
        m = self.matcher.match(batch.embeddings[rows], batch.embedder, k=TOP_K)
        out: dict[int, tuple[tuple[str, ...], np.ndarray, np.ndarray]] = {}
        for j, i in enumerate(rows.tolist()):
            keep = m.person[j] >= 0
            people = tuple(self.matcher.person_ids[p] for p in m.person[j][keep])
            out[i] = (people, m.score[j][keep].copy(), m.margin[j][keep].copy())
        return out

    def _decide(self, track: TrackState, seq: int) -> AlertDraft | None:
        faces = [f for f in track.faces if f.cand_person]
        if self.matcher is None or len(faces) < self.policy.min_track_faces:
            return None
        verdict = _verdict(faces, self.policy.top_n)
        if verdict is None:
            return None
        person_id, margin = verdict
        if person_id in track.alerted:
            return None
        track.alerted.add(person_id)
        now = faces[-1].received_at
        last = self.last_alert.get(person_id)
        if last is not None and now - last < self.policy.alert_window_s:
            self.counters["alerts_suppressed"] += 1
            return None
        self.last_alert[person_id] = now
        self.counters["alerts"] += 1
        return self._draft(track, person_id, margin, faces, seq)

    def _draft(
        self, track: TrackState, person_id: str, margin: float, faces: list[Face], seq: int
    ) -> AlertDraft:
        m = self.matcher
        if m is None:  # decided on the matcher's candidates: it is set
            raise RuntimeError("an alert was decided without a watch list")
        p = m.person_ids.index(person_id)
        scores = [
            float(f.cand_score[f.cand_person.index(person_id)])
            for f in faces
            if person_id in f.cand_person
        ]
        best = track.best
        if best is None:  # the track has usable faces (``faces``): its best is set
            raise RuntimeError("an alert was decided on a track without a best face")
        face_score = float(m.person_scores(best.embedding[None], m.gallery.embedder)[0, p])
        list_name = m.person_lists[p]
        return AlertDraft(
            alert_id=alert_id(self.camera_id, self.epoch, track.track_id, person_id),
            camera_id=self.camera_id,
            track_id=track.track_id,
            person_id=person_id,
            person_name=m.person_names[p],
            list_name=list_name,
            photo=m.person_photo[p],
            snapshot_id=m.gallery.snapshot_ids.get(list_name, ""),
            score=round(float(np.mean(sorted(scores)[::-1][: self.policy.top_n])), 4),
            margin=round(margin, 4),
            threshold=round(float(m.person_threshold[p]), 4),
            face=best,
            face_score=round(face_score, 4),
            trigger_seq=seq,
            trigger_received_at=faces[-1].received_at,
            n_faces=len(faces),
        )

    def _close_tracks(self, t: float) -> list[tuple[int, Face]]:
        """End tracks unseen for ``track_max_gap_s``; their faces are dropped here."""
        drill = []
        gap = self.tracker.config.max_gap_s
        for tid in [k for k, tr in self.tracks.items() if t - tr.last_t > gap]:
            track = self.tracks.pop(tid)
            self.counters["tracks"] += 1
            if track.alerted:
                continue
            self.counters["tracks_unmatched"] += 1
            self.counters["faces_discarded"] += track.n_seen
            if self.policy.keep_nonmatches and track.best is not None:
                drill.append((tid, track.best))
        return drill

    def active_tracks(self) -> int:
        return len(self.tracks)


def _verdict(faces: list[Face], top_n: int) -> tuple[str, float] | None:
    """The track's person and aggregated margin, by ``decide_tracks`` on these faces."""
    people = sorted({p for f in faces for p in f.cand_person})
    index = {p: i for i, p in enumerate(people)}
    k = max(len(f.cand_person) for f in faces)
    n = len(faces)
    cand_person = np.full((n, k), -1, np.int64)
    cand_score = np.full((n, k), -np.inf, np.float32)
    cand_margin = np.full((n, k), -np.inf, np.float32)
    for r, f in enumerate(faces):
        c = len(f.cand_person)
        cand_person[r, :c] = [index[p] for p in f.cand_person]
        cand_score[r, :c] = f.cand_score
        cand_margin[r, :c] = f.cand_margin
        if c < k:  # fewer people in the list than k: repeat the last as the bound
            cand_margin[r, c:] = f.cand_margin[-1]
    table = FaceTable(
        t=np.array([f.t for f in faces]),
        frame_index=np.array([f.seq for f in faces]),
        face_index=np.array([f.face_index for f in faces]),
        boxes=np.stack([f.box for f in faces]),
        passed=np.ones(n, bool),
        quality=np.array([f.quality for f in faces], np.float32),
        cand_person=cand_person,
        cand_score=cand_score,
        cand_margin=cand_margin,
    )
    verdicts = decide_tracks(table, np.zeros(n, np.int64), top_n=top_n)
    if not verdicts:
        return None
    return people[verdicts[0].person], verdicts[0].margin
