"""``facewatch status`` without a server: it reads the data home (searches in progress,
the last retention run, registered cameras, the store's rows). With a server, through
``--api``, it is tested in tests/serve/test_prometheus.py."""

from __future__ import annotations

import json

import pytest

from pipelines.status import SearchProgressFile, write_last_retention


@pytest.mark.timeout(120)
def test_status_reads_the_home_without_a_server(cli, tmp_path):
    home = tmp_path / "home"
    assert cli("camera", "add", "gate-1", "push", "--fps", "4").exit_code == 0
    search = SearchProgressFile(home)
    search.total(files=3, frames=300)
    search.file_done(failed=False, video_s=30.0)
    write_last_retention(home, "ops-1", {"dry_run": False, "deleted": {"face_index": 2}})
    done = cli("status", "--json")
    assert done.exit_code == 0, done.output
    status = json.loads(done.stdout)
    assert status["cameras"] == [{"id": "gate-1", "state": "(no server)", "fps": 4.0, "list": None}]
    (row,) = status["searches"]
    assert row["search_id"] == search.search_id and row["state"] == "running"
    assert (row["files_total"], row["files_done"], row["files_remaining"]) == (3, 1, 2)
    assert status["retention"]["last_run"]["deleted"] == {"face_index": 2}
    assert status["store"]["backend"] == "milvus-lite"
    assert "needs a running server" in status["pool"]["note"]
    shown = cli("status")
    assert shown.exit_code == 0, shown.output
    for title in ("Cameras", "Pool", "Searches in progress", "Store", "Outbox", "Retention"):
        assert title in shown.output
    assert search.search_id in shown.output and "gate-1" in shown.output


@pytest.mark.timeout(60)
def test_status_through_the_api_needs_a_token(cli):
    done = cli("status", "--api", "http://127.0.0.1:9")
    assert done.exit_code != 0
    assert "needs an admin or operator token" in done.output
