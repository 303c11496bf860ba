"""benchmarks/soak_live.py's slopes, on made-up runs: they are fitted to the RSS samples
read between windows (after the first window, the warm-up) where the run has them, and to
one value a window where it does not (results written before the samples existed). The
soak itself runs for minutes: tests/test_soak.py runs the 2-minute version."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak_live as soak  # noqa: E402 - a benchmark script, not a package module

HUB = "ray::ServeReplica:facewatch:LiveHub"
pytestmark = pytest.mark.unit


def window(i: int, hub_kb: int) -> dict:
    procs = {g: {"rss_kb": kb, "fds": 10, "n": 1, "threads": 5, "fd_kinds": {"pipe": 10}}
             for g, kb in (("driver", 500_000), ("raylet", 30_000), (HUB, hub_kb))}  # fmt: skip
    return {"t_s": 300.0 * i, "window": i, "frames_sent": 100, "drop_rate": 0.0, "p99_ms": 900,
            "errors": 0, "statuses": {"analysed": 100}, "searches_started": i,
            "processes": procs, "pid_fds": {"1": 10}}  # fmt: skip


def run(hub_at_window_end: list[int], samples: list[tuple[float, int]]) -> dict:
    rows = [window(i + 1, kb) for i, kb in enumerate(hub_at_window_end)]
    dense = [{"t_s": t, "rss_kb": {"driver": 500_000, "raylet": 30_000, HUB: kb}}
             for t, kb in samples]  # fmt: skip
    return {"windows": rows, "rss_samples": dense, "searches_failed": 0}


@pytest.mark.timeout(60)
def test_slopes_come_from_the_samples_after_the_warm_up_window():
    # at the window ends the hub happens to sit high, then low: 800, 830, 800, 830, 800
    # MB, a made-up "growth" in the windows; its samples every 30 s after the first window
    # are level at 800 MB (the warm-up's growth before 300 s is left out)
    ends = [800_000, 830_000, 800_000, 830_000, 800_000]
    samples = [(t, 700_000 + t * 300) for t in range(0, 300, 30)]
    samples += [(t, 800_000) for t in range(300, 1500, 30)]
    v = soak.verdict(run(ends, samples))
    assert v["rss_slope_pct_per_hour"][HUB] == 0.0
    assert v["facewatch_rss_slope_pct_per_hour"] == {HUB: 0.0}
    assert v["rss_samples_after_warmup"] == 40
    assert v["targets_met"]["facewatch_rss_slope_below_1pct_per_hour"]


@pytest.mark.timeout(60)
def test_growth_in_the_samples_is_a_slope_even_when_the_window_ends_look_level():
    samples = [(t, 800_000 + t * 2) for t in range(300, 1500, 30)]  # +7.2 MB an hour
    v = soak.verdict(run([800_000] * 5, samples))
    assert v["facewatch_rss_slope_pct_per_hour"][HUB] == pytest.approx(0.9, abs=0.01)
    samples = [(t, 800_000 + t * 4) for t in range(300, 1500, 30)]  # 1.8%/h: over target
    assert not soak.verdict(run([800_000] * 5, samples))["targets_met"][
        "facewatch_rss_slope_below_1pct_per_hour"
    ]


@pytest.mark.timeout(60)
def test_without_samples_the_window_values_are_used():
    v = soak.verdict(run([800_000, 800_000, 803_000, 806_000, 809_000], []))
    # 9 MB over 900 s after warm-up, on a mean of 804.5 MB: 4.47% an hour
    assert v["rss_slope_pct_per_hour"][HUB] == pytest.approx(4.47, abs=0.01)
    assert v["rss_samples_after_warmup"] == 4
