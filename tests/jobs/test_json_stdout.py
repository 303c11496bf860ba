"""``--json``: stdout carries the JSON lines and nothing else, whatever else writes to it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import os, subprocess, sys
from jobs.cli.common import emit_json, json_stdout
with json_stdout(True):
    print("a stray print")
    os.write(1, b"a C library writing to fd 1\\n")
    subprocess.run([sys.executable, "-c", "print('a child process, as Ray starts them')"])
    emit_json({"sighting": 1})
    emit_json({"sighting": 2})
print("after: stdout is stdout again")
"""


@pytest.mark.timeout(60)
def test_only_json_reaches_stdout_and_the_rest_goes_to_stderr():
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [json.loads(x) for x in lines[:2]] == [{"sighting": 1}, {"sighting": 2}]
    assert lines[2:] == ["after: stdout is stdout again"]
    for noise in ("a stray print", "a C library", "a child process"):
        assert noise in proc.stderr
