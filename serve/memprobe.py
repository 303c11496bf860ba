"""An opt-in memory probe for the long-lived replicas (LiveHub, FacePool, Api): where does RSS go?

The soak (benchmarks/soak_live.py) sees RSS per process from /proc but cannot tell Python
objects from native memory, or a leak from memory glibc keeps after a free. With
``FACEWATCH_MEMPROBE=<folder>`` set before the server starts (Ray workers inherit it), each
replica that calls ``start_if_asked`` writes one JSON line every ``FACEWATCH_MEMPROBE_S``
seconds (default 120) to ``<folder>/<name>-<pid>.jsonl`` with:
- ``rss_kb`` from /proc, the allocator (``jemalloc`` where serve/memory_env.py preloaded
  it, else ``glibc``) and its totals: glibc's ``mallinfo2`` (bytes in use by malloc, bytes
  free but held in its arenas, mmapped bytes), or jemalloc's ``stats.*`` (allocated,
  active, resident, retained): native growth in use vs. fragmentation;
- with ``FACEWATCH_MEMPROBE_TRACE=1``: tracemalloc's Python heap total and the 12 file:line
  sites that grew most since the first sample (tracemalloc slows allocation: a diagnosis
  only);
- resident anonymous memory by kind of mapping, from /proc (malloc's heap and arenas,
  thread stacks, Python's object arenas, and memory mapped directly), with the largest
  directly mapped blocks: growth that malloc's totals do not show is found there;
- Arrow's memory pool where pyarrow is imported: its backend and what it allocated;
- the number of object references this worker's Ray core worker holds (its owner
  reference table);
- with ``FACEWATCH_MEMPROBE_TRIM=1``: RSS after ``malloc_trim(0)`` as well, which tells
  memory glibc merely kept from memory in use;
- with ``FACEWATCH_MEMPROBE_HOLDERS=LogRecord,...``: how many objects of each named type are
  alive after a full collection, and what the newest hold (this found the LiveHub's
  access-log records kept by a closed Serve log handler: pipelines/milvus_import.py).
Unset, nothing starts and nothing is imported. Not for production: a diagnosis tool.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from serve.memory_env import allocator, jemalloc_mallctl, release_freed_memory

ENV, PERIOD_ENV, TRACE_ENV, TRIM_ENV = (
    "FACEWATCH_MEMPROBE",
    "FACEWATCH_MEMPROBE_S",
    "FACEWATCH_MEMPROBE_TRACE",
    "FACEWATCH_MEMPROBE_TRIM",
)
HOLDERS_ENV = "FACEWATCH_MEMPROBE_HOLDERS"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


def rss_kb() -> int:
    return rss_parts()["rss_kb"]


def rss_parts(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and its parts from /proc: anonymous (heap, stacks), file-backed (code,
    libraries) and shared memory (Ray's object store, mapped into every worker); and the
    process's thread count (each thread's stack is anonymous memory)."""
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    keys = {"VmRSS:": "rss_kb", "RssAnon:": "anon_kb", "RssFile:": "file_kb"}
    keys["RssShmem:"] = "shmem_kb"
    keys["Threads:"] = "threads"
    return {name: int(status.split(k)[1].split()[0]) for k, name in keys.items() if k in status}


def mallinfo() -> dict[str, int]:
    """glibc's allocator totals in KiB (empty where glibc has no mallinfo2)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"in_use_kb": m.uordblks // 1024, "free_kb": m.fordblks // 1024,
            "mmap_kb": m.hblkhd // 1024, "arena_kb": m.arena // 1024}  # fmt: skip


ARENA_ALIGN = 64 << 20  # glibc's extra malloc arenas live in 64 MiB-aligned heaps


def map_kind(start: int, size_kb: int, name: str) -> str:
    """What an anonymous mapping most likely is, by its name, size and alignment: malloc's
    main heap (``[heap]``), an extra glibc arena (64 MiB-aligned), a thread's stack (8
    MiB), a block of Python's object allocator (1 MiB), or "other" (mapped directly:
    malloc's large blocks, numpy, torch, a library's own allocator). A hint, not a proof:
    the kernel merges neighbouring anonymous mappings of the same kind into one, so a
    1 MiB block beside another reads as "other"; what grows is found by its address."""
    if name:
        return name  # [heap], [stack], [anon:...]
    if start % ARENA_ALIGN == 0:
        return "glibc arena"
    return {8192: "thread stack", 1024: "python arenas"}.get(size_kb, "other")


def anon_maps(pid: int | str = "self", largest: int = 6) -> dict[str, Any]:
    """Resident anonymous memory from /proc/PID/smaps, by kind (``map_kind``), and the
    largest "other" mappings ([start address, size KiB, resident KiB]): a step in RSS that
    malloc's totals do not show is found here, by the mapping that appeared or grew."""
    kinds: dict[str, int] = {}
    other: list[list[Any]] = []
    head: tuple[int, int, str] | None = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                parts = line.split()
                lo, hi = (int(x, 16) for x in first.split("-"))
                path = parts[5] if len(parts) > 5 else ""
                head = None if path.startswith("/") else (lo, (hi - lo) // 1024, path)
            elif first == "Anonymous:" and head is not None:
                kb = int(line.split()[1])
                kind = map_kind(*head)
                kinds[kind] = kinds.get(kind, 0) + kb
                if kind == "other" and kb:
                    other.append([hex(head[0]), head[1], kb])
    other.sort(key=lambda m: -m[2])
    kinds = {k: kb for k, kb in kinds.items() if kb}
    return {"anon_by_kind_kb": kinds, "anon_largest_other": other[:largest]}


def jemalloc_stats() -> dict[str, int]:
    """jemalloc's totals in KiB where it is the allocator (empty otherwise): bytes the
    program holds (``allocated``), in pages it uses (``active``), resident (``resident``)
    and kept mapped for reuse (``retained``)."""
    mallctl = jemalloc_mallctl()
    if mallctl is None:
        return {}
    epoch = ctypes.c_uint64(1)  # refresh the statistics first
    mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.c_size_t(8))
    out = {}
    for name in ("allocated", "active", "resident", "retained"):
        value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
        if mallctl(f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None, 0) == 0:
            out[f"je_{name}_kb"] = value.value // 1024
    return out


def arrow_stats() -> dict[str, Any]:
    """Arrow's default memory pool where pyarrow is already imported (empty otherwise): its
    backend (mimalloc in pyarrow's wheels reserves 1 GiB arenas), bytes allocated now, the
    peak, all bytes ever allocated and the number of allocations: whether Arrow is used in
    this process at all, and how much."""
    pa = sys.modules.get("pyarrow")
    if pa is None:
        return {}
    pool = pa.default_memory_pool()
    return {
        "arrow_pool": pool.backend_name,
        "arrow_allocated_kb": pool.bytes_allocated() // 1024,
        "arrow_max_kb": pool.max_memory() // 1024,
        "arrow_total_kb": pool.total_bytes_allocated() // 1024,
        "arrow_allocations": pool.num_allocations(),
    }


def holders(type_name: str) -> dict:
    """How many live objects of ``type_name`` there are, how many survive a full
    collection (not garbage in cycles waiting for the collector), and what the newest
    three hold (their ``__dict__``, cut short): what kind of thing accumulates."""
    import gc

    before = sum(type(o).__name__ == type_name for o in gc.get_objects())
    gc.collect()
    objs = [o for o in gc.get_objects() if type(o).__name__ == type_name]
    sample = [repr(getattr(o, "__dict__", o))[:300] for o in objs[-3:]]
    return {"type": type_name, "before_gc": before, "after_gc": len(objs), "sample": sample}


def trim() -> None:
    release_freed_memory()


def ray_refs() -> int | None:
    try:
        import ray

        core = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]
        return len(core.get_all_reference_counts())
    except Exception:  # noqa: BLE001 - a diagnosis: absent is fine
        return None


class Probe:
    def __init__(self, name: str, folder: Path, period_s: float):
        self.path = folder / f"{name}-{os.getpid()}.jsonl"
        self.period_s = period_s
        self.first: Any = None  # the first tracemalloc snapshot
        self.trace = os.environ.get(TRACE_ENV) == "1"
        self.trim = os.environ.get(TRIM_ENV) == "1"
        self.t0 = time.monotonic()

    def row(self) -> dict:
        import gc

        out: dict[str, Any] = {"t_s": round(time.monotonic() - self.t0, 1)}
        out.update(rss_parts(), allocator=allocator(), **mallinfo(), **jemalloc_stats())
        out.update(arrow_stats())
        out.update(ray_refs=ray_refs(), gc_objects=len(gc.get_objects()), **anon_maps())
        if self.trace:
            out.update(self._trace())
        for type_name in filter(None, os.environ.get(HOLDERS_ENV, "").split(",")):
            out[f"holders_{type_name}"] = holders(type_name)
        if self.trim:
            trim()
            out["rss_after_trim_kb"] = rss_kb()
        return out

    def _trace(self) -> dict:
        import tracemalloc

        snap = tracemalloc.take_snapshot()
        if self.first is None:
            self.first = snap
        top = snap.compare_to(self.first, "lineno")[:12]
        return {"py_heap_kb": tracemalloc.get_traced_memory()[0] // 1024,
                "py_growth": [[str(s.traceback[0]), s.size_diff // 1024, s.count_diff]
                              for s in top]}  # fmt: skip

    def loop(self) -> None:
        if self.trace:
            import tracemalloc

            tracemalloc.start(1)
        while True:
            time.sleep(self.period_s)
            with self.path.open("a") as f:
                f.write(json.dumps(self.row()) + "\n")


def start_if_asked(name: str) -> None:
    folder = os.environ.get(ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    probe = Probe(name, Path(folder), float(os.environ.get(PERIOD_ENV, "120")))
    threading.Thread(target=probe.loop, name="memprobe", daemon=True).start()
