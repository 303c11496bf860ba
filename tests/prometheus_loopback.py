"""A real Prometheus (Debian's package, installed by .ci/ensure-prometheus) for the metrics
tests: on 127.0.0.1, its own port and storage in a temporary folder, scraping every second
through a service-discovery file in Ray's format, with the shipped rules loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "conf" / "prometheus"


class PrometheusUnavailable(RuntimeError):
    pass


class LoopbackPrometheus:
    def __init__(self, workdir: Path, targets: list[str], port: int):
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusUnavailable(
                "prometheus is missing: run .ci/ensure-prometheus (apt-get install prometheus)"
            )
        self.workdir, self.port = Path(workdir), port
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{port}"
        sd = self.workdir / "prom_metrics_service_discovery.json"  # Ray's format
        sd.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
        conf = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
        conf["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        conf["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(sd)]
        shutil.copy(SHIPPED / "facewatch.rules.yml", self.workdir / "facewatch.rules.yml")
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(conf))
        self.cmd = [
            binary,
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ]
        self.log = self.workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LoopbackPrometheus:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusUnavailable(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise PrometheusUnavailable(f"prometheus not ready in 60 s: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result; raises with Prometheus's error if it does not parse."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        return self._get("/api/v1/query", params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
        return self._get("/api/v1/query_range", params)["result"]

    def value(self, expr: str, wait_s: float = 20.0) -> float | None:
        """The single value of a scalar-like query (one series), or None without data for
        ``wait_s``: on a loaded machine a scrape can time out, and Prometheus then marks
        the target's series stale until the next one succeeds."""
        deadline = time.monotonic() + wait_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return float(result[0]["value"][1]) if result else None
            time.sleep(0.5)

    def _get(self, path: str, params: dict) -> dict:
        r = httpx.get(self.url + path, params=params, timeout=30)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{params['query']!r}: {body.get('error', r.text[:500])}")
        return body["data"]
