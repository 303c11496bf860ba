"""A real multi-node Ray cluster on one machine: a head and N worker nodes on 127.0.0.1,
inside a private network namespace whose only interface is ``lo``.

Why a namespace: Ray 2.60 rewrites 127.0.0.1 to the machine's outward address as soon as a
second node joins, and with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` it refuses the second
node. Inside ``unshare -n`` there is no outward address to rewrite to, so with the switch at
1 every raylet, the GCS and every worker stay on loopback, and nothing outside the
namespace can reach them (nor can they reach anything outside).

How it runs: ``up`` starts a supervisor (``python -m jobs.cluster DIR``, under
``unshare -n``) that starts the nodes with ``ray.cluster_utils.Cluster`` (real GCS, raylets
and workers; each node with its own CPUs, custom resources and temp dir; Ray token auth
with a 0600 token in DIR), writes ``DIR/cluster.json`` and waits for SIGTERM. A driver or a
facewatch command joins the cluster by entering the supervisor's namespace
(``nsenter --net=/proc/PID/ns/net``, see ``ClusterHandle.command``) with the environment
from ``ClusterHandle.env``; ``down`` sends the supervisor SIGTERM and it stops its nodes.
The custom resources are the placement vocabulary of conf/serve.yaml and the ``placement``
section of the facewatch config: the head holds the home, the workers hold the pool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import FacewatchError

STATE_FILE = "cluster.json"
SPEC_FILE = "spec.json"
LOG_FILE = "supervisor.log"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parents[1]


class ClusterError(FacewatchError, RuntimeError):
    """The test cluster could not start, or is not running; the message says why."""


@dataclass
class ClusterSpec:
    """The nodes to start. Resource names match conf/serve.yaml and conf/facewatch.yaml."""

    workers: int = 2
    head_cpus: int = 1  # Ray takes whole logical CPUs per node
    worker_cpus: int = 2  # a 0.9-CPU pool replica and the archive stages beside it
    home_resource: str = "facewatch_home"
    pool_resource: str = "facewatch_pool"
    # nodes for the archive stages alone (decode, face stage), if placement.workers names
    # decode_resource: a benchmark keeps decoding off the pool nodes, the same in every run
    decode_nodes: int = 0
    decode_cpus: int = 1
    decode_resource: str = "facewatch_decode"
    # how much of each custom resource a node holds (placements ask for small fractions)
    resource_units: float = 100.0
    object_store_mb: int = 150


@dataclass
class ClusterHandle:
    """A running cluster, as recorded by its supervisor in ``DIR/cluster.json``."""

    directory: Path
    pid: int
    address: str
    token_path: str
    temp_dirs: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, directory: Path) -> ClusterHandle:
        path = Path(directory) / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            msg = f"no cluster is running from {directory} ({path} unreadable)"
            raise ClusterError(msg) from None
        handle = cls(directory=Path(directory), **raw)
        if not handle.alive():
            raise ClusterError(f"the cluster of {directory} is gone (supervisor {handle.pid})")
        return handle

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}/ns/net").exists()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a process inside the namespace needs to join the cluster."""
        env = dict(os.environ if base is None else base)
        env.update(inside_env(self.token_path))
        env["FACEWATCH_RAY_ADDRESS"] = self.address
        # Ray's own clients (the state API, `ray status`) given no address pick the newest
        # Ray of the machine from /tmp/ray, which may be another one, outside this namespace
        env["RAY_ADDRESS"] = self.address
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # the same Ray as the cluster's: `ray` and `serve` of this interpreter's environment
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join(filter(None, [bindir, env.get("PATH")]))
        return env

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the cluster's network namespace."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv]

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        env = self.env(kwargs.pop("env", None))
        return subprocess.run(self.command(argv), env=env, cwd=kwargs.pop("cwd", ROOT), **kwargs)


def inside_env(token_path: str) -> dict[str, str]:
    """Ray settings for every process in the namespace: loopback, and token auth."""
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # see the module docstring
        "RAY_NODE_IP_ADDRESS": "127.0.0.1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": token_path,
        "RAY_USAGE_STATS_ENABLED": "0",
    }


# -- outside: start and stop -----------------------------------------------------------------
def up(directory: Path, spec: ClusterSpec | None = None, timeout_s: float = START_TIMEOUT_S):
    """Start a cluster recorded in ``directory``; returns its handle once every node is up."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        raise ClusterError("the test cluster needs `unshare` and `nsenter` (util-linux)")
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / STATE_FILE).unlink(missing_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(asdict(spec or ClusterSpec())))
    inner = f"ip link set lo up && exec {sys.executable} -m jobs.cluster {directory}"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    with open(directory / LOG_FILE, "w") as log:
        proc = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", inner],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives `facewatch cluster up`
        )
    return _wait_ready(directory, proc, timeout_s)


def _wait_ready(directory: Path, proc: subprocess.Popen, timeout_s: float) -> ClusterHandle:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (directory / STATE_FILE).exists():
            return ClusterHandle.read(directory)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        _stop_pid(proc.pid)
    log = (directory / LOG_FILE).read_text(errors="replace")[-3000:]
    hint = "; `unshare -n` needs CAP_SYS_ADMIN" if "unshare" in log else ""
    raise ClusterError(
        f"the test cluster did not start (exit {proc.poll()}{hint}); the supervisor's log "
        f"ends: {log}"
    )


def down(directory: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the cluster of ``directory``; False if none was running."""
    try:
        handle = ClusterHandle.read(directory)
    except ClusterError:
        return False
    _stop_pid(handle.pid, timeout_s)
    return True


def _stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the supervisor (it stops its nodes), SIGKILL if it does not end in time."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# -- inside the namespace: the supervisor --------------------------------------------------------
def _node_args(spec: ClusterSpec, role: str, temp_dir: str) -> dict:
    """``role``: head (the home), pool (a worker with the pool resource) or decode."""
    resource, cpus = {
        "head": (spec.home_resource, spec.head_cpus),
        "pool": (spec.pool_resource, spec.worker_cpus),
        "decode": (spec.decode_resource, spec.decode_cpus),
    }[role]
    head = role == "head"
    return {
        "num_cpus": cpus,
        "resources": {resource: spec.resource_units},
        "node_ip_address": "127.0.0.1",
        "object_store_memory": spec.object_store_mb * 1024 * 1024,
        "temp_dir": temp_dir,
        # the dashboard serves ray.util.state (where replicas and tasks run); it listens
        # on the namespace's own loopback, which nothing outside reaches
        **({"include_dashboard": True, "dashboard_host": "127.0.0.1"} if head else {}),
    }


def supervise(directory: Path) -> None:
    """Start the nodes, record them, wait for SIGTERM, stop them."""
    spec = ClusterSpec(**json.loads((directory / SPEC_FILE).read_text()))
    token = directory / "ray" / "auth_token"
    os.environ.update(inside_env(str(token)))  # before Ray is imported: it reads them once
    from serve.local import ensure_token_file

    ensure_token_file(token)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    # Ray's Cluster writes its address to <RAY_TMPDIR or /tmp>/ray/ray_current_cluster, the
    # file a plain `ray.init()` on this machine would then join, and does not create the
    # folder (a node with the default temp dir does; these have their own): on a machine
    # where Ray never ran it failed. Kept in the cluster's own folder instead.
    os.environ["RAY_TMPDIR"] = str(directory / "ray")
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    roles = ["pool"] * spec.workers + ["decode"] * spec.decode_nodes
    temps = [tempfile.mkdtemp(prefix="fwc-") for _ in range(len(roles) + 1)]  # short paths
    cluster = Cluster(initialize_head=True, head_node_args=_node_args(spec, "head", temps[0]))
    try:
        for role, temp in zip(roles, temps[1:], strict=True):
            cluster.add_node(**_node_args(spec, role, temp))
        cluster.wait_for_nodes()
        state = {"pid": os.getpid(), "address": cluster.address, "token_path": str(token)}
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({**state, "temp_dirs": temps}))
        tmp.rename(directory / STATE_FILE)
        print(f"READY {cluster.address}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        (directory / STATE_FILE).unlink(missing_ok=True)
        cluster.shutdown()
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    supervise(Path(sys.argv[1]))
