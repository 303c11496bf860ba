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
With ``MALLOC_ARENA_MAX=2`` and a fixed ``MALLOC_MMAP_THRESHOLD_`` of 256 KiB, blocks of a
frame or more are mmapped and returned to the kernel when freed, and the same replica held
under 4 MB free (its RSS ~230 MB lower). The cost: a page fault per 4 KiB of each large
block, well under a millisecond per frame next to ~100 ms of model time.

glibc reads these once, when a process starts, so they are set in the environment of the
process that starts Ray (``facewatch serve``, a search that starts its own Ray): the raylet
inherits them and so does every worker it starts. A value the user already set wins. On a
cluster started with ``ray start``, set them in that shell (docs/operators.md).
"""

from __future__ import annotations

import os

MEMORY_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(256 * 1024),
}


def apply_memory_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``MEMORY_ENV`` where unset (a user's value wins); returns what is in force."""
    env = os.environ if environ is None else environ
    return {key: env.setdefault(key, value) for key, value in MEMORY_ENV.items()}
