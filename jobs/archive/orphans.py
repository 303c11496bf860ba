"""Ray processes a killed facewatch left behind: found by facewatch's own Ray temp folder.

When the process that started a local Ray (``facewatch search``, ``index``, ``serve``) is
killed with SIGKILL, Ray's node processes go with it, but its dashboard and runtime-env
agents can stay, adopted by PID 1, for ever. Every local Ray facewatch starts keeps its
session under ``<tmp>/facewatch-ray-<uid>`` (``serve.local.ray_temp_dir``), so its
processes name that folder: in their command line, or (agents and workers, whose command
line Ray rewrites to ``ray::...``) in the files they hold open. The session folder's name
ends with the PID of the process that started it.

A process of this user is an orphan when it names a session in that folder and the process
that started the session is gone. Nothing else is touched: not a running search or server
(its starter is alive, even when it runs under ``nohup`` or as a container's PID 1, so its
own parent is PID 1), not a process that names no session, not another Ray on the machine
(another folder), not another user's processes. ``facewatch doctor`` lists and stops them;
a local search or index stops them before it starts its own Ray.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

SESSION = re.compile(r"session_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)_\d+_(\d+)")


@dataclass(frozen=True)
class RayProcess:
    pid: int
    ppid: int
    name: str
    session: str  # the session folder's name, "" if none is named
    starter_pid: int  # the PID at the end of the session's name, 0 if none

    def row(self) -> dict:
        return {"pid": self.pid, "ppid": self.ppid, "name": self.name, "session": self.session}


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time in clock ticks after boot), or None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def _mentions(pid: int, root: str) -> str:
    """The first text of ``pid`` that names ``root``: its command line, else an open file."""
    cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
    if root in cmdline:
        return cmdline
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ""
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root):
            return target
    return ""


def facewatch_ray_processes(temp_root: Path) -> list[RayProcess]:
    """This user's processes that name ``temp_root`` (not this process)."""
    root, me, uid = str(temp_root).rstrip("/") + "/", os.getpid(), os.getuid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        text, stat = _mentions(pid, root), _stat(pid)
        if not text or stat is None:
            continue
        m = SESSION.search(text)
        name = _read(f"/proc/{pid}/comm").strip()
        found.append(
            RayProcess(pid, stat[0], name, m.group(0) if m else "", int(m.group(2)) if m else 0)
        )
    return found


def _started_at(pid: int) -> float | None:
    """When ``pid`` started (Unix time), or None if there is no such process."""
    stat = _stat(pid)
    if stat is None:
        return None
    lines = _read("/proc/stat").splitlines()
    boot = next((float(line.split()[1]) for line in lines if line.startswith("btime ")), 0.0)
    return boot + stat[1] / os.sysconf("SC_CLK_TCK")


def _starter_alive(p: RayProcess) -> bool:
    """Whether the process that started ``p``'s session still runs (a PID reused by a
    process that started after the session is not it)."""
    if not p.starter_pid:
        return True  # nothing to go by: left alone
    started = _started_at(p.starter_pid)
    if started is None:
        return False
    stamp = SESSION.match(p.session)
    session_time = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d_%H-%M-%S")) if stamp else 0
    return started <= session_time + 1  # clock-tick rounding


def _orphan(p: RayProcess) -> bool:
    """The session says who started it, and that decides. A process that names no session
    is left alone: a driver between opening the temp folder and starting its session
    names none yet, and under ``nohup`` its parent is PID 1 like an orphan's."""
    return bool(p.starter_pid) and not _starter_alive(p)


def find_orphans(temp_root: Path) -> list[RayProcess]:
    return [p for p in facewatch_ray_processes(temp_root) if _orphan(p)]


def stop(processes: list[RayProcess], grace_s: float = 5.0) -> list[RayProcess]:
    """SIGTERM, then SIGKILL for any still there after ``grace_s``; returns those that
    would not go."""
    left = list(processes)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while left and time.monotonic() < deadline:
            left = [p for p in left if _same_process_alive(p)]
            if left:
                time.sleep(0.1)
        if not left:
            break
    return left


def _same_process_alive(p: RayProcess) -> bool:
    """Still there and not a zombie (a zombie is gone, only not yet reaped)."""
    stat = _read(f"/proc/{p.pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"
