"""pymilvus's import must not break the importing process's logging (issue 16, soak RSS).

pymilvus runs ``logging.config.dictConfig`` on import, which closes every handler already
installed; a Ray Serve replica's ``MemoryHandler`` then keeps every later record in its
buffer for ever (the LiveHub grew ~3 KB per pushed frame). Each case runs in a fresh
interpreter, since pymilvus is imported once per process; a Serve-like logger (a
``MemoryHandler`` of capacity 1 in front of a file, as Serve sets up in every replica) is
installed first, then pymilvus is imported, then 500 records are logged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, logging, logging.handlers, sys
log = logging.getLogger("ray.serve")
log.propagate = False
log.setLevel(logging.INFO)
memory = logging.handlers.MemoryHandler(1, logging.ERROR, logging.FileHandler(sys.argv[1]))
log.addHandler(memory)
log.info("before the import")
if sys.argv[2] == "facewatch":
    from pipelines.store import VectorStore  # noqa: F401 - the module the hub imports
    from pipelines.milvus_import import import_pymilvus
    import_pymilvus()
else:
    import pymilvus  # noqa: F401
for i in range(500):
    log.info("CALL push_frame OK %d", i)
print(json.dumps({"buffered": len(memory.buffer), "has_target": memory.target is not None}))
"""


def _run(tmp_path: Path, how: str) -> tuple[dict, list[str]]:
    log = tmp_path / f"{how}.log"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), how],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), log.read_text().splitlines()


@pytest.mark.timeout(150)
def test_a_plain_pymilvus_import_makes_a_memory_handler_keep_every_record(tmp_path):
    """The cause, shown: without facewatch's import the handler loses its file and keeps
    all 500 records (if pymilvus stops doing this, this test says so and the helper can go)."""
    state, lines = _run(tmp_path, "plain")
    assert state == {"buffered": 500, "has_target": False}
    assert lines == [lines[0]] and "before the import" in lines[0]


@pytest.mark.timeout(150)
def test_import_pymilvus_keeps_the_handler_writing_and_holding_nothing(tmp_path):
    state, lines = _run(tmp_path, "facewatch")
    assert state == {"buffered": 0, "has_target": True}
    assert len(lines) == 501 and lines[-1] == "CALL push_frame OK 499"
