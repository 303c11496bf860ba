"""Which archive frames are searched whole and which only around the faces before them
(``search.detect_every``): the bookkeeping between decoding, FaceStage and the pool."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.archive.search_stages import face_order, frame_batch, frames_follow, previous_sampled
from serve.pool import whole_frames

pytestmark = pytest.mark.timeout(30)


def _seg(file_id: str) -> dict:
    return {"file_id": file_id, "fps": 25.0}


def test_decoded_frames_name_the_sampled_frame_before_them():
    before = previous_sampled((0, 12, 25, 37, 50))
    first = frame_batch(_seg("a"), [0, 12], np.zeros((2, 4, 4, 3), np.uint8), before)
    later = frame_batch(_seg("a"), [37, 50], np.zeros((2, 4, 4, 3), np.uint8), before)
    assert first["prev_index"].tolist() == [-1, 0]
    assert later["prev_index"].tolist() == [25, 37]


def _batch(rows: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    return {
        "file_id": np.array([r[0] for r in rows], dtype=object),
        "frame_index": np.array([r[1] for r in rows]),
        "prev_index": np.array([r[2] for r in rows]),
    }


def test_a_frame_follows_only_the_frame_sampled_just_before_it_in_the_same_file():
    batch = _batch(
        [
            ("a", 25, 12),  # first row: follows nothing in the batch
            ("a", 37, 25),  # follows the row before
            ("b", 12, 0),  # another file
            ("a", 62, 50),  # a's frame 50 is not in the batch (the other FaceStage has it)
            ("a", 75, 62),
            ("a", 0, -1),  # a segment's first frame
        ]
    )
    rows = np.arange(6)
    assert frames_follow(batch, rows) == [False, True, False, False, True, False]
    # rows with errors are left out: what follows is judged among the rows kept
    assert frames_follow(batch, np.array([0, 1, 4])) == [False, True, False]
    assert frames_follow(batch, np.array([], int)) == []


@pytest.mark.parametrize(
    ("follows", "every", "whole"),
    [
        ([False, True, True, True], 2, [True, False, True, False]),
        ([False, True, True, True, True], 3, [True, False, False, True, False]),
        ([False, True, False, True], 2, [True, False, True, False]),  # a new run restarts
        ([True, True], 2, [True, False]),  # the first frame has nothing before it
        ([False, True, True], 1, None),  # every frame whole: no flags needed
        (None, 2, None),
    ],
)
def test_whole_frames_every_nth_of_a_run(follows, every, whole):
    n = len(follows) if follows is not None else 3
    assert whole_frames(follows, every, n) == whole


def test_whole_frames_needs_a_flag_per_frame():
    with pytest.raises(ValueError, match="3 flags for 2 frames"):
        whole_frames([False, True, True], 2, 2)


def test_faces_are_numbered_by_place_whichever_detection_found_them():
    """Region detection lists a frame's faces in the order of the frame before; whole-frame
    detection in MTCNN's. Numbered left to right, each face keeps its face_index (and so its
    match id) either way."""
    boxes = np.array([[300, 50, 380, 150], [20, 60, 90, 150], [500, 40, 560, 120]], np.float32)
    frames = np.zeros(3, np.int32)
    by_place = boxes[face_order(frames, boxes)]
    for perm in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        again = boxes[perm][face_order(frames, boxes[perm])]
        assert np.array_equal(again, by_place)
    assert list(by_place[:, 0]) == [20, 300, 500]
    two = face_order(np.array([1, 0, 1]), np.array([[9, 0, 1, 1], [5, 0, 1, 1], [2, 0, 1, 1]]))
    assert list(two) == [1, 2, 0]  # frame 0 first, then frame 1 left to right
    assert face_order(np.zeros(0, np.int32), np.zeros((0, 4))).size == 0
