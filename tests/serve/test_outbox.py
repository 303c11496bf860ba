"""The durable webhook outbox (serve/outbox.py) with the dispatcher that sends from it
(serve/webhooks.py): a real receiver on 127.0.0.1, a real SQLite catalog in tmp_path.

A "restart" here is a second dispatcher and outbox over the same catalog file after the
first was closed with deliveries pending, as the next `facewatch serve` opens it; the
server-level test (tests/serve/test_webhook_outage.py) restarts the real server.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from live_helpers import OutageReceiver

from pipelines.config import WebhookConfig
from serve.outbox import Outbox
from serve.webhooks import WebhookDispatcher

CAMS = ("cam-1", "cam-2")


def _hook(url: str, **kw) -> WebhookConfig:
    return WebhookConfig(url=url, backoff_s=0.05, backoff_max_s=0.2, timeout_s=2, **kw)


async def _until(check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)  # another thread's HTTP server: nothing to await on


@pytest.mark.timeout(60)
def test_deliveries_survive_an_outage_and_a_restart_once_per_key_in_order(tmp_path):
    rx = OutageReceiver()
    rx.down()
    hook, path = _hook(rx.url), tmp_path / "catalog.sqlite"
    keys = {cam: [f"a_{cam}_{i}" for i in range(5)] for cam in CAMS}

    async def first_server() -> dict:
        d = WebhookDispatcher([hook], Outbox(path))
        d.start()
        for i in range(5):
            for cam in CAMS:
                key = keys[cam][i]
                assert d.enqueue({"camera_id": cam, "alert_id": key}, key, cam) == 1
                assert d.enqueue({"camera_id": cam, "alert_id": key}, key, cam) == 0  # kept once
                d.wake()
        await _until(lambda: d.counters["retries"] >= 4, 10)
        stats = d.stats()
        await d.close()
        d.outbox.close()
        return stats

    async def second_server() -> dict:
        d = WebhookDispatcher([hook], Outbox(path))
        d.start()
        await _until(lambda: len(rx.processed) >= 10, 20)
        await _until(lambda: d.outbox.counts() == {"delivered": 10}, 5)
        stats = d.stats()
        await d.close()
        d.outbox.close()
        return stats

    try:
        down = asyncio.run(first_server())
        assert down["outbox"] == {"pending": 10} and "delivered" not in down
        assert down["causes"]["ConnectError"] == down["retries"]  # each failure, by cause
        rx.up()
        after = asyncio.run(second_server())
    finally:
        rx.close()
    assert after["delivered"] == 10 and after["outbox"] == {"delivered": 10}
    assert rx.keys_by_camera() == keys  # every alert, once per key, in order per camera
    assert len(rx.deliveries) == 10  # nothing was sent twice


@pytest.mark.timeout(30)
def test_a_refused_delivery_is_set_aside_and_the_camera_goes_on(tmp_path):
    from live_helpers import WebhookReceiver

    rx = WebhookReceiver(fail_first=0)
    gone = _hook(rx.url, max_attempts=2)
    path = tmp_path / "catalog.sqlite"

    async def scenario() -> dict:
        d = WebhookDispatcher([gone], Outbox(path))
        d.start()
        rx.fail_first = 2  # the first two deliveries answer 500: the first is given up
        for key in ("a_1", "a_2"):
            d.enqueue({"alert_id": key}, key, "cam-1")
        d.wake()
        await _until(
            lambda: sum(d.outbox.counts().get(s, 0) for s in ("failed", "delivered")) == 2, 10
        )
        stats = d.stats()
        await d.close()
        d.outbox.close()
        return stats

    try:
        stats = asyncio.run(scenario())
    finally:
        rx.close()
    assert stats["failed"] == 1 and stats["delivered"] == 1 and stats["causes"] == {"HTTP 500": 2}
    assert stats["outbox"] == {"failed": 1, "delivered": 1}
    assert [d["key"] for d in rx.deliveries] == ["a_1", "a_1", "a_2"]  # in order


# A child process that stores one alert as the hub does (the review book's row, with its
# outbox rows written by the dispatcher in the same transaction), and with KILL set is
# SIGKILLed after the outbox rows are written and before the transaction commits.
_STORE_ONE_ALERT = """
import os, signal, sys
from pathlib import Path
from pipelines.catalog import Catalog
from pipelines.config import WebhookConfig
from pipelines.live.review_book import ReviewBook
from serve.outbox import Outbox
from serve.webhooks import WebhookDispatcher

path, kill = Path(sys.argv[1]), sys.argv[2] == "KILL"
d = WebhookDispatcher([WebhookConfig(url="http://127.0.0.1:9/hook")], Outbox(path))

def keep_deliveries(db, public):
    assert d.enqueue_in(db, {"event": "alert", **public}, public["alert_id"], "cam-1") == 1
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)

record = {"alert_id": "a_1", "camera_id": "cam-1", "list_name": "l", "person_id": "p",
          "alerted_at": 1.0}
ReviewBook(Catalog(path)).add(record, "alerts/a_1.jpg", keep_deliveries)
"""


@pytest.mark.timeout(60)
def test_an_alert_and_its_outbox_rows_are_kept_together_even_when_killed_between(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from pipelines.catalog import Catalog

    path = tmp_path / "catalog.sqlite"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def store(mode: str) -> int:
        cmd = [sys.executable, "-c", _STORE_ONE_ALERT, str(path), mode]
        return subprocess.run(cmd, env=env, timeout=50).returncode

    def kept() -> tuple[int, list[str]]:
        catalog = Catalog(path)
        try:
            alerts = catalog.rows("SELECT alert_id FROM live_alerts")
            keys = catalog.rows("SELECT idempotency_key FROM webhook_outbox")
        finally:
            catalog.close()
        return len(alerts), [k["idempotency_key"] for k in keys]

    assert store("KILL") == -signal.SIGKILL
    assert kept() == (0, [])  # killed between the two writes: neither is kept
    assert store("STORE") == 0
    assert kept() == (1, ["a_1"])  # stored: its delivery is pending with it
    heads = Outbox(path).heads("http://127.0.0.1:9/hook")
    assert [json.loads(h["body_json"])["alert_id"] for h in heads] == ["a_1"]
