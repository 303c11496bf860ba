"""Posting alerts to webhooks: at least once, from a durable outbox, with capped
exponential backoff and an idempotency key, so a receiver that saw an attempt whose answer
was lost can drop the repeat.

Every attempt carries the same ``Idempotency-Key`` (the alert id, stable per camera, track
and person). A 2xx answer ends the delivery; 408, 429, 5xx and network errors are retried;
any other 4xx means the receiver refuses this alert, so it is not retried. Deliveries live
in the outbox (serve/outbox.py) until acknowledged, so a receiver that is down for a while,
or a restart of `facewatch serve`, loses none: one sender per hook sends each camera's
alerts in order, and cameras side by side, so one camera's stuck alert never holds up
another's. Every failed attempt is logged with its cause and counted (``/v1/stats``).
Logs show a hook only as ``scheme://host[:port]/…``: its userinfo, path and query may
hold its token. That includes httpx's own request log line, which would show the whole URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.config import WebhookConfig
from serve.outbox import Outbox, add_rows

logger = logging.getLogger(__name__)

RETRYABLE = {408, 425, 429}


def public_hook_url(url: str) -> str:
    """A webhook URL as logs and ``/v1/config`` show it: ``scheme://host[:port]/…``, with no
    userinfo, path or query (Slack-style URLs carry their token in the path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


class _PublicHookUrls(logging.Filter):
    """On the "httpx" logger: its INFO line per request shows the whole URL; for a request
    to a webhook's scheme, host and port it shows ``public_hook_url`` instead."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], httpx.URL):
            shown = public_hook_url(str(args[1]))
            if shown in self.hosts:
                record.args = (args[0], shown, *args[2:])
        return True


_HTTPX_LOG = _PublicHookUrls()


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRYABLE


def backoff_delay(hook: WebhookConfig, attempt: int, jitter: float = 0.1) -> float:
    """Delay before attempt ``attempt + 1`` (attempt counts from 1)."""
    delay = min(hook.backoff_max_s, hook.backoff_s * 2 ** (attempt - 1))
    return delay * (1 + random.uniform(-jitter, jitter))


class WebhookDispatcher:
    def __init__(self, hooks: list[WebhookConfig], outbox: Outbox | None = None, concurrency=8):
        self.hooks = hooks
        self.outbox = outbox
        self.counters: Counter[str] = Counter()
        self.causes: Counter[str] = Counter()  # failed attempts by cause (bounded: no URLs)
        self._tasks: set[asyncio.Task] = set()
        self._wake: dict[str, asyncio.Event] = {}
        self._limit = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None
        _HTTPX_LOG.hosts.update(public_hook_url(h.url) for h in hooks)
        logging.getLogger("httpx").addFilter(_HTTPX_LOG)  # added once, however many times

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    # -- the outbox ------------------------------------------------------------------------
    def _senders_outbox(self) -> Outbox:
        """The outbox the senders work from (``start`` runs them only with one)."""
        if self.outbox is None:
            raise RuntimeError("a dispatcher without an outbox has nothing to send from")
        return self.outbox

    def start(self) -> None:
        """One sender per hook, on the running loop; each starts with what an earlier
        server left pending."""
        if self.outbox is None:
            raise RuntimeError("a dispatcher without an outbox has nothing to send from")
        for hook in self.hooks:
            if hook.url not in self._wake:
                self._wake[hook.url] = asyncio.Event()
                self._spawn(self._sender(hook))

    def enqueue(self, event: dict[str, Any], key: str, camera_id: str) -> int:
        """Keep ``event`` in the outbox for every hook (blocking: call from an I/O thread);
        call ``wake`` once it is announced."""
        if self.outbox is None or not self.hooks:
            return 0
        return self.outbox.add([h.url for h in self.hooks], key, camera_id, event)

    def enqueue_in(
        self, db: sqlite3.Connection, event: dict[str, Any], key: str, camera_id: str
    ) -> int:
        """``enqueue`` inside the caller's catalog transaction (the alert's own)."""
        if self.outbox is None or not self.hooks:
            return 0
        return add_rows(db, [h.url for h in self.hooks], key, camera_id, event)

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def _sender(self, hook: WebhookConfig) -> None:
        wake = self._wake[hook.url]
        while True:
            wake.clear()
            try:
                heads = await asyncio.to_thread(self._senders_outbox().heads, hook.url)
                due = [r for r in heads if r["due_in_s"] <= 0]
                if due:
                    await asyncio.gather(*(self._send(hook, r) for r in due))
                    continue
            except Exception:  # noqa: BLE001 - the outbox keeps the rows; try again soon
                logger.exception("webhook %s: outbox failed", public_hook_url(hook.url))
                self.causes["outbox error"] += 1
                heads = [{"due_in_s": 1.0}]
            wait = min((r["due_in_s"] for r in heads), default=60.0)
            try:
                await asyncio.wait_for(wake.wait(), max(0.02, wait))
            except asyncio.TimeoutError:
                pass

    async def _send(self, hook: WebhookConfig, row: dict[str, Any]) -> None:
        attempt = row["attempts"] + 1
        key = row["idempotency_key"]
        headers = {"Idempotency-Key": key, "User-Agent": "facewatch-webhook/1"}
        headers["X-Facewatch-Attempt"] = str(attempt)
        outcome, cause = await self._attempt(hook, json.loads(row["body_json"]), headers)
        ob, seq = self._senders_outbox(), row["seq"]
        if outcome == "ok":
            self.counters["delivered"] += 1
            await asyncio.to_thread(ob.finish, seq, attempt, "delivered")
        elif outcome == "refused" or self._given_up(hook, attempt, row["age_s"]):
            self.counters["refused" if outcome == "refused" else "failed"] += 1
            logger.error(
                "webhook %s: gave up on %s after %d attempt(s): %s",
                public_hook_url(hook.url), key, attempt, cause,
            )  # fmt: skip
            await asyncio.to_thread(ob.finish, seq, attempt, outcome_state(outcome), cause)
        else:
            self.counters["retries"] += 1
            delay = backoff_delay(hook, attempt)
            await asyncio.to_thread(ob.retry_later, seq, attempt, delay, cause)

    @staticmethod
    def _given_up(hook: WebhookConfig, attempt: int, age_s: float) -> bool:
        return bool(hook.max_attempts and attempt >= hook.max_attempts) or (
            age_s >= hook.give_up_after_s
        )

    # -- one delivery, in memory (no outbox) ----------------------------------------------
    async def deliver(self, hook: WebhookConfig, event: dict[str, Any], key: str) -> bool:
        """Deliver ``event`` now, retrying within this call (the hook's limits apply)."""
        headers = {"Idempotency-Key": key, "User-Agent": "facewatch-webhook/1"}
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            headers["X-Facewatch-Attempt"] = str(attempt)
            outcome, cause = await self._attempt(hook, event, headers)
            if outcome == "ok":
                self.counters["delivered"] += 1
                return True
            if outcome == "refused" or self._given_up(hook, attempt, time.monotonic() - started):
                break
            self.counters["retries"] += 1
            await asyncio.sleep(backoff_delay(hook, attempt))
        self.counters["failed"] += 1
        logger.error(
            "webhook %s: gave up on %s after %d attempt(s): %s",
            public_hook_url(hook.url), key, attempt, cause,
        )  # fmt: skip
        return False

    async def _attempt(self, hook: WebhookConfig, event: dict, headers: dict) -> tuple[str, str]:
        """``ok``, ``retry`` or ``refused``, and the cause of a failure."""
        try:
            async with self._limit:
                r = await self._http().post(
                    hook.url, json=event, headers=headers, timeout=hook.timeout_s
                )
        except httpx.HTTPError as exc:
            cause = type(exc).__name__  # never str(exc): it may show the whole URL
            logger.warning("webhook %s: %s", public_hook_url(hook.url), cause)
            self.causes[cause] += 1
            return "retry", cause
        if 200 <= r.status_code < 300:
            return "ok", ""
        cause = f"HTTP {r.status_code}"
        logger.warning("webhook %s: answered %d", public_hook_url(hook.url), r.status_code)
        self.causes[cause] += 1
        return ("retry" if retryable(r.status_code) else "refused"), cause

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Deliveries waiting in the outbox, every hook together (the outbox depth; a
        small SQLite count)."""
        return self.outbox.counts().get("pending", 0) if self.outbox is not None else 0

    def stats(self) -> dict[str, Any]:
        """Counters for ``/v1/stats`` (blocking when there is an outbox: an I/O thread)."""
        out: dict[str, Any] = dict(self.counters)
        out["causes"] = dict(self.causes)
        if self.outbox is not None:
            out["outbox"] = self.outbox.counts()
        return out

    async def close(self) -> None:
        """Stop sending; what is pending stays in the outbox for the next server."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def outcome_state(outcome: str) -> str:
    return "refused" if outcome == "refused" else "failed"
