"""Matching, tracking and sighting logic on synthetic arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.match import Gallery, Matcher
from pipelines.schemas import EmbedderInfo, EmbedderMismatchError
from pipelines.sightings import FaceTable, decide_tracks, group_sightings
from pipelines.track import Tracker, TrackerConfig, iou_matrix

INFO = EmbedderInfo("test-space", "1", 4)


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def gallery(thresholds=(0.9, 0.9, 0.9)) -> Gallery:
    emb = np.stack([unit(1, 0, 0, 0), unit(1, 0.05, 0, 0), unit(0, 1, 0, 0)])
    return Gallery(
        embeddings=emb,
        entry_ids=["e1", "e2", "e3"],
        person_ids=["alice", "alice", "bob"],
        person_names=["Alice", "Alice", "Bob"],
        list_names=["wanted", "wanted", "missing"],
        photos=["a1.jpg", "a2.jpg", "b.jpg"],
        embedder=INFO,
        thresholds=np.asarray(thresholds, np.float32),
    )


def test_person_score_is_mean_of_best_photo_and_template():
    m = Matcher(gallery())
    probe = unit(1, 0.05, 0, 0)[None]
    scores = m.person_scores(probe, INFO)
    assert m.person_ids == ["alice", "bob"]
    template = unit(*(unit(1, 0, 0, 0) + unit(1, 0.05, 0, 0)))
    expected = (1.0 + float(probe[0] @ template)) / 2  # best photo is the probe itself
    assert scores[0, 0] == pytest.approx(expected, abs=1e-6)
    assert expected < 1.0  # the template is not the probe: the two parts differ
    # one photo: template and best photo are the same vector, so it is the plain cosine
    assert scores[0, 1] == pytest.approx(float(probe[0] @ unit(0, 1, 0, 0)), abs=1e-6)


@pytest.mark.parametrize(
    "probe,expected",
    [((1, 0, 0, 0), 0), ((0, 1, 0, 0), 1), ((0, 0, 1, 0), -1), ((0.7, 0.7, 0, 0), -1)],
)
def test_match_decision_uses_each_lists_threshold(probe, expected):
    found = Matcher(gallery()).match(unit(*probe)[None], INFO, k=2)
    assert (int(found.person[0, 0]) if found.matched[0] else -1) == expected


def test_lower_threshold_on_one_list_changes_only_that_list():
    probe = unit(0.3, 1, 0, 0)[None]  # cos to bob ~0.958, to alice ~0.29
    strict = Matcher(gallery((0.9, 0.9, 0.97))).match(probe, INFO)
    lenient = Matcher(gallery((0.9, 0.9, 0.95))).match(probe, INFO)
    assert not strict.matched[0] and lenient.matched[0]


def test_embeddings_of_another_embedder_are_refused():
    other = EmbedderInfo("other", "1", 4)
    with pytest.raises(EmbedderMismatchError, match="different embedders"):
        Matcher(gallery()).match(unit(1, 0, 0, 0)[None], other)


def test_empty_gallery_matches_nothing():
    g = gallery()
    empty = Gallery(np.zeros((0, 4), np.float32), [], [], [], [], [], INFO, np.zeros(0))
    found = Matcher(empty).match(unit(1, 0, 0, 0)[None], g.embedder)
    assert not found.matched.any()


@pytest.mark.parametrize(
    "a,b,iou",
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
    ],
)
def test_iou(a, b, iou):
    assert iou_matrix(np.array([a], float), np.array([b], float))[0, 0] == pytest.approx(iou)


def test_tracker_links_by_overlap_and_by_face_and_splits_people():
    tr = Tracker(TrackerConfig(iou_min=0.2, sim_link=0.9, sim_veto=0.5, max_gap_s=2.0))
    a, b = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
    yes = np.array([True, True])
    first = tr.update(
        0.0, np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.stack([a, b]), yes
    )
    # a moved far (no overlap) but is recognisable; b stayed put.
    second = tr.update(
        0.5, np.array([[100, 0, 110, 10], [51, 50, 61, 60]], float), np.stack([a, b]), yes
    )
    assert list(second) == list(first)
    # someone else steps into b's box: overlap but a different face -> new track
    third = tr.update(1.0, np.array([[51, 50, 61, 60]], float), unit(0, 0, 1, 0)[None], yes[:1])
    assert third[0] not in first
    # after a long gap, the same face starts a new track
    fourth = tr.update(10.0, np.array([[100, 0, 110, 10]], float), a[None], yes[:1])
    assert fourth[0] not in set(first) | set(third)


def table(t, people, margins) -> FaceTable:
    n = len(t)
    return FaceTable(
        t=np.asarray(t, float),
        frame_index=np.arange(n),
        face_index=np.zeros(n, int),
        boxes=np.zeros((n, 4)),
        passed=np.ones(n, bool),
        quality=np.ones(n),
        cand_person=np.asarray(people, np.int32),
        cand_score=np.asarray(margins) + 0.9,
        cand_margin=np.asarray(margins, np.float32),
    )


def test_one_spurious_frame_does_not_flip_a_track():
    # 5 faces of person 0 (margins +0.05); one frame where person 1 spikes.
    people = [[0, 1]] * 4 + [[1, 0]]
    margins = [[0.05, -0.3]] * 4 + [[0.06, 0.01]]
    v = decide_tracks(table(np.arange(5) * 0.5, people, margins), np.zeros(5, int))
    assert len(v) == 1 and v[0].person == 0


def test_a_single_lucky_frame_among_poor_ones_is_not_a_match():
    people = [[0, 1]] * 5
    margins = [[0.01, -0.5]] + [[-0.2, -0.5]] * 4
    assert decide_tracks(table(np.arange(5) * 0.5, people, margins), np.zeros(5, int)) == []


def test_sightings_merge_close_tracks_and_split_distant_ones():
    t = [0, 0.5, 1.0, 2.0, 2.5, 20, 20.5]
    tracks = np.array([0, 0, 0, 1, 1, 2, 2])
    tab = table(t, [[0, -1]] * 7, [[0.1, -np.inf]] * 7)
    verdicts = decide_tracks(tab, tracks)
    drafts = group_sightings(tab, verdicts, link_gap_s=2.5)
    assert [(d.start_s, d.end_s) for d in drafts] == [(0.0, 2.5), (20.0, 20.5)]
    assert drafts[0].track_ids == [0, 1]


def test_one_person_twice_in_one_frame_makes_one_sighting():
    """Two one-frame tracks of the same person at the same time (a mirror, a screen behind
    the stage): the sighting spans them both; sorting them used to raise TypeError."""
    tab = table([3.0, 3.0], [[0, -1]] * 2, [[0.1, -np.inf]] * 2)
    verdicts = decide_tracks(tab, np.array([0, 1]))
    drafts = group_sightings(tab, verdicts, link_gap_s=2.5)
    assert [(d.start_s, d.end_s, d.track_ids) for d in drafts] == [(3.0, 3.0, [0, 1])]


@pytest.mark.parametrize(("top_n", "sightings"), [(3, 0), (1, 1)])
def test_search_top_n_setting_decides_how_a_track_scores(tmp_path, top_n, sightings):
    """``search.top_n`` reaches the archive search's decision: a track of Alice with one
    frame over her threshold and four under is no sighting at 3, one at 1."""
    from jobs.archive.search import ArchiveSearch, FileResult
    from pipelines.config import Settings
    from pipelines.video import VideoInfo

    settings = Settings.model_validate({"search": {"top_n": top_n}})
    job = ArchiveSearch(settings, gallery(), tmp_path)
    n, tab = 5, _hovering_track(-0.05)
    emb = np.tile(unit(1, 0.3, 0, 0), (n, 1))
    res = FileResult("v.mp4", "f" * 64, VideoInfo("v.mp4", 10, 2.0, 64, 64))
    job._decide(res, tab, emb, [b""] * n)
    assert len(res.sightings) == sightings
    assert len(res.matches) == 5 * sightings
    if sightings:
        assert res.sightings[0].person_name == "Alice" and res.sightings[0].best_score == 0.92


def _hovering_track(others: float) -> FaceTable:
    """Five faces of one track, Alice's best: one frame 0.02 over her threshold, four at
    ``others`` (a margin)."""
    n, none = 5, [-np.inf] * 3
    return FaceTable(
        t=np.arange(n) * 0.5,
        frame_index=np.arange(n),
        face_index=np.zeros(n, int),
        boxes=np.tile(np.asarray([10, 10, 50, 50], np.float32), (n, 1)),
        passed=np.ones(n, bool),
        quality=np.ones(n, np.float32),
        cand_person=np.tile([0, 1, -1, -1, -1], (n, 1)),
        cand_score=np.asarray([[0.92, 0.1, *none]] + [[0.9 + others, 0.1, *none]] * 4),
        cand_margin=np.asarray([[0.02, -0.8, *none]] + [[others, -0.8, *none]] * 4),
    )


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("others", "tier"),
    [(-0.012, "sighting"), (-0.03, "candidate"), (-0.2, None)],
)
def test_best_frame_decides_a_track_steadily_near_the_threshold(others, tier):
    """A track whose median face lies inside the review tier (gap 0.015) is decided on its
    best frame: a still face hovering at the threshold is a sighting, as the naive
    every-frame loop finds it (the mean of the best 3 alone would miss it). One
    lucky frame among faces further below stays a candidate or nothing."""
    gap = np.asarray([0.015, 0.015])
    verdicts = decide_tracks(_hovering_track(others), np.zeros(5, np.int64), 3, gap)
    assert [v.tier for v in verdicts] == ([tier] if tier else [])
    if tier == "sighting":
        assert verdicts[0].margin == pytest.approx(0.003)  # min(best, median + gap)
    mean3 = (0.02 + 2 * others) / 3
    assert mean3 < 0  # the mean of the best 3 alone would not make a sighting of any row


@pytest.mark.timeout(10)
def test_a_short_track_is_never_decided_on_its_best_frame():
    """Three faces are not "steadily" near the threshold: a short track of someone else
    with one lucky frame stays below the alert tier (the mean of its best 3 decides)."""
    table = _hovering_track(-0.012)
    rows = np.arange(3)
    short = FaceTable(**{k: getattr(table, k)[rows] for k in FaceTable.__dataclass_fields__})
    verdicts = decide_tracks(short, np.zeros(3, np.int64), 3, np.asarray([0.015, 0.015]))
    assert [v.tier for v in verdicts] == ["candidate"]
    assert verdicts[0].margin == pytest.approx((0.02 - 2 * 0.012) / 3)


@pytest.mark.timeout(10)
def test_without_a_review_tier_the_track_rule_is_the_mean_alone():
    """Live decides without a review tier: there the best frame never decides alone."""
    verdicts = decide_tracks(_hovering_track(-0.012), np.zeros(5, np.int64), 3, None)
    assert verdicts == []
