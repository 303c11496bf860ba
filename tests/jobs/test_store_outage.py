"""Fault 4 of issue 16: the Milvus server stops during an archive search.

A real Milvus 2.3 standalone server (the ``milvus`` PyPI package) in a private network
namespace, reached through a relay on 127.0.0.1 (tests/milvus_loopback.py); stopping it
and starting it again over the same data keeps the relay's port, so the search's client
sees the server go away and come back, as it would a restarted server.

1. Down for 30 s, within ``search.store_retry_s``: the writes are retried with capped
   backoff, and the search completes with every file's matches stored.
2. Down past ``search.store_retry_s`` (shortened to 5 s here through the environment): the
   search exits with code 1 and names the files not stored; once the server is back, the
   same command completes them (files already complete are skipped) and ends with the same
   matches as run 1 (same case: the same match ids).
"""

from __future__ import annotations

import json
import time

import pytest
import searchruns as runs
from milvus_loopback import MilvusLoopbackServer

from pipelines.store import MATCHES

N_FILES = 4
OUTAGE_S = 30
CASE = ["--case", "FAULT-4", "--reason", "fault test: the store stops"]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own server (the session's is shared, and must not be stopped)."""
    with MilvusLoopbackServer(tmp_path_factory.mktemp("milvus-outage")) as srv:
        yield srv


def _stored_ids(uri: str) -> list[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        rows = client.query(
            MATCHES,
            filter='case_ref == "FAULT-4"',
            output_fields=["id"],
            consistency_level="Strong",
        )
    finally:
        client.close()
    return sorted(r["id"] for r in rows)


def _args(server, archive, ray_address: str, out) -> tuple[list[str], list[str]]:
    head = ["--store", server.uri]
    search = ["search", str(archive), "--list", "default", *CASE]
    return head, [*search, "--ray-address", ray_address, "--out", str(out), "--json"]


@pytest.mark.timeout(900)
def test_a_store_outage_loses_nothing_and_one_past_the_deadline_is_named_and_resumed(
    server, data, ray_address, tmp_path
):
    home = tmp_path / "home"
    archive = runs.copies_of_the_clip(data, tmp_path / "archive", N_FILES)
    photo = str(data / "known/lin-manuel-miranda.png")
    added = runs.run(home, "--store", server.uri, "watchlist", "add", "Lin-Manuel", photo)
    assert added.returncode == 0, added.stderr

    # 1. down for 30 s, within the deadline
    head, args = _args(server, archive, ray_address, tmp_path / "one")
    with runs.killed_on_exit(runs.start(home, [*head, *args])) as proc:
        runs.when_a_file_is_done(home, proc)
        server.stop_server()
        time.sleep(OUTAGE_S)  # the outage itself
        server.start_server()
        _, err = proc.communicate(timeout=500)
    assert proc.returncode == 0, err[-3000:]
    assert "failed (" in err  # the retried writes were logged with their cause
    ids, sightings = runs.outputs(tmp_path / "one")
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["files"] == N_FILES and summary["files_failed"] == 0
    assert len({s[2] for s in sightings}) == N_FILES  # found in every copy
    assert len(ids) % N_FILES == 0  # the same faces in each copy: the same count each
    assert _stored_ids(server.uri) == ids  # every reported match is stored, once

    # 2. down past the deadline: exit 1, the files not stored named; a rerun completes them
    head, args = _args(server, archive, ray_address, tmp_path / "two")
    short = {"FACEWATCH__SEARCH__STORE_RETRY_S": "5"}
    try:
        with runs.killed_on_exit(runs.start(home, [*head, *args], **short)) as proc:
            runs.when_a_file_is_done(home, proc)
            server.stop_server()
            _, err = proc.communicate(timeout=300)
    finally:
        server.start_server()
    assert proc.returncode == 1, err[-3000:]
    assert "NOT stored" in err and "rerun the same command" in err
    named = [p for p in archive.iterdir() if str(p) in err]
    assert named, err[-3000:]
    rerun = runs.run(home, *head, *args, **short)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert 1 <= summary["files_resumed"] <= N_FILES - len(named)
    assert runs.outputs(tmp_path / "two") == (ids, sightings)
    assert _stored_ids(server.uri) == ids
