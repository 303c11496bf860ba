"""The metric definitions, the shipped Prometheus rules and Grafana dashboard, and the
plain pieces around them (observe hooks, counter deltas, search progress files), without
Ray. The real-Prometheus test is tests/serve/test_prometheus.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines import observe
from pipelines.status import (
    SearchProgressFile,
    read_last_retention,
    read_searches,
    write_last_retention,
)
from serve.auth import ROLE_PERMISSIONS, Permission
from serve.metrics import ALLOWED_LABELS, LATENCY_BUCKETS, METRICS, Deltas

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "conf/prometheus/facewatch.rules.yml"
DASHBOARD = ROOT / "conf/grafana/facewatch.json"
# what a label must never carry: an unbounded set of values, or a person's data
UNBOUNDED = re.compile(r"person|face_id|face|track|file|path|case|name|id$|url|host", re.I)


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def exported_series() -> set[str]:
    out = set()
    for spec in METRICS.values():
        if spec.kind == "histogram":
            out |= {f"ray_{spec.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            out.add(spec.exported)
    return out


def test_no_metric_carries_an_unbounded_label():
    for spec in METRICS.values():
        for label in spec.labels:
            assert label in ALLOWED_LABELS, f"{spec.name}: label {label!r} is not a bounded one"
            assert label == "data_class" or not UNBOUNDED.search(label), (spec.name, label)
    assert not any(UNBOUNDED.search(k) for k in ALLOWED_LABELS if k != "data_class")


def test_metric_names_and_latency_buckets():
    assert all(name.startswith("facewatch_") for name in METRICS)
    assert len({s.exported for s in METRICS.values()}) == len(METRICS)
    for name in ("facewatch_frame_to_result_seconds", "facewatch_frame_to_alert_seconds"):
        assert METRICS[name].buckets == LATENCY_BUCKETS
    inside = [b for b in LATENCY_BUCKETS if 0.05 <= b <= 5.0]
    assert inside[0] == 0.05 and inside[-1] == 5.0 and len(inside) >= 10
    assert all(b / a <= 2.0 for a, b in zip(inside, inside[1:], strict=False))


def test_rules_and_dashboard_use_only_defined_metrics():
    exprs = rule_exprs() + dashboard_exprs()
    assert len(rule_exprs()) == 6 and len(dashboard_exprs()) >= 20
    used = {m for e in exprs for m in re.findall(r"\bray_facewatch_\w+", e)}
    assert used and used <= exported_series(), used - exported_series()
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert names == {
        "FacewatchCameraDown",
        "FacewatchPoolSaturated",
        "FacewatchAlertLatencyHigh",
        "FacewatchWebhookFailures",
        "FacewatchStoreWriteErrors",
        "FacewatchAuditAppendFailed",
    }


@pytest.mark.timeout(60)
def test_promtool_checks_the_rules_and_the_config(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run .ci/ensure-prometheus (apt-get install prometheus)")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 6 rules found" in out.stdout, out.stdout + out.stderr
    conf = tmp_path / "prometheus.yml"
    shutil.copy(ROOT / "conf/prometheus/prometheus.yml", conf)
    shutil.copy(RULES, tmp_path / RULES.name)
    out = subprocess.run([promtool, "check", "config", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_status_role_is_admin_and_operator_only():
    may = {role for role, perms in ROLE_PERMISSIONS.items() if Permission.STATUS in perms}
    assert may == {"admin", "operator"}


def test_emit_reaches_sinks_and_a_failing_sink_fails_nothing():
    got = []

    def sink(name, value, labels):
        got.append((name, value, labels))

    def broken(name, value, labels):
        raise RuntimeError("sink down")

    observe.install(broken)
    observe.install(sink)
    try:
        with pytest.raises(OSError):
            with observe.timed_write("fw_matches"):
                raise OSError("disk full")
        with observe.timed_write("fw_faces"):
            pass
    finally:
        observe.uninstall(sink)
        observe.uninstall(broken)
    assert got[0] == ("facewatch_store_write_errors", 1.0, {"collection": "fw_matches"})
    assert got[1][0] == "facewatch_store_write_seconds" and got[1][2] == {"collection": "fw_faces"}


def test_deltas_count_what_rose_and_start_again_after_a_restart():
    d = Deltas()
    assert d.add("facewatch_camera_frames_received", 10, "cam", camera="cam") == 10
    assert d.add("facewatch_camera_frames_received", 15, "cam", camera="cam") == 5
    assert d.add("facewatch_camera_frames_received", 3, "cam", camera="cam") == 3  # restarted
    d.forget("cam")
    assert d.add("facewatch_camera_frames_received", 4, "cam", camera="cam") == 4


def test_search_progress_file_gives_progress_and_eta(tmp_path):
    now = [1000.0]
    progress = SearchProgressFile(tmp_path, clock=lambda: now[0])
    progress.total(files=4, frames=400)
    now[0] += 10
    progress.advance(100)
    progress.file_done(failed=False, video_s=60.0)
    progress.file_done(failed=True, video_s=0.0)
    (row,) = read_searches(tmp_path, now=now[0])
    assert row["state"] == "running" and row["files_remaining"] == 2
    assert row["progress"] == 0.25 and row["frames_per_s"] == 10.0 and row["eta_s"] == 30.0
    assert row["files_done"] == 1 and row["files_failed"] == 1 and row["video_s"] == 60.0
    assert oct(progress.path.stat().st_mode & 0o777) == "0o600"
    text = progress.path.read_text()
    assert str(tmp_path) not in text  # counts only, never a path
    progress.finish()
    assert read_searches(tmp_path) == []


def test_a_dead_search_shows_as_stopped_and_is_forgotten_after_a_day(tmp_path):
    progress = SearchProgressFile(tmp_path, clock=lambda: 1000.0)
    progress.total(1, 10)
    progress.state["pid"] = 2**22 + 12345  # beyond pid_max on Linux: no such process
    progress.file_done(failed=False, video_s=1.0)  # written at once
    (row,) = read_searches(tmp_path, now=2000.0)
    assert row["state"] == "stopped" and row["eta_s"] is None
    assert read_searches(tmp_path, now=1000.0 + 2 * 86400) == []
    assert not progress.path.exists()


def test_last_retention_run_is_kept_for_status(tmp_path):
    assert read_last_retention(tmp_path) is None
    write_last_retention(tmp_path, "ops", {"dry_run": False, "deleted": {"face_index": 3}})
    last = read_last_retention(tmp_path)
    assert last["actor"] == "ops" and last["deleted"] == {"face_index": 3} and last["at"]


def test_the_metrics_port_comes_from_the_environment_or_ray_picks_one():
    from serve.local import METRICS_PORT_ENV, ServeConfigError, metrics_port_option

    assert metrics_port_option({}) == {}
    assert metrics_port_option({METRICS_PORT_ENV: "8080"}) == {"_metrics_export_port": 8080}
    for bad in ("http", "0", "70000", "-1"):
        with pytest.raises(ServeConfigError, match=METRICS_PORT_ENV):
            metrics_port_option({METRICS_PORT_ENV: bad})
