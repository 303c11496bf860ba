"""Ray's metrics agent forgets a gauge that was not set again within two export intervals
(``open_telemetry_metric_recorder``: TTL = 2 x ``metrics_report_interval_ms``). A value
facewatch sets rarely (the store's row counts, every 30 s) would vanish from Prometheus
between two samples. ``serve.metrics`` sets every gauge again to its last value; this
checks it on a real Ray with a 1 s export interval (a 2 s TTL), against a raw Ray gauge
set once as the control that shows the agent really forgets."""

from __future__ import annotations

import time
import urllib.request

import pytest
import ray
from ray.util.metrics import Gauge

from serve import metrics
from serve.local import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _series(port: int, name: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return [ln for ln in text.splitlines() if ln.startswith(name + "{")]


def _wait_for(port: int, name: str, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := _series(port, name):
            return found
        time.sleep(0.5)
    raise AssertionError(f"{name} never reached the metrics agent")


def test_a_gauge_set_once_stays_exported(monkeypatch):
    monkeypatch.setattr(metrics, "KEEPALIVE_S", 0.5)
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")  # every Ray process reads it
    port = free_port()  # not one Ray's processes may be given meanwhile
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        num_cpus=1,
        include_dashboard=False,
        _metrics_export_port=port,
    )
    try:
        control = Gauge("fw_test_control_gauge", description="set once, never again")
        control.set(1.0)
        metrics.record("facewatch_store_rows", 42, collection="fw_matches")
        assert _wait_for(port, "ray_fw_test_control_gauge")
        assert _wait_for(port, "ray_facewatch_store_rows")
        time.sleep(8)  # four TTLs of the 1 s export interval
        assert not _series(port, "ray_fw_test_control_gauge"), "the agent kept a stale gauge"
        rows = _series(port, "ray_facewatch_store_rows")
        assert rows and rows[0].endswith(" 42.0"), rows
    finally:
        ray.shutdown()
