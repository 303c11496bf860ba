"""Posting alerts to webhooks: retries with capped exponential backoff, and an idempotency
key, so a receiver that saw an attempt whose answer was lost can drop the repeat.

Every attempt carries the same ``Idempotency-Key`` (the alert id, stable per camera, track
and person). A 2xx answer ends the delivery; 408, 429, 5xx and network errors are retried;
any other 4xx means the receiver refuses this alert, so it is not retried. Each delivery
is its own task, so one slow receiver or alert never holds up another. Logs show a hook
only as ``scheme://host[:port]/…``: its userinfo, path and query may hold its token. That
includes httpx's own request log line, which would show the whole URL.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.config import WebhookConfig

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
    def __init__(self, hooks: list[WebhookConfig], concurrency: int = 8):
        self.hooks = hooks
        self.counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._limit = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None
        _HTTPX_LOG.hosts.update(public_hook_url(h.url) for h in hooks)
        logging.getLogger("httpx").addFilter(_HTTPX_LOG)  # added once, however many times

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    def submit(self, event: dict[str, Any], key: str) -> None:
        """Deliver ``event`` to every hook in the background."""
        for hook in self.hooks:
            task = asyncio.ensure_future(self.deliver(hook, event, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def deliver(self, hook: WebhookConfig, event: dict[str, Any], key: str) -> bool:
        headers = {"Idempotency-Key": key, "User-Agent": "facewatch-webhook/1"}
        for attempt in range(1, hook.max_attempts + 1):
            headers["X-Facewatch-Attempt"] = str(attempt)
            outcome = await self._attempt(hook, event, headers)
            if outcome == "ok":
                self.counters["delivered"] += 1
                return True
            if outcome == "refused" or attempt == hook.max_attempts:
                break
            self.counters["retries"] += 1
            await asyncio.sleep(backoff_delay(hook, attempt))
        self.counters["failed"] += 1
        logger.error(
            "webhook %s: gave up on %s after %d attempt(s)", public_hook_url(hook.url), key, attempt
        )
        return False

    async def _attempt(self, hook: WebhookConfig, event: dict, headers: dict) -> str:
        try:
            async with self._limit:
                r = await self._http().post(
                    hook.url, json=event, headers=headers, timeout=hook.timeout_s
                )
        except httpx.HTTPError as exc:
            logger.warning("webhook %s: %s", public_hook_url(hook.url), type(exc).__name__)
            return "retry"
        if 200 <= r.status_code < 300:
            return "ok"
        logger.warning("webhook %s: answered %d", public_hook_url(hook.url), r.status_code)
        return "retry" if retryable(r.status_code) else "refused"

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
