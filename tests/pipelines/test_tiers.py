"""Two operating points (alert and review tiers), tracking that never depends on a threshold,
and the monotonic track rule: synthetic arrays with known answers, plus a property test."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.calibration import calibrate
from pipelines.evaluation.faces import ImageFaces
from pipelines.evaluation.watchlist import EvaluationInputError
from pipelines.match import Gallery, Matcher
from pipelines.schemas import EmbedderInfo
from pipelines.sightings import (
    CANDIDATE,
    SIGHTING,
    FaceTable,
    decide_tracks,
    group_sightings,
    tier_of,
)
from pipelines.track import TRACK_SIMILARITIES, Tracker, TrackerConfig

pytestmark = pytest.mark.timeout(60)
INFO = EmbedderInfo("dlib-resnet", "test", 4)


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float64)
    return (a / np.linalg.norm(a)).astype(np.float32)


def with_similarity(base: np.ndarray, other: np.ndarray, sim: float) -> np.ndarray:
    """A unit vector whose cosine similarity to unit ``base`` is ``sim`` (other ⟂ base)."""
    return (sim * base + np.sqrt(1 - sim**2) * other).astype(np.float32)


def gallery(alert: float, review: float | None, people=("ann", "bob")) -> Gallery:
    emb = np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)])[: len(people)]
    n = len(people)
    return Gallery(
        embeddings=emb,
        entry_ids=[f"e{i}" for i in range(n)],
        person_ids=list(people),
        person_names=list(people),
        list_names=["L"] * n,
        photos=[""] * n,
        embedder=INFO,
        thresholds=np.full(n, alert, np.float32),
        review_thresholds=None if review is None else np.full(n, review, np.float32),
    )


# -- tier assignment -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "margin, gap, tier",
    [
        (0.01, 0.02, SIGHTING),
        (0.0, 0.02, SIGHTING),  # exactly at the alert threshold
        (-0.01, 0.02, CANDIDATE),
        (-0.02, 0.02, CANDIDATE),  # exactly at the review threshold
        (-0.021, 0.02, None),
        (-0.01, 0.0, None),  # no review tier: below the alert threshold is nothing
    ],
)
def test_tier_of_a_margin(margin, gap, tier):
    assert tier_of(margin, gap) == tier


def test_review_gap_per_person_and_refused_above_alert():
    m = Matcher(gallery(0.95, 0.93))
    assert m.review_gap == pytest.approx([0.02, 0.02])
    assert Matcher(gallery(0.95, None)).review_gap == pytest.approx([0.0, 0.0])
    with pytest.raises(ValueError, match="above its alert threshold"):
        gallery(0.93, 0.95)


def table(t, people, scores, alert) -> FaceTable:
    n = len(t)
    s = np.asarray(scores, np.float32)[:, None]
    return FaceTable(
        t=np.asarray(t, float),
        frame_index=np.arange(n),
        face_index=np.zeros(n, int),
        boxes=np.zeros((n, 4)),
        passed=np.ones(n, bool),
        quality=np.ones(n),
        cand_person=np.asarray(people, np.int32)[:, None],
        cand_score=s,
        cand_margin=s - alert,
    )


def test_tracks_get_their_tier_from_the_mean_of_their_best_margins():
    # track 0 (ann): best three 0.96, 0.955, 0.95 -> mean 0.955 >= 0.95: a sighting
    # track 1 (bob): 0.94, 0.935, 0.93, 0.80 -> mean of best three 0.935: a candidate at 0.93
    # track 2 (ann): 0.92 -> below both
    t = np.arange(8) * 0.5
    tab = table(
        t, [0, 0, 0, 1, 1, 1, 1, 0], [0.96, 0.955, 0.95, 0.94, 0.935, 0.93, 0.80, 0.92], 0.95
    )
    tids = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    verdicts = {v.track_id: v for v in decide_tracks(tab, tids, 3, np.array([0.02, 0.02]))}
    assert verdicts[0].tier == SIGHTING and verdicts[0].margin == pytest.approx(0.005, abs=1e-6)
    assert verdicts[1].tier == CANDIDATE and verdicts[1].margin == pytest.approx(-0.015, abs=1e-6)
    assert 2 not in verdicts
    # without a review tier the candidate is gone and the sighting stays
    assert [v.track_id for v in decide_tracks(tab, tids, 3)] == [0]


def test_a_group_with_one_sighting_track_is_a_sighting():
    t = [0.0, 0.5, 3.0, 3.5]  # two tracks of ann, 2.5 s apart: one sighting
    tab = table(t, [0, 0, 0, 0], [0.96, 0.96, 0.94, 0.94], 0.95)
    tids = np.array([0, 0, 1, 1])
    verdicts = decide_tracks(tab, tids, 3, np.array([0.02, 0.02]))
    assert sorted(v.tier for v in verdicts) == [CANDIDATE, SIGHTING]
    drafts = group_sightings(tab, verdicts, link_gap_s=2.5)
    assert [(d.tier, d.start_s, d.end_s, sorted(d.track_ids)) for d in drafts] == [
        (SIGHTING, 0.0, 3.5, [0, 1])
    ]


# -- tracking never depends on a threshold -------------------------------------------------
def test_tracker_config_comes_from_the_embedder_only():
    cfg = TrackerConfig.for_embedder("dlib-resnet")
    assert (cfg.sim_link, cfg.sim_veto) == TRACK_SIMILARITIES["dlib-resnet"]
    assert not hasattr(TrackerConfig, "for_threshold")


BOX = np.array([[100, 100, 160, 160]], float)
YES = np.array([True])


@pytest.mark.parametrize(
    "sim, gap_s, same_track",
    [
        (0.91, 0.5, True),  # a face turning between two frames 0.5 s apart (measured: 0.91)
        (0.80, 0.5, False),  # clearly someone else stepping into the box
        (0.93, 1.5, False),  # after a gap, a look-alike (different people reach 0.94)
        (0.97, 1.5, True),  # after a gap, clearly the same face
    ],
)
def test_continuing_and_resuming_a_track(sim, gap_s, same_track):
    tr = Tracker(TrackerConfig.for_embedder("dlib-resnet"))
    a = unit(1, 0, 0, 0)
    face = with_similarity(a, unit(0, 1, 0, 0), sim)
    first = tr.update(0.0, BOX, a[None], YES)
    second = tr.update(gap_s, BOX, face[None], YES)
    assert bool(second[0] == first[0]) is same_track


def test_two_people_at_one_place_a_second_apart_never_share_a_track():
    """The case traced on a held-out video: one listed person leaves, another appears at the
    same place 1.3 s later. Their faces score 0.90 together, above the old veto at 0.84."""
    tr = Tracker(TrackerConfig.for_embedder("dlib-resnet"))
    ann, bob = unit(1, 0, 0, 0), with_similarity(unit(1, 0, 0, 0), unit(0, 1, 0, 0), 0.90)
    ids_ann = [tr.update(t, BOX, ann[None], YES)[0] for t in (0.0, 0.5, 1.0)]
    ids_bob = [tr.update(t, BOX, bob[None], YES)[0] for t in (2.3, 2.8)]
    assert len(set(ids_ann)) == 1 and len(set(ids_bob)) == 1
    assert ids_ann[0] != ids_bob[0]


# -- monotonic in the thresholds: a property over random tracks ----------------------------
def _random_scene(rng: np.random.Generator, people: int = 4, faces: int = 60):
    """Faces of ``people`` listed people and strangers passing two places over time."""
    base = rng.normal(size=(people + 6, 32))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    t = np.sort(rng.uniform(0, 60, faces)).round(1)
    who = rng.integers(0, len(base), faces)
    emb = base[who] + rng.normal(scale=rng.uniform(0.15, 0.5), size=(faces, 32))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    place = rng.integers(0, 2, faces)
    boxes = np.stack(
        [100 + 300 * place, np.full(faces, 100), 160 + 300 * place, np.full(faces, 160)], 1
    )
    return base[:people].astype(np.float32), t, emb.astype(np.float32), boxes.astype(float)


def _search(listed, t, emb, boxes, alert: float, review: float):
    info = EmbedderInfo("dlib-resnet", "test", emb.shape[1])
    n = len(listed)
    g = Gallery(
        listed,
        [f"e{i}" for i in range(n)],
        [f"p{i}" for i in range(n)],
        [f"p{i}" for i in range(n)],
        ["L"] * n,
        [""] * n,
        info,
        np.full(n, alert, np.float32),
        review_thresholds=np.full(n, review, np.float32),
    )
    m = Matcher(g)
    fm = m.match(emb, info, 5)
    k = len(t)
    tab = FaceTable(t, np.arange(k), np.zeros(k, int), boxes, np.ones(k, bool), np.ones(k),
                    fm.person, fm.score, fm.margin)  # fmt: skip
    tracker = Tracker(TrackerConfig.for_embedder("dlib-resnet"))
    tids = np.array([tracker.update(float(t[i]), boxes[i : i + 1], emb[i : i + 1], YES)[0]
                     for i in range(k)])  # fmt: skip
    verdicts = decide_tracks(tab, tids, 3, m.review_gap)
    return [(d.person, d.start_s, d.end_s, d.tier) for d in group_sightings(tab, verdicts, 2.5)]


def _covered(found, lower) -> bool:
    """Each (person, span, tier) of ``found`` lies inside one of ``lower`` for the same person,
    whose tier is the same or better."""
    rank = {SIGHTING: 0, CANDIDATE: 1}
    return all(
        any(
            p == q and s0 >= s1 - 1e-9 and e0 <= e1 + 1e-9 and rank[t1] <= rank[t0]
            for q, s1, e1, t1 in lower
        )  # fmt: skip
        for p, s0, e0, t0 in found
    )


@pytest.mark.parametrize("seed", range(12))
def test_whatever_is_found_at_a_threshold_is_found_at_every_lower_one(seed):
    rng = np.random.default_rng(seed)
    scene = _random_scene(rng)
    steps = np.linspace(0.9, 0.2, 15)
    results = [_search(*scene, alert=a, review=a - 0.05) for a in steps]
    assert any(results), "the scene must find someone at some threshold"
    for higher, lower in zip(results[:-1], results[1:], strict=True):
        assert _covered(higher, lower)


# -- calibration of both tiers --------------------------------------------------------------
def _faces(embeddings: np.ndarray) -> ImageFaces:
    n = len(embeddings)
    return ImageFaces(
        paths=np.array([f"d{i}.jpg" for i in range(n)]),
        found=np.ones(n, bool),
        boxes=np.zeros((n, 4), np.float32),
        landmarks=np.zeros((n, 5, 2), np.float32),
        det_score=np.ones(n, np.float32),
        reason=np.array([""] * n),
        embeddings=embeddings.astype(np.float32),
    )


def test_calibration_sets_both_tiers_from_known_scores():
    # 1,000 non-mated faces whose best score against ann is exactly 0.5 + i/2000
    a, other = unit(1, 0, 0, 0), unit(0, 0, 1, 0)
    sims = 0.5 + np.arange(1000) / 2000
    faces = _faces(np.stack([with_similarity(a, other, s) for s in sims]))
    record = calibrate(gallery(0.9, None, ("ann",)), faces, 1e-3, "d", candidate_rate=1e-2)
    # FPIR 1e-3 of 1,000: at most 1 false alarm -> just above the second-highest score
    assert record["threshold"] == pytest.approx(sims[-2], abs=1e-5)  # float32 scores
    assert record["false_alarms"] == 1
    review = record["review"]
    assert review["false_alarms"] == 10  # 1e-2 of 1,000: just above the 11th-highest
    assert review["threshold"] == pytest.approx(sims[-11], abs=1e-5)
    assert review["threshold"] < record["threshold"]


def test_calibration_refuses_too_few_faces_and_a_review_tier_above_the_alert_tier():
    a, other = unit(1, 0, 0, 0), unit(0, 0, 1, 0)
    faces = _faces(np.stack([with_similarity(a, other, s) for s in np.linspace(0.5, 0.9, 500)]))
    g = gallery(0.9, None, ("ann",))
    with pytest.raises(EvaluationInputError, match="at least 1000 usable non-mated faces"):
        calibrate(g, faces, 1e-3, "d")
    with pytest.raises(EvaluationInputError, match="candidate rate .* must lie between"):
        calibrate(g, faces, 1e-2, "d", candidate_rate=1e-3)
