"""Real peers for the live-server tests: a camera that pushes frames, an SSE subscriber, a
live HTTP video stream that can be stopped and restarted, and a webhook receiver that
fails on purpose. All bind to 127.0.0.1 on free ports."""

from __future__ import annotations

import io
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def enrol(home: Path, name: str, photo: Path, list_name: str) -> str:
    """Enrol through the real CLI, in its own process (milvus-lite: one process at a time,
    and its embedded server outlives the client in the process that opened it)."""
    env = {**os.environ, "FACEWATCH_USER": "test-enroller"}
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "watchlist", "add", name]
    cmd += [str(photo), "--list", list_name]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def mpegts_bytes(path: Path) -> bytes:
    """The video remuxed to MPEG-TS, a format that can be streamed and joined mid-way."""
    import av

    buf = io.BytesIO()
    with av.open(str(path)) as src, av.open(buf, "w", format="mpegts") as out:
        ins = src.streams.video[0]
        ost = out.add_stream_from_template(ins)
        for pkt in src.demux(ins):
            if pkt.dts is not None:
                pkt.stream = ost
                out.mux(pkt)
    return buf.getvalue()


def push_frame(client: httpx.Client, camera: str, jpeg: bytes) -> dict:
    """One JPEG to a push camera, waiting for its analysis; the answer must be 200."""
    r = client.post(
        f"/v1/cameras/{camera}/frames?wait=true",
        content=jpeg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert r.status_code == 200, r.text
    return r.json()


class SSEReader(threading.Thread):
    """Subscribes to /v1/alerts/stream and puts (event, data) on ``events``."""

    def __init__(self, base: str, token: str):
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.events: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self._halt = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=30.0))

    def run(self) -> None:
        try:
            self._read()
        except Exception:
            if not self._halt.is_set():  # not closed by us: the server went away
                raise

    def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.base}/v1/alerts/stream"
        with self._client.stream("GET", url, headers=headers) as r:
            event, data = "message", []
            for line in r.iter_lines():
                if self._halt.is_set():
                    return
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    self.events.put((event, json.loads("\n".join(data))))
                    event, data = "message", []

    def stop(self) -> None:
        """Disconnect (so the server has no open stream left when it shuts down)."""
        self._halt.set()
        self._client.close()
        self.join(10)

    def drain(self) -> list[tuple[str, dict]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


class StreamServer:
    """A live stream: MPEG-TS over HTTP at the video's own bitrate, looping, until stopped.

    ``connections`` is set each time a client connects; ``stop`` closes the listening
    socket and every open response (the camera sees its stream die) and holds the port
    until ``start`` (``HeldPort``); ``close`` when done."""

    def __init__(self, ts: bytes, duration_s: float, port: int):
        self.ts, self.port = ts, port
        self.held = HeldPort(port)
        self.rate = len(ts) / duration_s  # bytes per second
        self.connections = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self._alive = threading.Event()

    def start(self) -> None:
        outer = self

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer.connections.set()
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Connection", "close")
                self.end_headers()
                outer._play(self.wfile)

        self._alive.set()
        self.held.release()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _play(self, out) -> None:
        chunk = 188 * 64
        t0, sent = time.monotonic(), 0
        while self._alive.is_set():
            for start in range(0, len(self.ts), chunk):
                if not self._alive.is_set():
                    return
                ahead = sent / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(min(ahead, 0.5))  # pace at the video's bitrate
                try:
                    out.write(self.ts[start : start + chunk])
                    out.flush()
                except OSError:
                    return
                sent += chunk

    def stop(self) -> None:
        self._alive.clear()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.held.hold()

    def close(self) -> None:
        self.stop()
        self.held.release()


class WebhookReceiver:
    """Receives alert webhooks; answers 500 to the first ``fail_first`` deliveries after
    recording them, and processes each idempotency key once (as a real receiver should)."""

    def __init__(self, fail_first: int):
        self.fail_first = fail_first
        self.deliveries: list[dict] = []
        self.processed: dict[str, dict] = {}
        self.accepted = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(_Quiet):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = outer._receive(dict(self.headers), json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _receive(self, headers: dict, event: dict) -> int:
        with self._lock:
            key = headers.get("Idempotency-Key", "")
            self.deliveries.append({"key": key, "attempt": headers.get("X-Facewatch-Attempt")})
            self.processed.setdefault(key, event)  # a repeated key is dropped
            if len(self.deliveries) <= self.fail_first:
                return 500
            self.accepted.set()
            return 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def add_push_cameras(base: str, admin_token: str, cameras, list_name: str) -> None:
    """Add push cameras through the API (each must answer 201)."""
    for cam in cameras:
        r = httpx.post(
            f"{base}/v1/cameras",
            json={"id": cam, "url": "push", "fps": 30, "list": list_name},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=60,
        )
        assert r.status_code == 201, r.text


def pump_lines(proc: subprocess.Popen) -> queue.Queue:
    """The process's output lines, put on a queue by a thread (None at its end)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def read_until(lines: queue.Queue, words: str, timeout: float) -> list[str]:
    """The lines up to the first that holds ``words``; fails after ``timeout``."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if words in line:
            return seen
    raise AssertionError(f"no {words!r} in the server's output:\n{''.join(seen)[-3000:]}")


def wait_until(predicate, timeout: float, what: str):
    """For state only visible through the API (no event to wait on): poll until true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as ``saved`` had them (None: unset)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class HeldPort:
    """A port kept while its server is down: a bound socket that does not listen holds it,
    so connections are refused, as from a stopped server, and no process started meanwhile
    (a Ray worker binding a free port) can be given it. Without the hold, a webhook
    receiver's freed port was once taken, while Ray started, by a process that answered
    405."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None

    def hold(self) -> None:
        if self.sock is None:
            sock = socket.socket()
            # the closed server's connections may be in TIME_WAIT on this port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.sock = sock

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class OutageReceiver:
    """A webhook receiver that can be down for a while: ``down`` closes its listening socket
    and holds the port (senders get connection refused), ``up`` listens again on the same
    port. It records every delivery it answers, and processes each idempotency key once, in
    arrival order. ``close`` when done."""

    def __init__(self):
        self.deliveries: list[dict] = []
        self.processed: dict[str, dict] = {}  # key -> event, in the order first seen
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.held = HeldPort(0)
        self.up()
        self.url = f"http://127.0.0.1:{self.held.port}/hook"

    def _handler(self):
        outer = self

        class Handler(_Quiet):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = self.headers.get("Idempotency-Key", "")
                with outer._lock:
                    outer.deliveries.append({"key": key, "camera_id": body.get("camera_id")})
                    outer.processed.setdefault(key, body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def up(self) -> None:
        self.held.release()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.held.port), self._handler())
        self.held.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.held.hold()

    def close(self) -> None:
        self.down()
        self.held.release()

    def keys_by_camera(self) -> dict[str, list[str]]:
        with self._lock:
            out: dict[str, list[str]] = {}
            for key, event in self.processed.items():
                out.setdefault(event.get("camera_id", ""), []).append(key)
            return out
