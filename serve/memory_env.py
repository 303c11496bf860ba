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

glibc and oneDNN read these once, when a process starts, so they are set in the environment
of the process that starts Ray (``facewatch serve``, a search that starts its own Ray): the
raylet inherits them and so does every worker it starts. A value the user already set wins.
On a cluster started with ``ray start``, set them in that shell (docs/operators.md).

jemalloc for the model processes. Even so the FacePool kept growing (25.5%/h). The replicas
now run on jemalloc (Debian's ``libjemalloc2``, preloaded through the pool's Ray
``runtime_env``; the Makefile installs it) with freed pages kept for reuse, never decayed
(``JEMALLOC_CONF``), and handed back after archive work by jemalloc's own purge instead of
``malloc_trim``. One FaceEngine over varied live calls, four processes side by side: glibc
1,360-1,390 MB; jemalloc without decay 1,585 MB, flat from the 200th call, and 14% less
time per call; jemalloc with its default 10 s decay 1,080-1,100 MB but 25% more time per
call (pages handed back and faulted in again). In the 30-minute soak the memory each
replica held (jemalloc's ``stats.allocated``) stayed at 266-268 MB from start to end; the
two replicas' RSS went from 3,221 MB after warm-up to 2,570 MB (on glibc: +25.5%/h), their
model time per live frame was 36-41 ms against 42-48 ms, and the longest purge took 151 ms
against 847 ms for ``malloc_trim``. Only the replicas: preloaded into every Ray process, jemalloc
without decay made the small Python processes keep more (the LiveHub grew 12.8%/h instead
of 5.4%/h). ``FACEWATCH_JEMALLOC=0`` keeps glibc; an ``LD_PRELOAD`` of the user's is
inherited instead; without the library the replicas run on glibc as above.

Arrow's pool in the LiveHub. milvus-lite, the embedded store, runs inside the hub and keeps
its rows, and answers every count, in Arrow buffers, which pyarrow's wheels allocate from
mimalloc: 1 GiB arenas reserved, freed pages kept out of ``malloc_trim``'s reach. In the
60-minute soak the hub's RSS rose in steps (5.5%/h) while malloc's memory in use stayed
level, and a step showed as mimalloc's arena gaining resident pages. The hub starts with
``ARROW_DEFAULT_MEMORY_POOL=system`` (``hub_process_env``, through its Ray runtime env): one
process writing 16,000 alerts the hub's way reached 236 MiB at most against 349 MiB on
mimalloc (benchmarks/hub_alert_memory.py).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's pool, read at its first allocation
MEMORY_ENV = {"MALLOC_ARENA_MAX": "2", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}
JEMALLOC_ENV = "FACEWATCH_JEMALLOC"  # "0": keep glibc's allocator
# freed pages are kept for reuse (no decay) and handed back by release_freed_memory
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
JEMALLOC_GLOBS = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def jemalloc_library() -> str | None:
    """The path of jemalloc's shared library (Debian's ``libjemalloc2``), if installed."""
    for pattern in JEMALLOC_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def apply_memory_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``MEMORY_ENV`` where unset (a user's value wins); returns what is in force."""
    env = os.environ if environ is None else environ
    return {key: env.setdefault(key, value) for key, value in MEMORY_ENV.items()}


def model_process_env(
    environ: dict[str, str] | None = None, library: str | None = None
) -> dict[str, str]:
    """What the FacePool replicas add to their environment: jemalloc preloaded, with
    ``JEMALLOC_CONF`` unless ``MALLOC_CONF`` is set. Empty where jemalloc is not installed,
    where ``FACEWATCH_JEMALLOC=0``, or where ``LD_PRELOAD`` is already set (the processes
    inherit that one). ``library``: jemalloc's path (found when None)."""
    env = os.environ if environ is None else environ
    if env.get(JEMALLOC_ENV, "1") == "0" or env.get("LD_PRELOAD"):
        return {}
    path = library or jemalloc_library()
    if path is None:
        return {}
    return {"LD_PRELOAD": path, "MALLOC_CONF": env.get("MALLOC_CONF") or JEMALLOC_CONF}


def hub_process_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """What the LiveHub adds to its environment: Arrow allocating through malloc (Arrow's
    "system" pool) instead of the mimalloc pool of pyarrow's wheels, unless the user named
    a pool in ``ARROW_DEFAULT_MEMORY_POOL`` (that one is passed on). milvus-lite keeps the
    embedded store's rows, and answers every count, in Arrow buffers inside the hub; mimalloc
    reserves 1 GiB arenas and keeps the pages it freed out of ``malloc_trim``'s reach, so
    the hub's RSS rose in steps (benchmarks/hub_alert_memory.py measures both pools). Arrow
    reads the variable once, at its first allocation, so it is set when the process starts
    (``pyarrow.set_memory_pool`` later leaves Arrow's C++ internals on mimalloc)."""
    env = os.environ if environ is None else environ
    return {ARROW_POOL_ENV: env.get(ARROW_POOL_ENV) or "system"}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


@functools.cache
def jemalloc_mallctl():
    """jemalloc's control function when jemalloc is this process's allocator, else None."""
    try:
        return ctypes.CDLL(None).mallctl
    except (AttributeError, OSError):
        return None


def allocator() -> str:
    """Which allocator this process runs on: "jemalloc" (preloaded) or "glibc"."""
    return "jemalloc" if jemalloc_mallctl() is not None else "glibc"


def release_freed_memory() -> bool:
    """Freed pages go back to the kernel (they stay free to malloc): jemalloc's purge of
    every arena where it is the allocator, else glibc's ``malloc_trim(0)``. True if the
    call succeeded (glibc: if memory was released); False where neither is there."""
    mallctl = jemalloc_mallctl()
    if mallctl is not None:  # MALLCTL_ARENAS_ALL = 4096
        return mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0)) == 0
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
