"""Cancelling a workspace search stops its whole process group before it answers
(pipelines.search_jobs.stop_group): the search's own Ray processes are in its group, and a
process killed with SIGKILL is not gone until it has exited and been reaped. Real
processes; no Ray."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipelines import search_jobs

# The search's stand-in, a session of its own: its leader ignores SIGINT (a search busy in
# native code); a helper process, in the same session but another group, starts a process
# in the leader's group and reaps it only REAP_S after it was killed, so that this process
# of the group lingers after SIGKILL, as one that is slow to exit does.
SEARCH = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
leader = os.getpid()
if os.fork() == 0:
    os.setpgid(0, 0)
    member = subprocess.Popen(["sleep", "60"], process_group=leader)
    os.waitid(os.P_PID, member.pid, os.WEXITED | os.WNOWAIT)  # killed, not reaped
    time.sleep(float(sys.argv[1]))
    member.wait()
    os._exit(0)
time.sleep(60)
"""


def start_search(reap_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SEARCH, str(reap_s)], start_new_session=True)
    deadline = time.monotonic() + 20
    while len(_group(proc.pid)) < 2:  # the leader and the member in its group
        assert time.monotonic() < deadline, "the stand-in search did not start"
        time.sleep(0.05)
    return proc


def _group(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout
    return [int(p) for p, g in (ln.split() for ln in out.splitlines()) if int(g) == pgid]


@pytest.mark.timeout(60)
def test_a_cancel_returns_only_once_every_process_of_the_group_is_gone(monkeypatch):
    monkeypatch.setattr(search_jobs, "CANCEL_GRACE_S", 0.5)
    search = start_search(reap_s=2.0)
    started = time.monotonic()
    search_jobs.stop_group(search.pid, search)
    took = time.monotonic() - started
    assert not search_jobs.alive(search.pid, group=True)
    assert took >= 2.0  # it waited for the lingering process, not only for its leader


@pytest.mark.timeout(60)
def test_a_group_that_does_not_go_is_given_up_on_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(search_jobs, "CANCEL_GRACE_S", 0.2)
    monkeypatch.setattr(search_jobs, "GROUP_EXIT_S", 0.5)
    search = start_search(reap_s=4.0)
    search_jobs.stop_group(search.pid, search)
    assert "still there" in caplog.text
    deadline = time.monotonic() + 20
    while search_jobs.alive(search.pid, group=True):  # the helper reaps it, and ends
        assert time.monotonic() < deadline
        time.sleep(0.1)
