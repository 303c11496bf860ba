"""``start_ray``'s one retry of a local Ray that did not come up. Ray's failure (its raylet
never registering) cannot be caused on purpose, so ``ray.init`` here is a fake, named as
such: these tests check only what start_ray does with that failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.archive import runtime

pytestmark = pytest.mark.timeout(30)

RAY_TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the "
    "raylet failed to startup or the GCS has become overloaded."
)


class FakeRayInit:
    """Stands in for ray.init: raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls: list[dict] = []
        self.shutdowns = 0

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self):
        self.shutdowns += 1


@pytest.fixture
def fake(monkeypatch):
    import ray

    def install(*errors: Exception) -> FakeRayInit:
        f = FakeRayInit(*errors)
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", f.init)
        monkeypatch.setattr(ray, "shutdown", f.shutdown)
        return f

    return install


def test_a_local_ray_that_timed_out_is_started_once_more(fake):
    f = fake(RAY_TIMEOUT)
    assert runtime.start_ray(None) is True
    assert len(f.calls) == 2 and f.shutdowns == 1
    assert f.calls[1]["_node_ip_address"] == "127.0.0.1"  # the same loopback start


def test_it_gives_up_after_the_second_timeout(fake):
    f = fake(RAY_TIMEOUT, RAY_TIMEOUT)
    with pytest.raises(Exception, match="timed out during startup"):
        runtime.start_ray(None)
    assert len(f.calls) == runtime.LOCAL_START_ATTEMPTS


def test_other_errors_and_remote_clusters_are_not_retried(fake):
    f = fake(ValueError("bad argument"))
    with pytest.raises(ValueError, match="bad argument"):
        runtime.start_ray(None)
    assert len(f.calls) == 1
    f = fake(RAY_TIMEOUT)
    with pytest.raises(Exception, match="timed out"):
        runtime.start_ray("ray://cluster.example:10001")
    assert len(f.calls) == 1


def test_a_pool_on_another_embedder_is_a_configuration_error():
    """A pool that embeds with another embedder than the store's is a configuration error
    (exit 2); one whose replicas cannot start is a failure of the machinery (exit 1). The
    CLI's one handler (tests/test_errors.py) exits with these codes."""
    from pipelines.schemas import EmbedderInfo, EmbedderMismatchError

    store = EmbedderInfo("dlib-resnet", "1", 128)
    with pytest.raises(EmbedderMismatchError, match="facenet") as mismatch:
        runtime.check_embedder("facenet-vggface2@1/512", store)
    runtime.check_embedder(store.key, store)  # the same space: no error
    assert mismatch.value.exit_code == 2
    assert runtime.PoolStartError("the face pool failed to start: x").exit_code == 1


# -- a search's Ray under a fresh HOME: token private, every port on loopback ---------------
RUNTIME_PROBE = r"""
import json, os, sys
from pathlib import Path
from jobs.archive import runtime
from pipelines.config import Settings

def listeners(pids):
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                found.append([table, f[1].split(":")[0], inodes[f[9]]])
    return found

def descendants(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [str(root)]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += children.get(pid, [])
    return out

settings = Settings(home=sys.argv[1])
runtime.start_ray(None, settings)
with runtime.face_pool(settings) as app:
    runtime.wait_for_pool(app)
    print(json.dumps(listeners(descendants(os.getpid()))))
"""
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.mark.timeout(300)
def test_a_search_ray_keeps_its_token_private_and_its_ports_on_loopback(tmp_path):
    """What `facewatch search` starts (start_ray, then the FacePool), under a fresh HOME: the
    Ray token is `<home>/ray/auth_token` 0600, `~/.ray` is not created, and every listening
    socket of Ray's processes, the pool replica's own gRPC server included, is on
    127.0.0.1 (Serve binds that one to all interfaces unless told otherwise)."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    user_home, fw_home = tmp_path / "user", tmp_path / "fw"
    user_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(user_home), PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_PROBE, str(fw_home)],
        cwd=root, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    listening = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(listening) >= 4  # gcs, raylet, workers, the replica
    assert [x for x in listening if x[1] not in LOOPBACK] == []
    token = fw_home / "ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    assert not (user_home / ".ray").exists()


# -- Ray processes left by a killed search: found by facewatch's temp folder and stopped ----
DRIVER = r"""
import os
import sys
from jobs.archive import runtime

print(os.getpid(), flush=True)
from pipelines.config import Settings

runtime.start_ray(None, Settings(home=sys.argv[1]))  # the local Ray a search starts
import ray

ray.get(ray.remote(lambda: 1).remote())
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin (or kills this process)
"""


def _driver(home: Path, detached: bool = False):
    """A process that starts a local Ray; ``detached``: started as ``nohup cmd &`` from a
    shell that then exits, so the driver's own parent becomes PID 1 (or a subreaper). Its
    ``pid`` is then the shell's: the driver's is the first line it prints."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-c", DRIVER, str(home)]
    if detached:  # fd 3 keeps the pipe: a background job's stdin is /dev/null
        cmd = ["sh", "-c", 'exec 3<&0; "$@" <&3 3<&- &', "sh", *cmd]
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_until(check, timeout_s: float, what: str):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)  # processes ending: nothing to wait on but /proc
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(240)
def test_doctor_stops_what_a_killed_search_left_and_nothing_else(tmp_path):
    """kill -9 of a process that started a local Ray (as `facewatch search` does) leaves
    Ray's agents running under PID 1; `facewatch doctor` finds them by facewatch's Ray temp
    folder and stops them, and leaves alone a Ray whose starter is alive, also one whose
    starter runs detached (``nohup facewatch search ... &``: its own parent is PID 1)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from jobs.archive.orphans import facewatch_ray_processes, find_orphans
    from serve.local import ray_temp_dir

    root = ray_temp_dir()
    procs = [_driver(tmp_path / "a"), _driver(tmp_path / "b"), _driver(tmp_path / "c", True)]
    try:
        killed, alive, detached = (int(d.stdout.readline()) for d in procs)
        for d in procs:
            assert d.stdout.readline().strip() == "ready"

        def of(pid):
            return [p for p in facewatch_ray_processes(root) if p.starter_pid == pid]

        allp = facewatch_ray_processes(root)
        info = (killed, alive, detached, sorted({(p.starter_pid, p.session) for p in allp}))
        assert of(killed) and of(alive) and of(detached), info
        assert [p for p in of(detached) if p.pid == detached and p.ppid != procs[2].pid]
        os.kill(killed, signal.SIGKILL)
        procs[0].wait(10)
        left = _wait_until(
            lambda: [p for p in find_orphans(root) if p.starter_pid == killed], 30, "orphans"
        )
        assert all(p.ppid == 1 for p in left)  # adopted by init: nobody would ever stop them
        out = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "doctor", "--json"],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        named = {p["pid"] for p in report["orphans"]}
        assert named & {p.pid for p in left}  # (idle workers may have gone by themselves)
        assert report["stopped"] == len(named) and report["would_not_stop"] == []
        assert of(killed) == []  # all gone
        for pid in (alive, detached):
            assert of(pid), (pid, alive, detached, report)
            assert not [p for p in find_orphans(root) if p.starter_pid == pid]
    finally:
        for d in procs:
            d.stdin.close()  # the detached driver reads the same pipe: it ends too
            d.wait(60)
        _wait_until(lambda: not os.path.exists(f"/proc/{detached}"), 60, "the detached driver")
