"""A real Milvus 2.3 standalone server (the ``milvus`` PyPI package) that only loopback reaches.

The server binds its ports on all interfaces whatever its config says, so it runs in a
private network namespace (``unshare -n``) whose only interface is ``lo``, as
benchmarks/bench_index.py's server stage does. Tests in the normal namespace reach it
through two byte relays: inside the namespace, a Unix socket in the server's data dir
relays to its gRPC port; outside, a TCP listener on 127.0.0.1 (free port) relays to that
socket. Unix sockets bound to a path cross network namespaces; nothing else does.

    with MilvusLoopbackServer(tmp_dir) as server:
        settings.store.uri = server.uri        # http://127.0.0.1:PORT

Run as a script (``python tests/milvus_loopback.py DATA_DIR``) it is the inside half: it
starts the server, prints one ``READY <port>`` line, and stops the server when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SOCKET_NAME = "grpc.sock"
START_TIMEOUT_S = 90


class MilvusServerUnavailable(RuntimeError):
    pass


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _relay(connect):
    """A stream handler that copies both ways between the client and ``connect()``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await connect()
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:  # the relay is shutting down
            writer.close()
            up_writer.close()

    return handle


# -- inside the namespace ------------------------------------------------------------------
async def _inside(data: Path) -> None:
    from milvus import default_server

    default_server.set_base_dir(str(data / "server"))
    default_server.start()
    port = default_server.listen_port
    try:
        sock = data / SOCKET_NAME
        relay = _relay(lambda: asyncio.open_connection("127.0.0.1", port))
        server = await asyncio.start_unix_server(relay, path=str(sock))
        print(f"READY {port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        server.close()
    finally:
        default_server.stop()


# -- outside: the test side ----------------------------------------------------------------
class MilvusLoopbackServer:
    """``inside``: a command prefix that enters an existing private namespace (the test
    cluster's ``nsenter``, jobs/cluster.py); the server then runs there, and its URI is
    for processes in that namespace (no relay to this one)."""

    def __init__(self, data: Path, inside: list[str] | None = None):
        self.data = Path(data)
        self.inside = inside
        self.proc: subprocess.Popen | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        self.log = self.data / "server.log"  # the latest start's

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MilvusLoopbackServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.start_server()
        if self.inside is None:  # inside a cluster's namespace its clients reach it directly
            self._start_relay()

    def start_server(self) -> None:
        """The server alone (``start`` adds the relay); after ``stop_server``, the same
        data and the same port: a restart, as its clients see it."""
        if shutil.which("unshare") is None:
            raise MilvusServerUnavailable("`unshare` (util-linux) is not installed")
        self.data.mkdir(parents=True, exist_ok=True)
        inner = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} {self.data}"
        argv = ["unshare", "-n", "sh", "-c", inner]
        if self.inside is not None:
            argv = [*self.inside, sys.executable, str(Path(__file__).resolve()), str(self.data)]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )
        line = self._first_line()
        if not line.startswith("READY"):
            err = self.log.read_text() if self.log.exists() else ""
            raise MilvusServerUnavailable(
                "could not start a Milvus server in a private network namespace "
                f"(`unshare -n` needs CAP_SYS_ADMIN, e.g. root or a privileged container): "
                f"first line {line!r}, exit {self.proc.poll()}, stderr: {err[-2000:]}"
            )
        if self.inside is not None:
            self.port = int(line.split()[1])  # the server's own port, in that namespace

    def _first_line(self) -> str:
        got: Future[str] = Future()

        def read() -> None:  # the server's banner may come first
            for line in self.proc.stdout:
                if line.startswith("READY"):
                    got.set_result(line)
                    return
            got.set_result("(the process ended)")

        threading.Thread(target=read, daemon=True).start()
        try:
            return got.result(timeout=START_TIMEOUT_S).strip()
        except TimeoutError:
            return f"(nothing within {START_TIMEOUT_S} s)"

    def _start_relay(self) -> None:
        self.loop = asyncio.new_event_loop()
        sock = str(self.data / SOCKET_NAME)
        relay = _relay(lambda: asyncio.open_unix_connection(sock))
        server = self.loop.run_until_complete(asyncio.start_server(relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()
            self.loop = None
        self.stop_server()

    def stop_server(self) -> None:
        """Stop the server and keep the relay's port: clients find nothing behind it."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_inside(Path(sys.argv[1])))
