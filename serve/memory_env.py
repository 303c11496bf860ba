"""Allocator settings for the Ray processes facewatch starts, so that their RSS stays flat.

Measured in the soak (benchmarks/soak_live.py, 4 cameras + an archive search every few
minutes; glibc's ``mallinfo2`` read inside the replicas by serve/memprobe.py): a FacePool
replica with glibc's defaults held 230-370 MB of memory it had freed (``fordblks``), growing
in steps as archive searches came and went, while the memory it used grew by ~10 MB. Two
glibc defaults cause it:
- one malloc arena per thread that allocates (up to 8 per core): Ray's core worker, the
  model thread and the gRPC threads each keep their own arena, and a freed block in one is
  never reused by another;
- a dynamic mmap threshold: once a large block (a decoded frame, an image batch, a torch
  buffer) is freed, glibc raises the threshold past it, so later frames come from the
  arenas instead of mmap, and the holes they leave are kept rather than handed back.
With ``MALLOC_ARENA_MAX=2`` the threads share two arenas. The FacePool also hands freed
pages back after archive work (``malloc_trim``, at most every 30 s: serve/pool.py).

oneDNN's primitive cache is the third: torch's CPU convolutions keep a prepared primitive
per layer and input shape, up to 1024 a process, and the pool's batches come in many shapes
(R-net and O-net batches sized by their candidate counts, each camera's frame size, face
batches of every size), so the cache kept filling for the whole soak. With
``ONEDNN_PRIMITIVE_CACHE_CAPACITY=64``: one FaceEngine over 700-1,000 varied live-sized
calls levelled off at 1,300-1,330 MB instead of 1,440-1,490 MB, at 3-4% more time per call
(two processes side by side); in the 30-minute soak the two FacePool replicas held 3,157 MB
at the end instead of 3,721 MB, grew 25.5%/h after warm-up instead of 38.2%/h, their model
time per live frame was 42-48 ms against 42-48 ms. ``malloc_trim`` still took up to 847 ms
once (242 ms in the run before).

Not set: a fixed ``MALLOC_MMAP_THRESHOLD_`` (256 KiB), which returned every freed frame to
the kernel but made every large torch and numpy buffer a fresh mmap, page faults and all:
the pool's model time per live frame went from 37-38 ms to 68 ms and 4 cameras at 5 fps
from p99 455-507 ms with nothing dropped to 810-918 ms with 5% dropped (bench_live, 4
cameras, 30 s, the same quiet machine, interleaved).

glibc and oneDNN read these once, when a process starts, so they are set in the environment of the
process that starts Ray (``facewatch serve``, a search that starts its own Ray): the raylet
inherits them and so does every worker it starts. A value the user already set wins. On a
cluster started with ``ray start``, set them in that shell (docs/operators.md).
"""

from __future__ import annotations

import ctypes
import functools
import os

MEMORY_ENV = {"MALLOC_ARENA_MAX": "2", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}


def apply_memory_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``MEMORY_ENV`` where unset (a user's value wins); returns what is in force."""
    env = os.environ if environ is None else environ
    return {key: env.setdefault(key, value) for key, value in MEMORY_ENV.items()}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def release_freed_memory() -> bool:
    """glibc's ``malloc_trim(0)``: freed pages in every arena go back to the kernel (they
    stay free to malloc). True if memory was released; False also where there is no glibc."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
