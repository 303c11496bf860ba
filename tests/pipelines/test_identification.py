"""1:N identification maths on synthetic score matrices whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.evaluation import identification as ident

NEG = -np.inf


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 0, 0.0, 1.0),
        (0, 10, 0.0, 0.27753),  # z^2/n / (1 + z^2/n)
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (1, 1000, 0.00017654, 0.0056473),
    ],
)
def test_wilson_interval(k, n, low, high):
    lo, hi = ident.wilson(k, n)
    assert lo == pytest.approx(low, abs=2e-5)
    assert hi == pytest.approx(high, abs=2e-5)


def test_wilson_refuses_impossible_counts():
    with pytest.raises(ValueError):
        ident.wilson(11, 10)


def _hand_searches() -> ident.Searches:
    mated = np.array(
        [
            [0.9, 0.1, 0.2],  # person 0, rank 1 right, 0.9
            [0.8, 0.7, 0.1],  # person 1, rank 1 wrong (person 0): never a true hit
            [0.1, 0.2, 0.6],  # person 2, rank 1 right, 0.6
            [0.5, 0.5, 0.5],  # person 0, tie at rank 1: not right
            [0.95, 0.0, 0.0],  # person 0, but the probe was unusable (no face)
        ]
    )
    nonmated = np.array(
        [[0.3, 0.1, 0.0], [0.2, 0.75, 0.1], [0.5, 0.0, 0.0], [0.1, 0.2, 0.65], [0.99, 0, 0]]
    )
    return ident.searches_from_scores(
        mated,
        np.array([0, 1, 2, 0, 0]),
        nonmated,
        mated_usable=np.array([True, True, True, True, False]),
        nonmated_usable=np.array([True, True, True, True, False]),
    )


def test_searches_rank1_and_unusable_probes():
    s = _hand_searches()
    assert s.mated_correct.tolist() == [True, False, True, False, False]
    assert s.mated_score.tolist() == [0.9, 0.8, 0.6, 0.5, NEG]
    assert s.nonmated_score.tolist() == [0.3, 0.75, 0.5, 0.65, NEG]


@pytest.mark.parametrize(
    ("threshold", "tpir_k", "fpir_k"),
    [(0.0, 2, 4), (0.5, 2, 3), (0.6, 2, 2), (0.7, 1, 1), (0.8, 1, 0), (0.95, 0, 0)],
)
def test_tpir_fpir_at_thresholds(threshold, tpir_k, fpir_k):
    s = _hand_searches()
    assert s.tpir(threshold) == ident.Rate(tpir_k, 5)  # unusable probes count as misses
    assert s.fpir(threshold) == ident.Rate(fpir_k, 5)  # ... and as non-alarms


def test_threshold_for_target_fpir():
    nonmated = np.arange(1000) / 1000  # 0.000 .. 0.999
    t = ident.threshold_for_fpir(nonmated, 1e-2)
    assert 0.989 < t <= 0.990
    assert np.sum(nonmated >= t) == 10
    t = ident.threshold_for_fpir(nonmated, 2e-3)
    assert np.sum(nonmated >= t) == 2
    assert ident.threshold_for_fpir(nonmated, 1.0) == -math.inf
    # below 1/n the data can only say "none of them": the threshold tops the best score
    assert ident.threshold_for_fpir(nonmated, 1e-4) > 0.999


def test_threshold_for_fpir_with_ties_stays_under_target():
    nonmated = np.array([0.5] * 10 + [0.1] * 90)
    t = ident.threshold_for_fpir(nonmated, 0.05)  # 5 allowed, 10 tied at the top
    assert np.mean(nonmated >= t) == 0.0
    with pytest.raises(ValueError):
        ident.threshold_for_fpir(np.array([]), 0.1)


def test_operating_point_at_fpir_and_resolution():
    rng = np.random.default_rng(0)
    nonmated = rng.uniform(0, 0.5, 1000)
    mated = np.concatenate([np.full(90, 0.9), np.full(10, 0.2)])
    s = ident.Searches(np.ones(100, bool), mated, nonmated)
    point = ident.at_fpir(s, 1e-2)
    assert point.fpir.k <= 10 and point.fpir.n == 1000
    assert point.tpir == ident.Rate(90, 100)
    assert point.resolved
    assert not ident.at_fpir(s, 1e-4).resolved
    out = ident.summary(s, default_threshold=0.3)
    assert set(out["tpir_at_fpir"]) == {"0.01", "0.001", "0.0002"}
    assert out["tpir_at_fpir"]["0.01"] == 0.9
    assert out["fpir_at_default"] == pytest.approx(np.mean(nonmated >= 0.3))


def test_det_curve_is_monotone():
    rng = np.random.default_rng(1)
    s = ident.Searches(rng.random(200) > 0.1, rng.normal(0.8, 0.1, 200), rng.normal(0.4, 0.1, 2000))
    det = ident.det_curve(s)
    t, f, m = (np.array(det[k]) for k in ("threshold", "fpir", "fnir"))
    assert np.all(np.diff(t) > 0)
    assert np.all(np.diff(f) <= 0) and np.all(np.diff(m) >= 0)
    assert f.min() <= 1 / 2000 + 1e-12  # reaches the lowest measurable FPIR


def _scaling_set(people: int = 100, nonmated: int = 1000) -> ident.ScoreSet:
    """Person p alarms on exactly one non-mated probe, with score 0.5 + p/1000; each person
    has two mated probes scoring 0.9 on their own column."""
    nm = np.zeros((nonmated, people))
    nm[np.arange(people), np.arange(people)] = 0.5 + np.arange(people) / 1000
    person = np.repeat(np.arange(people), 2)
    mated = np.zeros((2 * people, people))
    mated[np.arange(2 * people), person] = 0.9
    return ident.ScoreSet(mated, person, nm)


def test_list_size_scaling_known_answers():
    scores = _scaling_set()
    rows = ident.list_size_scaling(scores, [1, 10, 100, 1000], threshold=0.5, target_fpir=1e-3)
    by_size = {r["list_size"]: r for r in rows}
    assert "skipped" in by_size[1000]
    for size in (1, 10, 100):
        r = by_size[size]
        # every sub-list of L people alarms on exactly L of the 1000 probes
        assert r["fpir_min"] == r["fpir_max"] == r["fpir_at_threshold"] == size / 1000
        assert r["tpir_at_threshold"] == 1.0
    assert by_size[100]["sub_lists"] == 1 and by_size[10]["sub_lists"] == 5
    # the whole list: one alarm allowed, so the threshold sits just above the second best
    assert by_size[100]["threshold_for_target"] == pytest.approx(0.598, abs=1e-9)
    assert by_size[100]["threshold_for_target"] > 0.598
    # a single person may keep their one alarm: any threshold above 0 would do, none higher
    assert by_size[1]["threshold_for_target"] < 0.5
    # bigger lists need higher thresholds for the same FPIR
    assert by_size[10]["threshold_for_target"] <= by_size[100]["threshold_for_target"]


def test_sub_list_drops_mated_probes_of_people_left_out():
    scores = _scaling_set(people=4, nonmated=10)
    s = scores.searches(np.array([2, 3]))
    assert s.n_mated == 4 and s.n_nonmated == 10
    assert s.tpir(0.5) == ident.Rate(4, 4)
    assert s.fpir(0.5) == ident.Rate(2, 10)


def test_per_group_rates_ratios_and_too_few():
    # group A: 100 mated (80 hits), 1000 non-mated (20 alarms)
    # group B: 100 mated (60 hits), 1000 non-mated (5 alarms); group C: 3 mated, 2 non-mated
    mated_correct = np.ones(203, bool)
    mated_score = np.concatenate(
        [np.r_[np.ones(80), np.zeros(20)], np.r_[np.ones(60), np.zeros(40)], [1, 1, 0]]
    )
    nonmated = np.concatenate(
        [np.r_[np.ones(20), np.zeros(980)], np.r_[np.ones(5), np.zeros(995)], [0, 0]]
    )
    s = ident.Searches(mated_correct, mated_score, nonmated)
    groups_m = ["A"] * 100 + ["B"] * 100 + ["C"] * 3
    groups_n = ["A"] * 1000 + ["B"] * 1000 + ["C"] * 2
    out = ident.per_group(s, groups_m, groups_n, threshold=0.5)
    g = out["groups"]
    assert g["A"]["tpir"]["rate"] == 0.8 and g["B"]["tpir"]["rate"] == 0.6
    assert g["A"]["fpir"]["rate"] == 0.02 and g["B"]["fpir"]["rate"] == 0.005
    assert g["C"]["too_few_mated"] and g["C"]["too_few_nonmated"]
    assert not g["A"]["too_few_mated"] and not g["A"]["too_few_nonmated"]
    assert out["fnir_ratio"]["ratio"] == pytest.approx(0.4 / 0.2)
    assert out["fnir_ratio"]["worst"] == "B"
    assert out["fpir_ratio"]["ratio"] == pytest.approx(4.0)
    assert out["fpir_ratio"]["worst"] == "A"


def test_per_group_ratio_unbounded_when_best_has_no_errors():
    s = ident.Searches(np.ones(2, bool), np.ones(2), np.r_[np.ones(40), np.zeros(1960)])
    out = ident.per_group(s, ["A", "B"], ["A"] * 1000 + ["B"] * 1000, threshold=0.5)
    assert out["fpir_ratio"]["ratio"] is None
    assert "no errors" in out["fpir_ratio"]["note"]


def test_cohort_normalisation_tames_a_lamb():
    # person 1 is a lamb: everyone scores high against them
    cohort = np.array([[0.1, 0.6], [0.2, 0.7], [0.3, 0.8]])
    probes = np.array([[0.5, 0.85]])  # raw: the lamb wins; normalised: person 0 does
    z = ident.cohort_normalise(probes, cohort)
    sd = np.std([0.1, 0.2, 0.3])
    assert z[0, 0] == pytest.approx((0.5 - 0.2) / sd)
    assert z[0, 1] == pytest.approx((0.85 - 0.7) / sd)
    assert z[0].argmax() == 0
