"""serve.memory_env: the allocator settings facewatch starts Ray with (issue 16, soak RSS).
That the FacePool replicas run on them is checked by tests/test_soak.py (each replica's
allocator, from inside it); here, that they are set, that a user's own value wins, and that
freed memory goes back to the kernel on jemalloc (Debian's libjemalloc2, which the Makefile
installs: .ci/ensure-jemalloc)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve.memory_env import (
    JEMALLOC_CONF,
    MEMORY_ENV,
    apply_memory_env,
    hub_process_env,
    jemalloc_library,
    model_process_env,
)

ROOT = Path(__file__).resolve().parents[2]
LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.timeout(10)
def test_unset_settings_are_filled_in():
    env: dict[str, str] = {"PATH": "/usr/bin"}
    assert apply_memory_env(env) == MEMORY_ENV
    assert env == {"PATH": "/usr/bin", **MEMORY_ENV}
    # jemalloc only for the model processes (the pool's runtime_env), not for every process
    assert model_process_env(env, library=LIB) == {"LD_PRELOAD": LIB, "MALLOC_CONF": JEMALLOC_CONF}
    assert "LD_PRELOAD" not in env
    # no fixed mmap threshold: it doubled the pool's model time (serve/memory_env.py)
    assert MEMORY_ENV == {"MALLOC_ARENA_MAX": "2", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}


@pytest.mark.timeout(10)
def test_a_users_own_value_wins():
    env = {"MALLOC_ARENA_MAX": "4"}
    assert apply_memory_env(env)["MALLOC_ARENA_MAX"] == "4"
    assert env == {**MEMORY_ENV, "MALLOC_ARENA_MAX": "4"}


@pytest.mark.timeout(10)
def test_jemalloc_is_left_out_when_asked_or_when_something_else_is_preloaded():
    assert model_process_env({"FACEWATCH_JEMALLOC": "0"}, library=LIB) == {}
    assert model_process_env({"LD_PRELOAD": "/opt/other.so"}, library=LIB) == {}  # inherited
    # the user's jemalloc options win
    assert (
        model_process_env({"MALLOC_CONF": "narenas:4"}, library=LIB)["MALLOC_CONF"] == "narenas:4"
    )


ARROW = """
import json, pyarrow as pa
from serve.memprobe import arrow_stats, mallinfo
def malloc_kb():
    m = mallinfo()
    return m["in_use_kb"] + m["mmap_kb"]
values = list(range(1_000_000))
pa.table({"x": values[:10]})  # Arrow's first conversion sets itself up
before = malloc_kb()
table = pa.table({"x": values})  # an 8 MB buffer from Arrow's default pool
grew = malloc_kb() - before
spans, end = [], None  # anonymous address ranges, neighbours joined (mprotect splits them)
for line in open("/proc/self/maps"):
    parts = line.split()
    lo, hi = (int(x, 16) for x in parts[0].split("-"))
    if len(parts) > 5:  # a file or a named mapping
        end = None
        continue
    if lo == end:
        spans[-1] += hi - lo
    else:
        spans.append(hi - lo)
    end = hi
print(json.dumps({**arrow_stats(), "malloc_grew_kb": grew,
                  "gib_spans": sum(s >= 1 << 30 for s in spans)}))
"""


@pytest.mark.timeout(60)
def test_the_hub_allocates_arrow_buffers_through_malloc_unless_the_user_chose_a_pool():
    """The LiveHub's runtime env (serve/app.py) sets Arrow's pool to malloc: the embedded
    store's buffers then go where ``malloc_trim`` reaches, and no 1 GiB mimalloc arena is
    reserved. A process started without it uses pyarrow's mimalloc (what the hub did).
    Measured: malloc's own totals grow by Arrow's buffer, and no anonymous address range
    of 1 GiB exists (the whole of /proc/self/maps, not only its most resident mappings)."""
    from pipelines.config import Settings
    from serve.app import deployment_options

    assert hub_process_env({}) == {"ARROW_DEFAULT_MEMORY_POOL": "system"}
    # the user's choice is passed on (the hub may run on a node started elsewhere)
    assert hub_process_env({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}) == {
        "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"
    }
    hub = deployment_options(Settings(), False, {})["LiveHub"]["ray_actor_options"]
    assert hub["runtime_env"]["env_vars"] == hub_process_env()
    import json

    rows = {}
    for name, extra in (("hub", hub_process_env({})), ("default", {})):
        env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
        out = subprocess.run([sys.executable, "-c", ARROW], cwd=ROOT, env={**env, **extra},
                             capture_output=True, text=True, timeout=50, check=True)  # fmt: skip
        rows[name] = json.loads(out.stdout)
    buffer_kb = rows["hub"]["arrow_allocated_kb"]
    assert buffer_kb > 7_000, rows  # 1,000,000 int64 values
    assert rows["hub"]["arrow_pool"] == "system", rows
    assert rows["hub"]["malloc_grew_kb"] >= 0.9 * buffer_kb, rows
    assert rows["hub"]["gib_spans"] == 0, rows
    # the control: the same probe sees mimalloc's buffer outside malloc, and its arena
    assert rows["default"]["arrow_pool"] == "mimalloc", rows
    assert rows["default"]["malloc_grew_kb"] < 0.5 * buffer_kb, rows
    assert rows["default"]["gib_spans"] >= 1, rows


PROBE = """
import json, numpy as np
from serve.memory_env import allocator, release_freed_memory
from serve.memprobe import jemalloc_stats, rss_kb
blocks = [np.ones(10_000_000) for _ in range(4)]  # 320 MB
held = rss_kb()
del blocks
kept = rss_kb()
released = release_freed_memory()
print(json.dumps({"allocator": allocator(), "held": held, "kept": kept, "released": released,
                  "after": rss_kb(), "stats": jemalloc_stats()}))
"""


@pytest.mark.timeout(60)
def test_a_process_started_with_the_env_runs_on_jemalloc_and_hands_freed_memory_back():
    library = jemalloc_library()
    assert library is not None, "libjemalloc2 is not installed: run bash .ci/ensure-jemalloc"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env.update(model_process_env(env))
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    import json

    row = json.loads(out.stdout)
    assert row["allocator"] == "jemalloc" and row["released"] is True, row
    assert row["stats"]["je_allocated_kb"] < 100_000  # the blocks are freed ...
    assert row["kept"] > row["held"] - 50_000  # ... and kept for reuse (no decay) ...
    assert row["after"] < row["kept"] - 250_000  # ... until they are handed back


@pytest.mark.timeout(30)
def test_the_memory_map_shows_a_directly_mapped_block():
    """serve.memprobe.anon_maps, in this process: a 64 MiB numpy array (glibc maps a block
    that large directly, outside its heap and arenas) is the largest "other" mapping."""
    import numpy as np

    from serve.memprobe import anon_maps, map_kind

    assert map_kind(64 << 20, 65536, "") == "glibc arena"
    assert map_kind(0x7F0000001000, 1024, "") == "python arenas"
    assert map_kind(0x7F0000001000, 4096, "[heap]") == "[heap]"
    before = anon_maps()["anon_by_kind_kb"].get("other", 0)
    block = np.ones((64 << 20) // 8)  # written: resident
    maps = anon_maps()
    largest = maps["anon_largest_other"][0]
    assert largest[1] >= 65536 and largest[2] >= 65536, maps
    assert maps["anon_by_kind_kb"]["other"] >= before + 65536
    assert maps["anon_by_kind_kb"]["[heap]"] > 0, maps
    del block
