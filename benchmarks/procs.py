"""The benchmark's server processes, from /proc: which processes, by which name, and the CPU
each group used over a phase.

Shared by bench_live.py (CPU per process group in each phase: where two cores go) and
soak_live.py (RSS and descriptors per group over a long run). A group is a Ray process
title without its per-process parts (``ray::ServeReplica:facewatch:FacePool``), a Python
daemon by its script (``python dashboard.py``), or ``driver``: the benchmark's own process,
which also pushes the cameras' frames.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        kids[ppid].append(int(name))
    return kids


def server_processes() -> list[int]:
    """This process and every process under it (Ray's, started by this driver)."""
    kids, out, todo = children(), [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def group_of(pid: int) -> str:
    """A stable name for the process: its Ray title (``ray::ServeReplica:...:FacePool``)
    without per-process parts, or its program name."""
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return "?"
    if pid == os.getpid():
        return "driver"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0].split(".")[0]
    name = Path(first).name or "?"
    if name.startswith("python"):  # Ray's daemons (log_monitor.py, dashboard.py, ...) and
        # a search's CLI process are all "python": name them by script or module
        rest = [a.decode(errors="replace") for a in argv[1:] if a and not a.startswith(b"-")]
        return f"python {Path(rest[0]).name}" if rest else name
    return name


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """{pid: (group, CPU seconds so far)} over the server's processes now."""
    out = {}
    for pid in server_processes():
        try:
            out[pid] = (group_of(pid), cpu_seconds(pid))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return out


def cores_used(before: dict[int, tuple[str, float]], seconds: float) -> dict:
    """CPU cores each group used since ``before`` (a ``cpu_by_process()``), over a phase
    of ``seconds``: a process started meanwhile counts from 0, one that ended is lost (a
    phase's archive search is its own process, read before it ends). Sorted, largest first,
    with the total and the machine's cores."""
    used: dict[str, float] = defaultdict(float)
    for pid, (group, cpu) in cpu_by_process().items():
        then = before.get(pid)
        used[group] += cpu - (then[1] if then and then[0] == group else 0.0)
    groups = {g: round(s / seconds, 2) for g, s in sorted(used.items(), key=lambda kv: -kv[1])}
    groups = {g: c for g, c in groups.items() if c >= 0.01}
    return {
        "by_group": groups,
        "total": round(sum(used.values()) / seconds, 2),
        "machine_cores": os.cpu_count(),
    }
