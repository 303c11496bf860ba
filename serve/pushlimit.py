"""What a pushed frame may cost the API before its body is read: bytes per camera.

The API replica moves every pushed byte (the HTTP proxy hands it over, the replica reads
it, then forwards it to the hub), on the same cores that analyse the other cameras. One
camera token pushing megabyte PNGs as fast as answers come used that to slow every other
camera (issue 13 item 4), although its own camera analyses only ``live.fps`` of them. So:

- ``PushBudget``: each camera may push ``live.max_push_bytes_per_s`` on average (a token
  bucket holding one second's worth; a frame is let in while the bucket is not in debt,
  so any single frame under the body limit gets through). Over it, the answer is 429 with
  ``Retry-After``, from the headers alone: the body is never read, and the connection is
  closed rather than drained. The answer is held back until the budget would let the
  frame in (at most ``HOLD_S``, at most ``MAX_HELD`` requests at once): a client that
  ignores ``Retry-After`` and retries at once would otherwise cost a request's overhead
  in the proxy and the API at full speed. The budget is per camera, so a flood costs its
  own camera's frames, never another's.
- ``read_frame``: the first ``HEAD_BYTES`` of the body are read and the image header is
  checked on them (413 over the pixel limit, 415/422 not an image) before the rest is
  read, so an oversized frame costs a header read, not a transfer of its megabytes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable

from fastapi import HTTPException, Request

from pipelines.images import ImageError, ImageTooLarge, check_image_header

HEAD_BYTES = 64 * 1024  # a PNG's size is in its first 33 bytes; a JPEG's SOF usually early
MAX_TRACKED = 4096  # cameras whose budget is remembered; full buckets are forgotten first
HOLD_S = 1.0  # the longest a refused push is held before its 429
MAX_HELD = 64  # refused pushes held at once (more are answered at once)
IMAGE_TYPES = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",)}


class PushBudget:
    """A token bucket of bytes per camera (one second's worth, allowed into debt)."""

    def __init__(self, bytes_per_s: float, clock: Callable[[], float] = time.monotonic):
        if bytes_per_s <= 0:
            raise ValueError("bytes_per_s must be positive")
        self.rate, self.clock = float(bytes_per_s), clock
        self._level: dict[str, tuple[float, float]] = {}  # camera -> (bytes, at)
        self.refused = 0
        self.held = 0  # refused pushes being held back now

    def _now_level(self, camera_id: str) -> float:
        now = self.clock()
        level, at = self._level.get(camera_id, (self.rate, now))
        return min(self.rate, level + (now - at) * self.rate)

    def retry_after_s(self, camera_id: str) -> float:
        """0 when the camera may push now; else the seconds until its debt is paid."""
        level = self._now_level(camera_id)
        if level >= 0:
            return 0.0
        self.refused += 1
        return -level / self.rate

    def charge(self, camera_id: str, n_bytes: int) -> None:
        self._level[camera_id] = (self._now_level(camera_id) - n_bytes, self.clock())
        if len(self._level) > MAX_TRACKED:
            self._forget_full()

    async def refusal(self, camera_id: str, wait_s: float) -> HTTPException:
        """The 429 for a push over budget, after holding it back (see the module)."""
        if self.held < MAX_HELD:
            self.held += 1
            try:
                await asyncio.sleep(min(wait_s, HOLD_S))
            finally:
                self.held -= 1
        return HTTPException(
            429,
            f"camera '{camera_id}' pushes more than live.max_push_bytes_per_s: "
            f"retry in {wait_s:.1f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait_s))), "Connection": "close"},
        )

    def _forget_full(self) -> None:
        for cam in [c for c in self._level if self._now_level(c) >= self.rate]:
            del self._level[cam]


async def read_frame(request: Request, max_pixels: int) -> bytes:
    """The frame's bytes, its type and header checked on the first HEAD_BYTES before the
    rest is read: 415 not the declared type, 413 over ``max_pixels``, 422 not an image."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise HTTPException(415, "send the frame as image/jpeg or image/png")
    chunks = request.stream().__aiter__()
    head, ended = await _read_head(chunks)
    if not head:
        raise HTTPException(400, "empty body: send one JPEG or PNG frame")
    if not head.startswith(IMAGE_TYPES[ctype]):
        raise HTTPException(415, f"the body is not a {ctype.split('/')[1].upper()} image")
    if ended:
        _header_ok(head, max_pixels, final=True)
        return bytes(head)
    checked = _header_ok(head, max_pixels, final=False)
    data = bytes(head) + b"".join([chunk async for chunk in chunks])
    if not checked:  # the header lies further in: check it on the whole body
        _header_ok(data, max_pixels, final=True)
    return data


async def _read_head(chunks: AsyncIterator[bytes]) -> tuple[bytearray, bool]:
    head = bytearray()
    while len(head) < HEAD_BYTES:
        try:
            head += await chunks.__anext__()
        except StopAsyncIteration:
            return head, True
    return head, False


def _header_ok(data: bytes | bytearray, max_pixels: int, final: bool) -> bool:
    """True when the header in ``data`` is fine; HTTPException when it is refused; False
    when ``data`` is only the body's start and its header may lie further in."""
    try:
        check_image_header(bytes(data), "frame", max_pixels)
    except ImageTooLarge as exc:
        # the rest of the body is left unread: close the connection rather than drain it
        raise HTTPException(
            413, f"{exc} (live.max_push_pixels)", headers={"Connection": "close"}
        ) from None
    except ImageError as exc:
        if final:
            raise HTTPException(422, str(exc)) from None
        return False
    return True
