"""LFW View 2 face verification through facewatch's own detect -> align -> embed pipeline.

Why: LFW's View 2 protocol is the common yardstick for face verification, and published
numbers (dlib ResNet 99.38%) let us check that our pure-Python model reader, our MTCNN-based
alignment and our thresholds together reach the accuracy the model is capable of.

Protocol, as published: the pairs file is split into person-disjoint folds, each with
matched and mismatched pairs. For every fold the decision threshold is the one that
maximises accuracy on the *other* folds; it is applied to the held-out fold. We report the
per-fold accuracies, their mean and standard deviation (population, ddof=0), and the
thresholds.

Pipeline choices:
- Detection: MTCNN on the whole 250x250 image, as in production. An LFW image may show
  several people; the labelled one is centred, so the face whose box centre is nearest the
  image centre is used.
- No face found: a pair must always get a decision, so such an image is aligned from a fixed
  centre face whose landmarks are the mean MTCNN landmarks over LFW images of people in no
  fold (funneled LFW faces are centred and similarly scaled). These are counted (``no_face``).
- Quality gates do not reject here (the protocol has no "no decision" outcome). Their
  verdicts are recorded instead: how many images each gate would reject, and the accuracy
  of pairs where a gate fires, which is how the gates' defaults are judged.
- Each image is embedded once, however many pairs use it, in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.align import align_faces
from pipelines.detect import FaceDetector
from pipelines.embedders.base import Embedder
from pipelines.engine import FaceEngine
from pipelines.errors import FacewatchError
from pipelines.images import load_image
from pipelines.quality import QualityGate
from pipelines.schemas import FaceDetections, Quality, select_quality

ImageKey = tuple[str, int]  # (person name, image number as in the pairs file)
ProgressFn = Callable[[str, int, int], None]  # (stage, items done so far, total items)

LFW_SIZE = 250
# Mean MTCNN landmarks and box on LFW's 250x250 funneled images, over the 784 images of
# people in no pairs-dev fold (MTCNN found a face in all of them). Reproduce with
# ``python benchmarks/derive_templates.py``. Used only where MTCNN finds no face.
CENTRE_LANDMARKS = np.array(
    [[104.78, 114.47], [149.04, 113.45], [126.76, 139.67], [108.25, 162.50], [146.98, 161.76]],
    np.float32,
)
CENTRE_BOX = np.array([77.05, 65.51, 174.23, 192.51], np.float32)


class PairsFormatError(FacewatchError, ValueError):
    """The pairs file does not follow the LFW View 2 format. The message says where."""


@dataclass(frozen=True)
class Pair:
    fold: int  # 1-based, in file order
    same: bool
    a: ImageKey
    b: ImageKey


# ---------------------------------------------------------------------------- pairs file


def parse_pairs(path: Path | str) -> list[Pair]:
    """Read ``pairs.txt``: a ``folds n`` header, then per fold n matched, n mismatched lines."""
    path = Path(path)
    rows = [(no, line.split()) for no, line in enumerate(path.read_text().splitlines(), 1)]
    rows = [(no, tokens) for no, tokens in rows if tokens]
    if not rows:
        raise PairsFormatError(f"{path}: empty pairs file")
    n_folds, per = _parse_header(rows[0][1], path)
    body = rows[1:]
    if len(body) != n_folds * 2 * per:
        raise PairsFormatError(
            f"{path}: header promises {n_folds} folds x {2 * per} pairs = "
            f"{n_folds * 2 * per} lines, found {len(body)}"
        )
    return [
        _parse_line(tokens, k // (2 * per) + 1, k % (2 * per) < per, f"{path}:{no}")
        for k, (no, tokens) in enumerate(body)
    ]


def _parse_header(tokens: list[str], path: Path) -> tuple[int, int]:
    try:
        n_folds, per = (int(t) for t in tokens)
    except ValueError:
        raise PairsFormatError(
            f"{path}:1: header must be 'folds pairs_per_half', got {tokens}"
        ) from None
    if n_folds < 1 or per < 1:
        raise PairsFormatError(f"{path}:1: header numbers must be positive, got {tokens}")
    return n_folds, per


def _parse_line(tokens: list[str], fold: int, same: bool, where: str) -> Pair:
    try:
        if same and len(tokens) == 3:
            return Pair(fold, True, (tokens[0], int(tokens[1])), (tokens[0], int(tokens[2])))
        if not same and len(tokens) == 4:
            return Pair(fold, False, (tokens[0], int(tokens[1])), (tokens[2], int(tokens[3])))
    except ValueError:
        pass
    shape = "name i j" if same else "name1 i name2 j"
    raise PairsFormatError(
        f"{where}: expected a {'matched' if same else 'mismatched'} "
        f"pair '{shape}', got {' '.join(tokens)!r}"
    )


def select_pairs(
    pairs: Sequence[Pair], folds: Sequence[int] | None = None, limit_per_fold: int | None = None
) -> list[Pair]:
    """The pairs of ``folds`` (all when None), at most ``limit_per_fold`` per fold.

    A limit keeps the fold balanced: the first half of it from the matched pairs, the rest
    from the mismatched ones.
    """
    present = sorted({p.fold for p in pairs})
    wanted = present if folds is None else sorted(set(folds))
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise ValueError(f"folds {missing} are not in the pairs file (it has {present})")
    out: list[Pair] = []
    for fold in wanted:
        matched = [p for p in pairs if p.fold == fold and p.same]
        mismatched = [p for p in pairs if p.fold == fold and not p.same]
        if limit_per_fold is not None:
            n_same = (limit_per_fold + 1) // 2
            matched, mismatched = matched[:n_same], mismatched[: limit_per_fold - n_same]
        out.extend(matched + mismatched)
    return out


def image_path(root: Path, key: ImageKey) -> Path:
    name, number = key
    return Path(root) / name / f"{name}_{number:04d}.jpg"


def unique_images(pairs: Sequence[Pair]) -> list[ImageKey]:
    """Every image the pairs use, once, in order of first use."""
    return list(dict.fromkeys(k for p in pairs for k in (p.a, p.b)))


# ---------------------------------------------------------------------------- protocol maths


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided right, deciding "same" when ``score >= threshold``."""
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(same, bool)))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (higher score = more alike).

    Candidates are the midpoints between consecutive distinct scores, plus one below and one
    above them all. Where several candidates tie, the middle one of them is taken.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    if s.size == 0:
        raise ValueError("no scores to choose a threshold from")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    distinct = np.unique(s)
    margin = 1e-6 + 1e-3 * (distinct[-1] - distinct[0])
    candidates = np.concatenate(
        [[distinct[0] - margin], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + margin]]
    )
    below = np.searchsorted(s, candidates, side="left")  # pairs decided "different"
    same_below = np.concatenate([[0], np.cumsum(y)])[below]
    correct = (y.sum() - same_below) + (below - same_below)
    ties = np.flatnonzero(correct == correct.max())
    return float(candidates[ties[len(ties) // 2]])


@dataclass
class FoldResult:
    fold: int
    n_pairs: int
    threshold: float  # chosen on the other folds
    accuracy: float  # on this fold
    train_accuracy: float  # of that threshold on the other folds


@dataclass
class CrossValidation:
    folds: list[FoldResult]
    correct: np.ndarray  # (n_pairs,) bool: each pair's decision under its fold's threshold

    @property
    def mean(self) -> float:
        return float(np.mean([f.accuracy for f in self.folds]))

    @property
    def std(self) -> float:
        return float(np.std([f.accuracy for f in self.folds]))


def cross_validate(scores: np.ndarray, same: np.ndarray, fold_of: np.ndarray) -> CrossValidation:
    """Leave-one-fold-out: each fold is decided with the threshold best on the others."""
    scores, same, fold_of = np.asarray(scores), np.asarray(same, bool), np.asarray(fold_of)
    folds = sorted(set(fold_of.tolist()))
    if len(folds) < 2:
        raise ValueError(
            f"the protocol needs at least two folds to choose thresholds on; got {folds}"
        )
    results, correct = [], np.zeros(len(scores), bool)
    for fold in folds:
        test = fold_of == fold
        t = best_threshold(scores[~test], same[~test])
        correct[test] = (scores[test] >= t) == same[test]
        results.append(
            FoldResult(
                fold=int(fold),
                n_pairs=int(test.sum()),
                threshold=t,
                accuracy=float(correct[test].mean()),
                train_accuracy=accuracy(scores[~test], same[~test], t),
            )
        )
    return CrossValidation(results, correct)


# ---------------------------------------------------------------------------- faces


@dataclass
class LfwFaces:
    """One face per image: the detection nearest the centre, or the centre fallback."""

    detections: FaceDetections  # row i belongs to image i (frame_index == i)
    found: np.ndarray  # (N,) bool; False where MTCNN found no face and the fallback is used


def fallback_face(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The centre face's (box, landmarks), scaled from LFW's 250x250 to this image size."""
    scale = np.array([width / LFW_SIZE, height / LFW_SIZE], np.float32)
    return CENTRE_BOX * np.tile(scale, 2), CENTRE_LANDMARKS * scale


def central_faces(dets: FaceDetections, shapes: Sequence[tuple[int, int]]) -> LfwFaces:
    """Per image, the detected face nearest the image centre, else the centre fallback."""
    n = len(shapes)
    boxes = np.zeros((n, 4), np.float32)
    landmarks = np.zeros((n, 5, 2), np.float32)
    scores = np.zeros(n, np.float32)
    found = np.zeros(n, bool)
    centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    for i, (h, w) in enumerate(shapes):
        rows = np.flatnonzero(dets.frame_index == i)
        if len(rows) == 0:
            boxes[i], landmarks[i] = fallback_face(h, w)
            continue
        off = np.linalg.norm(centres[rows] - np.array([w / 2, h / 2]), axis=1)
        j = rows[int(np.argmin(off))]
        boxes[i], landmarks[i], scores[i], found[i] = (
            dets.boxes[j],
            dets.landmarks[j],
            dets.scores[j],
            True,
        )
    return LfwFaces(FaceDetections(np.arange(n, dtype=np.int32), boxes, landmarks, scores), found)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def detect_faces(
    detector: FaceDetector,
    paths: Sequence[Path],
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> LfwFaces:
    """Detect every image in batches and keep one face per image (see ``central_faces``)."""
    parts: list[LfwFaces] = []
    for sl in _chunks(len(paths), batch_size):
        frames = [load_image(p) for p in paths[sl]]
        parts.append(central_faces(detector.detect(frames), [f.shape[:2] for f in frames]))
        if progress:
            progress("detect", sl.stop, len(paths))
    if not parts:
        return LfwFaces(FaceDetections.empty(), np.zeros(0, bool))
    dets = FaceDetections.concat([p.detections for p in parts])
    dets.frame_index = np.arange(len(dets), dtype=np.int32)
    return LfwFaces(dets, np.concatenate([p.found for p in parts]))


def embed_faces(
    paths: Sequence[Path],
    faces: LfwFaces,
    embedder: Embedder,
    gate: QualityGate,
    template: np.ndarray | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, Quality]:
    """Align each image's face to ``template`` (default: the embedder's), assess, embed."""
    template = embedder.template if template is None else template
    embeddings, verdicts = [], []
    for sl in _chunks(len(paths), batch_size):
        frames = [load_image(p) for p in paths[sl]]
        dets = faces.detections.select(np.arange(sl.start, sl.stop))
        dets.frame_index = np.arange(len(frames), dtype=np.int32)
        chips, _ = align_faces(frames, dets, template, embedder.chip_size)
        verdicts.append(gate.assess(dets, chips))
        embeddings.append(embedder.embed(chips))
        if progress:
            progress("embed", sl.stop, len(paths))
    if not embeddings:
        empty = np.zeros((0, embedder.chip_size, embedder.chip_size, 3), np.uint8)
        return np.zeros((0, embedder.info.dim), np.float32), gate.assess(faces.detections, empty)
    return np.concatenate(embeddings), concat_quality(verdicts)


def concat_quality(parts: Sequence[Quality]) -> Quality:
    names = ("passed", "reason", "eye_distance", "blur", "yaw", "pitch", "score")
    return Quality(**{n: np.concatenate([getattr(q, n) for q in parts]) for n in names})


def pair_scores(pairs: Sequence[Pair], keys: Sequence[ImageKey], emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair (embeddings are L2-normalised)."""
    row = {k: i for i, k in enumerate(keys)}
    a = emb[[row[p.a] for p in pairs]]
    b = emb[[row[p.b] for p in pairs]]
    return np.asarray(np.einsum("nd,nd->n", a, b).astype(np.float64))


# ---------------------------------------------------------------------------- report


@dataclass
class LfwReport:
    embedder: str
    n_pairs: int
    n_images: int
    no_face: int  # images where MTCNN found no face (centre fallback used)
    folds: list[FoldResult]
    mean_accuracy: float
    std: float
    threshold: float  # the threshold best on all evaluated pairs: what a deployment would use
    would_reject: dict[str, int]  # detected faces per quality-gate reason (not applied)
    pairs_by_gate: dict[str, dict[str, float]]  # accuracy of pairs where a gate fires
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_breakdown(
    pairs: Sequence[Pair],
    keys: Sequence[ImageKey],
    quality: Quality,
    found: np.ndarray,
    correct: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Pair counts and accuracy grouped by which gate fires on either image of the pair.

    ``clean``: both images detected and passing every gate. A pair with two different
    reasons is counted under both.
    """
    reason = np.where(found, quality.reason.astype(str), "no_face")
    row = {k: i for i, k in enumerate(keys)}
    groups: dict[str, list[int]] = {}
    for n, p in enumerate(pairs):
        fired = {reason[row[p.a]], reason[row[p.b]]} - {""}
        for r in fired or {"clean"}:
            groups.setdefault(r, []).append(n)
    return {
        r: {"pairs": len(idx), "accuracy": float(np.mean(correct[idx]))}
        for r, idx in sorted(groups.items())
    }


def evaluate_scores(pairs: Sequence[Pair], scores: np.ndarray) -> tuple[CrossValidation, float]:
    """Cross-validated folds, and the threshold best on all pairs together."""
    same = np.array([p.same for p in pairs])
    cv = cross_validate(scores, same, np.array([p.fold for p in pairs]))
    return cv, best_threshold(scores, same)


def run_lfw(
    engine: FaceEngine,
    root: Path,
    pairs: Sequence[Pair],
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> LfwReport:
    """The whole protocol on ``pairs``: detect, align, embed each image once, score, decide."""
    t0 = time.perf_counter()
    engine.load(warmup=False)
    keys = unique_images(pairs)
    paths = [image_path(root, k) for k in keys]
    faces = detect_faces(engine.detector, paths, batch_size, progress)
    emb, quality = embed_faces(
        paths, faces, engine.embedder, engine.gate, None, batch_size, progress
    )
    cv, threshold = evaluate_scores(pairs, pair_scores(pairs, keys, emb))
    detected = select_quality(quality, np.flatnonzero(faces.found))
    return LfwReport(
        embedder=engine.info.key,
        n_pairs=len(pairs),
        n_images=len(keys),
        no_face=int((~faces.found).sum()),
        folds=cv.folds,
        mean_accuracy=cv.mean,
        std=cv.std,
        threshold=threshold,
        would_reject=detected.rejection_counts(),
        pairs_by_gate=gate_breakdown(pairs, keys, quality, faces.found, cv.correct),
        seconds=time.perf_counter() - t0,
    )
