"""``facewatch serve`` as the operator runs it: a real subprocess of the CLI, with local Ray
and Serve on 127.0.0.1, a one-replica pool and a home in tmp_path.

SIGTERM is what systemd and Kubernetes send; it must stop the server as cleanly as Ctrl-C
(``ray.init`` installs its own SIGTERM handler, which exits at once)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from live_helpers import pump_lines, read_until

from serve.local import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SERVE_YAML = """
http_options: {{host: 127.0.0.1, port: {port}}}
applications:
  - name: facewatch
    route_prefix: /
    import_path: serve.app:build_app
    args: {{settings: {{pool: {{num_replicas: 1}}}}}}
    deployments:
      - name: FacePool
        num_replicas: 1
        ray_actor_options: {{num_cpus: 0.9}}
"""


def start_server(tmp_path: Path) -> tuple[subprocess.Popen, queue.Queue, int]:
    port = free_port()
    conf = tmp_path / "serve.yaml"
    conf.write_text(SERVE_YAML.format(port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(tmp_path / "home")]
    proc = subprocess.Popen(
        [*cmd, "serve", "--config", str(conf)],
        cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, pump_lines(proc), port


@pytest.mark.timeout(420)
def test_sigterm_stops_the_server_cleanly(tmp_path):
    proc, lines, port = start_server(tmp_path)
    try:
        read_until(lines, "facewatch live server on", 300)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=90)
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    out = "".join(rest)
    assert "stopping ..." in out and "stopped" in out, out[-3000:]
    assert rc == 0, out[-3000:]
