"""benchmarks/ray_per_search.py's arithmetic, on made-up steps: what each archive search
leaves per process group (the slope after the first search) and in the exported metric
series, by family. The benchmark itself starts a live server and runs searches (minutes):
it is run by hand, and its results feed the operators page."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ray_per_search as rps  # noqa: E402 - a benchmark script, not a package module


def steps(n: int) -> list[dict]:
    """Before any search, then n searches: the agent grows 2,000 KiB and 10 series of Ray
    Data plus 2 of facewatch per search, the LiveHub not at all, this benchmark's own
    process ("driver") a lot; the first search also adds a one-off 50 MB to the agent."""
    rows = []
    for i in range(n + 1):
        series = Counter({"ray_tasks": 40, "ray_data_rows_bucket": 10 * i})
        series["ray_facewatch_store_write_seconds_bucket"] = 2 * i
        agent = 100_000 + (50_000 if i else 0) + 2_000 * i
        rss = {"ray::DashboardAgent": agent, "ray::ServeReplica:facewatch:LiveHub": 700_000}
        rss["driver"] = 500_000 + 40_000 * i
        rows.append({"searches": i, "search_s": 10.0, "series": series, "rss_kb": rss})
    return rows


@pytest.mark.timeout(60)
def test_growth_per_search_leaves_out_the_first_search_and_the_benchmark_itself():
    s = rps.summarise(steps(5))
    assert s["rss_kib_per_search"] == {
        "ray::DashboardAgent": 2000.0,
        "ray::ServeReplica:facewatch:LiveHub": 0.0,
    }
    assert s["rss_kb_first_last"]["ray::DashboardAgent"] == [152_000, 160_000]
    assert s["series_per_search"] == 12.0
    assert s["series_per_search_by_family"] == {"Ray Data": 10.0, "facewatch": 2.0}
    assert s["series_before_first_last"] == [40, 52, 100]


@pytest.mark.timeout(60)
def test_metric_families_by_prefix():
    assert rps.family("ray_data_block_size_rows_bucket") == "Ray Data"
    assert rps.family("ray_serve_long_poll_latency_ms_bucket") == "Ray Serve"
    assert rps.family("ray_facewatch_pool_batch_size_bucket") == "facewatch"
    assert rps.family("ray_grpc_server_req_finished_total") == "Ray core"
    table = rps.table(rps.summarise(steps(4)), 4)
    assert "ray::DashboardAgent" in table and "driver" not in table
