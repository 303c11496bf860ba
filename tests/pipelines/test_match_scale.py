"""The matcher's fast paths (one product for one photo each, a reshape for equal photo
counts, reduceat otherwise; a partial sort for the top k) give what the definition says:
per person, the mean of the best photo's score and the template's score."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.match import Gallery, Matcher
from pipelines.schemas import EmbedderInfo

pytestmark = pytest.mark.timeout(30)
INFO = EmbedderInfo("test", "scale", 16)


def _unit(rng, n):
    v = rng.standard_normal((n, INFO.dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _reference(faces, emb, pids, people):
    out = np.zeros((len(faces), len(people)))
    for j, p in enumerate(people):
        rows = emb[[i for i, q in enumerate(pids) if q == p]]
        template = rows.astype(np.float64).sum(0)
        template /= np.linalg.norm(template)
        out[:, j] = ((faces @ rows.T).max(1) + faces @ template) / 2
    return out


@pytest.mark.parametrize(
    "layout",
    ["one photo each", "two each, grouped", "two each, interleaved", "three each", "uneven"],
)
def test_scores_and_top_k_are_the_definition(layout):
    rng = np.random.default_rng(7)
    people = [f"p{i}" for i in range(50)]
    pids = {
        "one photo each": people,
        "two each, grouped": [p for p in people for _ in range(2)],
        "two each, interleaved": people + people,
        "three each": people * 3,
        "uneven": [people[int(i)] for i in rng.integers(0, 50, 140)] + people,
    }[layout]
    emb = _unit(rng, len(pids))
    thr = np.asarray([0.2 + 0.002 * int(p[1:]) for p in pids], np.float32)
    g = Gallery(
        emb,
        [f"e{i}" for i in range(len(pids))],
        pids,
        pids,
        ["l"] * len(pids),
        [""] * len(pids),
        INFO,
        thr,
    )
    m = Matcher(g)
    faces = _unit(rng, 9)
    want = _reference(faces, emb, pids, m.person_ids)
    assert np.allclose(m.person_scores(faces, INFO), want, atol=1e-5)
    got = m.match(faces, INFO, k=4)
    margins = want - m.person_threshold[None, :]
    assert (got.person == np.argsort(-margins, axis=1)[:, :4]).all()
    assert np.allclose(got.margin, np.sort(margins, axis=1)[:, ::-1][:, :4], atol=1e-5)
    everyone = m.match(faces, INFO, k=60)  # more than there are people: padded with -1
    assert (everyone.person[:, 50:] == -1).all() and (everyone.person[:, :50] >= 0).all()
