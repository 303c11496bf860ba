"""The project's own files: the cluster config Ray's launcher reads, and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(60)
def test_cluster_yaml_passes_rays_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on an unknown or missing field
    assert config["provider"]["type"] == "local"
    assert "/opt/facewatch" in config["file_mounts"]


@pytest.mark.timeout(120)
def test_console_script_lists_the_command_groups():
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    for command in ("search", "watchlist", "evaluate", "audit", "models"):
        assert command in done.stdout
